//! The journal store: durable storage of one record replaced atomically.
//! The trait and [`MemJournal`] do no I/O; [`crate::file::FileJournal`] is
//! the file adapter.

use crate::error::StoreError;

/// Durable storage of one record that is replaced atomically.
pub trait JournalStore {
    /// The stored record; `Ok(None)` when nothing was ever stored.
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the record. When this returns `Ok` the record is durable;
    /// after a power loss during the call the old or the new record is
    /// stored, never a mix.
    fn store(&mut self, record: &[u8]) -> Result<(), StoreError>;
}

/// A journal kept in memory (tests, or hosts with battery-backed RAM). It
/// survives dropping its user, which is what a power cut is in tests.
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

impl<S: JournalStore + ?Sized> JournalStore for &mut S {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).load()
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StoreError> {
        (**self).store(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_journal_replaces_and_counts() {
        let mut j = MemJournal::new();
        assert_eq!(j.load(), Ok(None));
        j.store(b"one").expect("mem store");
        j.store(b"two").expect("mem store");
        assert_eq!(j.load(), Ok(Some(b"two".to_vec())));
        assert_eq!(j.stores, 2);
    }
}
