//! Update metadata verification and download offers (consent).

use esync_proto::id::{CorrelationId, Id128, SoftwareVersion};
use esync_proto::message::{
    BusyReason, Decision, DoNotDisturb, DownloadDecision, DownloadOffer, ImageEncoding,
    PatchFormat, UpdateMetadata,
};

use crate::device::DeviceError;
use crate::error::AgentError;
use crate::state::{Stage, UpdateRecord};
use crate::target::{DeltaEntry, DirectedTarget, EcuIdentity};

use super::{dev, Agent, Context, Ignored, Output, StepError};

/// Why an offer is denied before the consent policy is asked (the text
/// is the denial's reason on the wire).
#[derive(Debug, thiserror::Error)]
pub(super) enum OfferRefusal {
    /// Version, release counter, length, hash or name differ from the
    /// verified target.
    #[error("offer does not match the verified metadata")]
    NotTheVerifiedTarget,
    /// The patch format is not one the applier supports.
    #[error("patch format {0:?} not supported")]
    UnsupportedFormat(PatchFormat),
    /// The patch is longer than any image this Agent accepts.
    #[error("patch too large")]
    PatchTooLarge,
    /// The device cannot report the image a delta would apply to.
    #[error("{0}")]
    Device(DeviceError),
    /// The delta applies to another image than the installed one.
    #[error("delta applies to {from_version}, installed is {installed}")]
    WrongSource {
        /// The delta's source version.
        from_version: SoftwareVersion,
        /// The installed version.
        installed: SoftwareVersion,
    },
    /// The signed metadata does not list this delta.
    #[error("delta not listed in the verified metadata")]
    DeltaNotListed,
}

impl From<OfferRefusal> for StepError<OfferRefusal> {
    fn from(r: OfferRefusal) -> Self {
        StepError::Fail(r)
    }
}

impl Agent {
    pub(super) fn on_metadata(
        &mut self,
        m: &UpdateMetadata,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        if let Some(u) = &self.j.update {
            if u.update_id == m.update_id && !matches!(u.stage, Stage::Verified | Stage::Consented)
            {
                out.ignored = Some(Ignored::MetadataPastVerification);
                return Ok(());
            }
            if u.update_id != m.update_id && u.stage == Stage::AwaitingConfirm {
                out.send(
                    corr,
                    DoNotDisturb {
                        reason: BusyReason::Installing,
                        retry_after_ms: self.config.busy_retry_after_ms,
                    },
                );
                return Ok(());
            }
        }
        let Some(installed) = self.running_or_busy(ctx, out, corr)? else {
            return Ok(());
        };
        let ecu = EcuIdentity {
            serial: self.config.serial.clone(),
            hardware_id: self.config.hardware_id.clone(),
            installed_release_counter: installed.release_counter,
        };
        let target = ctx.verifier.verify(m, &ecu, self.now());
        if let Ok(t) = &target {
            // Verified metadata vouches for wall times up to its expiry.
            self.raise_floor(t.expires_ms);
        }
        let target = target.and_then(|t| self.check_target(&t, &installed).map(|()| t));
        self.j.update = Some(UpdateRecord {
            update_id: m.update_id,
            target,
            encoding: None,
            decision: None,
            transfer: None,
            stage: Stage::Verified,
            attempts: 0,
            activations: 0,
            await_confirm: false,
            install_correlation: Id128::default(),
            confirm_correlation: Id128::default(),
            confirm_deadline_ms: None,
            from: None,
            last_report: None,
            staged_image_offset: None,
        });
        self.chunks = None;
        self.persist(ctx)
    }

    pub(super) fn check_offer(
        &self,
        o: &DownloadOffer,
        t: &DirectedTarget,
        ctx: &Context<'_>,
    ) -> Result<(), StepError<OfferRefusal>> {
        use OfferRefusal as R;
        if o.version != t.version
            || o.release_counter != t.release_counter
            || o.length != t.length
            || o.sha256 != t.sha256
            || o.target_name != t.target_name
        {
            return Err(R::NotTheVerifiedTarget.into());
        }
        if let ImageEncoding::Delta {
            format,
            from_version,
            source_sha256,
            patch_length,
            ..
        } = &o.encoding
        {
            if !ctx.patcher.formats().contains(format) {
                return Err(R::UnsupportedFormat(*format).into());
            }
            if *patch_length > self.config.max_image_len {
                return Err(R::PatchTooLarge.into());
            }
            let installed = self.running(ctx)?.map_err(R::Device)?;
            if from_version != &installed.version || source_sha256 != &installed.sha256 {
                return Err(R::WrongSource {
                    from_version: from_version.clone(),
                    installed: installed.version,
                }
                .into());
            }
            // Only a patch the signed metadata lists may be applied (an
            // empty list means: full images only).
            if !t.deltas.iter().any(|d| Self::delta_matches(d, &o.encoding)) {
                return Err(R::DeltaNotListed.into());
            }
        }
        Ok(())
    }

    pub(super) fn delta_matches(d: &DeltaEntry, enc: &ImageEncoding) -> bool {
        matches!(enc, ImageEncoding::Delta { format, from_version, source_sha256, patch_length, patch_sha256 }
            if *format == d.format && *from_version == d.from_version && *source_sha256 == d.source_sha256
                && *patch_length == d.patch_length && *patch_sha256 == d.patch_sha256)
    }

    pub(super) fn on_offer(
        &mut self,
        o: &DownloadOffer,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let deny = |reason: String| DownloadDecision {
            update_id: o.update_id,
            decision: Decision::Deny { reason },
        };
        let Some(rec) = self.record(&o.update_id) else {
            out.send(corr, deny("no verified metadata for this update".into()));
            return Ok(());
        };
        let target = match &rec.target {
            Ok(t) => t.clone(),
            Err(f) => {
                out.send(corr, deny(format!("metadata refused: {}", f.message)));
                return Ok(());
            }
        };
        if !matches!(rec.stage, Stage::Verified | Stage::Consented) {
            // Already consented and past it: answer the same without asking again.
            if rec.encoding.as_ref() == Some(&o.encoding) {
                out.send(
                    corr,
                    DownloadDecision {
                        update_id: o.update_id,
                        decision: Decision::Consent,
                    },
                );
            } else {
                out.send(
                    corr,
                    deny("another encoding of this update is in progress".into()),
                );
            }
            return Ok(());
        }
        if let Err(e) = self.check_offer(o, &target, ctx) {
            out.send(corr, deny(e.into_failure()?.to_string()));
            return Ok(());
        }
        let signals = dev(ctx.device.signals())?.unwrap_or_default();
        let decision = ctx.policy.decide(o, &target, &signals, self.now());
        let consent = decision == Decision::Consent;
        if let Some(rec) = self.record_mut(&o.update_id) {
            rec.decision = Some(decision.clone());
            if consent {
                rec.encoding = Some(o.encoding.clone());
                rec.stage = Stage::Consented;
            } else {
                rec.encoding = None;
                rec.stage = Stage::Verified;
            }
        }
        self.persist(ctx)?;
        out.send(
            corr,
            DownloadDecision {
                update_id: o.update_id,
                decision,
            },
        );
        Ok(())
    }
}
