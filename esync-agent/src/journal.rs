//! The Agent's journal: its whole persistent state as one small sealed
//! record, replaced atomically through a [`JournalStore`] at every step.
//!
//! The Agent writes the journal *before* each device operation that moves
//! the update forward and *before* it emits a final report, so after a power
//! loss at any instant [`crate::Agent::recover`] finds a step that is either
//! still to be done or done, and device operations are safe to repeat (see
//! [`crate::device`]). Final reports stay in the journal's outbox until the
//! host says they were sent ([`crate::Agent::mark_sent`]).
//!
//! The store itself (trait, in-memory and file implementations, typed
//! errors) is [`esync_store`]'s, re-exported here.
//!
//! # Record format
//!
//! A journal record is an [`esync_store::record`] versioned record:
//! `"ESAJ" || 0x02 || JOURNAL_FORMAT (u16 LE) || body || SHA-256`. The
//! journal format version is the journal's own, separate from the wire
//! protocol's ([`esync_proto::envelope::PROTOCOL_VERSION`]): a protocol
//! change that alters the encoding of a type the journal holds must bump
//! [`JOURNAL_FORMAT`] and keep decoding the older formats here, so a device
//! whose Agent was updated still recovers from the journal the old Agent
//! wrote. The golden vectors in `esync-agent/tests/vectors/` fail on any
//! change.
//!
//! Formats:
//!
//! - **1**: body = postcard of [`JournalState`].
//! - Unversioned records (layout byte `0x01`, written before journal
//!   records had their own version: `"ESAJ" || 0x01 || body || SHA-256(body)`)
//!   are recognised by that layout byte and read as format 1, which is what
//!   they hold.
//!
//! A record of another format (a newer Agent's) is refused with
//! [`Corruption::UnknownVersion`], never read as an empty journal.

use crate::state::JournalState;

pub use esync_store::file::FileJournal;
pub use esync_store::journal::{JournalStore, MemJournal};
pub use esync_store::{Corruption, StoreError};

/// Largest journal record accepted, in bytes.
pub const MAX_JOURNAL_BYTES: usize = 4 * 1024 * 1024;
/// Magic of the journal record.
pub const JOURNAL_MAGIC: &[u8; 4] = b"ESAJ";
/// Journal format version this build writes.
pub const JOURNAL_FORMAT: u16 = 1;

const WHAT: &str = "journal";

/// Encodes `state` as a journal record of format [`JOURNAL_FORMAT`].
pub fn encode_state(state: &JournalState) -> Result<Vec<u8>, postcard::Error> {
    let body = postcard::to_allocvec(state)?;
    Ok(esync_store::record::seal(
        JOURNAL_MAGIC,
        JOURNAL_FORMAT,
        &body,
    ))
}

/// Decodes a journal record of any format this build reads (see the
/// [module docs](self)), refusing records over [`MAX_JOURNAL_BYTES`].
pub fn decode_state(bytes: &[u8]) -> Result<JournalState, StoreError> {
    let record = esync_store::record::open(JOURNAL_MAGIC, bytes, MAX_JOURNAL_BYTES)
        .map_err(|reason| StoreError::corrupt(WHAT, reason))?;
    match record.format {
        None | Some(1) => postcard::from_bytes(record.body)
            .map_err(|e| StoreError::corrupt(WHAT, Corruption::Body(e.to_string()))),
        Some(found) => Err(StoreError::corrupt(
            WHAT,
            Corruption::UnknownVersion {
                found,
                supported: "1 (and unversioned records)".into(),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_writes_format_1() {
        let st = JournalState {
            generation: 7,
            clock_ms: 99,
            ..JournalState::default()
        };
        let r = encode_state(&st).expect("encode");
        assert_eq!(&r[..7], b"ESAJ\x02\x01\x00");
        assert_eq!(decode_state(&r), Ok(st));
    }

    #[test]
    fn unknown_format_is_refused() {
        let body = postcard::to_allocvec(&JournalState::default()).expect("encode");
        let r = esync_store::record::seal(JOURNAL_MAGIC, JOURNAL_FORMAT + 1, &body);
        assert!(matches!(
            decode_state(&r),
            Err(StoreError::Corrupt {
                reason: Corruption::UnknownVersion { found: 2, .. },
                ..
            })
        ));
    }
}
