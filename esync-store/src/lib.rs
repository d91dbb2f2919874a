//! Durable state of esync-rs participants.
//!
//! - [`journal`]: the [`JournalStore`] trait (one record, replaced
//!   atomically) and its in-memory implementation [`MemJournal`]. No I/O.
//! - [`record`]: the self-checking record layout journals are written in
//!   (`MAGIC || layout || format version || body || SHA-256`), so a torn or
//!   corrupted record is detected and a record of an unknown format version
//!   is refused. No I/O.
//! - [`file`](mod@file): the file I/O adapters: [`FileJournal`], and the atomic
//!   replace ([`file::atomic_write`]) and bounded read they use.
//! - `trust` (feature `trust`): `trust::DirTrustStore`, the file-backed
//!   `esync_uptane::store::TrustStore` of the Agent binary and the TUF
//!   client.
//!
//! The Agent's journal (`esync_agent::journal`) and the Client's campaign
//! journal are the consumers of the journal store; each gives its records
//! its own magic and format version (separate from the wire protocol's
//! version).
#![forbid(unsafe_code)]

pub mod error;
pub mod file;
pub mod journal;
pub mod record;
#[cfg(feature = "trust")]
pub mod trust;

pub use error::{Corruption, StoreError};
pub use file::FileJournal;
pub use journal::{JournalStore, MemJournal};
