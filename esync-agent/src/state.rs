//! The Agent's persistent state: what the journal holds.

use std::sync::Arc;

use esync_proto::id::{CorrelationId, Sha256Digest, TransferId, UpdateId};
use esync_proto::message::{
    AgentState, Decision, Failure, ImageEncoding, InstalledImage, Payload, RollbackTarget,
};
use serde::{Deserialize, Serialize};

use crate::target::DirectedTarget;

/// Where an update stands. Every value is a point the Agent can resume
/// from after a power loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Metadata received (verified, or refused: see [`UpdateRecord::target`]).
    Verified,
    /// Download consented; no transfer yet.
    Consented,
    /// Receiving chunks.
    Receiving,
    /// Every chunk received and verified.
    Received,
    /// Verified and (for a delta) reconstructed into staging, its hash
    /// checked ([`UpdateRecord::staged_image_offset`]): READY.
    Prepared {
        /// SHA-256 of the image to install.
        sha256: Sha256Digest,
    },
    /// Install accepted; pre-install next.
    PreInstall,
    /// Writing the inactive slot (restarted from its beginning on recovery).
    Writing,
    /// Slot written and verified; activation next (or done, if the device
    /// already runs the new image).
    Activating,
    /// Activated; self-test next.
    SelfTest,
    /// Self-tested; waiting for the Client's confirm.
    AwaitingConfirm,
    /// Committing the new image.
    Committing,
    /// Rolling back.
    RollingBack {
        /// Where to.
        target: RollbackTarget,
        /// For a previous-slot rollback: the image expected to run afterwards.
        expect: Option<InstalledImage>,
        /// Set when the rollback undoes a failed install attempt (the
        /// failure to report); unset when the Client asked for it.
        failure: Option<Failure>,
        /// Correlation of the report to send.
        correlation: CorrelationId,
    },
    /// Nothing in progress for this update; its final report is in
    /// [`UpdateRecord::last_report`].
    Settled,
    /// Failed terminally (retry limit, or a rollback that failed after a
    /// failed install).
    Terminal {
        /// The failure.
        failure: Failure,
    },
}

impl Stage {
    /// Whether the Agent is busy with device work at this stage.
    pub fn busy(&self) -> bool {
        matches!(
            self,
            Stage::PreInstall
                | Stage::Writing
                | Stage::Activating
                | Stage::SelfTest
                | Stage::Committing
                | Stage::RollingBack { .. }
        )
    }

    /// The protocol's view of this stage.
    pub fn agent_state(&self) -> AgentState {
        match self {
            Stage::Verified | Stage::Consented | Stage::Settled => AgentState::Idle,
            Stage::Receiving | Stage::Received => AgentState::Receiving,
            Stage::Prepared { .. } => AgentState::Prepared,
            Stage::PreInstall
            | Stage::Writing
            | Stage::Activating
            | Stage::SelfTest
            | Stage::Committing => AgentState::Installing,
            Stage::AwaitingConfirm => AgentState::AwaitingConfirm,
            Stage::RollingBack { .. } => AgentState::RollingBack,
            Stage::Terminal { .. } => AgentState::Failed,
        }
    }
}

/// An image transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The transfer.
    pub transfer_id: TransferId,
    /// Total bytes.
    pub total_length: u64,
    /// Chunk size.
    pub chunk_size: u32,
    /// Hash of every chunk. Shared with the transfer's
    /// [`esync_package::chunk::ChunkPlan`] (one copy of the list while
    /// receiving); serialised exactly like a `Vec` (serde's `rc` feature),
    /// so the journal layout is the one of a plain list.
    pub chunk_hashes: Arc<[Sha256Digest]>,
    /// Chunks `0..next_chunk` are durably staged and verified.
    pub next_chunk: u32,
}

impl TransferRecord {
    /// Number of chunks.
    pub fn chunks(&self) -> u32 {
        self.chunk_hashes.len() as u32
    }

    /// Byte range of chunk `i`.
    pub fn chunk_range(&self, i: u32) -> (u64, u64) {
        let start = u64::from(i) * u64::from(self.chunk_size);
        let end = (start + u64::from(self.chunk_size)).min(self.total_length);
        (start, end)
    }
}

/// One update of this Agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// The update.
    pub update_id: UpdateId,
    /// Verified target, or why verification refused it.
    pub target: Result<DirectedTarget, Failure>,
    /// Encoding of the consented offer.
    pub encoding: Option<ImageEncoding>,
    /// Last download decision.
    pub decision: Option<Decision>,
    /// The transfer.
    pub transfer: Option<TransferRecord>,
    /// Stage.
    pub stage: Stage,
    /// Install attempts started.
    pub attempts: u32,
    /// Activations in the current attempt.
    pub activations: u32,
    /// Whether the Client confirms separately.
    pub await_confirm: bool,
    /// Correlation of the install command.
    pub install_correlation: CorrelationId,
    /// Correlation of the confirm command.
    pub confirm_correlation: CorrelationId,
    /// Confirm deadline, in the monotonic time ([`crate::Now::mono_ms`]) of
    /// the run that set it; re-armed with the full timeout on recovery.
    /// (Journals of earlier versions hold a wall time here: recovery
    /// re-arms it all the same.)
    pub confirm_deadline_ms: Option<u64>,
    /// Image that ran when the install attempt started.
    pub from: Option<InstalledImage>,
    /// Latest final report for this update (answers re-sent commands).
    pub last_report: Option<Payload>,
    /// Set when Prepare reconstructed this delta's image into staging: the
    /// image (the target's length, its SHA-256 verified) starts at this
    /// staging offset, after the patch. Install then copies it to the slot
    /// like a full image; nothing is reconstructed a second time. Unset for
    /// a full image, and in journals of format 1 (their Install reconstructs).
    pub staged_image_offset: Option<u64>,
}

/// A final report kept until the host says it was sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Identifier for [`crate::Agent::mark_sent`].
    pub id: u64,
    /// Correlation.
    pub correlation: CorrelationId,
    /// The report.
    pub payload: Payload,
}

/// Everything the Agent persists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalState {
    /// Incremented at every journal write.
    pub generation: u64,
    /// Wall-time floor (ms since the Unix epoch): expiry checks never use
    /// an earlier time. Raised only up to the signed expiry of verified
    /// metadata (see [`crate::Now`]).
    pub clock_ms: u64,
    /// The current (or last) update.
    pub update: Option<UpdateRecord>,
    /// Final reports not yet sent.
    pub outbox: Vec<OutboxEntry>,
    /// Next outbox id.
    pub next_outbox_id: u64,
}
