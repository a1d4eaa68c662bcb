//! `lenet data verify`: counts, checksums of the uncompressed content (so that a
//! recompressed copy, like Debian's, still verifies) and class histograms.

use std::fmt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::data::dataset::{file_in, DataFile, Dataset, DatasetKind};
use crate::data::idx::{self, IdxError};

/// The check of one file.
#[derive(Clone, Debug)]
pub struct FileCheck {
    pub path: PathBuf,
    pub expected_md5: &'static str,
    pub md5: String,
}

impl FileCheck {
    pub fn ok(&self) -> bool {
        self.md5 == self.expected_md5
    }
}

#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub kind: DatasetKind,
    pub files: Vec<FileCheck>,
    pub train_count: usize,
    pub test_count: usize,
    pub train_histogram: [usize; 10],
    pub test_histogram: [usize; 10],
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.files.iter().all(FileCheck::ok)
            && self.train_count == self.kind.files()[0].count
            && self.test_count == self.kind.files()[2].count
    }
}

pub fn content_md5(path: &Path) -> Result<String, IdxError> {
    Ok(hex::encode(Md5::digest(idx::read_content(path)?)))
}

/// Parse and check every file of the dataset in `dir`. Parsing errors are
/// errors; checksum or count mismatches are reported (see [`VerifyReport::ok`]).
pub fn verify(kind: DatasetKind, dir: &Path) -> Result<VerifyReport, IdxError> {
    let dataset = Dataset::load_from(kind, dir)?;
    let files = kind
        .files()
        .iter()
        .map(|f: &DataFile| {
            let path = file_in(dir, f).expect("load_from found every file");
            Ok(FileCheck { expected_md5: f.content_md5, md5: content_md5(&path)?, path })
        })
        .collect::<Result<Vec<_>, IdxError>>()?;
    Ok(VerifyReport {
        kind,
        files,
        train_count: dataset.train.len(),
        test_count: dataset.test.len(),
        train_histogram: dataset.train.histogram(),
        test_histogram: dataset.test.histogram(),
    })
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: train {} examples, test {} examples", self.kind, self.train_count, self.test_count)?;
        for c in &self.files {
            let status = if c.ok() { "ok".to_string() } else { format!("MISMATCH (expected {})", c.expected_md5) };
            writeln!(f, "  {}  md5 {}  {}", c.path.display(), c.md5, status)?;
        }
        writeln!(f, "  {:<12} {:>7} {:>7}", "class", "train", "test")?;
        for (i, name) in self.kind.class_names().iter().enumerate() {
            writeln!(f, "  {:<12} {:>7} {:>7}", name, self.train_histogram[i], self.test_histogram[i])?;
        }
        write!(f, "{}", if self.ok() { "verified: counts and checksums match" } else { "NOT verified" })
    }
}
