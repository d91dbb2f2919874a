//! The sending side of one chunked transfer to an Agent: which chunks to
//! send ([`esync_package::chunk::ChunkSender`]), at most a window of them in
//! flight, each read from the host ([`HostNeed::ReadBlob`]) and checked against
//! its chunk hash before it is sent.

use std::collections::BTreeSet;

use esync_package::chunk::{ChunkPlan, ChunkSender};
use esync_proto::id::TransferId;
use esync_proto::message::{TransferAck, TransferChunk};

use crate::core::plan::BlobHandle;
use crate::core::HostNeed;

/// One transfer in progress (volatile: after a restart it begins again at
/// the Agent's first unverified chunk).
#[derive(Debug)]
pub struct Transfer {
    plan: ChunkPlan,
    blob: BlobHandle,
    sender: ChunkSender,
    /// Chunks asked of the host and not yet provided.
    reading: BTreeSet<u32>,
    /// Chunks sent and not yet acknowledged.
    in_flight: u32,
    /// The Agent's first missing chunk.
    next_needed: u32,
}

impl Transfer {
    /// A transfer of `plan` (the bytes in `blob`) from chunk `first`.
    pub fn new(plan: ChunkPlan, blob: BlobHandle, first: u32) -> Self {
        let sender = ChunkSender::new(&plan, first);
        Transfer {
            plan,
            blob,
            sender,
            reading: BTreeSet::new(),
            in_flight: 0,
            next_needed: first,
        }
    }

    /// The blob.
    pub fn blob(&self) -> BlobHandle {
        self.blob
    }

    /// An acknowledgement from the Agent.
    pub fn on_ack(&mut self, ack: &TransferAck) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.sender.on_ack(ack);
        self.next_needed = self.next_needed.max(ack.next_chunk);
    }

    /// Every chunk verified by the Agent.
    pub fn complete(&self) -> bool {
        self.next_needed >= self.plan.count()
    }

    /// Asks the host for chunks until `window` are read or in flight.
    pub fn fill(&mut self, window: u32, needs: &mut Vec<HostNeed>) {
        while self.in_flight + (self.reading.len() as u32) < window {
            let Some(i) = self.sender.next_index() else {
                break;
            };
            let Some((offset, len)) = self.plan.range(i) else {
                break;
            };
            if self.reading.insert(i) {
                needs.push(HostNeed::ReadBlob {
                    blob: self.blob,
                    offset,
                    len: len as u32,
                });
            }
        }
    }

    /// The host's bytes at `offset`: the chunk to send, `None` if no read
    /// of this offset is pending, or why the bytes are refused.
    pub fn provide(
        &mut self,
        offset: u64,
        data: &[u8],
        transfer_id: TransferId,
    ) -> Result<Option<TransferChunk>, &'static str> {
        let size = u64::from(self.plan.chunk_size());
        let index = u32::try_from(offset / size).map_err(|_| "offset out of range")?;
        if offset % size != 0 || !self.reading.contains(&index) {
            return Ok(None);
        }
        let Some((_, len)) = self.plan.range(index) else {
            return Ok(None);
        };
        if data.len() != len {
            return Err("the host read a chunk of the wrong length");
        }
        let expected = self.plan.hashes().get(index as usize);
        if expected != Some(&esync_package::digest::sha256(data)) {
            return Err("the stored blob no longer matches its chunk hash");
        }
        self.reading.remove(&index);
        self.in_flight += 1;
        Ok(Some(TransferChunk {
            transfer_id,
            index,
            offset,
            data: data.to_vec(),
        }))
    }
}
