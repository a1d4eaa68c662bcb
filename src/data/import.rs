//! Rebuild the standard MNIST IDX files from the classic deeplearning.net
//! `mnist.pkl.gz` (gzip'd or not): a pickle of `(train, valid, test)`, each
//! `(X, y)` with `X` float32 `[N, 784]` holding `byte / 256` and `y` int64 `[N]`.
//!
//! The original 60000 training examples are `train` (50000) followed by `valid`
//! (10000); the 10000 test examples are `test`. Every pixel must be an exact
//! multiple of 1/256 and every label in 0..=9, and the four rebuilt files must
//! have the canonical content MD5s before anything is written; then the four
//! `<stem>.gz` files are written atomically into the output folder.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread;

use anyhow::{anyhow, bail, Context};
use flate2::read::MultiGzDecoder;
use md5::{Digest, Md5};

use crate::data::dataset::{DatasetKind, Split};
use crate::data::idx::{self, Images};
use crate::data::pickle::{self, NdArray, Scalar, ScalarType, Value};

/// Side of an MNIST image.
pub const SIDE: usize = 28;
/// Pixels per MNIST image.
pub const PIXELS: usize = SIDE * SIDE;
/// The splits of the pickle, in order.
pub const SPLIT_NAMES: [&str; 3] = ["train", "valid", "test"];

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// One IDX file written by an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedFile {
    /// Where it was written (`<out_dir>/<stem>.gz`).
    pub path: PathBuf,
    pub stem: &'static str,
    /// Images or labels in it.
    pub count: usize,
    /// MD5 of the uncompressed content (checked before writing).
    pub content_md5: String,
    /// Length of the uncompressed content.
    pub content_len: usize,
}

/// What an import did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    pub source: PathBuf,
    /// Whether the source was gzip'd.
    pub gzip: bool,
    pub out_dir: PathBuf,
    /// Examples in the pickle's train, valid and test splits.
    pub split_counts: [usize; 3],
    /// Train images, train labels, test images, test labels (the order of
    /// [`DatasetKind::files`]).
    pub files: Vec<ImportedFile>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [train, valid, test] = self.split_counts;
        writeln!(
            f,
            "imported {}{}: train {train} + valid {valid} -> {} training examples, test {test}",
            self.source.display(),
            if self.gzip { " (gzip)" } else { "" },
            train + valid,
        )?;
        for file in &self.files {
            writeln!(f, "  {}  {:>6} items  content md5 {}", file.path.display(), file.count, file.content_md5)?;
        }
        Ok(())
    }
}

/// Import `pkl` (`mnist.pkl.gz` or an uncompressed `mnist.pkl`) and write the
/// four standard MNIST files, gzip'd, into `out_dir`. Nothing is written unless
/// all four match the canonical MNIST content.
pub fn import_mnist_pickle(pkl: &Path, out_dir: &Path) -> anyhow::Result<ImportReport> {
    let files = DatasetKind::Mnist.files();
    let expected = [files[0].content_md5, files[1].content_md5, files[2].content_md5, files[3].content_md5];
    import_with_checksums(pkl, out_dir, &expected)
}

/// [`import_mnist_pickle`] against other expected content MD5s (hex; train
/// images, train labels, test images, test labels): for tests.
#[doc(hidden)]
pub fn import_with_checksums(pkl: &Path, out_dir: &Path, expected_md5: &[&str; 4]) -> anyhow::Result<ImportReport> {
    let (bytes, gzip) = read_maybe_gzip(pkl)?;
    let [train, valid, test] = {
        let value = pickle::parse(&bytes).with_context(|| format!("{}: cannot read the pickle", pkl.display()))?;
        splits_from_pickle(&value).with_context(|| format!("{}: not an MNIST pickle", pkl.display()))?
    };
    drop(bytes);
    let split_counts = [train.len(), valid.len(), test.len()];

    let train = concat(train, valid);
    let contents = [
        idx::encode_images(&train.images),
        idx::encode_labels(&train.labels),
        idx::encode_images(&test.images),
        idx::encode_labels(&test.labels),
    ];
    let counts = [train.len(), train.len(), test.len(), test.len()];
    drop((train, test));

    let md5s: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = contents.iter().map(|c| s.spawn(move || hex::encode(Md5::digest(c)))).collect();
        handles.into_iter().map(|h| h.join().expect("md5 thread panicked")).collect()
    });

    let stems = DatasetKind::Mnist.files().map(|f| f.stem);
    let mismatches: Vec<String> = (0..4)
        .filter(|&i| !md5s[i].eq_ignore_ascii_case(expected_md5[i]))
        .map(|i| {
            format!(
                "{} ({} items): content MD5 {} but the canonical one is {}",
                stems[i], counts[i], md5s[i], expected_md5[i]
            )
        })
        .collect();
    if !mismatches.is_empty() {
        bail!(
            "{} is not the standard MNIST: the rebuilt files differ from the originals, so nothing was written \
             (pickle splits: train {}, valid {}, test {}):\n  {}",
            pkl.display(),
            split_counts[0],
            split_counts[1],
            split_counts[2],
            mismatches.join("\n  ")
        );
    }

    let paths = stems.map(|stem| out_dir.join(format!("{stem}.gz")));
    let results: Vec<anyhow::Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .zip(&contents)
            .map(|(path, content)| s.spawn(move || Ok(idx::write_idx(path, content)?)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("writer thread panicked")))).collect()
    });
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    let files = (0..4)
        .map(|i| ImportedFile {
            path: paths[i].clone(),
            stem: stems[i],
            count: counts[i],
            content_md5: md5s[i].clone(),
            content_len: contents[i].len(),
        })
        .collect();
    Ok(ImportReport { source: pkl.to_path_buf(), gzip, out_dir: out_dir.to_path_buf(), split_counts, files })
}

/// The bytes of `path`, decompressed when they start with the gzip magic.
fn read_maybe_gzip(path: &Path) -> anyhow::Result<(Vec<u8>, bool)> {
    let raw = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok((raw, false));
    }
    // The trailer holds the uncompressed size (mod 2^32) of the last member: a
    // hint that saves regrowing a 220 MB buffer, capped by deflate's best ratio.
    let hint = match raw.len().checked_sub(4) {
        Some(at) => u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize,
        None => 0,
    };
    let mut out = Vec::with_capacity(hint.min(raw.len().saturating_mul(1032)));
    MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .with_context(|| format!("{}: not a valid gzip stream", path.display()))?;
    Ok((out, true))
}

/// Check the pickle's structure and contents and convert its three splits
/// (train, valid, test) to u8 images and labels.
pub fn splits_from_pickle(value: &Value<'_>) -> anyhow::Result<[Split; 3]> {
    let Some(splits) = value.as_sequence().filter(|s| s.len() == 3) else {
        bail!("expected a tuple of 3 splits (train, valid, test), found {}", describe(value));
    };
    let mut out = Vec::with_capacity(3);
    for (name, split) in SPLIT_NAMES.iter().zip(splits) {
        let Some([x, y]) = split.as_sequence().and_then(|s| <&[Value; 2]>::try_from(s).ok()) else {
            bail!("{name}: expected a pair (images, labels), found {}", describe(split));
        };
        let (Some(x), Some(y)) = (x.as_array(), y.as_array()) else {
            bail!("{name}: expected two numpy arrays, found {} and {}", describe(x), describe(y));
        };
        let images = decode_images(name, x)?;
        let labels = decode_labels(name, y)?;
        if images.count != labels.len() {
            bail!("{name}: {} images but {} labels", images.count, labels.len());
        }
        out.push(Split { images, labels });
    }
    out.try_into().map_err(|_| anyhow!("expected 3 splits"))
}

fn describe(v: &Value<'_>) -> String {
    match v {
        Value::Tuple(items) | Value::List(items) => format!("a {} of {}", v.type_name(), items.len()),
        Value::Array(a) => format!("an array of shape {:?} and dtype {}", a.shape, a.dtype),
        _ => format!("a {}", v.type_name()),
    }
}

/// Pixels `k / 256` back to `k`, refusing anything that is not exactly that.
fn decode_images(split: &str, x: &NdArray<'_>) -> anyhow::Result<Images> {
    let &[n, d] = x.shape.as_slice() else {
        bail!("{split} images: expected shape [N, {PIXELS}], found {:?}", x.shape);
    };
    if d != PIXELS {
        bail!("{split} images: expected {PIXELS} ({SIDE}×{SIDE}) pixels per image, found shape {:?}", x.shape);
    }
    if !x.dtype.scalar.is_float() {
        bail!("{split} images: expected float32 pixels, found dtype {}", x.dtype);
    }
    if n.checked_mul(d) != Some(x.len()) {
        bail!("{split} images: {} values do not fill shape {:?}", x.len(), x.shape);
    }
    let mut pixels = vec![0u8; x.len()];
    let bad = |p: usize, v: f64| {
        let (i, j) = if x.fortran_order { (p % n, p / n) } else { (p / d, p % d) };
        let shown = if x.dtype.scalar == ScalarType::F32 { (v as f32).to_string() } else { v.to_string() };
        anyhow!("{split} image {i}, pixel {j}: value {shown} is not k/256 for an integer k in 0..=255")
    };
    let mut store = |p: usize, v: f64| -> anyhow::Result<()> {
        let k = v * 256.0;
        if !(0.0..=255.0).contains(&k) || k.fract() != 0.0 {
            return Err(bad(p, v));
        }
        // Storage position to row-major position.
        let dst = if x.fortran_order { (p % n) * d + p / n } else { p };
        pixels[dst] = k as u8;
        Ok(())
    };
    if x.dtype == pickle::DType::new(ScalarType::F32, false) {
        // The case of the real file, 47 million pixels: skip the generic decoding.
        for (p, c) in x.data.chunks_exact(4).enumerate() {
            store(p, f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)?;
        }
    } else {
        for (p, s) in x.iter().enumerate() {
            let Scalar::Float(v) = s else { bail!("{split} images: not a float at {p}") };
            store(p, v)?;
        }
    }
    Ok(Images { count: n, rows: SIDE, cols: SIDE, pixels })
}

fn decode_labels(split: &str, y: &NdArray<'_>) -> anyhow::Result<Vec<u8>> {
    if y.shape.len() != 1 {
        bail!("{split} labels: expected shape [N], found {:?}", y.shape);
    }
    if y.dtype.scalar.is_float() || y.dtype.scalar == ScalarType::Bool {
        bail!("{split} labels: expected int64 labels, found dtype {}", y.dtype);
    }
    y.iter()
        .enumerate()
        .map(|(i, s)| {
            let v = match s {
                Scalar::Int(v) => v as i128,
                Scalar::UInt(v) => v as i128,
                other => bail!("{split} label {i}: {other:?} is not an integer"),
            };
            match u8::try_from(v) {
                Ok(l) if l < idx::NUM_CLASSES => Ok(l),
                _ => bail!("{split} label {i} is {v}; labels must be 0..={}", idx::NUM_CLASSES - 1),
            }
        })
        .collect()
}

fn concat(mut a: Split, b: Split) -> Split {
    a.images.pixels.extend_from_slice(&b.images.pixels);
    a.images.count += b.images.count;
    a.labels.extend_from_slice(&b.labels);
    a
}
