//! The Agent's journal: its whole persistent state as one small sealed
//! record, replaced atomically through a [`JournalStore`] at every step.
//!
//! The Agent writes the journal *before* each device operation that moves
//! the update forward and *before* it emits a final report, so after a power
//! loss at any instant [`crate::Agent::recover`] finds a step that is either
//! still to be done or done, and device operations are safe to repeat (see
//! [`crate::device`]). Final reports stay in the journal's outbox until the
//! host says they were sent ([`crate::Agent::mark_sent`]).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::fsutil;

/// Largest journal record accepted, in bytes.
pub const MAX_JOURNAL_BYTES: usize = 4 * 1024 * 1024;
/// Magic of the journal record.
pub const JOURNAL_MAGIC: &[u8; 4] = b"ESAJ";

/// Storage failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Power was lost while storing (fault injection or host signal).
    #[error("power lost while writing the journal")]
    PowerLoss,
    /// I/O error.
    #[error("journal storage: {0}")]
    Io(String),
}

/// Durable storage of one record that is replaced atomically.
pub trait JournalStore {
    /// The stored record, if any.
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the record. When this returns `Ok` the record is durable;
    /// after a power loss during the call the old or the new record is
    /// stored, never a mix.
    fn store(&mut self, record: &[u8]) -> Result<(), StoreError>;
}

/// A journal kept in memory (tests, or hosts with battery-backed RAM). It
/// survives dropping the Agent, which is what a power cut is in tests.
#[derive(Clone, Debug, Default)]
pub struct MemJournal {
    record: Option<Vec<u8>>,
    /// Number of successful stores.
    pub stores: u64,
}

impl MemJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored record.
    pub fn record(&self) -> Option<&[u8]> {
        self.record.as_deref()
    }
}

impl JournalStore for MemJournal {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.record.clone())
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.record = Some(record.to_vec());
        self.stores += 1;
        Ok(())
    }
}

/// A journal in a file, replaced with write-temporary, fsync, rename, fsync
/// of the directory.
#[derive(Clone, Debug)]
pub struct FileJournal {
    dir: PathBuf,
    name: String,
}

impl FileJournal {
    /// A journal stored as `dir/name` (the directory must exist).
    pub fn new(dir: &Path, name: &str) -> Self {
        FileJournal {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// Path of the journal file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

impl JournalStore for FileJournal {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        fsutil::read_bounded(&self.path(), MAX_JOURNAL_BYTES as u64)
            .map_err(|e| StoreError::Io(e.to_string()))
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StoreError> {
        fsutil::atomic_write(&self.dir, &self.name, record)
            .map_err(|e| StoreError::Io(e.to_string()))
    }
}

impl<S: JournalStore + ?Sized> JournalStore for &mut S {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).load()
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StoreError> {
        (**self).store(record)
    }
}
