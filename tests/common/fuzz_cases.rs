//! How many cases each fuzzing property runs: `PROPTEST_CASES`, else 512 (twice
//! proptest's default: the readers are fast and hostile input is their job).

use proptest::prelude::ProptestConfig;

pub fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(512);
    ProptestConfig { cases, ..ProptestConfig::default() }
}
