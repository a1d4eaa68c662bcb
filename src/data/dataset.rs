//! The two datasets: their files, published checksums, mirrors, class names, and
//! the in-memory splits (u8 pixels, as stored; scaling happens per batch).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::idx::{self, IdxError, Images};

/// Which dataset: both are 28×28 u8 grayscale images in 10 classes, 60,000 to
/// train on and 10,000 to test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// MNIST: handwritten digits; an image's label is its digit, 0–9.
    Mnist,
    /// Fashion-MNIST: Zalando's pictures of clothes, shoes and bags.
    FashionMnist,
}

/// One of the four files of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataFile {
    /// Name without `.gz`, e.g. `train-images-idx3-ubyte`.
    pub stem: &'static str,
    /// MD5 of the published `.gz` file, as torchvision checks it.
    pub gz_md5: &'static str,
    /// MD5 of the uncompressed content: the same for every faithful copy,
    /// whoever compressed it (Debian recompresses Fashion-MNIST).
    pub content_md5: &'static str,
    /// Number of images or labels in the file.
    pub count: usize,
}

impl DataFile {
    /// The compressed file's name: `<stem>.gz`.
    pub fn gz_name(&self) -> String {
        format!("{}.gz", self.stem)
    }
}

const MNIST_FILES: [DataFile; 4] = [
    DataFile {
        stem: "train-images-idx3-ubyte",
        gz_md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        content_md5: "6bbc9ace898e44ae57da46a324031adb",
        count: 60000,
    },
    DataFile {
        stem: "train-labels-idx1-ubyte",
        gz_md5: "d53e105ee54ea40749a09fcbcd1e9432",
        content_md5: "a25bea736e30d166cdddb491f175f624",
        count: 60000,
    },
    DataFile {
        stem: "t10k-images-idx3-ubyte",
        gz_md5: "9fb629c4189551a2d022fa330f9573f3",
        content_md5: "2646ac647ad5339dbf082846283269ea",
        count: 10000,
    },
    DataFile {
        stem: "t10k-labels-idx1-ubyte",
        gz_md5: "ec29112dd5afa0611ce80d1b7f02629c",
        content_md5: "27ae3e4e09519cfbb04c329615203637",
        count: 10000,
    },
];

const FASHION_FILES: [DataFile; 4] = [
    DataFile {
        stem: "train-images-idx3-ubyte",
        gz_md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        content_md5: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        count: 60000,
    },
    DataFile {
        stem: "train-labels-idx1-ubyte",
        gz_md5: "25c81989df183df01b3e8a0aad5dffbe",
        content_md5: "9018921c3c673c538a1fc5bad174d6f9",
        count: 60000,
    },
    DataFile {
        stem: "t10k-images-idx3-ubyte",
        gz_md5: "bef4ecab320f06d8554ea6380940ec79",
        content_md5: "8181f5470baa50b63fa0f6fddb340f0a",
        count: 10000,
    },
    DataFile {
        stem: "t10k-labels-idx1-ubyte",
        gz_md5: "bb300cfdad3c16e7a12a480ee83cd310",
        content_md5: "15d484375f8d13e6eb1aabb0c3f46965",
        count: 10000,
    },
];

impl DatasetKind {
    /// Both datasets, MNIST first.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// The name on the command line, in folder names and in messages: `mnist` or
    /// `fashion-mnist`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// The classes' names, indexed by label 0–9 (MNIST's are the digits).
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }

    /// Train images, train labels, test images, test labels.
    pub fn files(self) -> &'static [DataFile; 4] {
        match self {
            DatasetKind::Mnist => &MNIST_FILES,
            DatasetKind::FashionMnist => &FASHION_FILES,
        }
    }

    /// Download mirrors, in the order tried: torchvision's current ones first.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ],
            DatasetKind::FashionMnist => &[
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ],
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" | "fashionmnist" | "fashion" => Ok(DatasetKind::FashionMnist),
            _ => Err(format!("unknown dataset '{s}' (expected mnist or fashion-mnist)")),
        }
    }
}

/// One of a dataset's two splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The training split (60,000 examples).
    Train,
    /// The test split (10,000 examples).
    Test,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Train => "train",
            Part::Test => "test",
        })
    }
}

/// Images with their labels, kept as u8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The images: (N, rows, cols) u8 pixels, 0–255, row-major.
    pub images: Images,
    /// Labels 0–9, one per image, in the images' order.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when the split holds no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The examples of `splits` one after another (all of one image size).
    pub fn concat<'a>(splits: impl IntoIterator<Item = &'a Split>) -> Split {
        let (mut pixels, mut labels, mut shape) = (Vec::new(), Vec::new(), None);
        for s in splits {
            let size = (s.images.rows, s.images.cols);
            assert_eq!(*shape.get_or_insert(size), size, "splits of different image sizes");
            pixels.extend_from_slice(&s.images.pixels);
            labels.extend_from_slice(&s.labels);
        }
        let (rows, cols) = shape.unwrap_or((0, 0));
        Split { images: Images { count: labels.len(), rows, cols, pixels }, labels }
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        let n = self.images.pixels_per_image();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            pixels.extend_from_slice(self.images.image(i));
        }
        Split {
            images: Images { count: indices.len(), rows: self.images.rows, cols: self.images.cols, pixels },
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Carve a seeded random validation split: `(rest, validation)`, where the
    /// validation part holds `round(fraction × len)` examples. Both keep the
    /// original order of their examples, so only membership depends on the seed.
    pub fn carve_validation(&self, fraction: f64, seed: u64) -> (Split, Split) {
        assert!((0.0..1.0).contains(&fraction), "validation fraction must be in [0, 1)");
        let n_val = (fraction * self.len() as f64).round() as usize;
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut val: Vec<usize> = order[..n_val].to_vec();
        let mut rest: Vec<usize> = order[n_val..].to_vec();
        val.sort_unstable();
        rest.sort_unstable();
        (self.select(&rest), self.select(&val))
    }

    /// Count of each label.
    pub fn histogram(&self) -> [usize; 10] {
        let mut h = [0usize; 10];
        for &l in &self.labels {
            h[l as usize] += 1;
        }
        h
    }
}

/// A dataset loaded from disk: train (60000) and test (10000).
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Which dataset it is.
    pub kind: DatasetKind,
    /// The folder the four files were read from.
    pub dir: PathBuf,
    /// The training split (60,000 examples).
    pub train: Split,
    /// The test split (10,000 examples).
    pub test: Split,
}

/// The path of a data file in `dir`: `<stem>.gz` if present, else `<stem>`.
pub fn file_in(dir: &Path, file: &DataFile) -> Option<PathBuf> {
    [dir.join(file.gz_name()), dir.join(file.stem)].into_iter().find(|p| p.is_file())
}

/// True when all four files of the dataset are in `dir`.
pub fn is_complete(dir: &Path, kind: DatasetKind) -> bool {
    kind.files().iter().all(|f| file_in(dir, f).is_some())
}

impl Dataset {
    /// Load the four IDX files from `dir` (use [`super::locate()`] to find it).
    pub fn load_from(kind: DatasetKind, dir: &Path) -> Result<Dataset, IdxError> {
        let train = Self::load_part_from(kind, dir, Part::Train)?;
        let test = Self::load_part_from(kind, dir, Part::Test)?;
        Ok(Dataset { kind, dir: dir.to_path_buf(), train, test })
    }

    /// One split of the dataset in `dir`, the other left unread.
    pub fn load_part_from(kind: DatasetKind, dir: &Path, part: Part) -> Result<Split, IdxError> {
        let path = |i: usize| {
            let f = &kind.files()[i];
            file_in(dir, f).unwrap_or_else(|| dir.join(f.gz_name()))
        };
        let first = match part {
            Part::Train => 0,
            Part::Test => 2,
        };
        let (images, labels) = idx::read_pair(&path(first), &path(first + 1))?;
        Ok(Split { images, labels })
    }
}
