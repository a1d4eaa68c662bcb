//! IDX reader and writer: round trips, each corruption's own error, and fuzzing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use lenet::internal::idx::{self, IdxError, Images};
use proptest::prelude::*;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/fuzz_cases.rs"]
mod fuzz_cases;
use counting_alloc::peak_during;

fn sample_images(count: usize, rows: usize, cols: usize) -> Images {
    let pixels = (0..count * rows * cols).map(|i| (i * 37 % 256) as u8).collect();
    Images { count, rows, cols, pixels }
}

fn write_raw(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn round_trip_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let images = sample_images(7, 28, 28);
    let labels: Vec<u8> = (0..7).map(|i| (i % 10) as u8).collect();
    for name in ["imgs", "imgs.gz"] {
        let p = dir.path().join(name);
        idx::write_images(&p, &images).unwrap();
        assert_eq!(idx::read_images(&p).unwrap(), images);
    }
    for name in ["labels", "labels.gz"] {
        let p = dir.path().join(name);
        idx::write_labels(&p, &labels).unwrap();
        assert_eq!(idx::read_labels(&p).unwrap(), labels);
    }
    // Gzip is detected by content, not by name.
    let p = write_raw(dir.path(), "gz-without-suffix", &gzip(&idx::encode_labels(&labels)));
    assert_eq!(idx::read_labels(&p).unwrap(), labels);
    let (i2, l2) = idx::read_pair(&dir.path().join("imgs.gz"), &dir.path().join("labels")).unwrap();
    assert_eq!((i2, l2), (images, labels));
    // The raw file is exactly the documented layout.
    let raw = fs::read(dir.path().join("labels")).unwrap();
    assert_eq!(&raw[..8], &[0, 0, 8, 1, 0, 0, 0, 7]);
}

#[test]
fn truncated_images_name_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = idx::encode_images(&sample_images(3, 4, 5));
    let cut = &bytes[..bytes.len() - 1];
    for (name, content) in [("raw", cut.to_vec()), ("gz", gzip(cut))] {
        let p = write_raw(dir.path(), name, &content);
        let err = idx::read_images(&p).unwrap_err();
        assert!(matches!(err, IdxError::Truncated { at: 75, expected: 76, .. }), "{name}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&p.display().to_string()) && msg.contains("truncated at byte 75"), "{msg}");
    }
    // Truncated inside the header.
    let p = write_raw(dir.path(), "head", &bytes[..10]);
    assert!(matches!(idx::read_images(&p).unwrap_err(), IdxError::Truncated { at: 10, .. }));
    let p = write_raw(dir.path(), "empty", &[]);
    assert!(matches!(idx::read_images(&p).unwrap_err(), IdxError::Truncated { at: 0, .. }));
}

#[test]
fn wrong_magic_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_raw(dir.path(), "labels-as-images", &idx::encode_labels(&[1, 2, 3]));
    let err = idx::read_images(&p).unwrap_err();
    assert!(matches!(err, IdxError::BadMagic { expected: 2051, found: 2049, .. }), "{err:?}");
    assert!(err.to_string().contains("expected magic 2051"), "{err}");
    // Right type, wrong number of dimensions (4 instead of 3).
    let mut bytes = idx::encode_images(&sample_images(1, 2, 2));
    bytes[3] = 4;
    let p = write_raw(dir.path(), "rank4", &bytes);
    assert!(matches!(idx::read_images(&p).unwrap_err(), IdxError::BadMagic { found: 2052, .. }));
    let p = write_raw(dir.path(), "text", b"hello, this is not an IDX file at all");
    assert!(matches!(idx::read_labels(&p).unwrap_err(), IdxError::BadMagic { .. }));
}

#[test]
fn trailing_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx::encode_labels(&[1, 2, 3]);
    bytes.extend_from_slice(&[9, 9]);
    for (name, content) in [("raw", bytes.clone()), ("gz", gzip(&bytes))] {
        let p = write_raw(dir.path(), name, &content);
        let err = idx::read_labels(&p).unwrap_err();
        assert!(matches!(err, IdxError::TrailingBytes { extra: 2, .. }), "{name}: {err:?}");
    }
}

#[test]
fn count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let i = dir.path().join("i");
    let l = dir.path().join("l");
    idx::write_images(&i, &sample_images(4, 2, 2)).unwrap();
    idx::write_labels(&l, &[0, 1, 2]).unwrap();
    let err = idx::read_pair(&i, &l).unwrap_err();
    assert!(matches!(err, IdxError::CountMismatch { images: 4, labels: 3, .. }));
    assert_eq!(err.to_string(), format!("{} has 4 images but {} has 3 labels", i.display(), l.display()));
}

#[test]
fn label_out_of_range_names_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut labels = vec![0u8; 12];
    labels[7] = 12;
    let p = write_raw(dir.path(), "l", &idx::encode_labels(&labels));
    let err = idx::read_labels(&p).unwrap_err();
    assert!(matches!(err, IdxError::BadLabel { index: 7, label: 12, .. }));
    assert!(err.to_string().contains("label 12 at index 7"), "{err}");
}

#[test]
fn bad_image_size_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx::encode_images(&sample_images(1, 2, 2));
    bytes[8..12].copy_from_slice(&0u32.to_be_bytes());
    let p = write_raw(dir.path(), "zero-rows", &bytes);
    assert!(matches!(idx::read_images(&p).unwrap_err(), IdxError::BadImageSize { rows: 0, .. }));
}

/// A header that claims 10^9 images of 28×28 must fail fast, without trying to
/// allocate 784 GB: raw files are checked against their length, gzip'd ones
/// grow their buffer only as bytes arrive.
#[test]
fn lying_header_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = Vec::new();
    for v in [2051u32, 1_000_000_000, 28, 28] {
        header.extend_from_slice(&v.to_be_bytes());
    }
    header.extend_from_slice(&[0u8; 784]);
    // Measured, not inferred from the error: reading an 800-byte file may allocate its
    // buffers, nowhere near the 784 GB the header claims. A gzip'd body reserves at most
    // 16 MiB up front (a real file's first chunk), then grows as bytes arrive.
    const BOUND: usize = 1 << 20;
    const GZIP_BOUND: usize = (16 << 20) + BOUND;
    let p = write_raw(dir.path(), "raw", &header);
    let (r, peak) = peak_during(|| idx::read_images(&p));
    let err = r.unwrap_err();
    assert!(matches!(err, IdxError::Truncated { at: 800, expected: 784_000_000_016, .. }), "{err:?}");
    assert!(peak < BOUND, "raw: {peak} bytes allocated at once");
    let p = write_raw(dir.path(), "gz", &gzip(&header));
    let (r, peak) = peak_during(|| idx::read_images(&p));
    assert!(matches!(r.unwrap_err(), IdxError::Truncated { at: 800, .. }));
    assert!(peak < GZIP_BOUND, "gzip: {peak} bytes allocated at once");
    let mut labels = Vec::new();
    labels.extend_from_slice(&2049u32.to_be_bytes());
    labels.extend_from_slice(&u32::MAX.to_be_bytes());
    let p = write_raw(dir.path(), "labels", &labels);
    let (r, peak) = peak_during(|| idx::read_labels(&p));
    assert!(matches!(r.unwrap_err(), IdxError::Truncated { at: 8, .. }));
    assert!(peak < BOUND, "labels: {peak} bytes allocated at once");
}

#[test]
fn corrupt_gzip_is_a_gzip_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = gzip(&idx::encode_labels(&[1; 1000]));
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    bytes[n / 2 + 1] ^= 0xff;
    let p = write_raw(dir.path(), "bad.gz", &bytes);
    let err = idx::read_labels(&p).unwrap_err();
    assert!(matches!(err, IdxError::Gzip { .. } | IdxError::BadLabel { .. } | IdxError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.gz"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = idx::read_labels(Path::new("/nonexistent/t10k-labels-idx1-ubyte.gz")).unwrap_err();
    assert!(matches!(err, IdxError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/t10k-labels-idx1-ubyte.gz"), "{err}");
}

proptest! {
    #![proptest_config(fuzz_cases::config())]

    /// Nothing panics on arbitrary bytes, raw or gzip'd, and reading them allocates at
    /// most the buffers of a small file (gzip's 16 MiB first reservation included).
    #[test]
    fn fuzz_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), zip in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let content = if zip { gzip(&bytes) } else { bytes };
        let p = write_raw(dir.path(), "f", &content);
        let ((), peak) = peak_during(|| {
            let _ = idx::read_images(&p);
            let _ = idx::read_labels(&p);
        });
        prop_assert!(peak < (17 << 20), "{peak} bytes allocated at once");
    }

    /// Mutations of valid files (a byte changed, the tail cut) never panic, and
    /// whatever still parses has a shape that agrees with its pixels.
    #[test]
    fn fuzz_mutated_valid(pos in 0usize..64, val in any::<u8>(), cut in 0usize..80, zip in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = idx::encode_images(&sample_images(3, 4, 5));
        let pos = pos % bytes.len();
        bytes[pos] = val;
        bytes.truncate(bytes.len().saturating_sub(cut % 8));
        let content = if zip { gzip(&bytes) } else { bytes };
        let p = write_raw(dir.path(), "f", &content);
        if let Ok(img) = idx::read_images(&p) {
            prop_assert_eq!(img.pixels.len(), img.count * img.rows * img.cols);
        }
    }
}
