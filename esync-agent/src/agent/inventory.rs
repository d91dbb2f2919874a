//! Inventory queries and signed Uptane version reports.

use esync_proto::id::{CorrelationId, SoftwareVersion};
use esync_proto::message::{DeltaCapability, FailureCode, InventoryQuery, InventoryReport};

use crate::error::AgentError;

use super::{dev, Agent, Context, Ignored, Output};

impl Agent {
    pub(super) fn rollback_versions(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<SoftwareVersion>, AgentError> {
        let mut v = Vec::new();
        let running = self.running(ctx)?.ok();
        if let Ok(Some(prev)) = dev(ctx.device.inactive())? {
            if running.as_ref().is_none_or(|r| r.sha256 != prev.sha256) {
                v.push(prev.version);
            }
        }
        if let Ok(backups) = dev(ctx.device.backups())? {
            for b in backups {
                if !v.contains(&b.version) {
                    v.push(b.version);
                }
            }
        }
        Ok(v)
    }

    pub(super) fn on_inventory(
        &mut self,
        q: &InventoryQuery,
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let Some(installed) = self.running_or_busy(ctx, out, corr)? else {
            return Ok(());
        };
        let rollback_versions = self.rollback_versions(ctx)?;
        let state = self
            .j
            .update
            .as_ref()
            .map_or(esync_proto::message::AgentState::Idle, |u| {
                u.stage.agent_state()
            });
        out.send(
            corr,
            InventoryReport {
                nonce: q.nonce,
                device: self.config.device.clone(),
                hardware_id: self.config.hardware_id.clone(),
                serial: self.config.serial.clone(),
                installed,
                delta: DeltaCapability {
                    formats: ctx.patcher.formats(),
                    max_patch_memory: self.config.max_patch_memory,
                },
                rollback_versions,
                verification: ctx.verifier.level(),
                criticality: self.config.criticality,
                state,
            },
        );
        Ok(())
    }

    pub(super) fn on_version_report(
        &mut self,
        nonce: [u8; 16],
        corr: CorrelationId,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), AgentError> {
        if self.do_not_disturb(out, corr) {
            return Ok(());
        }
        let Ok(installed) = self.running(ctx)? else {
            out.ignored = Some(Ignored::DeviceUnavailable);
            return Ok(());
        };
        let rec = self.j.update.as_ref();
        // The target name, when the running image is the one this Agent installed.
        let name = rec
            .and_then(|u| u.target.as_ref().ok())
            .filter(|t| t.sha256 == installed.sha256)
            .map(|t| t.target_name.clone());
        // Attack indicator: a refusal of the current update's metadata or bytes.
        let attack = rec
            .and_then(|u| u.target.as_ref().err())
            .filter(|f| {
                matches!(
                    f.code,
                    FailureCode::MetadataInvalid
                        | FailureCode::ReleaseCounterRollback
                        | FailureCode::NotDirected
                )
            })
            .map(|f| f.message.clone())
            .unwrap_or_default();
        let now = self.now();
        let Some(reporter) = ctx.reporter.as_deref_mut() else {
            out.ignored = Some(Ignored::NoVersionReporter);
            return Ok(());
        };
        match reporter.sign_report(&installed, name.as_deref(), nonce, &attack, now) {
            Some(signed_json) => {
                out.send(corr, esync_proto::message::VersionReport { signed_json })
            }
            None => out.ignored = Some(Ignored::VersionReportUnsigned),
        }
        Ok(())
    }
}
