//! Chunked transfer into staging: start, chunks, query, abort, and re-
//! verification on recovery.
//!
//! Reception is [`esync_package::chunk`]'s: the start is checked by
//! [`ChunkPlan::check_start`] (signed length and chunk-list digest, the
//! configured [`esync_package::chunk::ChunkLimits`]), chunks by
//! [`ChunkAssembler::accept`] into the device's staging area (through
//! [`Staging`]), and recovery re-verifies with
//! [`ChunkAssembler::resume_from`] after the journaled position.
//!
//! The chunk list is held once: the journaled [`TransferRecord`] and the
//! assembler's plan share one `Arc<[Sha256Digest]>` (32 B per chunk, not
//! 64).
//!
//! [`Sha256Digest`]: esync_proto::id::Sha256Digest

use core::cell::Cell;
use std::io;
use std::sync::Arc;

use esync_package::chunk::{
    ChunkAssembler, ChunkError, ChunkOutcome, ChunkPlan, ChunkStore, ExpectedTransfer,
    StartMismatch,
};
use esync_proto::id::{CorrelationId, UpdateId};
use esync_proto::message::{
    Decision, DownloadDecision, ErrorClass, Failure, FailureCode, ImageEncoding, Phase,
    PrepareOutcome, PrepareResult, Progress, TransferAbort, TransferAck, TransferChunk,
    TransferQuery, TransferStart,
};

use crate::device::{Device, DeviceError};
use crate::error::AgentError;
use crate::state::{Stage, TransferRecord};

use super::{dev, failure, Agent, Context, Ignored, Output};

/// The device's staging area as a [`ChunkStore`], for one step. A power
/// loss is remembered so that the Agent halts (the assembler only sees an
/// I/O error).
struct Staging<'a> {
    device: &'a mut dyn Device,
    power_lost: Cell<Option<&'static str>>,
}

impl<'a> Staging<'a> {
    fn new(device: &'a mut dyn Device) -> Self {
        Staging {
            device,
            power_lost: Cell::new(None),
        }
    }

    fn note(&self, e: DeviceError) -> io::Error {
        if let DeviceError::PowerLoss(op) = e {
            self.power_lost.set(Some(op));
        }
        io::Error::other(e)
    }

    /// `Err` if power was lost during the step.
    fn check(&self) -> Result<(), AgentError> {
        match self.power_lost.get() {
            Some(op) => Err(AgentError::PowerLoss(op)),
            None => Ok(()),
        }
    }
}

impl ChunkStore for Staging<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.device
            .staging_write(offset, data)
            .map_err(|e| self.note(e))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .device
                .staging_read(offset + done as u64, &mut buf[done..])
                .map_err(|e| self.note(e))?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// The failure to report for a transfer start the plan refuses.
fn start_failure(e: &ChunkError) -> Failure {
    match e {
        ChunkError::MetadataMismatch(StartMismatch::ChunkListDigest) => failure(
            ErrorClass::Retryable,
            FailureCode::HashMismatch,
            "chunk list does not match the signed chunk-list digest",
        ),
        other => failure(
            ErrorClass::Retryable,
            FailureCode::LengthMismatch,
            format!("transfer refused: {other}"),
        ),
    }
}

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
                if t.chunk_hashes[..] == s.chunk_hashes[..] && t.total_length == s.total_length {
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
        if s.total_length == 0 {
            Self::transfer_failed(
                out,
                corr,
                s.update_id,
                failure(
                    ErrorClass::Retryable,
                    FailureCode::LengthMismatch,
                    "transfer of 0 bytes",
                ),
            );
            return Ok(());
        }
        let expected = ExpectedTransfer {
            length: expected_len,
            chunk_size: None,
            chunk_list_digest: digest,
        };
        let plan = match ChunkPlan::check_start(s, &expected, &self.chunk_limits) {
            Ok(plan) => plan,
            Err(e) => {
                Self::transfer_failed(out, corr, s.update_id, start_failure(&e));
                return Ok(());
            }
        };
        // Staging holds what is transferred and, for a delta, the image
        // Prepare reconstructs after it: sized from the signed target length.
        let staging_len = match enc {
            ImageEncoding::Full => s.total_length,
            ImageEncoding::Delta { .. } => s.total_length.saturating_add(target.length),
        };
        if staging_len > ctx.device.staging_capacity() {
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
                        staging_len
                    ),
                ),
            );
            return Ok(());
        }
        // Same content as the transfer in progress: resume where it stands.
        if let Some(t) = &rec.transfer {
            if t.chunk_hashes[..] == s.chunk_hashes[..]
                && t.total_length == s.total_length
                && t.chunk_size == s.chunk_size
            {
                let next = t.next_chunk;
                let id = t.transfer_id;
                if let Some(rec) = self.record_mut(&s.update_id) {
                    if let Some(t) = &mut rec.transfer {
                        t.transfer_id = s.transfer_id;
                    }
                }
                match &mut self.chunks {
                    Some(a) if a.transfer_id() == id => a.set_transfer_id(s.transfer_id),
                    _ => self.chunks = None,
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
        if let Err(e) = dev(ctx.device.staging_reset(staging_len))? {
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
                // The plan's list: one copy while receiving.
                chunk_hashes: Arc::clone(plan.shared_hashes()),
                next_chunk: 0,
            });
            rec.staged_image_offset = None;
            rec.stage = Stage::Receiving;
        }
        self.chunks = Some(ChunkAssembler::new(s.transfer_id, plan, ()));
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
        let ack = |next_chunk, rejected| TransferAck {
            transfer_id: c.transfer_id,
            next_chunk,
            rejected,
        };
        if !matches!(rec.stage, Stage::Receiving) {
            // Complete: tell the sender where we stand.
            out.send(corr, ack(t.next_chunk, vec![]));
            return Ok(());
        }
        let t = t.clone();
        let asm = match self.chunks.take() {
            Some(a) if a.transfer_id() == c.transfer_id => a,
            _ => match self.assembler_for(&t, ctx)? {
                Some(a) => a,
                None => {
                    out.send(corr, ack(t.next_chunk, vec![c.index]));
                    return Ok(());
                }
            },
        };
        let (mut asm, ()) = asm.replace_store(Staging::new(&mut *ctx.device));
        let outcome = asm.accept(c);
        let power = asm.store().check();
        let (asm, _) = asm.replace_store(());
        let next = asm.next_chunk();
        self.chunks = Some(asm);
        power?;
        match outcome {
            Ok(ChunkOutcome::Verified) => {}
            // Duplicate or out of range: tell the sender where we stand.
            Ok(ChunkOutcome::Duplicate)
            | Err(ChunkError::IndexOutOfRange(_) | ChunkError::WrongTransfer) => {
                out.send(corr, ack(next, vec![]));
                return Ok(());
            }
            // Bad hash, length or offset, or the staging write failed: ask
            // for this chunk again.
            Ok(ChunkOutcome::Rejected) | Err(_) => {
                out.send(corr, ack(next, vec![c.index]));
                return Ok(());
            }
        }
        let Some(rec) = self.j.update.as_ref() else {
            return Ok(());
        };
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
            self.chunks = None;
            self.persist(ctx)?;
        } else {
            out.ignored = Some(Ignored::AbortUnknownTransfer);
        }
        Ok(())
    }

    /// The assembler for a journaled transfer: chunks before its
    /// `next_chunk` count as verified, later ones are re-verified from
    /// staging. `None` if the journaled chunk list is outside the limits
    /// (journaled by an Agent with other limits).
    fn assembler_for(
        &self,
        t: &TransferRecord,
        ctx: &mut Context<'_>,
    ) -> Result<Option<ChunkAssembler<()>>, AgentError> {
        let Ok(plan) = ChunkPlan::new(
            t.total_length,
            t.chunk_size,
            Arc::clone(&t.chunk_hashes),
            &self.chunk_limits,
        ) else {
            return Ok(None);
        };
        let staging = Staging::new(&mut *ctx.device);
        let asm = ChunkAssembler::resume_from(t.transfer_id, plan, staging, t.next_chunk);
        asm.store().check()?;
        Ok(Some(asm.replace_store(()).0))
    }

    /// Re-verifies staged chunks after the journaled position (recovery).
    pub(super) fn resume_transfer(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let Some(rec) = self.j.update.as_ref() else {
            return Ok(());
        };
        if rec.stage != Stage::Receiving {
            return Ok(());
        }
        let Some(t) = rec.transfer.clone() else {
            return Ok(());
        };
        let Some(asm) = self.assembler_for(&t, ctx)? else {
            // A chunk list this Agent no longer accepts: transfer again.
            if let Some(rec) = self.j.update.as_mut() {
                rec.transfer = None;
                rec.stage = Stage::Consented;
            }
            self.chunks = None;
            return self.persist(ctx);
        };
        let next = asm.next_chunk();
        let complete = asm.is_complete();
        self.chunks = Some(asm);
        if let Some(rec) = self.j.update.as_mut() {
            if let Some(tr) = &mut rec.transfer {
                tr.next_chunk = next;
            }
            if complete {
                rec.stage = Stage::Received;
            }
        }
        if next != t.next_chunk {
            self.persist(ctx)?;
        }
        self.journaled_next_chunk = next;
        Ok(())
    }
}
