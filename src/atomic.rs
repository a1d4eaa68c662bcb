//! Atomic file writes: data goes to a temp file in the destination's folder, is
//! flushed to disk, then renamed over the destination. A crash, a full disk or a
//! failed check never leaves a half-written file under the final name, and never
//! destroys the file that was there before.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// An error of an atomic write, naming the destination (not the temp file) once.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {cause}{}", path.display(), consequence(cause))]
pub struct WriteError {
    pub path: PathBuf,
    /// Not `source`: the message says it already, and a chain would repeat it.
    pub cause: io::Error,
}

impl WriteError {
    pub fn new(path: &Path, cause: io::Error) -> Self {
        Self { path: path.to_path_buf(), cause: plain(cause) }
    }
}

/// The error without tempfile's ` at path "<temp file>"`, a file that is gone by the
/// time anyone reads the message.
fn plain(err: io::Error) -> io::Error {
    let text = err.get_ref().map(|e| e.to_string());
    match text.as_deref().and_then(|t| t.split_once(" at path ")) {
        Some((cause, _)) => io::Error::new(err.kind(), cause.to_string()),
        None => err,
    }
}

fn consequence(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::StorageFull => ": the disk is full; the file there before, if any, is as it was",
        io::ErrorKind::QuotaExceeded => ": the disk quota is used up; the file there before, if any, is as it was",
        _ => "",
    }
}

/// A temp file beside `dest` that becomes `dest` only on [`AtomicFile::commit`].
/// Dropping it without committing deletes the temp file.
pub struct AtomicFile {
    dest: PathBuf,
    writer: BufWriter<NamedTempFile>,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> Result<Self, WriteError> {
        let err = |source| WriteError::new(dest, source);
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // Temp files are created owner-only; ours become the user's files, so
        // create them as `fs::write` would (0o666 less the umask)…
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let tmp = builder.tempfile_in(&dir).map_err(err)?;
        // …and a replaced file keeps its own mode.
        if let Ok(old) = fs::metadata(dest) {
            tmp.as_file().set_permissions(old.permissions()).map_err(err)?;
        }
        Ok(Self { dest: dest.to_path_buf(), writer: BufWriter::with_capacity(1 << 20, tmp) })
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temp file's current path (for checks run before committing).
    pub fn temp_path(&self) -> &Path {
        self.writer.get_ref().path()
    }

    /// Flush, fsync and rename over the destination.
    pub fn commit(self) -> Result<(), WriteError> {
        let dest = self.dest;
        let err = |source| WriteError::new(&dest, source);
        let tmp = self.writer.into_inner().map_err(|e| err(e.into_error()))?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&dest).map_err(|e| err(e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Write `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut file = AtomicFile::create(dest)?;
    file.write_all(bytes).map_err(|source| WriteError::new(dest, source))?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_file_leaves_old_content_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.bin");
        write_atomic(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"new but abandoned").unwrap();
        }
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&dest, b"new").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_usual_mode_and_replaced_files_keep_theirs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let (plain, ours) = (dir.path().join("plain"), dir.path().join("ours"));
        fs::write(&plain, b"x").unwrap();
        write_atomic(&ours, b"x").unwrap();
        assert_eq!(mode(&ours), mode(&plain), "same mode as fs::write gives");
        fs::set_permissions(&ours, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&ours, b"y").unwrap();
        assert_eq!(mode(&ours), 0o640);
    }
}
