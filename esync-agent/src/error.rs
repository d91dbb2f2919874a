//! Errors that halt the Agent.

use thiserror::Error;

use crate::config::ConfigError;
use crate::journal::StoreError;
use crate::seal::SealError;

/// The Agent cannot continue: the host must drop it and, after restarting
/// (or repairing storage), call [`crate::Agent::recover`]. Update failures
/// are not errors: they are reported to the Client in messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Power was lost (device or journal).
    #[error("power lost during {0}")]
    PowerLoss(&'static str),
    /// The journal could not be written or read.
    #[error("journal: {0}")]
    Journal(StoreError),
    /// The stored journal is corrupt (not a torn write: the store is atomic).
    #[error("journal: {0}")]
    JournalCorrupt(#[from] SealError),
    /// The journal could not be encoded.
    #[error("journal encoding: {0}")]
    Encode(#[source] postcard::Error),
    /// The encoded journal exceeds what a journal may hold.
    #[error("journal of {len} bytes exceeds {max}")]
    JournalTooLarge {
        /// Encoded length.
        len: usize,
        /// The maximum ([`crate::journal::MAX_JOURNAL_BYTES`]).
        max: usize,
    },
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The device reports no running image, and the Agent recorded none
    /// to report a failed attempt against.
    #[error("device: the device reports no running image")]
    NoRunningImage,
}
