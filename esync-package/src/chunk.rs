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
//!
//! This is the one implementation of chunk reception: the Agent receives
//! into its device's staging area through a [`ChunkStore`] adapter, keeping
//! the assembler between messages with the store detached
//! ([`ChunkAssembler::replace_store`]).
//!
//! # Limits
//!
//! Chunks are [`MIN_CHUNK_SIZE`] (1 KiB) to [`MAX_CHUNK_SIZE`] (16 MiB), at
//! most [`MAX_CHUNKS`] per transfer; a receiver may narrow the upper bounds
//! with [`ChunkLimits`] but never widen them. The 1 KiB minimum is chosen
//! because every chunk costs a 32-byte hash in the chunk list (which the
//! Agent journals), one signed envelope and one acknowledgement: at 1 KiB
//! the list is at most 1/32 of the artifact, below that the per-chunk
//! overhead outweighs the payload, and a 1-byte chunk would turn an image
//! into a chunk list 32 times its size. Package building uses the same
//! bounds, so no signed package announces smaller chunks.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::sync::Arc;

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

/// Which part of a [`TransferStart`] disagrees with what the receiver
/// expects from signed metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartMismatch {
    /// The total length is not the signed artifact length.
    TotalLength,
    /// The chunk size is not the signed chunk size.
    ChunkSize,
    /// The number of chunk hashes does not fit the length and chunk size.
    ChunkCount,
    /// The chunk hashes do not hash to the signed chunk-list digest.
    ChunkListDigest,
}

impl fmt::Display for StartMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMismatch::TotalLength => "total length",
            StartMismatch::ChunkSize => "chunk size",
            StartMismatch::ChunkCount => "chunk count",
            StartMismatch::ChunkListDigest => "chunk-list digest",
        })
    }
}

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
    MetadataMismatch(StartMismatch),
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

/// The bounds a receiver puts on one transfer: the protocol's bounds
/// ([`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`], [`MAX_CHUNKS`]) or narrower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    max_chunk_size: u32,
    max_chunks: u64,
}

impl Default for ChunkLimits {
    /// The protocol's bounds.
    fn default() -> Self {
        Self {
            max_chunk_size: MAX_CHUNK_SIZE,
            max_chunks: MAX_CHUNKS,
        }
    }
}

impl ChunkLimits {
    /// Limits of at most `max_chunk_size` bytes per chunk and `max_chunks`
    /// chunks: refused unless `max_chunk_size` is within
    /// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`] and `max_chunks` within
    /// `1..=`[`MAX_CHUNKS`].
    pub fn new(max_chunk_size: u32, max_chunks: u64) -> Result<Self, ChunkError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&max_chunk_size) {
            return Err(ChunkError::ChunkSize(max_chunk_size));
        }
        if !(1..=MAX_CHUNKS).contains(&max_chunks) {
            return Err(ChunkError::TooManyChunks(max_chunks));
        }
        Ok(Self {
            max_chunk_size,
            max_chunks,
        })
    }

    /// Largest chunk accepted.
    pub fn max_chunk_size(&self) -> u32 {
        self.max_chunk_size
    }

    /// Most chunks accepted in one transfer.
    pub fn max_chunks(&self) -> u64 {
        self.max_chunks
    }

    fn chunk_count(&self, total_length: u64, chunk_size: u32) -> Result<u64, ChunkError> {
        if !(MIN_CHUNK_SIZE..=self.max_chunk_size).contains(&chunk_size) {
            return Err(ChunkError::ChunkSize(chunk_size));
        }
        let n = total_length.div_ceil(u64::from(chunk_size));
        if n > self.max_chunks {
            return Err(ChunkError::TooManyChunks(n));
        }
        Ok(n)
    }
}

/// What the receiver knows, from signed metadata, about the artifact a
/// [`TransferStart`] announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedTransfer {
    /// The signed artifact length.
    pub length: u64,
    /// The signed chunk size, if the metadata pins it.
    pub chunk_size: Option<u32>,
    /// The signed chunk-list digest, if the metadata pins the chunking.
    /// Without it the chunk hashes are only as good as their sender: the
    /// receiver must check the assembled artifact's own signed hash.
    pub chunk_list_digest: Option<Sha256Digest>,
}

/// A verified list of chunk hashes for an artifact of known length.
///
/// The list is shared ([`Arc`]): cloning a plan, or building one from a
/// list the receiver also journals ([`ChunkPlan::new`] with the journal's
/// `Arc`, [`ChunkPlan::shared_hashes`]), costs no second copy of 32 bytes
/// per chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    total_length: u64,
    chunk_size: u32,
    hashes: Arc<[Sha256Digest]>,
}

fn chunk_count(total_length: u64, chunk_size: u32) -> Result<u64, ChunkError> {
    ChunkLimits::default().chunk_count(total_length, chunk_size)
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
        let expected = ExpectedTransfer {
            length: signed_length,
            chunk_size: Some(signed_chunk_size),
            chunk_list_digest: Some(*signed_chunk_list),
        };
        Self::check_start(start, &expected, &ChunkLimits::default())
    }

    /// Accepts a [`TransferStart`] only if it is within `limits` and matches
    /// what `expected` pins (receiver side, when the metadata pins only part
    /// of the chunking).
    pub fn check_start(
        start: &TransferStart,
        expected: &ExpectedTransfer,
        limits: &ChunkLimits,
    ) -> Result<Self, ChunkError> {
        if start.total_length != expected.length {
            return Err(ChunkError::MetadataMismatch(StartMismatch::TotalLength));
        }
        if expected.chunk_size.is_some_and(|c| c != start.chunk_size) {
            return Err(ChunkError::MetadataMismatch(StartMismatch::ChunkSize));
        }
        let plan = Self::new(
            start.total_length,
            start.chunk_size,
            start.chunk_hashes.as_slice(),
            limits,
        )?;
        if expected
            .chunk_list_digest
            .is_some_and(|d| plan.list_digest() != d)
        {
            return Err(ChunkError::MetadataMismatch(StartMismatch::ChunkListDigest));
        }
        Ok(plan)
    }

    /// A plan from a chunk list trusted already (for example one a receiver
    /// journaled after [`ChunkPlan::check_start`]), checked against `limits`
    /// and for a hash count that fits the length and chunk size.
    ///
    /// `hashes` may be an `Arc<[Sha256Digest]>` the caller keeps (the plan
    /// then shares it, no copy), a `Vec` (moved in) or a slice (copied).
    /// The count is checked before a slice is copied.
    pub fn new(
        total_length: u64,
        chunk_size: u32,
        hashes: impl Into<Arc<[Sha256Digest]>> + AsRef<[Sha256Digest]>,
        limits: &ChunkLimits,
    ) -> Result<Self, ChunkError> {
        let n = limits.chunk_count(total_length, chunk_size)?;
        if hashes.as_ref().len() as u64 != n {
            return Err(ChunkError::MetadataMismatch(StartMismatch::ChunkCount));
        }
        Ok(Self {
            total_length,
            chunk_size,
            hashes: hashes.into(),
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

    /// The chunk hashes as the shared list this plan holds: clone it to keep
    /// the list elsewhere (a journal record) without copying it.
    pub fn shared_hashes(&self) -> &Arc<[Sha256Digest]> {
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
            chunk_hashes: self.hashes.to_vec(),
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
pub struct MemoryChunkStore(pub Vec<u8>);

impl ChunkStore for MemoryChunkStore {
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
    /// No chunk below it is unverified.
    first_unverified: u32,
    rejected: BTreeSet<u32>,
    store: S,
}

impl<S> ChunkAssembler<S> {
    /// A fresh transfer into `store`.
    pub fn new(transfer_id: TransferId, plan: ChunkPlan, store: S) -> Self {
        let n = plan.count() as usize;
        Self {
            transfer_id,
            plan,
            verified: vec![false; n],
            verified_count: 0,
            first_unverified: 0,
            rejected: BTreeSet::new(),
            store,
        }
    }

    fn mark_verified(&mut self, index: u32) {
        self.verified[index as usize] = true;
        self.verified_count += 1;
        while self
            .verified
            .get(self.first_unverified as usize)
            .is_some_and(|v| *v)
        {
            self.first_unverified += 1;
        }
    }

    /// Index of the first unverified chunk (the chunk count when complete).
    pub fn next_chunk(&self) -> u32 {
        self.first_unverified
    }

    /// The transfer id chunks must carry.
    pub fn transfer_id(&self) -> TransferId {
        self.transfer_id
    }

    /// Takes the same content announced again under a new transfer id (a
    /// sender that reconnected): progress is kept, chunks must now carry
    /// `transfer_id`.
    pub fn set_transfer_id(&mut self, transfer_id: TransferId) {
        self.transfer_id = transfer_id;
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

    /// The store, mutably.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Swaps the store, keeping the progress: a receiver whose store
    /// borrows a device only for one step keeps the assembler with a
    /// placeholder store (`()`) between steps.
    pub fn replace_store<T>(self, store: T) -> (ChunkAssembler<T>, S) {
        let ChunkAssembler {
            transfer_id,
            plan,
            verified,
            verified_count,
            first_unverified,
            rejected,
            store: old,
        } = self;
        (
            ChunkAssembler {
                transfer_id,
                plan,
                verified,
                verified_count,
                first_unverified,
                rejected,
                store,
            },
            old,
        )
    }
}

impl<S: ChunkStore> ChunkAssembler<S> {
    /// Resumes after a restart: every chunk already in `store` is hashed again
    /// and counts as verified only if it matches.
    pub fn resume(transfer_id: TransferId, plan: ChunkPlan, store: S) -> Self {
        Self::resume_from(transfer_id, plan, store, 0)
    }

    /// Resumes after a restart when chunks `0..verified_prefix` are known to
    /// be durably stored and verified (the receiver journaled that): those
    /// are not read again, every later chunk in `store` is hashed again and
    /// counts as verified only if it matches. A chunk the store cannot read
    /// counts as missing.
    pub fn resume_from(
        transfer_id: TransferId,
        plan: ChunkPlan,
        store: S,
        verified_prefix: u32,
    ) -> Self {
        let mut me = Self::new(transfer_id, plan, store);
        let prefix = verified_prefix.min(me.plan.count());
        me.verified[..prefix as usize].fill(true);
        me.verified_count = prefix;
        me.first_unverified = prefix;
        let mut buf = vec![0u8; me.plan.chunk_size as usize];
        for i in prefix..me.plan.count() {
            if let Some((off, len)) = me.plan.range(i) {
                if me.store.read_at(off, &mut buf[..len]).is_ok()
                    && sha256(&buf[..len]) == me.plan.hashes[i as usize]
                {
                    me.mark_verified(i);
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
        self.mark_verified(chunk.index);
        self.rejected.remove(&chunk.index);
        Ok(ChunkOutcome::Verified)
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
        let mut rx = ChunkAssembler::new(t, rplan, MemoryChunkStore::default());
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
        let mut rx = ChunkAssembler::new(t, plan.clone(), MemoryChunkStore::default());
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
            Err(ChunkError::MetadataMismatch(StartMismatch::ChunkListDigest))
        ));
        start.chunk_hashes.pop();
        assert!(ChunkPlan::from_transfer_start(&start, 4096, 1024, &d).is_err());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let data = image(3000);
        let plan = ChunkPlan::compute(&data, 1024).unwrap();
        let t = Id128([1; 16]);
        let mut rx = ChunkAssembler::new(t, plan.clone(), MemoryChunkStore::default());
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

    /// A store that fails every read (proves that a prefix is not read).
    #[derive(Default)]
    struct NoReads(MemoryChunkStore);

    impl ChunkStore for NoReads {
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.write_at(offset, data)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            if offset < 2 * 1024 {
                return Err(io::ErrorKind::Other.into());
            }
            self.0.read_at(offset, buf)
        }
    }

    #[test]
    fn resume_from_trusts_the_prefix_and_rehashes_the_rest() {
        let data = image(6 * 1024);
        let plan = ChunkPlan::compute(&data, 1024).unwrap();
        let t = Id128([4; 16]);
        let mut store = NoReads::default();
        store.0 .0 = data.clone();
        store.0 .0[3 * 1024] ^= 1; // chunk 3 is damaged
        let rx = ChunkAssembler::resume_from(t, plan.clone(), store, 2);
        assert_eq!(rx.next_chunk(), 3);
        assert_eq!(rx.missing().collect::<Vec<_>>(), vec![3]);
        assert_eq!(rx.verified_count(), 5);
        // Without the prefix the unreadable chunks count as missing.
        let rx = ChunkAssembler::resume(t, plan, rx.into_store());
        assert_eq!(rx.missing().collect::<Vec<_>>(), vec![0, 1, 3]);
    }

    #[test]
    fn a_detached_assembler_keeps_its_progress() {
        let data = image(4 * 1024);
        let plan = ChunkPlan::compute(&data, 1024).unwrap();
        let t = Id128([5; 16]);
        let rx = ChunkAssembler::new(t, plan.clone(), ());
        let (mut rx, ()) = rx.replace_store(MemoryChunkStore::default());
        rx.accept(&plan.chunk(t, 0, &data).unwrap()).unwrap();
        rx.accept(&plan.chunk(t, 2, &data).unwrap()).unwrap();
        let (rx, store) = rx.replace_store(());
        assert_eq!(rx.next_chunk(), 1);
        let (mut rx, _) = rx.replace_store(store);
        rx.set_transfer_id(Id128([6; 16]));
        assert!(matches!(
            rx.accept(&plan.chunk(t, 1, &data).unwrap()),
            Err(ChunkError::WrongTransfer)
        ));
        rx.accept(&plan.chunk(Id128([6; 16]), 1, &data).unwrap())
            .unwrap();
        assert_eq!(rx.next_chunk(), 3);
        rx.accept(&plan.chunk(Id128([6; 16]), 3, &data).unwrap())
            .unwrap();
        assert!(rx.is_complete());
        assert_eq!(rx.store().0, data);
    }

    #[test]
    fn a_plan_shares_the_chunk_list_it_is_given() {
        let data = image(4 * 1024);
        let list: Arc<[Sha256Digest]> = ChunkPlan::compute(&data, 1024).unwrap().hashes().into();
        let limits = ChunkLimits::default();
        let plan = ChunkPlan::new(data.len() as u64, 1024, Arc::clone(&list), &limits).unwrap();
        assert!(Arc::ptr_eq(plan.shared_hashes(), &list));
        let t = Id128([7; 16]);
        let rx = ChunkAssembler::resume(t, plan.clone(), MemoryChunkStore(data.clone()));
        assert!(rx.is_complete());
        assert!(Arc::ptr_eq(rx.plan().shared_hashes(), &list));
        let (rx, _) = rx.replace_store(());
        assert!(Arc::ptr_eq(rx.plan().shared_hashes(), &list));
        // A wrong count is refused before anything is copied or shared.
        assert!(matches!(
            ChunkPlan::new(data.len() as u64, 1024, &list[..3], &limits),
            Err(ChunkError::MetadataMismatch(StartMismatch::ChunkCount))
        ));
        // A slice or a Vec is taken as a new list with the same content.
        let copied = ChunkPlan::new(data.len() as u64, 1024, &list[..], &limits).unwrap();
        assert!(!Arc::ptr_eq(copied.shared_hashes(), &list));
        assert_eq!(copied, plan);
        let start = plan.transfer_start(t, t);
        assert_eq!(start.chunk_hashes, list.to_vec());
    }

    #[test]
    fn limits_narrow_but_never_widen_the_protocol_bounds() {
        assert!(ChunkLimits::new(MIN_CHUNK_SIZE - 1, 10).is_err());
        assert!(ChunkLimits::new(MAX_CHUNK_SIZE + 1, 10).is_err());
        assert!(ChunkLimits::new(4096, 0).is_err());
        assert!(ChunkLimits::new(4096, MAX_CHUNKS + 1).is_err());
        let data = image(8 * 1024);
        let t = Id128([1; 16]);
        let start = ChunkPlan::compute(&data, 2048)
            .unwrap()
            .transfer_start(t, t);
        let unpinned = ExpectedTransfer {
            length: data.len() as u64,
            chunk_size: None,
            chunk_list_digest: None,
        };
        let ok = ChunkLimits::new(2048, 4).unwrap();
        assert!(ChunkPlan::check_start(&start, &unpinned, &ok).is_ok());
        let small = ChunkLimits::new(1024, 4).unwrap();
        assert!(matches!(
            ChunkPlan::check_start(&start, &unpinned, &small),
            Err(ChunkError::ChunkSize(2048))
        ));
        let few = ChunkLimits::new(2048, 3).unwrap();
        assert!(matches!(
            ChunkPlan::check_start(&start, &unpinned, &few),
            Err(ChunkError::TooManyChunks(4))
        ));
        let pinned = ExpectedTransfer {
            chunk_list_digest: Some(Sha256Digest([0; 32])),
            ..unpinned
        };
        assert!(matches!(
            ChunkPlan::check_start(&start, &pinned, &ok),
            Err(ChunkError::MetadataMismatch(StartMismatch::ChunkListDigest))
        ));
        let mut tiny = start.clone();
        tiny.chunk_size = MIN_CHUNK_SIZE - 1;
        assert!(matches!(
            ChunkPlan::check_start(&tiny, &unpinned, &ChunkLimits::default()),
            Err(ChunkError::ChunkSize(_))
        ));
    }
}
