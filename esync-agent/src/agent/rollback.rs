//! Rollback: the rollback command and the rollback step (commanded or
//! automatic).

use esync_proto::id::{CorrelationId, SoftwareVersion};
use esync_proto::message::{
    ErrorClass, Failure, FailureCode, InstallOutcome, InstallResult, InstalledImage, Payload,
    Phase, Rollback, RollbackOutcome, RollbackResult, RollbackTarget,
};

use crate::device::hash_with;
use crate::error::AgentError;
use crate::state::{Stage, UpdateRecord};

use super::{dev, failure, Agent, Context, Output, StepError, IO_BUF};

impl Agent {
    pub(super) fn on_rollback(
        &mut self,
        r: &Rollback,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let Some(running) = self.running_or_busy(ctx, out, corr)? else {
            return Ok(());
        };
        if let Some(rec) = self.record(&r.update_id) {
            if let (Some(r @ Payload::RollbackResult(_)), Stage::Settled) =
                (&rec.last_report, &rec.stage)
            {
                out.send(corr, r.clone());
                return Ok(());
            }
            let installed = matches!(
                rec.stage,
                Stage::AwaitingConfirm | Stage::Settled | Stage::Terminal { .. }
            );
            // The device already runs the image it ran before this update (a
            // failed install switched back by itself): switching to the
            // "previous" slot now would boot the failed image.
            let reverted = rec
                .from
                .as_ref()
                .is_some_and(|f| f.sha256 == running.sha256 && f.version == running.version);
            if !installed || reverted {
                // Not in effect on the device: nothing to undo; drop the staged update.
                if r.target == RollbackTarget::PreviousSlot {
                    if let Some(rec) = self.record_mut(&r.update_id) {
                        rec.stage = Stage::Settled;
                        rec.transfer = None;
                    }
                    self.emit_final(
                        out,
                        corr,
                        RollbackResult {
                            update_id: r.update_id,
                            outcome: RollbackOutcome::RolledBack {
                                version: running.version,
                            },
                        }
                        .into(),
                    );
                    return self.persist(ctx);
                }
            }
        } else {
            // A rollback not tied to the current update (e.g. to a backup).
            self.j.update = Some(UpdateRecord {
                update_id: r.update_id,
                target: Err(failure(
                    ErrorClass::UpdateIncapable,
                    FailureCode::UnknownUpdate,
                    "rollback only",
                )),
                encoding: None,
                decision: None,
                transfer: None,
                stage: Stage::Settled,
                attempts: 0,
                activations: 0,
                await_confirm: false,
                install_correlation: corr,
                confirm_correlation: corr,
                confirm_deadline_ms: None,
                from: Some(running.clone()),
                last_report: None,
                staged_image_offset: None,
            });
        }
        let expect = match &r.target {
            RollbackTarget::PreviousSlot => dev(ctx.device.inactive())?.ok().flatten(),
            _ => None,
        };
        if let Some(rec) = self.record_mut(&r.update_id) {
            rec.stage = Stage::RollingBack {
                target: r.target.clone(),
                expect,
                failure: None,
                correlation: corr,
            };
        }
        self.persist(ctx)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; the pieces of the rollback stage"
    )]
    pub(super) fn step_rollback(
        &mut self,
        rec: &UpdateRecord,
        target: &RollbackTarget,
        expect: Option<&InstalledImage>,
        auto: Option<&Failure>,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        self.progress(out, Phase::Rollback, 0, 1);
        let outcome = match self.do_rollback(target, expect, ctx) {
            Ok(version) => Ok(version),
            Err(e) => Err(e.into_failure()?),
        };
        self.progress(out, Phase::Rollback, 1, 1);
        match (auto, outcome) {
            (Some(f), Ok(_)) => {
                // Undo of a failed attempt: now report the attempt.
                let now_running = self.running(ctx)?.ok();
                if let Some(u) = &mut self.j.update {
                    if now_running.is_some() {
                        u.from = now_running;
                    }
                }
                self.fail_attempt(f.clone(), ctx, out)
            }
            (Some(f), Err(rf)) => {
                let term = failure(
                    ErrorClass::Terminal,
                    FailureCode::RollbackFailed,
                    format!("{}; rollback failed: {}", f.message, rf.message),
                );
                let running = self
                    .running(ctx)?
                    .ok()
                    .map(|r| r.version)
                    .or_else(|| rec.from.as_ref().map(|x| x.version.clone()));
                self.set_stage(Stage::Terminal {
                    failure: term.clone(),
                });
                if let Some(running) = running {
                    self.emit_final(
                        out,
                        corr,
                        InstallResult {
                            update_id: rec.update_id,
                            outcome: InstallOutcome::Failed {
                                failure: term,
                                running,
                            },
                        }
                        .into(),
                    );
                }
                self.persist(ctx)
            }
            (None, Ok(version)) => {
                self.set_stage(Stage::Settled);
                self.emit_final(
                    out,
                    corr,
                    RollbackResult {
                        update_id: rec.update_id,
                        outcome: RollbackOutcome::RolledBack { version },
                    }
                    .into(),
                );
                self.persist(ctx)
            }
            (None, Err(rf)) => {
                self.set_stage(Stage::Settled);
                self.emit_final(
                    out,
                    corr,
                    RollbackResult {
                        update_id: rec.update_id,
                        outcome: RollbackOutcome::Failed(rf),
                    }
                    .into(),
                );
                self.persist(ctx)
            }
        }
    }

    /// Performs a rollback; idempotent (finds it done if it already is).
    /// Returns the version running afterwards, checked by hashing it.
    pub(super) fn do_rollback(
        &mut self,
        target: &RollbackTarget,
        expect: Option<&InstalledImage>,
        ctx: &mut Context<'_>,
    ) -> Result<SoftwareVersion, StepError> {
        let rf = |m: String| failure(ErrorClass::UpdateIncapable, FailureCode::RollbackFailed, m);
        let running = self.running(ctx)?.map_err(|e| rf(e.to_string()))?;
        let done = match target {
            RollbackTarget::PreviousSlot => {
                let Some(expect) = expect else {
                    return Err(rf("no previous image to roll back to".into()).into());
                };
                if running.sha256 == expect.sha256 {
                    // Already there; make sure it is not left on trial.
                    if dev(ctx.device.on_trial())?.unwrap_or(false) {
                        dev(ctx.device.commit())?.map_err(|e| rf(e.to_string()))?;
                    }
                    Ok(())
                } else {
                    dev(ctx.device.rollback_previous())?.map_err(|e| rf(e.to_string()))
                }
            }
            RollbackTarget::Version(v) => {
                let inactive = dev(ctx.device.inactive())?.ok().flatten();
                if &running.version == v && !dev(ctx.device.on_trial())?.unwrap_or(false) {
                    Ok(())
                } else if inactive.as_ref().is_some_and(|i| &i.version == v) {
                    dev(ctx.device.rollback_previous())?.map_err(|e| rf(e.to_string()))
                } else {
                    dev(ctx.device.restore_backup(v))?.map_err(|e| rf(e.to_string()))
                }
            }
            RollbackTarget::Backup => {
                let backups = dev(ctx.device.backups())?.unwrap_or_default();
                if backups.iter().any(|b| b.sha256 == running.sha256)
                    && !dev(ctx.device.on_trial())?.unwrap_or(false)
                {
                    Ok(())
                } else {
                    // Along the ordered list: the first backup that restores.
                    let mut last = rf("no backup available".into());
                    let mut ok = false;
                    for b in &backups {
                        match dev(ctx.device.restore_backup(&b.version))? {
                            Ok(()) => {
                                ok = true;
                                break;
                            }
                            Err(e) => last = rf(format!("backup {}: {e}", b.version)),
                        }
                    }
                    if ok {
                        Ok(())
                    } else {
                        Err(last)
                    }
                }
            }
        };
        done?;
        // Confirm by hash that the device runs a complete image.
        let now = self.running(ctx)?.map_err(|e| rf(e.to_string()))?;
        let mut buf = vec![0u8; IO_BUF];
        let actual = dev(hash_with(now.length, &mut buf, |o, b| {
            ctx.device.read_running(o, b)
        }))?;
        if actual.as_ref().ok() != Some(&now.sha256) {
            return Err(
                rf("the image running after the rollback does not match its hash".into()).into(),
            );
        }
        Ok(now.version)
    }
}
