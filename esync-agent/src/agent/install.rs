//! Install: the install command, confirm, and the install steps driven by poll
//! (pre-install, write, activate, self-test, commit), failed attempts.

use esync_proto::id::CorrelationId;
use esync_proto::message::{
    Confirm, Confirmed, ErrorClass, Failure, FailureCode, ImageEncoding, InstallOutcome,
    InstallResult, InstallStart, InstalledImage, Phase, RollbackTarget,
};

use crate::device::{hash_with, SelfTest};
use crate::error::AgentError;
use crate::state::{Stage, UpdateRecord};
use crate::target::DirectedTarget;

use super::reconstruct::Dest;
use super::{dev, failure, Agent, Context, Ignored, Output, IO_BUF};

impl Agent {
    pub(super) fn on_install(
        &mut self,
        i: &InstallStart,
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
        let fail = |f: Failure| InstallResult {
            update_id: i.update_id,
            outcome: InstallOutcome::Failed {
                failure: f,
                running: running.version.clone(),
            },
        };
        let Some(rec) = self.record(&i.update_id) else {
            out.send(
                corr,
                fail(failure(
                    ErrorClass::Retryable,
                    FailureCode::UnknownUpdate,
                    "no prepared update with this id",
                )),
            );
            return Ok(());
        };
        let target = match (&rec.stage, &rec.target) {
            (Stage::Prepared { .. }, Ok(t)) => t.clone(),
            (Stage::Terminal { failure }, _) => {
                out.send(corr, fail(failure.clone()));
                return Ok(());
            }
            (Stage::AwaitingConfirm | Stage::Settled, _) if self.resend_last(rec, corr, out) => {
                return Ok(())
            }
            _ => {
                out.send(
                    corr,
                    fail(failure(
                        ErrorClass::Retryable,
                        FailureCode::UnknownUpdate,
                        "update is not prepared",
                    )),
                );
                return Ok(());
            }
        };
        if let Err(f) = self.check_target(&target, &running) {
            self.emit_final(out, corr, fail(f).into());
            return self.persist(ctx);
        }
        if let Some(expr) = &self.config.install_precondition {
            let signals = dev(ctx.device.signals())?.unwrap_or_default();
            let holds = expr.eval(&signals);
            if holds != Ok(true) {
                let why = match holds {
                    Ok(_) => format!("precondition `{expr}` does not hold"),
                    Err(e) => format!("precondition `{expr}` cannot be evaluated: {e}"),
                };
                self.emit_final(
                    out,
                    corr,
                    fail(failure(
                        ErrorClass::Retryable,
                        FailureCode::PreconditionFailed,
                        why,
                    ))
                    .into(),
                );
                return self.persist(ctx);
            }
        }
        let timeout = self.config.confirm_timeout_ms;
        let now = self.mono();
        if let Some(rec) = self.record_mut(&i.update_id) {
            rec.attempts += 1;
            rec.activations = 0;
            rec.await_confirm = i.await_confirm;
            rec.install_correlation = corr;
            rec.confirm_deadline_ms = timeout.map(|t| now.saturating_add(t));
            rec.from = Some(running);
            rec.stage = Stage::PreInstall;
        }
        self.persist(ctx)?;
        self.progress(out, Phase::PreInstall, 0, 1);
        Ok(())
    }

    pub(super) fn on_confirm(
        &mut self,
        c: &Confirm,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let Some(rec) = self.record_mut(&c.update_id) else {
            out.ignored = Some(Ignored::ConfirmUnknownUpdate);
            return Ok(());
        };
        if rec.stage == Stage::AwaitingConfirm {
            rec.confirm_correlation = corr;
            rec.stage = Stage::Committing;
            self.persist(ctx)?;
            return Ok(());
        }
        match rec.last_report.clone() {
            Some(r) => out.send(corr, r),
            None => out.ignored = Some(Ignored::ConfirmNotAwaited),
        }
        Ok(())
    }

    /// After a restart while awaiting confirmation: if the bootloader fell
    /// back, the install failed.
    pub(super) fn check_trial_survived(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        let Some(rec) = &self.j.update else {
            return Ok(());
        };
        let Ok(target) = &rec.target else {
            return Ok(());
        };
        let sha = target.sha256;
        if let Ok(running) = self.running(ctx)? {
            if running.sha256 != sha {
                self.fail_attempt(
                    failure(
                        ErrorClass::Retryable,
                        FailureCode::SelfTestFailed,
                        "the device fell back to the previous image during a restart",
                    ),
                    ctx,
                    out,
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn step(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        let Some(rec) = self.j.update.clone() else {
            return Ok(());
        };
        let target = rec.target.clone().ok();
        match (&rec.stage, target) {
            (Stage::AwaitingConfirm, _) => {
                if rec.confirm_deadline_ms.is_some_and(|d| self.mono() >= d) {
                    let f = failure(
                        ErrorClass::Retryable,
                        FailureCode::Timeout,
                        "no confirm before the deadline; rolled back",
                    );
                    self.start_auto_rollback(f, &rec, ctx)?;
                }
                Ok(())
            }
            (Stage::PreInstall, Some(_)) => {
                match dev(ctx.device.pre_install())? {
                    Ok(()) => {
                        self.set_stage(Stage::Writing);
                        self.write_offset = 0;
                        self.slot_begun = false;
                        self.persist(ctx)?;
                        self.progress(out, Phase::PreInstall, 1, 1);
                    }
                    Err(e) => self.fail_attempt(
                        failure(
                            ErrorClass::Retryable,
                            FailureCode::WriteFailed,
                            format!("pre-install: {e}"),
                        ),
                        ctx,
                        out,
                    )?,
                }
                Ok(())
            }
            (Stage::Writing, Some(t)) => self.step_write(&rec, &t, ctx, out),
            (Stage::Activating, Some(t)) => self.step_activate(&rec, &t, ctx, out),
            (Stage::SelfTest, Some(t)) => self.step_self_test(&rec, &t, ctx, out),
            (Stage::Committing, Some(t)) => {
                // Commit only the image verified: after restarts the
                // bootloader may have fallen back to the previous one.
                match self.running(ctx)? {
                    Ok(r) if r.sha256 == t.sha256 => {}
                    _ => {
                        let f = failure(
                            ErrorClass::Retryable,
                            FailureCode::ActivationFailed,
                            "the device fell back to the previous image before the commit",
                        );
                        return self.fail_attempt(f, ctx, out);
                    }
                }
                if let Err(e) = dev(ctx.device.commit())? {
                    let f = failure(
                        ErrorClass::Retryable,
                        FailureCode::ActivationFailed,
                        format!("commit: {e}"),
                    );
                    return self.start_auto_rollback(f, &rec, ctx);
                }
                self.set_stage(Stage::Settled);
                if rec.await_confirm {
                    self.emit_final(
                        out,
                        rec.confirm_correlation,
                        Confirmed {
                            update_id: rec.update_id,
                            version: t.version.clone(),
                        }
                        .into(),
                    );
                } else {
                    self.emit_final(
                        out,
                        rec.install_correlation,
                        InstallResult {
                            update_id: rec.update_id,
                            outcome: InstallOutcome::Installed {
                                version: t.version.clone(),
                                awaiting_confirm: false,
                            },
                        }
                        .into(),
                    );
                }
                self.persist(ctx)
            }
            (
                Stage::RollingBack {
                    target,
                    expect,
                    failure: f,
                    correlation,
                },
                _,
            ) => self.step_rollback(
                &rec,
                target,
                expect.as_ref(),
                f.as_ref(),
                *correlation,
                ctx,
                out,
            ),
            (s, None) if s.busy() => {
                // Cannot happen: installs need a verified target. Settle safely.
                self.set_stage(Stage::Settled);
                self.persist(ctx)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn step_write(
        &mut self,
        rec: &UpdateRecord,
        t: &DirectedTarget,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        let wf = |e: String| failure(ErrorClass::Retryable, FailureCode::WriteFailed, e);
        if !self.slot_begun {
            if let Err(e) = dev(ctx.device.slot_begin(t.length))? {
                return self.fail_attempt(wf(format!("slot begin: {e}")), ctx, out);
            }
            self.slot_begun = true;
            self.write_offset = 0;
            // A reconstruction of an earlier slot_begin writes nothing more.
            self.delta = None;
        }
        let Some(enc) = &rec.encoding else {
            return self.fail_attempt(wf("no encoding recorded".into()), ctx, out);
        };
        // A full image, or a delta Prepare reconstructed, is copied from
        // staging; only a delta prepared by a format-1 journal's Agent is
        // reconstructed here.
        let copy_from = match (enc, rec.staged_image_offset) {
            (ImageEncoding::Full, _) => Some(0),
            (ImageEncoding::Delta { .. }, at) => at,
        };
        match (enc, copy_from) {
            (_, Some(base)) => {
                if self.write_offset < t.length {
                    let n = (t.length - self.write_offset).min(self.config.write_quantum as u64)
                        as usize;
                    let mut buf = vec![0u8; n];
                    let mut got = 0;
                    while got < n {
                        match dev(ctx
                            .device
                            .staging_read(base + self.write_offset + got as u64, &mut buf[got..]))?
                        {
                            Ok(0) => {
                                return self.fail_attempt(
                                    wf("staged image shorter than declared".into()),
                                    ctx,
                                    out,
                                )
                            }
                            Ok(k) => got += k,
                            Err(e) => {
                                return self.fail_attempt(
                                    wf(format!("staging read: {e}")),
                                    ctx,
                                    out,
                                )
                            }
                        }
                    }
                    if let Err(e) = dev(ctx.device.slot_write(self.write_offset, &buf))? {
                        return self.fail_attempt(wf(format!("slot write: {e}")), ctx, out);
                    }
                    self.write_offset += n as u64;
                    self.progress(out, Phase::Write, self.write_offset, t.length);
                    if self.write_offset < t.length {
                        return Ok(());
                    }
                }
            }
            (ImageEncoding::Full, None) => {
                return self.fail_attempt(wf("no staged image".into()), ctx, out)
            }
            (
                ImageEncoding::Delta {
                    format,
                    patch_length,
                    source_sha256,
                    ..
                },
                None,
            ) => {
                // One bounded step per poll: at most `write_quantum` bytes
                // of patch work plus one applier block.
                let source_len = rec.from.as_ref().map_or(0, |f| f.length);
                let mut run = match self.delta.take() {
                    Some(run) => run,
                    None => match self.begin_delta(*format, *source_sha256, t, ctx) {
                        Ok(run) => run,
                        Err(e) => return self.fail_attempt(e.into_failure()?, ctx, out),
                    },
                };
                let budget = self.config.write_quantum as u64;
                match self.step_delta(
                    &mut run,
                    source_len,
                    *patch_length,
                    t,
                    Dest::Slot,
                    budget,
                    ctx,
                ) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.write_offset = run.written();
                        self.delta = Some(run);
                        self.progress(out, Phase::Write, self.write_offset, t.length);
                        return Ok(());
                    }
                    Err(e) => return self.fail_attempt(e.into_failure()?, ctx, out),
                }
                self.write_offset = t.length;
                self.progress(out, Phase::Write, t.length, t.length);
            }
        }
        // Verify what the slot really holds before describing it as valid.
        let mut buf = vec![0u8; IO_BUF];
        let got = dev(hash_with(t.length, &mut buf, |o, b| {
            ctx.device.slot_read(o, b)
        }))?;
        if got.as_ref().ok() != Some(&t.sha256) {
            return self.fail_attempt(
                wf("inactive slot does not hold the expected image after writing".into()),
                ctx,
                out,
            );
        }
        let image = InstalledImage {
            version: t.version.clone(),
            release_counter: t.release_counter,
            length: t.length,
            sha256: t.sha256,
        };
        if let Err(e) = dev(ctx.device.slot_finish(&image))? {
            return self.fail_attempt(wf(format!("slot finish: {e}")), ctx, out);
        }
        self.slot_begun = false;
        self.set_stage(Stage::Activating);
        self.persist(ctx)
    }

    pub(super) fn step_activate(
        &mut self,
        rec: &UpdateRecord,
        t: &DirectedTarget,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        let af = |e: String| failure(ErrorClass::Retryable, FailureCode::ActivationFailed, e);
        let running = match self.running(ctx)? {
            Ok(r) => r,
            Err(e) => return self.fail_attempt(af(e.to_string()), ctx, out),
        };
        if running.sha256 != t.sha256 {
            let inactive = dev(ctx.device.inactive())?.ok().flatten();
            if inactive.as_ref().map(|i| i.sha256) != Some(t.sha256) {
                // The slot lost its image (restart during the write): write again.
                self.set_stage(Stage::Writing);
                self.slot_begun = false;
                return self.persist(ctx);
            }
            if rec.activations >= 2 {
                return self.fail_attempt(af("activation did not take effect".into()), ctx, out);
            }
            if let Some(u) = &mut self.j.update {
                u.activations += 1;
            }
            self.persist(ctx)?;
            self.progress(out, Phase::Activate, 0, 1);
            if let Err(e) = dev(ctx.device.activate())? {
                return self.fail_attempt(af(format!("activate: {e}")), ctx, out);
            }
            match self.running(ctx)? {
                Ok(r) if r.sha256 == t.sha256 => {}
                _ => {
                    return self.fail_attempt(
                        af("device does not run the new image after activation".into()),
                        ctx,
                        out,
                    )
                }
            }
        }
        self.set_stage(Stage::SelfTest);
        self.persist(ctx)?;
        self.progress(out, Phase::Activate, 1, 1);
        Ok(())
    }

    pub(super) fn step_self_test(
        &mut self,
        rec: &UpdateRecord,
        t: &DirectedTarget,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        match self.running(ctx)? {
            Ok(r) if r.sha256 == t.sha256 => {}
            _ => {
                return self.fail_attempt(
                    failure(
                        ErrorClass::Retryable,
                        FailureCode::SelfTestFailed,
                        "the device fell back to the previous image before the self-test passed",
                    ),
                    ctx,
                    out,
                );
            }
        }
        self.progress(out, Phase::SelfTest, 0, 1);
        let result = match dev(ctx.device.self_test())? {
            Ok(r) => r,
            Err(e) => SelfTest::Failed(format!("self-test could not run: {e}")),
        };
        match result {
            SelfTest::Passed => {
                self.progress(out, Phase::SelfTest, 1, 1);
                if rec.await_confirm {
                    self.set_stage(Stage::AwaitingConfirm);
                    self.emit_final(
                        out,
                        rec.install_correlation,
                        InstallResult {
                            update_id: rec.update_id,
                            outcome: InstallOutcome::Installed {
                                version: t.version.clone(),
                                awaiting_confirm: true,
                            },
                        }
                        .into(),
                    );
                } else {
                    self.set_stage(Stage::Committing);
                }
                self.persist(ctx)
            }
            SelfTest::Failed(why) => {
                let f = failure(ErrorClass::Retryable, FailureCode::SelfTestFailed, why);
                self.start_auto_rollback(f, rec, ctx)
            }
        }
    }

    pub(super) fn start_auto_rollback(
        &mut self,
        f: Failure,
        rec: &UpdateRecord,
        ctx: &mut Context<'_>,
    ) -> Result<(), AgentError> {
        self.set_stage(Stage::RollingBack {
            target: RollbackTarget::PreviousSlot,
            expect: rec.from.clone(),
            failure: Some(f),
            correlation: rec.install_correlation,
        });
        self.persist(ctx)
    }

    /// A failed install attempt. If the device does not run the image it
    /// ran before, roll back first; otherwise report, and go back to
    /// Prepared (another attempt may follow) or to Terminal at the limit.
    pub(super) fn fail_attempt(
        &mut self,
        f: Failure,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        let Some(rec) = self.j.update.clone() else {
            return Ok(());
        };
        let running = self.running(ctx)?.ok();
        if let (Some(from), Some(r)) = (&rec.from, &running) {
            if from.sha256 != r.sha256 {
                return self.start_auto_rollback(f, &rec, ctx);
            }
        }
        self.slot_begun = false;
        self.delta = None;
        let running_version = running
            .map(|r| r.version)
            .or_else(|| rec.from.as_ref().map(|f| f.version.clone()));
        let Some(running_version) = running_version else {
            return Err(AgentError::NoRunningImage);
        };
        let (report, stage) = if rec.attempts >= self.config.max_install_attempts {
            let term = failure(
                ErrorClass::Terminal,
                FailureCode::RetryLimitReached,
                format!(
                    "attempt {} of {} failed: {}",
                    rec.attempts, self.config.max_install_attempts, f.message
                ),
            );
            (term.clone(), Stage::Terminal { failure: term })
        } else {
            let sha = rec.target.as_ref().map(|t| t.sha256).unwrap_or_default();
            (f, Stage::Prepared { sha256: sha })
        };
        self.set_stage(stage);
        self.emit_final(
            out,
            rec.install_correlation,
            InstallResult {
                update_id: rec.update_id,
                outcome: InstallOutcome::Failed {
                    failure: report,
                    running: running_version,
                },
            }
            .into(),
        );
        self.persist(ctx)
    }
}
