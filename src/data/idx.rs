//! The IDX format of the original MNIST files, gzip'd or raw (detected by content).
//!
//! Layout: a 4-byte magic `[0, 0, type, ndim]` (type 0x08 = u8), then `ndim`
//! big-endian u32 sizes, then the data. Images: magic 2051, sizes N×rows×cols.
//! Labels: magic 2049, size N. Everything is validated before it is trusted: a
//! header that claims 10^9 images allocates nothing until the bytes really arrive.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::atomic::{AtomicFile, WriteError};

pub const IMAGES_MAGIC: u32 = 2051;
pub const LABELS_MAGIC: u32 = 2049;
pub const NUM_CLASSES: u8 = 10;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Every way an IDX file can be wrong, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file cannot be read (missing, no permission, a disk error).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A `.gz` file that does not decompress.
    #[error("{}: not a valid gzip stream ({source})", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decompressor said.
        source: io::Error,
    },
    /// The file ends before the data its header promises.
    #[error("{}: truncated at byte {at}: the header promises {expected} bytes{}", path.display(), if *gzip { " (uncompressed)" } else { "" })]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes there are (uncompressed, for a `.gz`).
        at: u64,
        /// Bytes the header promises, header included.
        expected: u64,
        /// Whether the file is gzip'd (the counts are then of the uncompressed stream).
        gzip: bool,
    },
    /// The first four bytes are not the magic number of u8 images (2051) or labels (2049).
    #[error("{}: expected magic {expected} ({}), found {found}", path.display(), describe_magic(*expected))]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number an images or labels file starts with.
        expected: u32,
        /// The one this file starts with.
        found: u32,
    },
    /// More bytes than the header describes (two files concatenated, a wrong header).
    #[error("{}: {extra} unexpected bytes after the {expected} bytes the header describes", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes the header describes, header included.
        expected: u64,
        /// Bytes after those.
        extra: u64,
    },
    /// Images of 0 or more than 4096 pixels a side.
    #[error("{}: image size {rows}×{cols} is not a valid image size", path.display())]
    BadImageSize {
        /// The file.
        path: PathBuf,
        /// Rows of each image, in pixels, as the header says.
        rows: u32,
        /// Columns of each image, in pixels, as the header says.
        cols: u32,
    },
    /// A label that is not a class, 0–9.
    #[error("{}: label {label} at index {index} (labels must be 0..{})", path.display(), NUM_CLASSES - 1)]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Which label (0-based).
        index: usize,
        /// Its value.
        label: u8,
    },
    /// A split's images and labels files disagree on how many examples there are.
    #[error("{} has {images} images but {} has {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// The labels file.
        labels_path: PathBuf,
        /// Images in the images file.
        images: usize,
        /// Labels in the labels file.
        labels: usize,
    },
}

fn describe_magic(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => "u8 images, 3 dimensions",
        LABELS_MAGIC => "u8 labels, 1 dimension",
        _ => "unknown",
    }
}

/// A stack of `count` grayscale images of `rows`×`cols` u8 pixels, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Number of images (N).
    pub count: usize,
    /// Image height, pixels.
    pub rows: usize,
    /// Image width, pixels.
    pub cols: usize,
    /// All pixels, (N, rows, cols) u8, 0–255, row-major, image after image.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels in one image: rows × cols.
    pub fn pixels_per_image(&self) -> usize {
        self.rows * self.cols
    }
    /// The rows × cols pixels of image `i`, row-major (panics when `i` ≥ count).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.pixels_per_image();
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// The decompressed content of a file, read lazily, with the bookkeeping to
/// report where it ended.
struct Source {
    path: PathBuf,
    gzip: bool,
    /// Raw file length; the exact content length only when not gzip'd.
    file_len: u64,
    reader: Box<dyn Read>,
    pos: u64,
}

impl Source {
    fn open(path: &Path) -> Result<Self, IdxError> {
        let io_err = |source| IdxError::Io { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut head = [0u8; 2];
        let n = read_full(&mut file, &mut head).map_err(io_err)?;
        let gzip = n == 2 && head == GZIP_MAGIC;
        let head = io::Cursor::new(head[..n].to_vec());
        let rest = BufReader::with_capacity(1 << 16, head.chain(file));
        let reader: Box<dyn Read> = if gzip { Box::new(GzDecoder::new(rest)) } else { Box::new(rest) };
        Ok(Self { path: path.to_path_buf(), gzip, file_len, reader, pos: 0 })
    }

    fn err(&self, source: io::Error) -> IdxError {
        if self.gzip && source.kind() != io::ErrorKind::NotFound {
            IdxError::Gzip { path: self.path.clone(), source }
        } else {
            IdxError::Io { path: self.path.clone(), source }
        }
    }

    /// Read exactly `buf.len()` bytes of a structure that ends at byte `expected`.
    fn read_exact(&mut self, buf: &mut [u8], expected: u64) -> Result<(), IdxError> {
        let n = read_full(&mut self.reader, buf).map_err(|e| self.err(e))?;
        self.pos += n as u64;
        if n < buf.len() {
            return Err(IdxError::Truncated { path: self.path.clone(), at: self.pos, expected, gzip: self.gzip });
        }
        Ok(())
    }

    fn read_u32(&mut self, expected: u64) -> Result<u32, IdxError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b, expected)?;
        Ok(u32::from_be_bytes(b))
    }

    /// Read a body of `len` bytes that completes a file of `total` bytes, then
    /// check nothing follows. Memory grows with the bytes that really arrive, so
    /// a lying header cannot make us allocate what the file does not hold.
    fn read_body(&mut self, len: u64, total: u64) -> Result<Vec<u8>, IdxError> {
        if !self.gzip {
            // Raw: the file length is known, so check it before allocating anything.
            if self.file_len < total {
                return Err(IdxError::Truncated {
                    path: self.path.clone(),
                    at: self.file_len,
                    expected: total,
                    gzip: false,
                });
            }
            if self.file_len > total {
                return Err(IdxError::TrailingBytes {
                    path: self.path.clone(),
                    expected: total,
                    extra: self.file_len - total,
                });
            }
        }
        let mut body = Vec::with_capacity(len.min(1 << 24) as usize);
        let got = (&mut self.reader).take(len).read_to_end(&mut body).map_err(|e| self.err(e))? as u64;
        self.pos += got;
        if got < len {
            return Err(IdxError::Truncated {
                path: self.path.clone(),
                at: self.pos,
                expected: total,
                gzip: self.gzip,
            });
        }
        let mut extra = 0u64;
        let mut sink = [0u8; 4096];
        loop {
            let n = self.reader.read(&mut sink).map_err(|e| self.err(e))?;
            if n == 0 {
                break;
            }
            extra += n as u64;
        }
        if extra > 0 {
            return Err(IdxError::TrailingBytes { path: self.path.clone(), expected: total, extra });
        }
        Ok(body)
    }

    fn check_magic(&mut self, expected: u32, header_len: u64) -> Result<(), IdxError> {
        let found = self.read_u32(header_len)?;
        if found != expected {
            return Err(IdxError::BadMagic { path: self.path.clone(), expected, found });
        }
        Ok(())
    }
}

/// Read until `buf` is full or the stream ends; the number of bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Read an images file (magic 2051), gzip'd or raw.
pub fn read_images(path: &Path) -> Result<Images, IdxError> {
    const HEADER: u64 = 16;
    let mut src = Source::open(path)?;
    src.check_magic(IMAGES_MAGIC, HEADER)?;
    let count = src.read_u32(HEADER)? as u64;
    let rows = src.read_u32(HEADER)?;
    let cols = src.read_u32(HEADER)?;
    // No real image is larger than this; rejecting it also keeps the products small.
    if rows == 0 || cols == 0 || rows > 4096 || cols > 4096 {
        return Err(IdxError::BadImageSize { path: path.to_path_buf(), rows, cols });
    }
    let len = count * rows as u64 * cols as u64;
    let pixels = src.read_body(len, HEADER + len)?;
    Ok(Images { count: count as usize, rows: rows as usize, cols: cols as usize, pixels })
}

/// Read a labels file (magic 2049), gzip'd or raw; every label must be < 10.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    const HEADER: u64 = 8;
    let mut src = Source::open(path)?;
    src.check_magic(LABELS_MAGIC, HEADER)?;
    let count = src.read_u32(HEADER)? as u64;
    let labels = src.read_body(count, HEADER + count)?;
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= NUM_CLASSES) {
        return Err(IdxError::BadLabel { path: path.to_path_buf(), index, label });
    }
    Ok(labels)
}

/// Read an images file and its labels file, and check the counts agree.
pub fn read_pair(images_path: &Path, labels_path: &Path) -> Result<(Images, Vec<u8>), IdxError> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if images.count != labels.len() {
        return Err(IdxError::CountMismatch {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            images: images.count,
            labels: labels.len(),
        });
    }
    Ok((images, labels))
}

/// The bytes of an images file, uncompressed.
pub fn encode_images(images: &Images) -> Vec<u8> {
    assert_eq!(images.pixels.len(), images.count * images.rows * images.cols, "pixel buffer does not match its shape");
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    for v in [IMAGES_MAGIC, images.count as u32, images.rows as u32, images.cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// The bytes of a labels file, uncompressed.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Write IDX content atomically, gzip'd when the path ends in `.gz`.
pub fn write_idx(path: &Path, content: &[u8]) -> Result<(), WriteError> {
    let mut file = AtomicFile::create(path)?;
    let err = |source| WriteError::new(path, source);
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = GzEncoder::new(&mut file, Compression::default());
        gz.write_all(content).map_err(err)?;
        gz.finish().map_err(err)?;
    } else {
        file.write_all(content).map_err(err)?;
    }
    file.commit()
}

pub fn write_images(path: &Path, images: &Images) -> Result<(), WriteError> {
    write_idx(path, &encode_images(images))
}

pub fn write_labels(path: &Path, labels: &[u8]) -> Result<(), WriteError> {
    write_idx(path, &encode_labels(labels))
}

/// The uncompressed content of a file, gzip'd or raw (for checksums of content).
pub fn read_content(path: &Path) -> Result<Vec<u8>, IdxError> {
    let mut src = Source::open(path)?;
    let mut out = Vec::new();
    src.reader.read_to_end(&mut out).map_err(|e| src.err(e))?;
    Ok(out)
}
