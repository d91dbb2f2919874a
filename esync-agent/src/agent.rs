//! The sans-I/O Agent state machine.
//!
//! The host feeds it verified messages ([`Agent::handle`]), lets it work
//! ([`Agent::poll`] while [`Output::poll`] is set, and at
//! [`Output::deadline_ms`]), and sends the [`Output::messages`] it returns.
//! The current time is passed in; the device, the journal store, the
//! metadata verifier, the patch applier and the consent policy are passed in
//! at each step as a [`Context`] of trait objects and called synchronously.
//! The Agent itself opens no file or socket, reads no clock and starts no
//! thread.
//!
//! Every step that moves an update forward is journaled before the device
//! operation it leads to (see [`crate::journal`]); an `Err` from any method
//! means the journal or the device lost power or failed: the host must drop
//! the Agent and call [`Agent::recover`] (after the restart).

use core::cell::{Cell, RefCell};

use esync_proto::envelope::{Recipient, Verified};
use esync_proto::id::{CorrelationId, Id128, Sha256Digest, SoftwareVersion, UpdateId};
use esync_proto::message::{
    BusyReason, Confirm, Confirmed, Decision, DeltaCapability, DoNotDisturb, DownloadDecision,
    DownloadOffer, ErrorClass, Failure, FailureCode, ImageEncoding, InstallOutcome, InstallResult,
    InstallStart, InstalledImage, InventoryQuery, InventoryReport, Participant, Payload, Phase,
    Prepare, PrepareOutcome, PrepareResult, PresenceState, Progress, Rollback, RollbackOutcome,
    RollbackResult, RollbackTarget, TransferAbort, TransferAck, TransferChunk, TransferQuery,
    TransferStart, UpdateMetadata,
};
use sha2::Digest as _;

use crate::config::AgentConfig;
use crate::device::{hash_with, Device, DeviceError, SelfTest};
use crate::error::AgentError;
use crate::journal::{self, JournalStore, StoreError, MAX_JOURNAL_BYTES};
use crate::patch::{ExpectedImage, ImageRead, ImageSink, PatchApplier, PatchError};
use crate::policy::ConsentPolicy;
use crate::state::{JournalState, OutboxEntry, Stage, TransferRecord, UpdateRecord};
use crate::target::{DeltaEntry, DirectedTarget, EcuIdentity, MetadataVerifier};

const IO_BUF: usize = 64 * 1024;

/// What the Agent needs from its host at each step.
pub struct Context<'a> {
    /// The device.
    pub device: &'a mut dyn Device,
    /// Journal storage.
    pub journal: &'a mut dyn JournalStore,
    /// Metadata verification.
    pub verifier: &'a mut dyn MetadataVerifier,
    /// Delta reconstruction.
    pub patcher: &'a dyn PatchApplier,
    /// Download consent.
    pub policy: &'a mut dyn ConsentPolicy,
    /// Signs Uptane ECU version reports; `None`: version report requests
    /// are ignored.
    pub reporter: Option<&'a mut dyn VersionReporter>,
}

/// Signs Uptane ECU version reports with the ECU's own key (the Client
/// embeds them in the vehicle manifest).
pub trait VersionReporter {
    /// A signed report that this ECU runs `installed` (known by
    /// `target_name`, if the Agent installed it), with the Server's `nonce`
    /// and an attack indicator (empty when nothing was detected).
    fn sign_report(
        &mut self,
        installed: &InstalledImage,
        target_name: Option<&str>,
        nonce: [u8; 16],
        attacks_detected: &str,
        now_ms: u64,
    ) -> Option<Vec<u8>>;
}

/// A message for the host to sign and send.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// Recipient (the Client).
    pub recipient: Recipient,
    /// Correlation: the request's, for replies.
    pub correlation: CorrelationId,
    /// The message.
    pub payload: Payload,
    /// Set for final reports kept in the journal until
    /// [`Agent::mark_sent`] is called with this id.
    pub outbox_id: Option<u64>,
}

/// What a step produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Messages to send, in order.
    pub messages: Vec<Outgoing>,
    /// Call [`Agent::poll`] again now (work is pending).
    pub poll: bool,
    /// Call [`Agent::poll`] at this time (ms since the Unix epoch) if
    /// nothing else happens before.
    pub deadline_ms: Option<u64>,
    /// Set when the input was ignored, with the reason.
    pub ignored: Option<&'static str>,
}

impl Output {
    fn send(&mut self, correlation: CorrelationId, payload: impl Into<Payload>) {
        self.messages.push(Outgoing {
            recipient: Recipient::Client,
            correlation,
            payload: payload.into(),
            outbox_id: None,
        });
    }
}

fn failure(class: ErrorClass, code: FailureCode, message: impl Into<String>) -> Failure {
    Failure {
        class,
        code,
        message: message.into(),
    }
}

/// The Agent state machine. See the module docs.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    j: JournalState,
    /// Chunks received out of order (not journaled; re-verified on recovery).
    received: Vec<bool>,
    /// `next_chunk` value last journaled.
    journaled_next_chunk: u32,
    /// Write position in the inactive slot (restarted on recovery).
    write_offset: u64,
    slot_begun: bool,
}

/// Outcome of a device call: power loss halts the Agent, anything else is a
/// step failure the caller classifies.
fn dev<T>(r: Result<T, DeviceError>) -> Result<Result<T, DeviceError>, AgentError> {
    match r {
        Err(DeviceError::PowerLoss(op)) => Err(AgentError::PowerLoss(op)),
        other => Ok(other),
    }
}

struct DevRead<'d, 'a> {
    dev: &'d RefCell<&'a mut dyn Device>,
    len: u64,
    staging: bool,
    power_lost: &'d Cell<bool>,
}

impl ImageRead for DevRead<'_, '_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, PatchError> {
        if offset >= self.len {
            return Ok(0);
        }
        let max = usize::try_from(self.len - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let d = self.dev.borrow();
        let r = if self.staging {
            d.staging_read(offset, &mut buf[..max])
        } else {
            d.read_running(offset, &mut buf[..max])
        };
        r.map_err(|e| {
            if e.is_power_loss() {
                self.power_lost.set(true);
                PatchError::PowerLoss
            } else {
                PatchError::Io(e.to_string())
            }
        })
    }
}

/// Hashes (and optionally writes to the inactive slot) what the applier
/// produces, refusing output past the expected length.
struct CheckedSink<'d, 'a> {
    dev: Option<&'d RefCell<&'a mut dyn Device>>,
    hasher: sha2::Sha256,
    written: u64,
    max: u64,
    power_lost: &'d Cell<bool>,
}

impl ImageSink for CheckedSink<'_, '_> {
    fn write(&mut self, data: &[u8]) -> Result<(), PatchError> {
        let end = self.written.saturating_add(data.len() as u64);
        if end > self.max {
            return Err(PatchError::TooLong(self.max));
        }
        if let Some(dev) = self.dev {
            dev.borrow_mut()
                .slot_write(self.written, data)
                .map_err(|e| {
                    if e.is_power_loss() {
                        self.power_lost.set(true);
                        PatchError::PowerLoss
                    } else {
                        PatchError::Io(e.to_string())
                    }
                })?;
        }
        self.hasher.update(data);
        self.written = end;
        Ok(())
    }
}

fn patch_failure(e: &PatchError) -> Failure {
    match e {
        PatchError::UnsupportedFormat(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::UnsupportedFormat,
            e.to_string(),
        ),
        PatchError::Corrupt(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::DeltaCorrupt,
            e.to_string(),
        ),
        PatchError::Memory(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::InsufficientResources,
            e.to_string(),
        ),
        PatchError::TooLong(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::LengthMismatch,
            e.to_string(),
        ),
        PatchError::Mismatch(_) => failure(
            ErrorClass::UpdateIncapable,
            FailureCode::HashMismatch,
            e.to_string(),
        ),
        _ => failure(
            ErrorClass::Retryable,
            FailureCode::WriteFailed,
            e.to_string(),
        ),
    }
}

impl Agent {
    /// Starts an Agent from its journal: a fresh Agent when the journal is
    /// empty, otherwise it resumes where the journal says (re-verifying a
    /// partial transfer from staging, redoing an interrupted device step, or
    /// finishing a rollback) and re-emits every unsent final report.
    pub fn recover(
        config: AgentConfig,
        now_ms: u64,
        ctx: &mut Context<'_>,
    ) -> Result<(Agent, Output), AgentError> {
        config.validate()?;
        let j = match ctx.journal.load().map_err(AgentError::Journal)? {
            None => JournalState::default(),
            Some(bytes) => journal::decode_state(&bytes).map_err(AgentError::Journal)?,
        };
        let mut agent = Agent {
            config,
            j,
            received: Vec::new(),
            journaled_next_chunk: 0,
            write_offset: 0,
            slot_begun: false,
        };
        agent.tick(now_ms);
        let mut out = Output::default();
        agent.resume_transfer(ctx)?;
        if let Some(rec) = &agent.j.update {
            if rec.stage == Stage::AwaitingConfirm {
                agent.check_trial_survived(ctx, &mut out)?;
            }
        }
        agent.reemit_outbox(&mut out);
        agent.finish(&mut out);
        Ok((agent, out))
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The persistent state (as last journaled, plus in-progress changes).
    pub fn state(&self) -> &JournalState {
        &self.j
    }

    /// Whether the Agent is busy with device work.
    pub fn busy(&self) -> bool {
        self.j.update.as_ref().is_some_and(|u| u.stage.busy())
    }

    /// Handles one verified message from the Client.
    pub fn handle(
        &mut self,
        now_ms: u64,
        msg: &Verified,
        ctx: &mut Context<'_>,
    ) -> Result<Output, AgentError> {
        self.tick(now_ms);
        let mut out = Output::default();
        let corr = msg.header.correlation;
        if msg.header.sender != Participant::Client {
            out.ignored = Some("only the Client commands an Agent");
            return Ok(out);
        }
        match &msg.payload {
            Payload::InventoryQuery(q) => self.on_inventory(q, corr, ctx, &mut out)?,
            Payload::VersionReportRequest(r) => {
                self.on_version_report(r.nonce, corr, ctx, &mut out)?
            }
            Payload::UpdateMetadata(m) => self.on_metadata(m, corr, ctx, &mut out)?,
            Payload::DownloadOffer(o) => self.on_offer(o, corr, ctx, &mut out)?,
            Payload::TransferStart(s) => self.on_transfer_start(s, corr, ctx, &mut out)?,
            Payload::TransferChunk(c) => self.on_chunk(c, corr, ctx, &mut out)?,
            Payload::TransferQuery(q) => self.on_transfer_query(q, corr, &mut out),
            Payload::TransferAbort(a) => self.on_transfer_abort(a, corr, ctx, &mut out)?,
            Payload::Prepare(p) => self.on_prepare(p, corr, ctx, &mut out)?,
            Payload::InstallStart(i) => self.on_install(i, corr, ctx, &mut out)?,
            Payload::Confirm(c) => self.on_confirm(c, corr, ctx, &mut out)?,
            Payload::Rollback(r) => self.on_rollback(r, corr, ctx, &mut out)?,
            Payload::Presence(p) => {
                if p.subject == Participant::Client && p.state == PresenceState::Connected {
                    self.reemit_outbox(&mut out);
                }
            }
            _ => out.ignored = Some("message kind not handled by the Agent"),
        }
        self.finish(&mut out);
        Ok(out)
    }

    /// Does the next piece of pending work (one device step, or one write
    /// quantum), and handles deadlines.
    pub fn poll(&mut self, now_ms: u64, ctx: &mut Context<'_>) -> Result<Output, AgentError> {
        self.tick(now_ms);
        let mut out = Output::default();
        self.step(ctx, &mut out)?;
        self.finish(&mut out);
        Ok(out)
    }

    /// Every final report not yet marked sent, to send again (for example
    /// after the transport reconnected).
    pub fn pending_reports(&self) -> Output {
        let mut out = Output::default();
        self.reemit_outbox(&mut out);
        self.finish(&mut out);
        out
    }

    /// The host sent the final report with this outbox id: it leaves the
    /// journal.
    pub fn mark_sent(&mut self, outbox_id: u64, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        let before = self.j.outbox.len();
        self.j.outbox.retain(|e| e.id != outbox_id);
        if self.j.outbox.len() != before {
            self.persist(ctx)?;
        }
        Ok(())
    }

    // ----- plumbing -----

    fn tick(&mut self, now_ms: u64) {
        self.j.clock_ms = self.j.clock_ms.max(now_ms);
    }

    fn now(&self) -> u64 {
        self.j.clock_ms
    }

    fn persist(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.j.generation += 1;
        if let Some(t) = self.j.update.as_ref().and_then(|u| u.transfer.as_ref()) {
            self.journaled_next_chunk = t.next_chunk;
        }
        let bytes =
            journal::encode_state(&self.j).map_err(|e| AgentError::Encode(e.to_string()))?;
        if bytes.len() > MAX_JOURNAL_BYTES {
            return Err(AgentError::Encode(format!(
                "journal of {} bytes too large",
                bytes.len()
            )));
        }
        ctx.journal.store(&bytes).map_err(|e| match e {
            StoreError::PowerLoss => AgentError::PowerLoss("journal"),
            other => AgentError::Journal(other),
        })
    }

    /// Queues a final report in the outbox (journaled by the caller's next
    /// persist, which must come before the report leaves).
    fn emit_final(&mut self, out: &mut Output, correlation: CorrelationId, payload: Payload) {
        let id = self.j.next_outbox_id;
        self.j.next_outbox_id += 1;
        self.j.outbox.push(OutboxEntry {
            id,
            correlation,
            payload: payload.clone(),
        });
        if let Some(u) = &mut self.j.update {
            u.last_report = Some(payload.clone());
        }
        out.messages.push(Outgoing {
            recipient: Recipient::Client,
            correlation,
            payload,
            outbox_id: Some(id),
        });
    }

    fn reemit_outbox(&self, out: &mut Output) {
        for e in &self.j.outbox {
            out.messages.push(Outgoing {
                recipient: Recipient::Client,
                correlation: e.correlation,
                payload: e.payload.clone(),
                outbox_id: Some(e.id),
            });
        }
    }

    fn finish(&self, out: &mut Output) {
        if let Some(u) = &self.j.update {
            out.poll = u.stage.busy();
            if u.stage == Stage::AwaitingConfirm {
                out.deadline_ms = u.confirm_deadline_ms;
            }
        }
    }

    fn busy_reason(&self) -> Option<BusyReason> {
        match self.j.update.as_ref().map(|u| &u.stage) {
            Some(Stage::RollingBack { .. }) => Some(BusyReason::RollingBack),
            Some(s) if s.busy() => Some(BusyReason::Installing),
            _ => None,
        }
    }

    fn do_not_disturb(&self, out: &mut Output, corr: CorrelationId) -> bool {
        if let Some(reason) = self.busy_reason() {
            out.send(
                corr,
                DoNotDisturb {
                    reason,
                    retry_after_ms: self.config.busy_retry_after_ms,
                },
            );
            true
        } else {
            false
        }
    }

    fn record(&self, id: &UpdateId) -> Option<&UpdateRecord> {
        self.j.update.as_ref().filter(|u| &u.update_id == id)
    }

    fn record_mut(&mut self, id: &UpdateId) -> Option<&mut UpdateRecord> {
        self.j.update.as_mut().filter(|u| &u.update_id == id)
    }

    fn progress(&self, out: &mut Output, phase: Phase, done: u64, total: u64) {
        if let Some(u) = &self.j.update {
            out.send(
                u.install_correlation,
                Progress {
                    update_id: u.update_id,
                    phase,
                    done,
                    total,
                },
            );
        }
    }

    fn running(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Result<InstalledImage, DeviceError>, AgentError> {
        dev(ctx.device.running())
    }

    /// The running image, or `None` after answering "do not disturb" when
    /// the device cannot report it right now.
    fn running_or_busy(
        &self,
        ctx: &Context<'_>,
        out: &mut Output,
        corr: CorrelationId,
    ) -> Result<Option<InstalledImage>, AgentError> {
        match self.running(ctx)? {
            Ok(image) => Ok(Some(image)),
            Err(_) => {
                out.send(
                    corr,
                    DoNotDisturb {
                        reason: BusyReason::DeviceBusy,
                        retry_after_ms: self.config.busy_retry_after_ms,
                    },
                );
                out.ignored = Some("device does not report its running image");
                Ok(None)
            }
        }
    }

    /// Checks a verified target against this Agent (defence in depth: the
    /// verifier checked these too).
    fn check_target(&self, t: &DirectedTarget, installed: &InstalledImage) -> Result<(), Failure> {
        use ErrorClass::UpdateIncapable as U;
        if t.ecu_serial != self.config.serial {
            return Err(failure(
                U,
                FailureCode::NotDirected,
                format!(
                    "target is for ECU {}, not {}",
                    t.ecu_serial, self.config.serial
                ),
            ));
        }
        if t.hardware_id != self.config.hardware_id {
            return Err(failure(
                U,
                FailureCode::HardwareMismatch,
                format!(
                    "target is for hardware {}, this is {}",
                    t.hardware_id, self.config.hardware_id
                ),
            ));
        }
        if t.release_counter < installed.release_counter {
            return Err(failure(
                U,
                FailureCode::ReleaseCounterRollback,
                format!(
                    "release counter {} below installed {}",
                    t.release_counter, installed.release_counter
                ),
            ));
        }
        if t.expires_ms <= self.now() {
            return Err(failure(
                U,
                FailureCode::MetadataExpired,
                format!(
                    "metadata expired at {} ms (now {} ms)",
                    t.expires_ms,
                    self.now()
                ),
            ));
        }
        if t.length == 0 || t.length > self.config.max_image_len {
            return Err(failure(
                U,
                FailureCode::InsufficientResources,
                format!(
                    "image of {} bytes outside 1..={}",
                    t.length, self.config.max_image_len
                ),
            ));
        }
        Ok(())
    }

    fn rollback_versions(&self, ctx: &Context<'_>) -> Result<Vec<SoftwareVersion>, AgentError> {
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

    // ----- message handlers -----

    fn on_inventory(
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

    fn on_version_report(
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
            out.ignored = Some("device does not report its running image");
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
            out.ignored = Some("no version reporter configured");
            return Ok(());
        };
        match reporter.sign_report(&installed, name.as_deref(), nonce, &attack, now) {
            Some(signed_json) => {
                out.send(corr, esync_proto::message::VersionReport { signed_json })
            }
            None => out.ignored = Some("version report could not be signed"),
        }
        Ok(())
    }

    fn on_metadata(
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
                out.ignored = Some("metadata for an update already past verification");
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
        let target = ctx
            .verifier
            .verify(m, &ecu, self.now())
            .and_then(|t| self.check_target(&t, &installed).map(|()| t));
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
        });
        self.received.clear();
        self.persist(ctx)
    }

    fn check_offer(
        &self,
        o: &DownloadOffer,
        t: &DirectedTarget,
        ctx: &Context<'_>,
    ) -> Result<Result<(), String>, AgentError> {
        if o.version != t.version
            || o.release_counter != t.release_counter
            || o.length != t.length
            || o.sha256 != t.sha256
            || o.target_name != t.target_name
        {
            return Ok(Err("offer does not match the verified metadata".into()));
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
                return Ok(Err(format!("patch format {format:?} not supported")));
            }
            if *patch_length > self.config.max_image_len {
                return Ok(Err("patch too large".into()));
            }
            let installed = match self.running(ctx)? {
                Ok(i) => i,
                Err(e) => return Ok(Err(e.to_string())),
            };
            if from_version != &installed.version || source_sha256 != &installed.sha256 {
                return Ok(Err(format!(
                    "delta applies to {from_version}, installed is {}",
                    installed.version
                )));
            }
            // Only a patch the signed metadata lists may be applied (an
            // empty list means: full images only).
            if !t.deltas.iter().any(|d| Self::delta_matches(d, &o.encoding)) {
                return Ok(Err("delta not listed in the verified metadata".into()));
            }
        }
        Ok(Ok(()))
    }

    fn delta_matches(d: &DeltaEntry, enc: &ImageEncoding) -> bool {
        matches!(enc, ImageEncoding::Delta { format, from_version, source_sha256, patch_length, patch_sha256 }
            if *format == d.format && *from_version == d.from_version && *source_sha256 == d.source_sha256
                && *patch_length == d.patch_length && *patch_sha256 == d.patch_sha256)
    }

    fn on_offer(
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
        if let Err(reason) = self.check_offer(o, &target, ctx)? {
            out.send(corr, deny(reason));
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

    fn transfer_failed(out: &mut Output, corr: CorrelationId, update_id: UpdateId, f: Failure) {
        out.send(
            corr,
            PrepareResult {
                update_id,
                outcome: PrepareOutcome::Failed(f),
            },
        );
    }

    fn on_transfer_start(
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
            out.ignored = Some("transfer for an update past its transfer stage");
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

    fn on_chunk(
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
            out.ignored = Some("chunk for an unknown transfer");
            return Ok(());
        };
        let Some(t) = rec
            .transfer
            .as_ref()
            .filter(|t| t.transfer_id == c.transfer_id)
        else {
            out.ignored = Some("chunk for an unknown transfer");
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

    fn on_transfer_query(&mut self, q: &TransferQuery, corr: CorrelationId, out: &mut Output) {
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

    fn on_transfer_abort(
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
            out.ignored = Some("abort of an unknown or finished transfer");
        }
        Ok(())
    }

    /// Re-verifies staged chunks after the journaled position (recovery).
    fn resume_transfer(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
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

    fn on_prepare(
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
        match self.prepare_work(&target, &transfer, &encoding, ctx, out)? {
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
            Err(f) => {
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
    fn prepare_work(
        &mut self,
        target: &DirectedTarget,
        transfer: &TransferRecord,
        encoding: &ImageEncoding,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<Result<Sha256Digest, Failure>, AgentError> {
        use ErrorClass::{Retryable as R, UpdateIncapable as U};
        let installed = match self.running(ctx)? {
            Ok(i) => i,
            Err(e) => return Ok(Err(failure(R, FailureCode::Internal, e.to_string()))),
        };
        if let Err(f) = self.check_target(target, &installed) {
            return Ok(Err(f));
        }
        let mut buf = vec![0u8; IO_BUF];
        let total = transfer.total_length;
        self.progress(out, Phase::Verify, 0, total);
        let staged = match dev(hash_with(total, &mut buf, |o, b| {
            ctx.device.staging_read(o, b)
        }))? {
            Ok(h) => h,
            Err(e) => return Ok(Err(failure(R, FailureCode::Internal, e.to_string()))),
        };
        match encoding {
            ImageEncoding::Full => {
                if staged != target.sha256 {
                    return Ok(Err(failure(
                        R,
                        FailureCode::HashMismatch,
                        "image does not match the SHA-256 in the verified metadata",
                    )));
                }
                self.progress(out, Phase::Verify, total, total);
                Ok(Ok(target.sha256))
            }
            ImageEncoding::Delta {
                format,
                source_sha256,
                patch_sha256,
                ..
            } => {
                if staged != *patch_sha256 {
                    return Ok(Err(failure(
                        R,
                        FailureCode::HashMismatch,
                        "patch does not match its SHA-256",
                    )));
                }
                // Hash the installed image as it is, not as it is described.
                let actual = match dev(hash_with(installed.length, &mut buf, |o, b| {
                    ctx.device.read_running(o, b)
                }))? {
                    Ok(h) => h,
                    Err(e) => return Ok(Err(failure(R, FailureCode::Internal, e.to_string()))),
                };
                if actual != *source_sha256 || installed.sha256 != *source_sha256 {
                    return Ok(Err(failure(
                        U,
                        FailureCode::DeltaSourceMismatch,
                        "installed image does not match the patch's source hash",
                    )));
                }
                drop(buf);
                self.progress(out, Phase::Patch, 0, target.length);
                let r = self.apply_delta(
                    *format,
                    installed.length,
                    *source_sha256,
                    total,
                    target,
                    false,
                    ctx,
                )?;
                if let Err(f) = r {
                    return Ok(Err(f));
                }
                self.progress(out, Phase::Patch, target.length, target.length);
                Ok(Ok(target.sha256))
            }
        }
    }

    /// Runs the patch applier from the running image and the staged patch,
    /// into the inactive slot (`write`) or into a hash only.
    #[allow(
        clippy::too_many_arguments,
        reason = "internal helper; the pieces of one delta"
    )]
    fn apply_delta(
        &self,
        format: esync_proto::message::PatchFormat,
        source_len: u64,
        source_sha256: Sha256Digest,
        patch_len: u64,
        target: &DirectedTarget,
        write: bool,
        ctx: &mut Context<'_>,
    ) -> Result<Result<(), Failure>, AgentError> {
        let power_lost = Cell::new(false);
        let patcher = ctx.patcher;
        let cell: RefCell<&mut dyn Device> = RefCell::new(&mut *ctx.device);
        let source = DevRead {
            dev: &cell,
            len: source_len,
            staging: false,
            power_lost: &power_lost,
        };
        let patch = DevRead {
            dev: &cell,
            len: patch_len,
            staging: true,
            power_lost: &power_lost,
        };
        let mut sink = CheckedSink {
            dev: write.then_some(&cell),
            hasher: sha2::Sha256::new(),
            written: 0,
            max: target.length,
            power_lost: &power_lost,
        };
        let expected = ExpectedImage {
            len: target.length,
            sha256: target.sha256,
        };
        let r = patcher.apply(
            format,
            &source,
            &source_sha256,
            &patch,
            expected,
            &mut sink,
            self.config.max_patch_memory,
        );
        if power_lost.get() || matches!(r, Err(PatchError::PowerLoss)) {
            return Err(AgentError::PowerLoss("patch"));
        }
        if let Err(e) = r {
            return Ok(Err(patch_failure(&e)));
        }
        let got = Sha256Digest(sink.hasher.finalize().into());
        if sink.written != target.length || got != target.sha256 {
            return Ok(Err(failure(
                ErrorClass::UpdateIncapable,
                FailureCode::HashMismatch,
                "reconstructed image does not match the verified metadata",
            )));
        }
        Ok(Ok(()))
    }

    fn resend_last(&self, rec: &UpdateRecord, corr: CorrelationId, out: &mut Output) -> bool {
        if let Some(r) = &rec.last_report {
            out.send(corr, r.clone());
            true
        } else {
            false
        }
    }

    fn on_install(
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
        let now = self.now();
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

    fn on_confirm(
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
            out.ignored = Some("confirm for an unknown update");
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
            None => out.ignored = Some("confirm for an update that is not awaiting it"),
        }
        Ok(())
    }

    fn on_rollback(
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

    /// After a restart while awaiting confirmation: if the bootloader fell
    /// back, the install failed.
    fn check_trial_survived(
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

    // ----- install work -----

    fn step(&mut self, ctx: &mut Context<'_>, out: &mut Output) -> Result<(), AgentError> {
        let Some(rec) = self.j.update.clone() else {
            return Ok(());
        };
        let target = rec.target.clone().ok();
        match (&rec.stage, target) {
            (Stage::AwaitingConfirm, _) => {
                if rec.confirm_deadline_ms.is_some_and(|d| self.now() >= d) {
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

    fn set_stage(&mut self, stage: Stage) {
        if let Some(u) = &mut self.j.update {
            u.stage = stage;
        }
    }

    fn step_write(
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
        }
        let Some(enc) = &rec.encoding else {
            return self.fail_attempt(wf("no encoding recorded".into()), ctx, out);
        };
        match enc {
            ImageEncoding::Full => {
                if self.write_offset < t.length {
                    let n = (t.length - self.write_offset).min(self.config.write_quantum as u64)
                        as usize;
                    let mut buf = vec![0u8; n];
                    let mut got = 0;
                    while got < n {
                        match dev(ctx
                            .device
                            .staging_read(self.write_offset + got as u64, &mut buf[got..]))?
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
            ImageEncoding::Delta {
                format,
                patch_length,
                source_sha256,
                ..
            } => {
                let source_len = rec.from.as_ref().map_or(0, |f| f.length);
                if let Err(f) = self.apply_delta(
                    *format,
                    source_len,
                    *source_sha256,
                    *patch_length,
                    t,
                    true,
                    ctx,
                )? {
                    return self.fail_attempt(f, ctx, out);
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

    fn step_activate(
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

    fn step_self_test(
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

    fn start_auto_rollback(
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
    fn fail_attempt(
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
        let running_version = running
            .map(|r| r.version)
            .or_else(|| rec.from.as_ref().map(|f| f.version.clone()));
        let Some(running_version) = running_version else {
            return Err(AgentError::Device(
                "the device reports no running image".into(),
            ));
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

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site; the pieces of the rollback stage"
    )]
    fn step_rollback(
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
        let outcome = self.do_rollback(target, expect, ctx)?;
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
    fn do_rollback(
        &mut self,
        target: &RollbackTarget,
        expect: Option<&InstalledImage>,
        ctx: &mut Context<'_>,
    ) -> Result<Result<SoftwareVersion, Failure>, AgentError> {
        let rf = |m: String| failure(ErrorClass::UpdateIncapable, FailureCode::RollbackFailed, m);
        let running = match self.running(ctx)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(rf(e.to_string()))),
        };
        let done = match target {
            RollbackTarget::PreviousSlot => {
                let Some(expect) = expect else {
                    return Ok(Err(rf("no previous image to roll back to".into())));
                };
                if running.sha256 == expect.sha256 {
                    // Already there; make sure it is not left on trial.
                    if dev(ctx.device.on_trial())?.unwrap_or(false) {
                        if let Err(e) = dev(ctx.device.commit())? {
                            return Ok(Err(rf(e.to_string())));
                        }
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
        if let Err(f) = done {
            return Ok(Err(f));
        }
        // Confirm by hash that the device runs a complete image.
        let now = match self.running(ctx)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(rf(e.to_string()))),
        };
        let mut buf = vec![0u8; IO_BUF];
        let actual = dev(hash_with(now.length, &mut buf, |o, b| {
            ctx.device.read_running(o, b)
        }))?;
        if actual.as_ref().ok() != Some(&now.sha256) {
            return Ok(Err(rf(
                "the image running after the rollback does not match its hash".into(),
            )));
        }
        Ok(Ok(now.version))
    }
}
