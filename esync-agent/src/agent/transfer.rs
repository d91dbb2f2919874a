//! Chunked transfer into staging: start, chunks, query, abort, and re-
//! verification on recovery.

use esync_proto::id::{CorrelationId, Sha256Digest, UpdateId};
use esync_proto::message::{
    Decision, DownloadDecision, ErrorClass, Failure, FailureCode, ImageEncoding, Phase,
    PrepareOutcome, PrepareResult, Progress, TransferAbort, TransferAck, TransferChunk,
    TransferQuery, TransferStart,
};
use sha2::Digest as _;

use crate::device::hash_with;
use crate::error::AgentError;
use crate::state::{Stage, TransferRecord};

use super::{dev, failure, Agent, Context, Ignored, Output};

impl Agent {
    pub(super) fn transfer_failed(
        out: &mut Output,
        corr: CorrelationId,
        update_id: UpdateId,
        f: Failure,
    ) {
        out.send(
            corr,
            PrepareResult {
                update_id,
                outcome: PrepareOutcome::Failed(f),
            },
        );
    }

    pub(super) fn on_transfer_start(
        &mut self,
        s: &TransferStart,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let Some(rec) = self.record(&s.update_id) else {
            out.send(
                corr,
                DownloadDecision {
                    update_id: s.update_id,
                    decision: Decision::Deny {
                        reason: "no consented offer for this update".into(),
                    },
                },
            );
            return Ok(());
        };
        let (Ok(target), Some(enc)) = (&rec.target, &rec.encoding) else {
            let decision = rec.decision.clone().unwrap_or(Decision::Deny {
                reason: "no consented offer for this update".into(),
            });
            out.send(
                corr,
                DownloadDecision {
                    update_id: s.update_id,
                    decision,
                },
            );
            return Ok(());
        };
        if !matches!(
            rec.stage,
            Stage::Consented | Stage::Receiving | Stage::Received
        ) {
            if let Some(t) = &rec.transfer {
                if t.chunk_hashes == s.chunk_hashes && t.total_length == s.total_length {
                    out.send(
                        corr,
                        TransferAck {
                            transfer_id: s.transfer_id,
                            next_chunk: t.next_chunk,
                            rejected: vec![],
                        },
                    );
                    return Ok(());
                }
            }
            out.ignored = Some(Ignored::TransferPastStage);
            return Ok(());
        }
        let (expected_len, digest) = match enc {
            ImageEncoding::Full => (target.length, target.chunk_list_digest),
            ImageEncoding::Delta { patch_length, .. } => (
                *patch_length,
                target
                    .deltas
                    .iter()
                    .find(|d| Self::delta_matches(d, enc))
                    .and_then(|d| d.chunk_list_digest),
            ),
        };
        let bad = |m: String| failure(ErrorClass::Retryable, FailureCode::LengthMismatch, m);
        if s.total_length != expected_len || s.total_length == 0 {
            Self::transfer_failed(
                out,
                corr,
                s.update_id,
                bad(format!(
                    "transfer of {} bytes, expected {expected_len}",
                    s.total_length
                )),
            );
            return Ok(());
        }
        if s.chunk_size == 0 || s.chunk_size > self.config.max_chunk_size {
            Self::transfer_failed(
                out,
                corr,
                s.update_id,
                bad(format!(
                    "chunk size {} outside 1..={}",
                    s.chunk_size, self.config.max_chunk_size
                )),
            );
            return Ok(());
        }
        let chunks = s.total_length.div_ceil(u64::from(s.chunk_size));
        if chunks != s.chunk_hashes.len() as u64 || chunks > u64::from(self.config.max_chunks) {
            Self::transfer_failed(
                out,
                corr,
                s.update_id,
                bad(format!(
                    "{} chunk hashes for {chunks} chunks (max {})",
                    s.chunk_hashes.len(),
                    self.config.max_chunks
                )),
            );
            return Ok(());
        }
        if let Some(d) = digest {
            let mut h = sha2::Sha256::new();
            for c in &s.chunk_hashes {
                h.update(c.0);
            }
            if Sha256Digest(h.finalize().into()) != d {
                Self::transfer_failed(
                    out,
                    corr,
                    s.update_id,
                    failure(
                        ErrorClass::Retryable,
                        FailureCode::HashMismatch,
                        "chunk list does not match the signed chunk-list digest",
                    ),
                );
                return Ok(());
            }
        }
        if s.total_length > ctx.device.staging_capacity() {
            Self::transfer_failed(
                out,
                corr,
                s.update_id,
                failure(
                    ErrorClass::UpdateIncapable,
                    FailureCode::InsufficientResources,
                    format!(
                        "staging holds {} bytes, {} needed",
                        ctx.device.staging_capacity(),
                        s.total_length
                    ),
                ),
            );
            return Ok(());
        }
        // Same content as the transfer in progress: resume where it stands.
        if let Some(t) = &rec.transfer {
            if t.chunk_hashes == s.chunk_hashes
                && t.total_length == s.total_length
                && t.chunk_size == s.chunk_size
            {
                let next = t.next_chunk;
                if let Some(rec) = self.record_mut(&s.update_id) {
                    if let Some(t) = &mut rec.transfer {
                        t.transfer_id = s.transfer_id;
                    }
                }
                self.persist(ctx)?;
                out.send(
                    corr,
                    TransferAck {
                        transfer_id: s.transfer_id,
                        next_chunk: next,
                        rejected: vec![],
                    },
                );
                return Ok(());
            }
        }
        if let Err(e) = dev(ctx.device.staging_reset(s.total_length))? {
            Self::transfer_failed(
                out,
                corr,
                s.update_id,
                failure(
                    ErrorClass::Retryable,
                    FailureCode::InsufficientResources,
                    e.to_string(),
                ),
            );
            return Ok(());
        }
        if let Some(rec) = self.record_mut(&s.update_id) {
            rec.transfer = Some(TransferRecord {
                transfer_id: s.transfer_id,
                total_length: s.total_length,
                chunk_size: s.chunk_size,
                chunk_hashes: s.chunk_hashes.clone(),
                next_chunk: 0,
            });
            rec.stage = Stage::Receiving;
        }
        self.received = vec![false; chunks as usize];
        self.persist(ctx)?;
        out.send(
            corr,
            TransferAck {
                transfer_id: s.transfer_id,
                next_chunk: 0,
                rejected: vec![],
            },
        );
        Ok(())
    }

    pub(super) fn on_chunk(
        &mut self,
        c: &TransferChunk,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let Some(rec) = self.j.update.as_ref() else {
            out.ignored = Some(Ignored::ChunkUnknownTransfer);
            return Ok(());
        };
        let Some(t) = rec
            .transfer
            .as_ref()
            .filter(|t| t.transfer_id == c.transfer_id)
        else {
            out.ignored = Some(Ignored::ChunkUnknownTransfer);
            return Ok(());
        };
        let n = t.chunks();
        if !matches!(rec.stage, Stage::Receiving)
            || c.index >= n
            || c.index < t.next_chunk
            || self.received.get(c.index as usize) == Some(&true)
        {
            // Complete, duplicate or out of range: tell the sender where we stand.
            out.send(
                corr,
                TransferAck {
                    transfer_id: c.transfer_id,
                    next_chunk: t.next_chunk,
                    rejected: vec![],
                },
            );
            return Ok(());
        }
        let (start, end) = t.chunk_range(c.index);
        let ok = c.offset == start
            && c.data.len() as u64 == end - start
            && crate::device::sha256(&c.data) == t.chunk_hashes[c.index as usize];
        if !ok {
            out.send(
                corr,
                TransferAck {
                    transfer_id: c.transfer_id,
                    next_chunk: t.next_chunk,
                    rejected: vec![c.index],
                },
            );
            return Ok(());
        }
        if let Err(_e) = dev(ctx.device.staging_write(start, &c.data))? {
            out.send(
                corr,
                TransferAck {
                    transfer_id: c.transfer_id,
                    next_chunk: t.next_chunk,
                    rejected: vec![c.index],
                },
            );
            return Ok(());
        }
        if self.received.len() != n as usize {
            self.received = vec![false; n as usize];
        }
        self.received[c.index as usize] = true;
        let mut next = t.next_chunk;
        while next < n && self.received[next as usize] {
            next += 1;
        }
        let every = self.config.journal_every_chunks;
        let progress_every = self.config.progress_every_chunks;
        let journaled = self.journaled_next_chunk;
        let total = t.total_length;
        let update_id = rec.update_id;
        if let Some(rec) = self.j.update.as_mut() {
            if let Some(t) = &mut rec.transfer {
                t.next_chunk = next;
            }
            if next == n {
                rec.stage = Stage::Received;
            }
        }
        if next == n || next >= journaled.saturating_add(every) {
            self.persist(ctx)?;
        }
        out.send(
            corr,
            TransferAck {
                transfer_id: c.transfer_id,
                next_chunk: next,
                rejected: vec![],
            },
        );
        if next == n || next % progress_every == 0 {
            let done = (u64::from(next) * u64::from(c.data.len().max(1) as u32)).min(total);
            let done = if next == n { total } else { done };
            out.send(
                corr,
                Progress {
                    update_id,
                    phase: Phase::Transfer,
                    done,
                    total,
                },
            );
        }
        Ok(())
    }

    pub(super) fn on_transfer_query(
        &mut self,
        q: &TransferQuery,
        corr: CorrelationId,
        out: &mut Output,
    ) {
        let next = self
            .j
            .update
            .as_ref()
            .and_then(|u| u.transfer.as_ref())
            .filter(|t| t.transfer_id == q.transfer_id)
            .map_or(0, |t| t.next_chunk);
        out.send(
            corr,
            TransferAck {
                transfer_id: q.transfer_id,
                next_chunk: next,
                rejected: vec![],
            },
        );
    }

    pub(super) fn on_transfer_abort(
        &mut self,
        a: &TransferAbort,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let Some(rec) = self.j.update.as_mut() else {
            out.ignored = Some(Ignored::AbortUnknownTransfer);
            return Ok(());
        };
        if rec
            .transfer
            .as_ref()
            .is_some_and(|t| t.transfer_id == a.transfer_id)
            && matches!(rec.stage, Stage::Receiving | Stage::Received)
        {
            rec.transfer = None;
            rec.stage = Stage::Consented;
            self.received.clear();
            self.persist(ctx)?;
        } else {
            out.ignored = Some(Ignored::AbortUnknownTransfer);
        }
        Ok(())
    }

    /// Re-verifies staged chunks after the journaled position (recovery).
    pub(super) fn resume_transfer(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let Some(rec) = self.j.update.as_mut() else {
            return Ok(());
        };
        if rec.stage != Stage::Receiving {
            return Ok(());
        }
        let Some(t) = rec.transfer.as_mut() else {
            return Ok(());
        };
        let start = t.next_chunk;
        let mut buf = vec![0u8; t.chunk_size as usize];
        while t.next_chunk < t.chunks() {
            let (s, e) = t.chunk_range(t.next_chunk);
            let want = (e - s) as usize;
            let r = dev(hash_with(want as u64, &mut buf[..want.max(1)], |o, b| {
                ctx.device.staging_read(s + o, b)
            }))?;
            match r {
                Ok(h) if h == t.chunk_hashes[t.next_chunk as usize] => t.next_chunk += 1,
                _ => break,
            }
        }
        let n = t.chunks();
        let next = t.next_chunk;
        self.received = (0..n).map(|i| i < next).collect();
        if next == n {
            rec.stage = Stage::Received;
        }
        if next != start {
            self.persist(ctx)?;
        }
        self.journaled_next_chunk = next;
        Ok(())
    }
}
