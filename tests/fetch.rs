//! `lenet::internal::fetch` against loopback servers only: a tiny_http server with
//! good, corrupt, short and missing files, a raw TCP server that drops the
//! connection mid-body, and a closed port. Nothing here touches the internet.

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};
use tiny_http::{Response, StatusCode};

use lenet::data::{DatasetKind, Images};
use lenet::internal::fetch::{
    fetch_dataset, fetch_files, FetchError, FetchOptions, MirrorFailure, Outcome, RemoteFile,
};
use lenet::internal::idx::{encode_images, encode_labels};

const NAME: &str = "t10k-labels-idx1-ubyte.gz";

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

fn gz(content: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(content).unwrap();
    e.finish().unwrap()
}

/// A small gzip'd labels file (about 9 KB: pseudo-random labels barely compress).
fn labels_fixture() -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    let labels: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 10) as u8
        })
        .collect();
    let bytes = gz(&encode_labels(&labels));
    assert!(bytes.len() > 2000 && bytes.len() < 32768, "fixture size {}", bytes.len());
    bytes
}

fn images_fixture(count: usize) -> Vec<u8> {
    let pixels = (0..count * 28 * 28).map(|i| (i % 251) as u8).collect();
    gz(&encode_images(&Images { count, rows: 28, cols: 28, pixels }))
}

fn corrupted(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    b
}

fn opts() -> FetchOptions {
    FetchOptions { progress: false, connect_timeout: Duration::from_secs(2), read_timeout: Duration::from_secs(2) }
}

/// Names in `dir`, sorted (temp files included: they start with a dot).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A URL on a port where nothing listens.
fn closed_mirror() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/closed/")
}

/// tiny_http on loopback, serving `files` under `/good/`, `/corrupt/` (one byte
/// flipped), `/short/` (Content-Length of the whole, half the body sent) and
/// `/missing/` (404). Stops when dropped.
struct Server {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Server {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stop2) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let req = match server.recv_timeout(Duration::from_millis(20)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(_) => break,
                };
                let url = req.url().to_string();
                reqs.lock().unwrap().push(url.clone());
                let mut parts = url.trim_start_matches('/').splitn(2, '/');
                let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let body = files.get(name);
                let _ = match (kind, body) {
                    ("good", Some(b)) => req.respond(Response::from_data(b.clone())),
                    ("corrupt", Some(b)) => req.respond(Response::from_data(corrupted(b))),
                    ("short", Some(b)) => {
                        let sent = b[..b.len() / 2].to_vec();
                        req.respond(Response::new(StatusCode(200), vec![], Cursor::new(sent), Some(b.len()), None))
                    }
                    _ => req.respond(Response::from_string("not here").with_status_code(404)),
                };
            }
        });
        Server { base: format!("http://127.0.0.1:{port}"), requests, stop, thread: Some(thread) }
    }

    fn with(name: &str, bytes: Vec<u8>) -> Server {
        Server::start(HashMap::from([(name.to_string(), bytes)]))
    }

    fn mirror(&self, kind: &str) -> String {
        format!("{}/{kind}/", self.base)
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw TCP server that answers every request with `head` and `body`, then
/// closes the connection. Stops when dropped.
struct RawServer {
    base: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    fn start(head: String, body: Vec<u8>) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let mut conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => break,
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut seen = Vec::new();
                let mut byte = [0u8; 1];
                while !seen.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => seen.push(byte[0]),
                        _ => break,
                    }
                }
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
                let _ = conn.flush();
                let _ = conn.shutdown(Shutdown::Both);
            }
        });
        RawServer { base: format!("http://127.0.0.1:{port}/raw/"), stop, thread: Some(thread) }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn all_failed(err: FetchError) -> (String, Vec<(String, MirrorFailure)>) {
    let msg = err.to_string();
    match err {
        FetchError::AllMirrorsFailed { attempts, .. } => {
            (msg, attempts.into_iter().map(|a| (a.url, a.failure)).collect())
        }
        other => panic!("expected AllMirrorsFailed, got {other:?}"),
    }
}

#[test]
fn good_mirror_downloads_verifies_and_is_idempotent() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let files = [RemoteFile::new(NAME, md5_hex(&bytes))];
    let mirrors = [server.mirror("good")];
    // progress on: stderr is not a terminal under the test harness, so the bar stays hidden
    let report = fetch_files(&files, &mirrors, dir.path(), &FetchOptions { progress: true, ..opts() }).unwrap();

    assert_eq!(report.files.len(), 1);
    let f = &report.files[0];
    assert_eq!(f.path, dir.path().join(NAME));
    assert_eq!(f.size, bytes.len() as u64);
    assert_eq!(f.md5, md5_hex(&bytes));
    match &f.outcome {
        Outcome::Downloaded { mirror, url, failed } => {
            assert_eq!(mirror, &mirrors[0]);
            assert_eq!(url, &format!("{}{NAME}", mirrors[0]));
            assert!(failed.is_empty());
        }
        other => panic!("not downloaded: {other:?}"),
    }
    assert_eq!(std::fs::read(dir.path().join(NAME)).unwrap(), bytes);
    assert_eq!(listing(dir.path()), vec![NAME.to_string()], "no temp file may remain");
    assert_eq!(server.request_count(), 1);
    assert!(report.to_string().contains("downloaded from"), "{report}");

    // again: nothing to do
    let again = fetch_files(&files, &mirrors, dir.path(), &opts()).unwrap();
    assert_eq!(again.files[0].outcome, Outcome::AlreadyPresent);
    assert_eq!(again.downloaded_count(), 0);
    assert_eq!(server.request_count(), 1, "an existing good file is not downloaded again");
}

#[test]
fn failing_mirrors_are_skipped_until_a_good_one() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dropper =
        RawServer::start(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len()), bytes[..100].to_vec());
    let dir = tempfile::tempdir().unwrap();
    let closed = closed_mirror();
    let mirrors = [
        closed.clone(),
        server.mirror("missing"),
        server.mirror("corrupt"),
        server.mirror("short"),
        dropper.base.clone(),
        server.mirror("good"),
    ];
    let o = FetchOptions { read_timeout: Duration::from_millis(800), ..opts() };
    let report = fetch_files(&[RemoteFile::new(NAME, md5_hex(&bytes))], &mirrors, dir.path(), &o).unwrap();

    let Outcome::Downloaded { mirror, url, failed } = &report.files[0].outcome else {
        panic!("not downloaded: {report:?}")
    };
    assert_eq!(mirror, &server.mirror("good"));
    assert_eq!(url, &format!("{}{NAME}", server.mirror("good")));
    let urls: Vec<&str> = failed.iter().map(|a| a.url.as_str()).collect();
    let expected_urls: Vec<String> = mirrors[..5].iter().map(|m| format!("{m}{NAME}")).collect();
    assert_eq!(urls, expected_urls.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(failed[0].failure, MirrorFailure::Connect("connection refused".into()));
    assert_eq!(failed[1].failure, MirrorFailure::Status(404));
    assert_eq!(
        failed[2].failure,
        MirrorFailure::ChecksumMismatch { expected: md5_hex(&bytes), got: md5_hex(&corrupted(&bytes)) }
    );
    let half = (bytes.len() / 2) as u64;
    assert!(
        matches!(failed[3].failure, MirrorFailure::Truncated { got, expected, .. } if got == half && expected == bytes.len() as u64),
        "{:?}",
        failed[3]
    );
    assert!(
        matches!(failed[4].failure, MirrorFailure::Truncated { got: 100, expected, .. } if expected == bytes.len() as u64),
        "{:?}",
        failed[4]
    );
    assert_eq!(std::fs::read(dir.path().join(NAME)).unwrap(), bytes);
    assert_eq!(listing(dir.path()), vec![NAME.to_string()]);
    assert!(report.to_string().contains("after 5 failed mirror(s)"), "{report}");
}

#[test]
fn only_corrupt_mirror_fails_with_checksum_mismatch_and_leaves_nothing() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_files(&[RemoteFile::new(NAME, md5_hex(&bytes))], &[server.mirror("corrupt")], dir.path(), &opts())
        .unwrap_err();
    let (msg, attempts) = all_failed(err);
    assert!(msg.contains(NAME), "{msg}");
    assert!(
        msg.contains(&format!(
            "{}{NAME}: checksum mismatch: expected MD5 {}, got {}",
            server.mirror("corrupt"),
            md5_hex(&bytes),
            md5_hex(&corrupted(&bytes))
        )),
        "{msg}"
    );
    assert!(msg.contains("scripts/setup-data"), "the remedy comes last: {msg}");
    assert_eq!(attempts.len(), 1);
    assert_eq!(server.request_count(), 1);
    assert!(listing(dir.path()).is_empty(), "left behind: {:?}", listing(dir.path()));
}

#[test]
fn truncated_bodies_fail_and_leave_nothing() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let files = [RemoteFile::new(NAME, md5_hex(&bytes))];
    let o = FetchOptions { read_timeout: Duration::from_millis(500), ..opts() };

    // tiny_http keeps the connection open after the short body: the read times out
    let (msg, attempts) = all_failed(fetch_files(&files, &[server.mirror("short")], dir.path(), &o).unwrap_err());
    let half = bytes.len() / 2;
    assert!(msg.contains(&format!("truncated: got {half} of {} bytes", bytes.len())), "{msg}");
    assert!(matches!(&attempts[0].1, MirrorFailure::Truncated { cause: Some(c), .. } if c == "read timed out"));
    assert!(listing(dir.path()).is_empty(), "left behind: {:?}", listing(dir.path()));

    // the connection closes mid-body
    let dropper =
        RawServer::start(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len()), bytes[..1000].to_vec());
    let (msg, attempts) =
        all_failed(fetch_files(&files, std::slice::from_ref(&dropper.base), dir.path(), &o).unwrap_err());
    assert!(msg.contains(&format!("{}{NAME}: truncated: got 1000 of {} bytes", dropper.base, bytes.len())), "{msg}");
    assert!(matches!(&attempts[0].1, MirrorFailure::Truncated { got: 1000, .. }));
    assert!(listing(dir.path()).is_empty(), "left behind: {:?}", listing(dir.path()));

    // no Content-Length, closed early: only the checksum can tell, and does
    let no_len = RawServer::start("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(), bytes[..1000].to_vec());
    let (msg, attempts) =
        all_failed(fetch_files(&files, std::slice::from_ref(&no_len.base), dir.path(), &o).unwrap_err());
    assert!(matches!(&attempts[0].1, MirrorFailure::ChecksumMismatch { .. }), "{msg}");
    assert!(listing(dir.path()).is_empty(), "left behind: {:?}", listing(dir.path()));
}

#[test]
fn existing_good_file_is_kept_without_a_request() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(NAME), &bytes).unwrap();
    let report =
        fetch_files(&[RemoteFile::new(NAME, md5_hex(&bytes))], &[server.mirror("good")], dir.path(), &opts()).unwrap();
    assert_eq!(report.files[0].outcome, Outcome::AlreadyPresent);
    assert_eq!(report.files[0].size, bytes.len() as u64);
    assert_eq!(server.request_count(), 0);
    // even with no working mirror at all
    let report =
        fetch_files(&[RemoteFile::new(NAME, md5_hex(&bytes).to_uppercase())], &[closed_mirror()], dir.path(), &opts())
            .unwrap();
    assert_eq!(report.files[0].outcome, Outcome::AlreadyPresent);
}

#[test]
fn existing_corrupt_file_is_replaced_by_a_verified_download() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(NAME), corrupted(&bytes)).unwrap();
    let report =
        fetch_files(&[RemoteFile::new(NAME, md5_hex(&bytes))], &[server.mirror("good")], dir.path(), &opts()).unwrap();
    assert!(report.files[0].downloaded());
    assert_eq!(server.request_count(), 1);
    assert_eq!(std::fs::read(dir.path().join(NAME)).unwrap(), bytes);
    assert_eq!(listing(dir.path()), vec![NAME.to_string()]);
}

/// Chosen behaviour: when no mirror delivers, an existing file with a wrong MD5
/// stays exactly as it was (fetch never destroys what it cannot replace), and
/// the error says so.
#[test]
fn existing_corrupt_file_stays_when_every_mirror_fails() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let bad = corrupted(&bytes);
    std::fs::write(dir.path().join(NAME), &bad).unwrap();
    let mirrors = [server.mirror("missing"), server.mirror("corrupt"), closed_mirror()];
    let err = fetch_files(&[RemoteFile::new(NAME, md5_hex(&bytes))], &mirrors, dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        FetchError::AllMirrorsFailed { untrusted: Some(u), attempts, .. } => {
            assert_eq!(u.md5, md5_hex(&bad));
            assert_eq!(attempts.len(), 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(msg.contains("left as it was"), "{msg}");
    for (m, why) in mirrors.iter().zip(["HTTP 404", "checksum mismatch", "connection refused"]) {
        assert!(msg.contains(&format!("{m}{NAME}: {why}")), "{msg}");
    }
    assert_eq!(std::fs::read(dir.path().join(NAME)).unwrap(), bad);
    assert_eq!(listing(dir.path()), vec![NAME.to_string()]);
}

#[test]
fn fetch_dataset_with_mismatching_override_fails_clearly_and_writes_nothing() {
    let files: HashMap<String, Vec<u8>> = DatasetKind::Mnist
        .files()
        .iter()
        .map(|f| {
            let bytes = if f.stem.contains("images") { images_fixture(3) } else { labels_fixture() };
            (f.gz_name(), bytes)
        })
        .collect();
    let server = Server::start(files);
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("mnist");
    let served = md5_hex(&images_fixture(3));
    for kind in DatasetKind::ALL {
        let mirrors = [server.mirror("good"), server.mirror("missing")];
        let err = fetch_dataset(kind, &dest, Some(&mirrors), &opts()).unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}\n");
        let first = &kind.files()[0];
        match &err {
            FetchError::AllMirrorsFailed { file, dataset, attempts, .. } => {
                assert_eq!(file, &first.gz_name());
                assert_eq!(*dataset, Some(kind));
                assert_eq!(
                    attempts[0].failure,
                    MirrorFailure::ChecksumMismatch { expected: first.gz_md5.to_string(), got: served.clone() }
                );
                assert_eq!(attempts[1].failure, MirrorFailure::Status(404));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains(first.gz_md5), "{msg}");
        match kind {
            DatasetKind::Mnist => assert!(msg.contains("lenet data import"), "{msg}"),
            DatasetKind::FashionMnist => assert!(msg.contains("apt-get install dataset-fashion-mnist"), "{msg}"),
        }
        assert!(listing(&dest).is_empty(), "left behind: {:?}", listing(&dest));
    }
}

#[test]
fn no_mirrors_and_bad_names_are_errors_without_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_files(&[RemoteFile::new(NAME, "00")], &[], dir.path(), &opts()).unwrap_err();
    assert!(matches!(err, FetchError::NoMirrors { .. }), "{err:?}");
    assert!(err.to_string().contains(NAME));
    let err =
        fetch_files(&[RemoteFile::new("../escape.gz", "00")], &[closed_mirror()], dir.path(), &opts()).unwrap_err();
    assert!(matches!(err, FetchError::BadName { .. }), "{err:?}");
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn mirror_without_trailing_slash_works() {
    let bytes = labels_fixture();
    let server = Server::with(NAME, bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let mirror = server.mirror("good").trim_end_matches('/').to_string();
    let report = fetch_files(&[RemoteFile::new(NAME, md5_hex(&bytes))], &[mirror], dir.path(), &opts()).unwrap();
    assert!(report.files[0].downloaded());
}

#[test]
fn dataset_remote_files_use_published_checksums() {
    let files = RemoteFile::for_dataset(DatasetKind::Mnist);
    assert_eq!(files.len(), 4);
    assert_eq!(files[0], RemoteFile::new("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"));
    assert_eq!(files[3].name, "t10k-labels-idx1-ubyte.gz");
    let d = FetchOptions::default();
    assert!(d.progress);
    assert_eq!((d.connect_timeout, d.read_timeout), (Duration::from_secs(15), Duration::from_secs(60)));
}

/// Debian's Fashion-MNIST is recompressed (other .gz MD5s, same content): a
/// folder holding it counts as complete, with no request made. Fails where the
/// package is not installed (scripts/setup-data installs it), unless
/// LENET_SKIP_REAL_DATA=1 says to skip the tests that need real data.
#[test]
fn debian_fashion_mnist_copy_counts_as_present() {
    let src = Path::new(lenet::data::locate::DEBIAN_FASHION_DIR);
    if !lenet::data::dataset::is_complete(src, DatasetKind::FashionMnist) {
        if std::env::var("LENET_SKIP_REAL_DATA").is_ok_and(|v| v == "1") {
            eprintln!("skipping: {} is not installed and LENET_SKIP_REAL_DATA=1", src.display());
            return;
        }
        panic!(
            "{} holds no complete Fashion-MNIST: run scripts/setup-data (Debian's dataset-fashion-mnist), \
             or set LENET_SKIP_REAL_DATA=1 to skip",
            src.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for f in DatasetKind::FashionMnist.files() {
        std::fs::copy(src.join(f.gz_name()), dir.path().join(f.gz_name())).unwrap();
    }
    let report = fetch_dataset(DatasetKind::FashionMnist, dir.path(), Some(&[closed_mirror()]), &opts()).unwrap();
    assert!(report.files.iter().all(|f| f.outcome == Outcome::AlreadyPresentEquivalent), "{report:?}");
    assert_eq!(report.counts.map(|c| (c.train, c.test)), Some((60000, 10000)));
    eprintln!("{report}");
    assert!(report.to_string().contains("60000 training and 10000 test examples"), "{report}");
}
