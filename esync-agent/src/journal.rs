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
//! - **2**: body = postcard of [`JournalState`], whose
//!   [`crate::state::UpdateRecord`] ends with `staged_image_offset` (where
//!   Prepare put a reconstructed delta image in staging).
//! - **1**: the same without `staged_image_offset`; read into the format-1
//!   types below and migrated with the offset unset (an Install from such a
//!   journal reconstructs the delta itself, as the Agent that wrote it did).
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
pub const JOURNAL_FORMAT: u16 = 2;

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
        None | Some(1) => postcard::from_bytes::<v1::JournalState>(record.body)
            .map(JournalState::from)
            .map_err(|e| StoreError::corrupt(WHAT, Corruption::Body(e.to_string()))),
        Some(2) => postcard::from_bytes(record.body)
            .map_err(|e| StoreError::corrupt(WHAT, Corruption::Body(e.to_string()))),
        Some(found) => Err(StoreError::corrupt(
            WHAT,
            Corruption::UnknownVersion {
                found,
                supported: "1, 2 (and unversioned records)".into(),
            },
        )),
    }
}

/// The types of journal format 1 (and of unversioned records), for reading
/// them only.
mod v1 {
    use esync_proto::id::{CorrelationId, UpdateId};
    use esync_proto::message::{Decision, Failure, ImageEncoding, InstalledImage, Payload};
    use serde::Deserialize;

    use crate::state::{self, OutboxEntry, Stage, TransferRecord};
    use crate::target::DirectedTarget;

    #[derive(Deserialize)]
    pub(super) struct UpdateRecord {
        update_id: UpdateId,
        target: Result<DirectedTarget, Failure>,
        encoding: Option<ImageEncoding>,
        decision: Option<Decision>,
        transfer: Option<TransferRecord>,
        stage: Stage,
        attempts: u32,
        activations: u32,
        await_confirm: bool,
        install_correlation: CorrelationId,
        confirm_correlation: CorrelationId,
        confirm_deadline_ms: Option<u64>,
        from: Option<InstalledImage>,
        last_report: Option<Payload>,
    }

    #[derive(Deserialize)]
    pub(super) struct JournalState {
        generation: u64,
        clock_ms: u64,
        update: Option<UpdateRecord>,
        outbox: Vec<OutboxEntry>,
        next_outbox_id: u64,
    }

    impl From<UpdateRecord> for state::UpdateRecord {
        fn from(r: UpdateRecord) -> Self {
            state::UpdateRecord {
                update_id: r.update_id,
                target: r.target,
                encoding: r.encoding,
                decision: r.decision,
                transfer: r.transfer,
                stage: r.stage,
                attempts: r.attempts,
                activations: r.activations,
                await_confirm: r.await_confirm,
                install_correlation: r.install_correlation,
                confirm_correlation: r.confirm_correlation,
                confirm_deadline_ms: r.confirm_deadline_ms,
                from: r.from,
                last_report: r.last_report,
                staged_image_offset: None,
            }
        }
    }

    impl From<JournalState> for state::JournalState {
        fn from(j: JournalState) -> Self {
            state::JournalState {
                generation: j.generation,
                clock_ms: j.clock_ms,
                update: j.update.map(Into::into),
                outbox: j.outbox,
                next_outbox_id: j.next_outbox_id,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_writes_format_2() {
        let st = JournalState {
            generation: 7,
            clock_ms: 99,
            ..JournalState::default()
        };
        let r = encode_state(&st).expect("encode");
        assert_eq!(&r[..7], b"ESAJ\x02\x02\x00");
        assert_eq!(decode_state(&r), Ok(st));
    }

    #[test]
    fn unknown_format_is_refused() {
        let body = postcard::to_allocvec(&JournalState::default()).expect("encode");
        let r = esync_store::record::seal(JOURNAL_MAGIC, JOURNAL_FORMAT + 1, &body);
        assert!(matches!(
            decode_state(&r),
            Err(StoreError::Corrupt {
                reason: Corruption::UnknownVersion { found: 3, .. },
                ..
            })
        ));
    }
}
