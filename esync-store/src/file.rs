//! File I/O adapters: atomic replace, bounded reads, and [`FileJournal`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{Corruption, StoreError};
use crate::journal::JournalStore;

/// Default bound of a [`FileJournal`] record, in bytes.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// Replaces `dir/name` with `bytes` atomically: writes `dir/name.tmp`,
/// fsyncs it, renames it over `dir/name`, then fsyncs `dir` so the rename
/// itself is durable. After a power loss the file holds either the old or
/// the new bytes.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &dst)?;
    sync_dir(dir)
}

/// fsyncs a directory (makes renames and creations in it durable).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads at most `max + 1` bytes of `path`; `Ok(None)` if it does not
/// exist. A result longer than `max` means the file is over the bound (the
/// rest was not read).
pub fn read_at_most(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// Reads `path` if it exists, refusing files larger than `max` bytes (an
/// [`io::ErrorKind::InvalidData`] error).
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    match read_at_most(path, max)? {
        Some(b) if b.len() as u64 > max => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is more than {max} bytes", path.display()),
        )),
        other => Ok(other),
    }
}

/// A journal in a file, replaced with [`atomic_write`].
#[derive(Clone, Debug)]
pub struct FileJournal {
    dir: PathBuf,
    name: String,
    max: u64,
}

impl FileJournal {
    /// A journal stored as `dir/name` (the directory must exist), of at most
    /// [`DEFAULT_MAX_RECORD_BYTES`].
    pub fn new(dir: &Path, name: &str) -> Self {
        FileJournal {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            max: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// The same journal with another bound on the record's length.
    pub fn with_max_bytes(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// Path of the journal file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

impl JournalStore for FileJournal {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path();
        match read_at_most(&path, self.max) {
            Ok(Some(b)) if b.len() as u64 > self.max => Err(StoreError::corrupt(
                path.display(),
                Corruption::TooLong { max: self.max },
            )),
            Ok(r) => Ok(r),
            Err(e) => Err(StoreError::unreadable(path.display(), &e)),
        }
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StoreError> {
        atomic_write(&self.dir, &self.name, record)
            .map_err(|e| StoreError::unwritable(self.path().display(), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_journal_round_trip_and_absent_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = FileJournal::new(dir.path(), "j");
        assert_eq!(j.load(), Ok(None));
        j.store(b"first").expect("store");
        j.store(b"second").expect("store");
        assert_eq!(j.load(), Ok(Some(b"second".to_vec())));
        assert!(!dir.path().join("j.tmp").exists());
    }

    #[test]
    fn over_the_bound_is_corrupt_not_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("j"), [0u8; 11]).expect("write");
        let mut j = FileJournal::new(dir.path(), "j").with_max_bytes(10);
        assert!(matches!(
            j.load(),
            Err(StoreError::Corrupt {
                reason: Corruption::TooLong { max: 10 },
                ..
            })
        ));
    }

    #[test]
    fn unreadable_keeps_the_error_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: reading it fails.
        fs::create_dir(dir.path().join("j")).expect("mkdir");
        let mut j = FileJournal::new(dir.path(), "j");
        match j.load() {
            Err(StoreError::Unreadable { kind, .. }) => assert_ne!(kind, io::ErrorKind::NotFound),
            other => panic!("expected unreadable, got {other:?}"),
        }
        assert!(matches!(j.store(b"x"), Err(StoreError::Unwritable { .. })));
    }
}
