//! Typed errors that halt the Agent: a caller branches on the variant, not
//! on message text.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use common::*;
use esync_agent::journal::MAX_JOURNAL_BYTES;
use esync_agent::target::{DirectedTarget, EcuIdentity, MetadataVerifier};
use esync_agent::AgentError;
use esync_proto::message::*;

/// Returns a target whose name alone exceeds what a journal may hold.
struct Oversized(DirectedTarget);

impl MetadataVerifier for Oversized {
    fn level(&self) -> VerificationLevel {
        VerificationLevel::Partial
    }

    fn verify(
        &mut self,
        _metadata: &UpdateMetadata,
        _ecu: &EcuIdentity,
        _now_ms: u64,
    ) -> Result<DirectedTarget, Failure> {
        Ok(self.0.clone())
    }
}

#[test]
fn a_journal_too_large_to_store_is_a_typed_halt() {
    let mut rig = mem_rig(&image(1, 9_000));
    let mut u = Update::full(1, "2.0.0", 2, &image(2, 11_000), 1024);
    u.target.target_name = "x".repeat(MAX_JOURNAL_BYTES + 1);
    rig.verifier = Box::new(Oversized(u.target.clone()));
    match rig.send(u.metadata()) {
        Err(AgentError::JournalTooLarge { len, max }) => {
            assert_eq!(max, MAX_JOURNAL_BYTES);
            assert!(len > max, "{len}");
        }
        other => panic!("{other:?}"),
    }
}
