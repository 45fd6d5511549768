//! File-system primitives every write that matters goes through: atomic
//! replacement (temporary file, fsync, rename, directory fsync), the directory
//! lock, and telling a full disk from other errors.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The [`StoreError::Io`] of an operation on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync the
/// directory. A power cut leaves the old content or the new, never a torn file;
/// on any error the temporary file is removed and the old content stays.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_mode(path, bytes, 0o666)
}

/// [`write_atomic`] of a file only its owner may read (mode 0600: secrets).
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_mode(path, bytes, 0o600)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    write_atomic_with(path, mode, |f| f.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes into the temporary file (a file too
/// large to hold in memory, written as it is made), with permissions `mode`.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            write(&mut f)?;
            f.sync_all()
        })
        .map_err(io(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if let Err(e) = written {
        // A full disk or a failed rename must not leave the temporary file behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// The name of the lock file in a locked directory.
pub const LOCK: &str = "lock";

/// Take the exclusive lock of `dir` (its file [`LOCK`], created if needed), held
/// while the returned file is open. Errors: [`StoreError::Locked`] when another
/// process holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let lock_path = dir.join(LOCK);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io(&lock_path)(e)),
    }
}

/// Whether another process holds the lock of `dir` now. The lock file is not
/// created when missing (then nobody holds it): a `check-config` run as root
/// must not leave a file the daemon's user cannot open.
pub fn is_locked(dir: &Path) -> bool {
    let Ok(lock) = fs::OpenOptions::new().write(true).open(dir.join(LOCK)) else {
        return false;
    };
    matches!(lock.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// Whether an error is "no space left on device" (ENOSPC) or "quota exceeded".
pub fn is_disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Io { source, .. } => {
            matches!(source.raw_os_error(), Some(28) | Some(122))
                || source.kind() == std::io::ErrorKind::StorageFull
        }
        _ => false,
    }
}

/// fsync a directory, so the renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Remove `path`; "not there" is success.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Whether `path` is certainly absent (not merely unreadable).
pub(crate) fn is_gone(path: PathBuf) -> bool {
    fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
