//! Persistence of the trusted state.
//!
//! The verifier writes every metadata file it accepts (and the last time it
//! saw) through [`TrustStore`] as soon as it accepts it, and reads it back
//! when opened, so versions never go backwards across restarts.

use std::collections::BTreeMap;

use crate::time::UnixTime;

/// A trust store failure. "Not found" is not one: a store that holds
/// nothing loads as an empty [`StoredState`] (not provisioned). A store that
/// exists but cannot be read, or holds bytes that do not parse, is an error,
/// so the verifier never opens without the version and time floors it
/// persisted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustStoreError {
    /// The stored state exists but cannot be read.
    #[error("{what}: cannot read: {message}")]
    Unreadable {
        /// What was read (a path, or a store's name).
        what: String,
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// The state could not be written.
    #[error("{what}: cannot write: {message}")]
    Unwritable {
        /// What was written.
        what: String,
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// The stored bytes are corrupt (e.g. an unparsable time floor).
    #[error("{what}: corrupt: {reason}")]
    Corrupt {
        /// What was read.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a trust store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Bytes of the latest trusted root (the trust anchor; required).
    pub root: Vec<u8>,
    /// Bytes of other trusted metadata by role name: `timestamp`,
    /// `snapshot`, `targets` and delegated role names.
    pub roles: BTreeMap<String, Vec<u8>>,
    /// Last time seen.
    pub last_time: Option<UnixTime>,
}

/// Storage of the trusted state (files, flash, a database...).
pub trait TrustStore {
    /// Reads the whole state. An empty `root` means "not provisioned".
    fn load(&mut self) -> Result<StoredState, TrustStoreError>;
    /// Stores the bytes of a verified role (`root` replaces the trust anchor).
    fn store_role(&mut self, role: &str, bytes: &[u8]) -> Result<(), TrustStoreError>;
    /// Forgets a role (after a key rotation, for fast-forward recovery).
    fn remove_role(&mut self, role: &str) -> Result<(), TrustStoreError>;
    /// Stores the last time seen.
    fn store_time(&mut self, now: UnixTime) -> Result<(), TrustStoreError>;
}

/// An in-memory [`TrustStore`] (tests, and hosts that persist it themselves
/// through [`MemoryStore::state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    state: StoredState,
}

impl MemoryStore {
    /// A store trusting `root` (the provisioned root metadata bytes).
    pub fn new(root: Vec<u8>) -> Self {
        MemoryStore {
            state: StoredState {
                root,
                ..StoredState::default()
            },
        }
    }

    /// A store from a previously saved state.
    pub fn from_state(state: StoredState) -> Self {
        MemoryStore { state }
    }

    /// The state held.
    pub fn state(&self) -> &StoredState {
        &self.state
    }
}

impl TrustStore for MemoryStore {
    fn load(&mut self) -> Result<StoredState, TrustStoreError> {
        Ok(self.state.clone())
    }
    fn store_role(&mut self, role: &str, bytes: &[u8]) -> Result<(), TrustStoreError> {
        if role == "root" {
            self.state.root = bytes.to_vec();
        } else {
            self.state.roles.insert(role.to_string(), bytes.to_vec());
        }
        Ok(())
    }
    fn remove_role(&mut self, role: &str) -> Result<(), TrustStoreError> {
        self.state.roles.remove(role);
        Ok(())
    }
    fn store_time(&mut self, now: UnixTime) -> Result<(), TrustStoreError> {
        self.state.last_time = Some(now);
        Ok(())
    }
}

impl<S: TrustStore + ?Sized> TrustStore for &mut S {
    fn load(&mut self) -> Result<StoredState, TrustStoreError> {
        (**self).load()
    }
    fn store_role(&mut self, role: &str, bytes: &[u8]) -> Result<(), TrustStoreError> {
        (**self).store_role(role, bytes)
    }
    fn remove_role(&mut self, role: &str) -> Result<(), TrustStoreError> {
        (**self).remove_role(role)
    }
    fn store_time(&mut self, now: UnixTime) -> Result<(), TrustStoreError> {
        (**self).store_time(now)
    }
}
