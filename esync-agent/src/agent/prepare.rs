//! Prepare: verifying the staged image or patch before an install.

use esync_proto::id::{CorrelationId, Sha256Digest};
use esync_proto::message::{
    ErrorClass, FailureCode, ImageEncoding, Phase, Prepare, PrepareOutcome, PrepareResult,
};

use crate::device::{hash_with, DeviceError};
use crate::error::AgentError;
use crate::state::{Stage, TransferRecord};
use crate::target::DirectedTarget;

use super::{dev, failure, Agent, Context, Output, StepError, IO_BUF};

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
        match self.prepare_work(&target, &transfer, &encoding, ctx, out) {
            Ok(sha256) => {
                if let Some(rec) = self.record_mut(&p.update_id) {
                    rec.stage = Stage::Prepared { sha256 };
                }
                self.persist(ctx)?;
                out.send(
                    corr,
                    result(PrepareOutcome::Ready {
                        version: target.version,
                        sha256,
                    }),
                );
            }
            Err(e) => {
                let f = e.into_failure()?;
                if f.code == FailureCode::HashMismatch {
                    // The staged bytes are wrong: discard them so a retry transfers again.
                    if let Some(rec) = self.record_mut(&p.update_id) {
                        rec.transfer = None;
                        rec.stage = Stage::Consented;
                    }
                    self.persist(ctx)?;
                }
                out.send(corr, result(PrepareOutcome::Failed(f)));
            }
        }
        Ok(())
    }

    /// Verifies the staged image or patch (and reconstructs a delta in a
    /// dry run that only hashes the output).
    pub(super) fn prepare_work(
        &mut self,
        target: &DirectedTarget,
        transfer: &TransferRecord,
        encoding: &ImageEncoding,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<Sha256Digest, StepError> {
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
                Ok(target.sha256)
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
                let mut run = self.begin_delta(*format, *source_sha256, target, ctx)?;
                while !self.step_delta(
                    &mut run,
                    installed.length,
                    total,
                    target,
                    false,
                    u64::MAX,
                    ctx,
                )? {}
                self.progress(out, Phase::Patch, target.length, target.length);
                Ok(target.sha256)
            }
        }
    }
}
