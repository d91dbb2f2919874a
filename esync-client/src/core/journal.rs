//! The Client's campaign journal: its whole persistent state as one sealed
//! record, replaced atomically through an [`esync_store`] [`JournalStore`]
//! (the same mechanism and record layout as the Agent's journal).
//!
//! # Record format
//!
//! An [`esync_store::record`] versioned record:
//! `"ESCJ" || 0x02 || JOURNAL_FORMAT (u16 LE) || body || SHA-256`.
//!
//! - **1**: body = postcard of [`ClientJournal`].
//!
//! A record of another format is refused with
//! [`Corruption::UnknownVersion`], never read as an empty journal. The
//! golden vector in `esync-client/tests/orchestrate_journal.rs` fails on
//! any change of the encoding.

use serde::{Deserialize, Serialize};

pub use esync_store::journal::{JournalStore, MemJournal};
pub use esync_store::{Corruption, StoreError};

use crate::core::orchestrate::{Campaign, PackageReport};

/// Largest journal record accepted, in bytes.
pub const MAX_JOURNAL_BYTES: usize = 8 * 1024 * 1024;
/// Magic of the Client's journal record.
pub const JOURNAL_MAGIC: &[u8; 4] = b"ESCJ";
/// Journal format version this build writes.
pub const JOURNAL_FORMAT: u16 = 1;

const WHAT: &str = "client journal";

/// Everything the Client keeps across a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientJournal {
    /// Incremented at every write (diagnostics; ids derive from it).
    pub generation: u64,
    /// The running campaign.
    pub campaign: Option<Campaign>,
    /// Final package reports not yet acknowledged by the host
    /// ([`crate::core::Client::report_delivered`]).
    pub outbox: Vec<PackageReport>,
}

/// Encodes `state` as a record of format [`JOURNAL_FORMAT`].
pub fn encode(state: &ClientJournal) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_allocvec(state)?;
    Ok(esync_store::record::seal(
        JOURNAL_MAGIC,
        JOURNAL_FORMAT,
        &body,
    ))
}

/// Decodes a record, refusing records over [`MAX_JOURNAL_BYTES`] and of
/// unknown formats.
pub fn decode(bytes: &[u8]) -> Result<ClientJournal, StoreError> {
    let record = esync_store::record::open(JOURNAL_MAGIC, bytes, MAX_JOURNAL_BYTES)
        .map_err(|reason| StoreError::corrupt(WHAT, reason))?;
    match record.format {
        Some(1) => postcard::from_bytes(record.body)
            .map_err(|e| StoreError::corrupt(WHAT, Corruption::Body(e.to_string()))),
        found => Err(StoreError::corrupt(
            WHAT,
            Corruption::UnknownVersion {
                found: found.unwrap_or(0),
                supported: "1".into(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_format() {
        let st = ClientJournal {
            generation: 3,
            ..ClientJournal::default()
        };
        let r = encode(&st).expect("encode");
        assert_eq!(&r[..7], b"ESCJ\x02\x01\x00");
        assert_eq!(decode(&r).expect("decode"), st);
        let body = postcard::to_allocvec(&st).expect("encode");
        let other = esync_store::record::seal(JOURNAL_MAGIC, 2, &body);
        assert!(matches!(
            decode(&other),
            Err(StoreError::Corrupt {
                reason: Corruption::UnknownVersion { found: 2, .. },
                ..
            })
        ));
    }
}
