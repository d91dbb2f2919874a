//! Resumable, chunk-verified transfer primitives (sans-I/O).
//!
//! An artifact (full image or patch) is cut into fixed-size chunks; the
//! SHA-256 of every chunk travels in [`TransferStart::chunk_hashes`] and the
//! SHA-256 of their concatenation (the *chunk-list digest*) is in the signed
//! component description ([`crate::package::Artifact::chunk_list_sha256`]).
//! So the receiver trusts the chunk list only after checking it against the
//! signed digest, and then each chunk on arrival:
//!
//! * [`ChunkPlan`] is the verified chunk list (sender and receiver side);
//! * [`ChunkAssembler`] (receiver) verifies each [`TransferChunk`], writes only
//!   verified chunks to a [`ChunkStore`], and answers with a [`TransferAck`]
//!   whose `next_chunk` is the first unverified chunk and whose `rejected`
//!   lists chunks that failed their hash;
//! * [`ChunkSender`] (sender) sends rejected chunks again, alone, and
//!   otherwise carries on where it was.

use std::collections::{BTreeSet, VecDeque};
use std::io;

use esync_proto::id::{Sha256Digest, TransferId, UpdateId};
use esync_proto::message::{TransferAck, TransferChunk, TransferStart};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::delta::SourceImage;
use crate::digest::sha256;

/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 1 << 10;
/// Largest chunk size accepted.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Largest number of chunks in one transfer.
pub const MAX_CHUNKS: u64 = 1 << 20;
/// Default chunk size (64 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 << 10;

/// A chunk-level failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Chunk size outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    #[error("chunk size {0} out of range")]
    ChunkSize(u32),
    /// Too many chunks.
    #[error("{0} chunks exceed the limit")]
    TooManyChunks(u64),
    /// The announced transfer does not match the signed metadata.
    #[error("transfer does not match signed metadata: {0}")]
    MetadataMismatch(&'static str),
    /// A chunk for another transfer.
    #[error("chunk belongs to another transfer")]
    WrongTransfer,
    /// A chunk index past the end.
    #[error("chunk index {0} out of range")]
    IndexOutOfRange(u32),
    /// A chunk whose offset is not `index * chunk_size`.
    #[error("chunk {index} has offset {offset}")]
    BadOffset {
        /// The index.
        index: u32,
        /// The offset it carried.
        offset: u64,
    },
    /// The store failed.
    #[error("chunk store failed: {0}")]
    Store(#[source] io::Error),
}

/// A verified list of chunk hashes for an artifact of known length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    total_length: u64,
    chunk_size: u32,
    hashes: Vec<Sha256Digest>,
}

fn chunk_count(total_length: u64, chunk_size: u32) -> Result<u64, ChunkError> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(ChunkError::ChunkSize(chunk_size));
    }
    let n = total_length.div_ceil(u64::from(chunk_size));
    if n > MAX_CHUNKS {
        return Err(ChunkError::TooManyChunks(n));
    }
    Ok(n)
}

/// SHA-256 of the concatenated chunk hashes.
pub fn chunk_list_digest(hashes: &[Sha256Digest]) -> Sha256Digest {
    let mut h = Sha256::new();
    for d in hashes {
        h.update(d.0);
    }
    Sha256Digest(h.finalize().into())
}

impl ChunkPlan {
    /// Chunks `data` (sender side, or when building a package).
    pub fn compute(data: &[u8], chunk_size: u32) -> Result<Self, ChunkError> {
        chunk_count(data.len() as u64, chunk_size)?;
        let hashes = data.chunks(chunk_size as usize).map(sha256).collect();
        Ok(Self {
            total_length: data.len() as u64,
            chunk_size,
            hashes,
        })
    }

    /// Accepts a [`TransferStart`] only if it matches the signed artifact
    /// length, chunk size and chunk-list digest (receiver side).
    pub fn from_transfer_start(
        start: &TransferStart,
        signed_length: u64,
        signed_chunk_size: u32,
        signed_chunk_list: &Sha256Digest,
    ) -> Result<Self, ChunkError> {
        if start.total_length != signed_length {
            return Err(ChunkError::MetadataMismatch("total length"));
        }
        if start.chunk_size != signed_chunk_size {
            return Err(ChunkError::MetadataMismatch("chunk size"));
        }
        let n = chunk_count(start.total_length, start.chunk_size)?;
        if start.chunk_hashes.len() as u64 != n {
            return Err(ChunkError::MetadataMismatch("chunk count"));
        }
        if chunk_list_digest(&start.chunk_hashes) != *signed_chunk_list {
            return Err(ChunkError::MetadataMismatch("chunk-list digest"));
        }
        Ok(Self {
            total_length: start.total_length,
            chunk_size: start.chunk_size,
            hashes: start.chunk_hashes.clone(),
        })
    }

    /// Total bytes.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    pub fn count(&self) -> u32 {
        // Bounded by MAX_CHUNKS at construction.
        self.hashes.len() as u32
    }

    /// The chunk hashes.
    pub fn hashes(&self) -> &[Sha256Digest] {
        &self.hashes
    }

    /// The digest to put in signed metadata.
    pub fn list_digest(&self) -> Sha256Digest {
        chunk_list_digest(&self.hashes)
    }

    /// Offset and length of chunk `index`.
    pub fn range(&self, index: u32) -> Option<(u64, usize)> {
        if index >= self.count() {
            return None;
        }
        let off = u64::from(index) * u64::from(self.chunk_size);
        let len = (self.total_length - off).min(u64::from(self.chunk_size));
        Some((off, len as usize))
    }

    /// The [`TransferStart`] announcing this plan.
    pub fn transfer_start(&self, transfer_id: TransferId, update_id: UpdateId) -> TransferStart {
        TransferStart {
            transfer_id,
            update_id,
            total_length: self.total_length,
            chunk_size: self.chunk_size,
            chunk_hashes: self.hashes.clone(),
        }
    }

    /// Reads chunk `index` of `artifact` into a [`TransferChunk`] (sender side).
    pub fn chunk(
        &self,
        transfer_id: TransferId,
        index: u32,
        artifact: &dyn SourceImage,
    ) -> Result<TransferChunk, ChunkError> {
        let (offset, len) = self
            .range(index)
            .ok_or(ChunkError::IndexOutOfRange(index))?;
        let mut data = vec![0u8; len];
        artifact
            .read_exact_at(offset, &mut data)
            .map_err(ChunkError::Store)?;
        Ok(TransferChunk {
            transfer_id,
            index,
            offset,
            data,
        })
    }
}

/// Where verified chunks are kept (a staging file, a flash partition...).
pub trait ChunkStore {
    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Reads `buf.len()` bytes at `offset` (used to re-verify after a restart).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// An in-memory [`ChunkStore`] (tests, small images).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStore(pub Vec<u8>);

impl ChunkStore for MemoryStore {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let off = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = off + data.len();
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        self.0[off..end].copy_from_slice(data);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.as_slice().read_exact_at(offset, buf)
    }
}

/// What happened to one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Verified and stored.
    Verified,
    /// Already verified earlier; ignored.
    Duplicate,
    /// Failed its hash or length; not stored, listed in the next ack's
    /// `rejected`.
    Rejected,
}

/// Receiver side of a transfer: verifies and stores chunks, tracks progress.
#[derive(Debug)]
pub struct ChunkAssembler<S> {
    transfer_id: TransferId,
    plan: ChunkPlan,
    verified: Vec<bool>,
    verified_count: u32,
    rejected: BTreeSet<u32>,
    store: S,
}

impl<S: ChunkStore> ChunkAssembler<S> {
    /// A fresh transfer into `store`.
    pub fn new(transfer_id: TransferId, plan: ChunkPlan, store: S) -> Self {
        let n = plan.count() as usize;
        Self {
            transfer_id,
            plan,
            verified: vec![false; n],
            verified_count: 0,
            rejected: BTreeSet::new(),
            store,
        }
    }

    /// Resumes after a restart: every chunk already in `store` is hashed again
    /// and counts as verified only if it matches.
    pub fn resume(transfer_id: TransferId, plan: ChunkPlan, store: S) -> Self {
        let mut me = Self::new(transfer_id, plan, store);
        let mut buf = vec![0u8; me.plan.chunk_size as usize];
        for i in 0..me.plan.count() {
            if let Some((off, len)) = me.plan.range(i) {
                if me.store.read_at(off, &mut buf[..len]).is_ok()
                    && sha256(&buf[..len]) == me.plan.hashes[i as usize]
                {
                    me.verified[i as usize] = true;
                    me.verified_count += 1;
                }
            }
        }
        me
    }

    /// Verifies one chunk and stores it if it is good.
    pub fn accept(&mut self, chunk: &TransferChunk) -> Result<ChunkOutcome, ChunkError> {
        if chunk.transfer_id != self.transfer_id {
            return Err(ChunkError::WrongTransfer);
        }
        let (offset, len) = self
            .plan
            .range(chunk.index)
            .ok_or(ChunkError::IndexOutOfRange(chunk.index))?;
        if chunk.offset != offset {
            return Err(ChunkError::BadOffset {
                index: chunk.index,
                offset: chunk.offset,
            });
        }
        let i = chunk.index as usize;
        if self.verified[i] {
            return Ok(ChunkOutcome::Duplicate);
        }
        if chunk.data.len() != len || sha256(&chunk.data) != self.plan.hashes[i] {
            self.rejected.insert(chunk.index);
            return Ok(ChunkOutcome::Rejected);
        }
        self.store
            .write_at(offset, &chunk.data)
            .map_err(ChunkError::Store)?;
        self.verified[i] = true;
        self.verified_count += 1;
        self.rejected.remove(&chunk.index);
        Ok(ChunkOutcome::Verified)
    }

    /// Index of the first unverified chunk (the chunk count when complete).
    pub fn next_chunk(&self) -> u32 {
        self.verified
            .iter()
            .position(|v| !v)
            .map_or(self.plan.count(), |p| p as u32)
    }

    /// Chunks not yet verified, in order.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        self.verified
            .iter()
            .enumerate()
            .filter(|(_, v)| !**v)
            .map(|(i, _)| i as u32)
    }

    /// Whether every chunk is verified.
    pub fn is_complete(&self) -> bool {
        self.verified_count == self.plan.count()
    }

    /// Number of verified chunks.
    pub fn verified_count(&self) -> u32 {
        self.verified_count
    }

    /// The acknowledgement to send now.
    pub fn ack(&self) -> TransferAck {
        TransferAck {
            transfer_id: self.transfer_id,
            next_chunk: self.next_chunk(),
            rejected: self.rejected.iter().copied().collect(),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &ChunkPlan {
        &self.plan
    }

    /// The store (e.g. to read the assembled artifact).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }
}

/// Sender side: which chunk to send next, given the receiver's acks.
#[derive(Debug, Clone)]
pub struct ChunkSender {
    count: u32,
    cursor: u32,
    resend: VecDeque<u32>,
}

impl ChunkSender {
    /// Starts sending `plan` from `first` (0 for a new transfer, or the
    /// `next_chunk` of the receiver's ack after a reconnect).
    pub fn new(plan: &ChunkPlan, first: u32) -> Self {
        Self {
            count: plan.count(),
            cursor: first.min(plan.count()),
            resend: VecDeque::new(),
        }
    }

    /// Takes an ack into account: rejected chunks are queued to be sent again
    /// (each once), and the cursor never goes back except to resume at
    /// `next_chunk` when that is further along.
    pub fn on_ack(&mut self, ack: &TransferAck) {
        for &r in &ack.rejected {
            if r < self.count && !self.resend.contains(&r) {
                self.resend.push_back(r);
            }
        }
        if ack.next_chunk > self.cursor {
            self.cursor = ack.next_chunk.min(self.count);
        }
    }

    /// The next chunk to send, if any.
    pub fn next_index(&mut self) -> Option<u32> {
        if let Some(r) = self.resend.pop_front() {
            return Some(r);
        }
        if self.cursor < self.count {
            self.cursor += 1;
            return Some(self.cursor - 1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use esync_proto::id::Id128;

    fn image(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn corrupted_chunk_is_refetched_alone() {
        let data = image(10 * 1024 + 100);
        let plan = ChunkPlan::compute(&data, 1024).unwrap();
        assert_eq!(plan.count(), 11);
        let t = Id128([1; 16]);
        let start = plan.transfer_start(t, Id128([2; 16]));
        let rplan =
            ChunkPlan::from_transfer_start(&start, data.len() as u64, 1024, &plan.list_digest())
                .unwrap();
        let mut rx = ChunkAssembler::new(t, rplan, MemoryStore::default());
        let mut tx = ChunkSender::new(&plan, 0);
        let mut sent = Vec::new();
        while let Some(i) = tx.next_index() {
            sent.push(i);
            let mut c = plan.chunk(t, i, &data).unwrap();
            if i == 4 && sent.iter().filter(|&&x| x == 4).count() == 1 {
                c.data[10] ^= 0xff; // corrupted in transit, first time only
            }
            rx.accept(&c).unwrap();
            tx.on_ack(&rx.ack());
        }
        assert!(rx.is_complete());
        assert_eq!(rx.store().0, data);
        // Every chunk once, plus chunk 4 again, alone.
        let mut expect: Vec<u32> = (0..11).collect();
        expect.insert(5, 4);
        assert_eq!(sent, expect);
        assert_eq!(rx.ack().next_chunk, 11);
        assert!(rx.ack().rejected.is_empty());
    }

    #[test]
    fn resume_at_first_unverified_after_restart() {
        let data = image(8 * 1024);
        let plan = ChunkPlan::compute(&data, 1024).unwrap();
        let t = Id128([3; 16]);
        let mut rx = ChunkAssembler::new(t, plan.clone(), MemoryStore::default());
        for i in [0, 1, 2, 5] {
            assert_eq!(
                rx.accept(&plan.chunk(t, i, &data).unwrap()).unwrap(),
                ChunkOutcome::Verified
            );
        }
        assert_eq!(
            rx.accept(&plan.chunk(t, 1, &data).unwrap()).unwrap(),
            ChunkOutcome::Duplicate
        );
        let mut store = rx.into_store();
        // Power loss corrupted chunk 2 in storage.
        store.0[2 * 1024 + 7] ^= 1;
        let rx = ChunkAssembler::resume(t, plan.clone(), store);
        assert_eq!(rx.next_chunk(), 2);
        assert_eq!(rx.missing().collect::<Vec<_>>(), vec![2, 3, 4, 6, 7]);
    }

    #[test]
    fn start_must_match_signed_metadata() {
        let data = image(4096);
        let plan = ChunkPlan::compute(&data, 1024).unwrap();
        let t = Id128([1; 16]);
        let mut start = plan.transfer_start(t, t);
        let d = plan.list_digest();
        assert!(ChunkPlan::from_transfer_start(&start, 4096, 1024, &d).is_ok());
        assert!(ChunkPlan::from_transfer_start(&start, 4097, 1024, &d).is_err());
        assert!(ChunkPlan::from_transfer_start(&start, 4096, 2048, &d).is_err());
        start.chunk_hashes[1].0[0] ^= 1;
        assert!(matches!(
            ChunkPlan::from_transfer_start(&start, 4096, 1024, &d),
            Err(ChunkError::MetadataMismatch("chunk-list digest"))
        ));
        start.chunk_hashes.pop();
        assert!(ChunkPlan::from_transfer_start(&start, 4096, 1024, &d).is_err());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let data = image(3000);
        let plan = ChunkPlan::compute(&data, 1024).unwrap();
        let t = Id128([1; 16]);
        let mut rx = ChunkAssembler::new(t, plan.clone(), MemoryStore::default());
        let mut c = plan.chunk(t, 2, &data).unwrap();
        assert_eq!(c.data.len(), 3000 - 2048);
        c.data.push(0);
        assert_eq!(rx.accept(&c).unwrap(), ChunkOutcome::Rejected);
        c.index = 3;
        assert!(matches!(rx.accept(&c), Err(ChunkError::IndexOutOfRange(3))));
        let mut c = plan.chunk(t, 1, &data).unwrap();
        c.offset += 1;
        assert!(matches!(rx.accept(&c), Err(ChunkError::BadOffset { .. })));
        c.offset -= 1;
        c.transfer_id = Id128([9; 16]);
        assert!(matches!(rx.accept(&c), Err(ChunkError::WrongTransfer)));
        assert_eq!(rx.ack().rejected, vec![2]);
        assert!(rx.store().0.is_empty(), "nothing unverified is stored");
    }
}
