//! The real datasets the tests train and evaluate on: the machine's (scripts/setup-data,
//! which scripts/test runs first), or skipped with LENET_SKIP_REAL_DATA=1 (never in CI).

use std::path::PathBuf;

use lenet::data::DatasetKind;

/// The dataset's folder; `None` (the test skips, saying why) only with
/// LENET_SKIP_REAL_DATA=1, and without it a missing dataset fails the test.
pub fn real_data_dir(kind: DatasetKind) -> Option<PathBuf> {
    match lenet::data::locate::locate(kind, None) {
        Ok(dir) => Some(dir),
        Err(e) if std::env::var("LENET_SKIP_REAL_DATA").is_ok_and(|v| v == "1") => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}\n(run scripts/setup-data, or set LENET_SKIP_REAL_DATA=1 to skip)"),
    }
}
