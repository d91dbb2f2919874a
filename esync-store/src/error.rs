//! Typed storage errors: "not found" is not an error (`None` or a fresh
//! state), "unreadable" keeps the I/O error kind, "corrupt" says what is
//! wrong with the bytes.

use std::fmt;
use std::io;

/// Why stored bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The record does not start with the expected magic.
    #[error("bad magic")]
    BadMagic,
    /// The record layout byte is not one this code knows.
    #[error("unknown record layout {0}")]
    UnknownLayout(u8),
    /// The checksum differs (torn or corrupted write).
    #[error("checksum mismatch")]
    Checksum,
    /// Longer than the bound (checked before the bytes are kept).
    #[error("longer than {max} bytes")]
    TooLong {
        /// The bound.
        max: u64,
    },
    /// A format version newer (or other) than the ones this code reads.
    #[error("format version {found} is not supported (this build reads {supported})")]
    UnknownVersion {
        /// Version in the record.
        found: u16,
        /// Versions this build reads, e.g. `"1"` or `"1..=2"`.
        supported: String,
    },
    /// The body does not decode as the format says.
    #[error("malformed body: {0}")]
    Body(String),
}

/// A store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Power was lost while storing (fault injection or host signal).
    #[error("power lost while writing the journal")]
    PowerLoss,
    /// The stored state exists but cannot be read.
    #[error("{what}: cannot read: {message}")]
    Unreadable {
        /// What was read (a path, or a store's name).
        what: String,
        /// The I/O error's kind.
        kind: io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// The state could not be written (the old state is still stored).
    #[error("{what}: cannot write: {message}")]
    Unwritable {
        /// What was written.
        what: String,
        /// The I/O error's kind.
        kind: io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// The stored bytes are corrupt, or of a format this build does not read.
    #[error("{what}: corrupt: {reason}")]
    Corrupt {
        /// What was read.
        what: String,
        /// What is wrong.
        reason: Corruption,
    },
}

impl StoreError {
    /// An [`StoreError::Unreadable`] for `what` from an I/O error.
    pub fn unreadable(what: impl fmt::Display, e: &io::Error) -> Self {
        StoreError::Unreadable {
            what: what.to_string(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// An [`StoreError::Unwritable`] for `what` from an I/O error.
    pub fn unwritable(what: impl fmt::Display, e: &io::Error) -> Self {
        StoreError::Unwritable {
            what: what.to_string(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// A [`StoreError::Corrupt`] for `what`.
    pub fn corrupt(what: impl fmt::Display, reason: Corruption) -> Self {
        StoreError::Corrupt {
            what: what.to_string(),
            reason,
        }
    }
}
