//! Prepare: verifying the staged image or patch before an install.

use esync_proto::id::{CorrelationId, Sha256Digest, TransferId, UpdateId};
use esync_proto::message::{
    ErrorClass, FailureCode, ImageEncoding, Phase, Prepare, PrepareOutcome, PrepareResult,
};

use crate::device::{hash_with, DeviceError};
use crate::error::AgentError;
use crate::state::{Stage, TransferRecord};
use crate::target::DirectedTarget;

use super::reconstruct::{DeltaRun, Dest};
use super::{dev, failure, Agent, Context, Output, StepError, IO_BUF};

/// What Prepare's first call found.
enum PrepareStart {
    /// A full image, verified.
    Ready(Sha256Digest),
    /// A delta, its patch and source verified: reconstruct it.
    Reconstruct {
        /// The reconstruction, begun.
        run: DeltaRun,
        /// Length of the running image (the source).
        source_len: u64,
    },
}

/// A Prepare reconstructing a delta into staging, between polls. Not
/// journaled: after a restart the stage is still Received and the Client's
/// next Prepare begins again.
#[derive(Debug)]
pub(super) struct Preparing {
    update_id: UpdateId,
    transfer_id: TransferId,
    correlation: CorrelationId,
    run: DeltaRun,
    source_len: u64,
    patch_len: u64,
}

impl Agent {
    pub(super) fn on_prepare(
        &mut self,
        p: &Prepare,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let result = |outcome| PrepareResult {
            update_id: p.update_id,
            outcome,
        };
        let Some(rec) = self.record(&p.update_id) else {
            out.send(
                corr,
                result(PrepareOutcome::Failed(failure(
                    ErrorClass::Retryable,
                    FailureCode::UnknownUpdate,
                    "no metadata for this update",
                ))),
            );
            return Ok(());
        };
        let target = match &rec.target {
            Ok(t) => t.clone(),
            Err(f) => {
                out.send(corr, result(PrepareOutcome::Failed(f.clone())));
                return Ok(());
            }
        };
        match &rec.stage {
            Stage::Prepared { sha256 } => {
                // Already prepared: answer without redoing the work.
                out.send(
                    corr,
                    result(PrepareOutcome::Ready {
                        version: target.version.clone(),
                        sha256: *sha256,
                    }),
                );
                return Ok(());
            }
            Stage::AwaitingConfirm | Stage::Settled if rec.last_report.is_some() => {
                out.send(
                    corr,
                    result(PrepareOutcome::Ready {
                        version: target.version.clone(),
                        sha256: target.sha256,
                    }),
                );
                return Ok(());
            }
            Stage::Terminal { failure } => {
                out.send(corr, result(PrepareOutcome::Failed(failure.clone())));
                return Ok(());
            }
            Stage::Received => {}
            _ => {
                let next = rec.transfer.as_ref().map_or(0, |t| t.next_chunk);
                let n = rec.transfer.as_ref().map_or(0, |t| t.chunks());
                out.send(
                    corr,
                    result(PrepareOutcome::Failed(failure(
                        ErrorClass::Retryable,
                        FailureCode::LengthMismatch,
                        format!("transfer incomplete: {next} of {n} chunks"),
                    ))),
                );
                return Ok(());
            }
        }
        let transfer = rec.transfer.clone();
        let encoding = rec.encoding.clone();
        let (Some(transfer), Some(encoding)) = (transfer, encoding) else {
            out.send(
                corr,
                result(PrepareOutcome::Failed(failure(
                    ErrorClass::Retryable,
                    FailureCode::UnknownUpdate,
                    "no transfer for this update",
                ))),
            );
            return Ok(());
        };
        if transfer.transfer_id != p.transfer_id {
            out.send(
                corr,
                result(PrepareOutcome::Failed(failure(
                    ErrorClass::Retryable,
                    FailureCode::UnknownUpdate,
                    "prepare names another transfer",
                ))),
            );
            return Ok(());
        }
        if let Some(run) = &mut self.preparing {
            if run.update_id == p.update_id && run.transfer_id == p.transfer_id {
                // Already reconstructing: answer from the poll that finishes.
                run.correlation = corr;
                return Ok(());
            }
        }
        self.preparing = None;
        match self.prepare_work(&target, &transfer, &encoding, ctx, out) {
            Ok(PrepareStart::Ready(sha256)) => {
                self.prepared(p.update_id, corr, &target, sha256, None, ctx, out)
            }
            Ok(PrepareStart::Reconstruct { run, source_len }) => {
                self.preparing = Some(Preparing {
                    update_id: p.update_id,
                    transfer_id: p.transfer_id,
                    correlation: corr,
                    run,
                    source_len,
                    patch_len: transfer.total_length,
                });
                Ok(())
            }
            Err(e) => self.prepare_failed(p.update_id, corr, e, ctx, out),
        }
    }

    /// Reports READY for a verified image; `staged_at` is where Prepare put
    /// a reconstructed delta image in staging.
    #[allow(clippy::too_many_arguments, reason = "internal helper")]
    fn prepared(
        &mut self,
        update_id: UpdateId,
        corr: CorrelationId,
        target: &DirectedTarget,
        sha256: Sha256Digest,
        staged_at: Option<u64>,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if let Some(rec) = self.record_mut(&update_id) {
            rec.stage = Stage::Prepared { sha256 };
            rec.staged_image_offset = staged_at;
        }
        self.persist(ctx)?;
        out.send(
            corr,
            PrepareResult {
                update_id,
                outcome: PrepareOutcome::Ready {
                    version: target.version.clone(),
                    sha256,
                },
            },
        );
        Ok(())
    }

    fn prepare_failed(
        &mut self,
        update_id: UpdateId,
        corr: CorrelationId,
        e: StepError,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        let f = e.into_failure()?;
        if f.code == FailureCode::HashMismatch {
            // The staged bytes are wrong: discard them so a retry transfers again.
            if let Some(rec) = self.record_mut(&update_id) {
                rec.transfer = None;
                rec.staged_image_offset = None;
                rec.stage = Stage::Consented;
            }
            self.persist(ctx)?;
        }
        out.send(
            corr,
            PrepareResult {
                update_id,
                outcome: PrepareOutcome::Failed(f),
            },
        );
        Ok(())
    }

    /// One bounded step of the reconstruction Prepare started (at most
    /// `write_quantum` bytes of patch work plus one applier block, into
    /// staging after the patch); the poll that finishes sends READY.
    pub(super) fn step_prepare(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        let Some(mut run) = self.preparing.take() else {
            return Ok(());
        };
        let target = match self.record(&run.update_id) {
            Some(rec)
                if rec.stage == Stage::Received
                    && rec
                        .transfer
                        .as_ref()
                        .is_some_and(|t| t.transfer_id == run.transfer_id) =>
            {
                match &rec.target {
                    Ok(t) => t.clone(),
                    Err(_) => return Ok(()),
                }
            }
            // The update moved on (a new offer or transfer): drop the run.
            _ => return Ok(()),
        };
        let dest = Dest::Staging {
            offset: run.patch_len,
        };
        let budget = self.config.write_quantum as u64;
        match self.step_delta(
            &mut run.run,
            run.source_len,
            run.patch_len,
            &target,
            dest,
            budget,
            ctx,
        ) {
            Ok(false) => {
                self.progress(out, Phase::Patch, run.run.written(), target.length);
                self.preparing = Some(run);
                Ok(())
            }
            Ok(true) => {
                self.progress(out, Phase::Patch, target.length, target.length);
                let sha = target.sha256;
                let at = Some(run.patch_len);
                self.prepared(run.update_id, run.correlation, &target, sha, at, ctx, out)
            }
            Err(e) => self.prepare_failed(run.update_id, run.correlation, e, ctx, out),
        }
    }

    /// Verifies the staged image or patch; for a delta, checks the source
    /// and begins the reconstruction that [`Agent::step_prepare`] runs.
    fn prepare_work(
        &mut self,
        target: &DirectedTarget,
        transfer: &TransferRecord,
        encoding: &ImageEncoding,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<PrepareStart, StepError> {
        use ErrorClass::{Retryable as R, UpdateIncapable as U};
        let internal = |e: DeviceError| failure(R, FailureCode::Internal, e.to_string());
        let installed = self.running(ctx)?.map_err(internal)?;
        self.check_target(target, &installed)?;
        let mut buf = vec![0u8; IO_BUF];
        let total = transfer.total_length;
        self.progress(out, Phase::Verify, 0, total);
        let staged = dev(hash_with(total, &mut buf, |o, b| {
            ctx.device.staging_read(o, b)
        }))?
        .map_err(internal)?;
        match encoding {
            ImageEncoding::Full => {
                if staged != target.sha256 {
                    return Err(StepError::Fail(failure(
                        R,
                        FailureCode::HashMismatch,
                        "image does not match the SHA-256 in the verified metadata",
                    )));
                }
                self.progress(out, Phase::Verify, total, total);
                Ok(PrepareStart::Ready(target.sha256))
            }
            ImageEncoding::Delta {
                format,
                source_sha256,
                patch_sha256,
                ..
            } => {
                if staged != *patch_sha256 {
                    return Err(StepError::Fail(failure(
                        R,
                        FailureCode::HashMismatch,
                        "patch does not match its SHA-256",
                    )));
                }
                // Hash the installed image as it is, not as it is described.
                let actual = dev(hash_with(installed.length, &mut buf, |o, b| {
                    ctx.device.read_running(o, b)
                }))?
                .map_err(internal)?;
                if actual != *source_sha256 || installed.sha256 != *source_sha256 {
                    return Err(StepError::Fail(failure(
                        U,
                        FailureCode::DeltaSourceMismatch,
                        "installed image does not match the patch's source hash",
                    )));
                }
                drop(buf);
                self.progress(out, Phase::Patch, 0, target.length);
                let run = self.begin_delta(*format, *source_sha256, target, ctx)?;
                Ok(PrepareStart::Reconstruct {
                    run,
                    source_len: installed.length,
                })
            }
        }
    }
}
