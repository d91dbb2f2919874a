//! The sans-I/O Agent state machine.
//!
//! The host feeds it verified messages ([`Agent::handle`]), lets it work
//! ([`Agent::poll`] while [`Output::poll`] is set, and at
//! [`Output::deadline_ms`]), and sends the [`Output::messages`] it returns.
//! The current time is passed in (two clocks: [`Now`]); the device, the journal store, the
//! metadata verifier, the patch applier and the consent policy are passed in
//! at each step as a [`Context`] of trait objects and called synchronously.
//! The Agent itself opens no file or socket, reads no clock and starts no
//! thread.
//!
//! Every step that moves an update forward is journaled before the device
//! operation it leads to (see [`crate::journal`]); an `Err` from any method
//! means the journal or the device lost power or failed: the host must drop
//! the Agent and call [`Agent::recover`] (after the restart).
//!
//! The code is split by lifecycle stage, each module adding the handlers
//! and steps of its stage to [`Agent`]: `inventory` (inventory and version
//! reports), `offer` (metadata and download consent), `transfer` (chunks
//! into staging), `prepare` (verifying what was staged), `reconstruct`
//! (delta reconstruction through the [`PatchApplier`]), `install` (install,
//! confirm and the install steps), `rollback`, and `outbox` (final reports
//! kept until sent). This module holds the dispatch ([`Agent::recover`],
//! [`Agent::handle`], [`Agent::poll`], [`Agent::mark_sent`]) and the shared
//! plumbing. A step that can fail an update returns a `StepError`: the
//! update failed (reported to the Client), or the Agent halts.

use esync_package::chunk::{ChunkAssembler, ChunkLimits};
use esync_proto::envelope::{Recipient, Verified};
use esync_proto::id::{CorrelationId, UpdateId};
use esync_proto::message::{
    BusyReason, DoNotDisturb, ErrorClass, Failure, FailureCode, InstalledImage, Participant,
    Payload, Phase, PresenceState, Progress,
};

use crate::config::AgentConfig;
use crate::device::{Device, DeviceError};
use crate::error::AgentError;
use crate::journal::{self, JournalStore, StoreError, MAX_JOURNAL_BYTES};
use crate::patch::PatchApplier;
use crate::policy::ConsentPolicy;
use crate::state::{JournalState, Stage, UpdateRecord};
use crate::target::{DirectedTarget, MetadataVerifier};

mod install;
mod inventory;
mod offer;
mod outbox;
mod prepare;
mod reconstruct;
mod rollback;
mod transfer;

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
    /// Call [`Agent::poll`] at this monotonic time ([`Now::mono_ms`]) if
    /// nothing else happens before.
    pub deadline_ms: Option<u64>,
    /// Set when the input was ignored, with the reason.
    pub ignored: Option<Ignored>,
}

/// Why the Agent ignored an input (nothing was changed; any answer it sent
/// is in [`Output::messages`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ignored {
    /// The sender is not the Client: only the Client commands an Agent.
    NotFromClient,
    /// The Agent does not handle this kind of message.
    UnhandledKind,
    /// The device does not report its running image right now.
    DeviceUnavailable,
    /// A version report was requested and no reporter is configured.
    NoVersionReporter,
    /// The version reporter could not sign the report.
    VersionReportUnsigned,
    /// Metadata for an update that is already past verification.
    MetadataPastVerification,
    /// A transfer start for an update past its transfer stage.
    TransferPastStage,
    /// A chunk for a transfer the Agent does not know.
    ChunkUnknownTransfer,
    /// An abort of an unknown or finished transfer.
    AbortUnknownTransfer,
    /// A confirm for an update the Agent does not know.
    ConfirmUnknownUpdate,
    /// A confirm for an update that is not awaiting one.
    ConfirmNotAwaited,
}

impl core::fmt::Display for Ignored {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Ignored::NotFromClient => "only the Client commands an Agent",
            Ignored::UnhandledKind => "message kind not handled by the Agent",
            Ignored::DeviceUnavailable => "device does not report its running image",
            Ignored::NoVersionReporter => "no version reporter configured",
            Ignored::VersionReportUnsigned => "version report could not be signed",
            Ignored::MetadataPastVerification => "metadata for an update already past verification",
            Ignored::TransferPastStage => "transfer for an update past its transfer stage",
            Ignored::ChunkUnknownTransfer => "chunk for an unknown transfer",
            Ignored::AbortUnknownTransfer => "abort of an unknown or finished transfer",
            Ignored::ConfirmUnknownUpdate => "confirm for an unknown update",
            Ignored::ConfirmNotAwaited => "confirm for an update that is not awaiting it",
        })
    }
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

/// The host's two clocks, passed in at every call.
///
/// - `mono_ms`: a monotonic clock (any origin; it never goes backwards
///   while the Agent runs, and restarts when the host restarts). Deadlines
///   ([`Output::deadline_ms`], the confirm timeout) run on it, so a jump of
///   the real-time clock neither fires nor stalls them.
/// - `wall_ms`: real time, ms since the Unix epoch (it may jump either
///   way). Metadata expiry, consent postponement, version reports and
///   envelope timestamps use it.
///
/// The Agent keeps a wall-time floor in its journal
/// ([`JournalState::clock_ms`]) so that metadata once seen expired stays
/// expired when the clock is set back. The floor only rises up to the
/// signed expiry of the verified metadata the Agent holds
/// (`floor = max(floor, min(wall_ms, expires_ms))`): a wall time beyond
/// every signed expiry is used for that call only and never persisted, so
/// one bogus future time cannot stay in the journal and expire all
/// future metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Now {
    /// Monotonic ms (deadlines).
    pub mono_ms: u64,
    /// Real time, ms since the Unix epoch (expiry).
    pub wall_ms: u64,
}

/// The Agent state machine. See the module docs.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    j: JournalState,
    /// Transfer limits (from the configuration, validated at recovery).
    chunk_limits: ChunkLimits,
    /// Reception of the transfer in progress, its store (the device's
    /// staging) detached between messages. Chunks received out of order are
    /// not journaled; they are re-verified from staging on recovery.
    chunks: Option<ChunkAssembler<()>>,
    /// `next_chunk` value last journaled.
    journaled_next_chunk: u32,
    /// Write position in the inactive slot (restarted on recovery).
    write_offset: u64,
    slot_begun: bool,
    /// The delta reconstruction writing the inactive slot, between polls
    /// (restarted with the slot).
    delta: Option<reconstruct::DeltaRun>,
    /// The delta reconstruction of a Prepare, between polls (never
    /// journaled; begun again by the next Prepare after a restart).
    preparing: Option<prepare::Preparing>,
    /// The clocks of the current call.
    clock: Now,
}

/// Why a step of an update did not complete: `F` (a [`Failure`] to
/// report, or a refusal such as `offer::OfferRefusal`), or a halt. `?`
/// converts both `F` and an [`AgentError`] into it.
#[derive(Debug)]
enum StepError<F = Failure> {
    /// The update failed: the Client is told, the Agent goes on.
    Fail(F),
    /// The Agent cannot continue (see [`AgentError`]).
    Halt(AgentError),
}

impl From<Failure> for StepError {
    fn from(f: Failure) -> Self {
        StepError::Fail(f)
    }
}

impl<F> From<AgentError> for StepError<F> {
    fn from(e: AgentError) -> Self {
        StepError::Halt(e)
    }
}

impl<F> StepError<F> {
    /// The failure to report, or the halt to propagate with `?`.
    fn into_failure(self) -> Result<F, AgentError> {
        match self {
            StepError::Fail(f) => Ok(f),
            StepError::Halt(e) => Err(e),
        }
    }
}

/// Outcome of a device call: power loss halts the Agent, anything else is a
/// step failure the caller classifies.
fn dev<T>(r: Result<T, DeviceError>) -> Result<Result<T, DeviceError>, AgentError> {
    match r {
        Err(DeviceError::PowerLoss(op)) => Err(AgentError::PowerLoss(op)),
        other => Ok(other),
    }
}

impl Agent {
    /// Starts an Agent from its journal: a fresh Agent when the journal is
    /// empty, otherwise it resumes where the journal says (re-verifying a
    /// partial transfer from staging, redoing an interrupted device step, or
    /// finishing a rollback) and re-emits every unsent final report.
    pub fn recover(
        config: AgentConfig,
        now: Now,
        ctx: &mut Context<'_>,
    ) -> Result<(Agent, Output), AgentError> {
        config.validate()?;
        let chunk_limits = config.chunk_limits()?;
        let j = match ctx.journal.load().map_err(AgentError::Journal)? {
            None => JournalState::default(),
            Some(bytes) => journal::decode_state(&bytes).map_err(AgentError::Journal)?,
        };
        let mut agent = Agent {
            config,
            j,
            chunk_limits,
            chunks: None,
            journaled_next_chunk: 0,
            write_offset: 0,
            slot_begun: false,
            delta: None,
            preparing: None,
            clock: now,
        };
        agent.tick(now);
        // A deadline journaled in the monotonic time of an earlier run
        // means nothing now: a pending confirm deadline restarts with the
        // full timeout (a restart never shortens the window to confirm; a
        // trial image that does not survive restarts falls back through the
        // bootloader, which `check_trial_survived` detects).
        let timeout = agent.config.confirm_timeout_ms;
        if let Some(u) = &mut agent.j.update {
            if u.confirm_deadline_ms.is_some() {
                u.confirm_deadline_ms = timeout.map(|t| now.mono_ms.saturating_add(t));
            }
        }
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
        now: Now,
        msg: &Verified,
        ctx: &mut Context<'_>,
    ) -> Result<Output, AgentError> {
        self.tick(now);
        let mut out = Output::default();
        let corr = msg.header.correlation;
        if msg.header.sender != Participant::Client {
            out.ignored = Some(Ignored::NotFromClient);
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
            _ => out.ignored = Some(Ignored::UnhandledKind),
        }
        self.finish(&mut out);
        Ok(out)
    }

    /// Does the next piece of pending work (one device step, or one write
    /// quantum: for a delta Prepare, one step of the patch application of
    /// at most `write_quantum` bytes of work plus one applier block), and
    /// handles deadlines.
    pub fn poll(&mut self, now: Now, ctx: &mut Context<'_>) -> Result<Output, AgentError> {
        self.tick(now);
        let mut out = Output::default();
        if self.preparing.is_some() {
            self.step_prepare(ctx, &mut out)?;
        } else {
            self.step(ctx, &mut out)?;
        }
        self.finish(&mut out);
        Ok(out)
    }

    /// Whether work is pending ([`Output::poll`]) and the next deadline
    /// ([`Output::deadline_ms`]), for a host that produced no output.
    pub(crate) fn schedule(&self) -> (bool, Option<u64>) {
        let mut out = Output::default();
        self.finish(&mut out);
        (out.poll, out.deadline_ms)
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

    /// Takes the clocks of a call; raises the wall-time floor up to the
    /// signed expiry of the current target (see [`Now`]).
    fn tick(&mut self, now: Now) {
        self.clock = now;
        if let Some(Ok(t)) = self.j.update.as_ref().map(|u| &u.target) {
            let expires = t.expires_ms;
            self.raise_floor(expires);
        }
    }

    /// Raises the wall-time floor to the current wall time, at most to
    /// `cap` (a signed expiry).
    fn raise_floor(&mut self, cap: u64) {
        self.j.clock_ms = self.j.clock_ms.max(self.clock.wall_ms.min(cap));
    }

    /// Wall time for expiry checks: never below the floor.
    fn now(&self) -> u64 {
        self.j.clock_ms.max(self.clock.wall_ms)
    }

    /// Monotonic time for deadlines.
    fn mono(&self) -> u64 {
        self.clock.mono_ms
    }

    fn persist(&mut self, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.j.generation += 1;
        if let Some(t) = self.j.update.as_ref().and_then(|u| u.transfer.as_ref()) {
            self.journaled_next_chunk = t.next_chunk;
        }
        let bytes = journal::encode_state(&self.j).map_err(AgentError::Encode)?;
        if bytes.len() > MAX_JOURNAL_BYTES {
            return Err(AgentError::JournalTooLarge {
                len: bytes.len(),
                max: MAX_JOURNAL_BYTES,
            });
        }
        ctx.journal.store(&bytes).map_err(|e| match e {
            StoreError::PowerLoss => AgentError::PowerLoss("journal"),
            other => AgentError::Journal(other),
        })
    }

    fn finish(&self, out: &mut Output) {
        if let Some(u) = &self.j.update {
            out.poll = u.stage.busy() || self.preparing.is_some();
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
                out.ignored = Some(Ignored::DeviceUnavailable);
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

    fn set_stage(&mut self, stage: Stage) {
        if let Some(u) = &mut self.j.update {
            u.stage = stage;
        }
    }
}
