//! The campaign: one [`ReadyPackage`] driven through every Agent of the
//! package, atomically.
//!
//! 1. **Offer and transfer** (every component in parallel): metadata to
//!    forward, download offer, chunked transfer ([`crate::core::transfer`]),
//!    prepare.
//! 2. **Install, stage by stage**: once every component is prepared, the
//!    components of the lowest stage get `InstallStart` (with
//!    `await_confirm`) in parallel, each after its vehicle-state
//!    precondition holds (evaluated here; the Agent evaluates its own
//!    again); the next stage starts when every component of the stage is
//!    installed (dependencies are always in earlier stages, which the
//!    package model enforces). A retryable install failure is retried up to
//!    the component's `retry_limit`.
//! 3. **Verdict** ([`PackageVerdict`]): when every component is installed the Client journals
//!    *commit* and confirms every one. On any failure it journals *abort*:
//!    every component the Agent holds an update for (prepared, installing,
//!    installed, or failed) is rolled back, later stages are never started,
//!    and the report names each component's cause.
//!
//! The verdict is the commit point. A Client restart before it (a power
//! cut at any point) is *presumed abort*: the restarted Client rolls back
//! every component that may have been installed; after it, the restarted
//! Client confirms every component not yet confirmed. Every command is sent
//! again at its deadline until the Agent answers (the Agent answers a
//! repeated command without doing the work twice), so Agents restarting
//! are covered too.

use esync_package::chunk::ChunkPlan;
use esync_package::package::{PackageId, RollbackBehaviour};
use esync_proto::id::{DevicePath, Id128, SoftwareVersion, TransferId, UpdateId};
use esync_proto::message::{
    Confirm, Decision, DownloadOffer, ErrorClass, Failure, FailureCode, InstallOutcome,
    InstallStart, Payload, Prepare, PrepareOutcome, Rollback, RollbackOutcome, RollbackTarget,
    Signal, TransferAbort, UpdateMetadata,
};
use serde::{Deserialize, Serialize};

use crate::core::plan::{BlobHandle, ReadyPackage};
use crate::core::transfer::Transfer;
use crate::core::{HostNeed, Now, OrchestratorConfig};

/// Where one component stands (journaled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentPhase {
    /// Metadata and download offer sent; awaiting the decision.
    Offered,
    /// Chunks travelling.
    Transferring,
    /// `Prepare` sent.
    Preparing,
    /// The Agent reported the staged image ready.
    Prepared,
    /// `InstallStart` sent.
    Installing,
    /// Installed and activated, awaiting the verdict.
    Installed,
    /// `Confirm` sent.
    Confirming,
    /// Final: committed on the Agent.
    Confirmed {
        /// The version it runs.
        version: SoftwareVersion,
    },
    /// `Rollback` sent.
    RollingBack,
    /// Final: back on (or never left) the old version.
    RolledBack {
        /// The version it runs.
        running: SoftwareVersion,
    },
    /// Final: the Agent never held this update in effect (the package
    /// failed before it was prepared); it runs what it ran.
    NotInstalled,
}

impl ComponentPhase {
    fn is_final(&self) -> bool {
        matches!(
            self,
            ComponentPhase::Confirmed { .. }
                | ComponentPhase::RolledBack { .. }
                | ComponentPhase::NotInstalled
        )
    }

    /// The Agent has a prepared (or later) record of the update: a rollback
    /// command addresses it (and never an update the Agent does not know).
    fn agent_holds(&self) -> bool {
        matches!(
            self,
            ComponentPhase::Prepared
                | ComponentPhase::Installing
                | ComponentPhase::Installed
                | ComponentPhase::RollingBack
        )
    }
}

/// One component of the campaign (journaled).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentState {
    /// The Agent.
    pub device: DevicePath,
    /// Its install stage.
    pub stage: u16,
    /// The version it installs.
    pub version: SoftwareVersion,
    /// The update id the Agent knows it by.
    pub update_id: UpdateId,
    /// The transfer id of its blob.
    pub transfer_id: TransferId,
    /// Where it stands.
    pub phase: ComponentPhase,
    /// Install attempts made.
    pub attempts: u8,
    /// Why it failed, if it did (the package's cause).
    pub failure: Option<Failure>,
}

/// The package verdict (journaled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageVerdict {
    /// Not every component is installed yet, and none failed.
    Open,
    /// Every component installed: confirm all.
    Commit,
    /// A component failed (or the Client restarted before the commit):
    /// roll back every component.
    Abort {
        /// Why, in words (each component's own cause is in its state).
        cause: String,
    },
}

/// The journaled campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// What is installed.
    pub ready: ReadyPackage,
    /// Wall time the campaign started (update ids derive from it).
    pub started_wall_ms: u64,
    /// Components, ordered by (stage, device).
    pub components: Vec<ComponentState>,
    /// The verdict.
    pub verdict: PackageVerdict,
}

/// Final outcome of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every component confirmed on its new version.
    Installed,
    /// The package failed; every component runs its old version.
    Failed {
        /// Why the package failed.
        cause: String,
    },
}

/// What became of one component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentReport {
    /// The Agent.
    pub device: DevicePath,
    /// Its stage.
    pub stage: u16,
    /// The version the package installs.
    pub target: SoftwareVersion,
    /// Where it ended (a final [`Phase`]).
    pub end: ComponentPhase,
    /// Install attempts made (0: never started).
    pub attempts: u8,
    /// Its own failure, if it failed.
    pub failure: Option<Failure>,
}

/// The final report of a package (kept in the journal's outbox until the
/// host delivered it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackageReport {
    /// The package.
    pub package: PackageId,
    /// The outcome.
    pub outcome: Outcome,
    /// Per component, in (stage, device) order.
    pub components: Vec<ComponentReport>,
}

/// Volatile per-component state (not journaled: rebuilt by sending the
/// phase's command again).
#[derive(Debug, Default)]
pub(crate) struct Volatile {
    /// When to act again (monotonic ms).
    deadline: Option<u64>,
    /// Commands sent again without an answer in this phase.
    resends: u32,
    /// The chunked transfer, once the Agent acknowledged its start.
    transfer: Option<Transfer>,
    /// When the precondition was first found unmet.
    waiting_since: Option<u64>,
}

/// Output of a campaign step, before sealing.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) messages: Vec<(DevicePath, Payload)>,
    pub(crate) needs: Vec<HostNeed>,
    /// The journaled state changed: persist before sending.
    pub(crate) dirty: bool,
}

impl Out {
    fn send(&mut self, to: &DevicePath, p: impl Into<Payload>) {
        self.messages.push((to.clone(), p.into()));
    }
}

fn id_for(tag: &[u8], package: &PackageId, device: &DevicePath, wall: u64) -> Id128 {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(tag);
    b.extend_from_slice(package.as_str().as_bytes());
    b.push(0);
    b.extend_from_slice(device.as_str().as_bytes());
    b.push(0);
    b.extend_from_slice(&wall.to_le_bytes());
    let d = esync_package::digest::sha256(&b);
    let mut id = [0u8; 16];
    id.copy_from_slice(&d.0[..16]);
    Id128(id)
}

fn failure(class: ErrorClass, code: FailureCode, message: impl Into<String>) -> Failure {
    Failure {
        class,
        code,
        message: message.into(),
    }
}

/// A running campaign with its volatile state.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) c: Campaign,
    vol: Vec<Volatile>,
    /// The vehicle state the host last reported.
    pub(crate) signals: Vec<Signal>,
}

impl Run {
    /// A new campaign for `ready` (already checked).
    pub(crate) fn new(ready: ReadyPackage, now: Now) -> Run {
        let mut components: Vec<ComponentState> = ready
            .package
            .components()
            .iter()
            .map(|c| ComponentState {
                device: c.device.clone(),
                stage: c.stage,
                version: c.version.clone(),
                update_id: id_for(
                    b"esync-update\0",
                    ready.package.id(),
                    &c.device,
                    now.wall_ms,
                ),
                transfer_id: id_for(
                    b"esync-transfer\0",
                    ready.package.id(),
                    &c.device,
                    now.wall_ms,
                ),
                phase: ComponentPhase::Offered,
                attempts: 0,
                failure: None,
            })
            .collect();
        components.sort_by(|a, b| (a.stage, &a.device).cmp(&(b.stage, &b.device)));
        let vol = components.iter().map(|_| Volatile::default()).collect();
        Run {
            signals: Vec::new(),
            c: Campaign {
                ready,
                started_wall_ms: now.wall_ms,
                components,
                verdict: PackageVerdict::Open,
            },
            vol,
        }
    }

    /// The campaign from the journal after a restart: an open verdict
    /// becomes abort (presumed abort); every unfinished component's command
    /// is due now.
    pub(crate) fn recover(mut c: Campaign, now: Now, out: &mut Out) -> Run {
        if c.verdict == PackageVerdict::Open {
            c.verdict = PackageVerdict::Abort {
                cause: "the Client restarted before the package was committed".into(),
            };
            out.dirty = true;
        }
        let vol = c.components.iter().map(|_| Volatile::default()).collect();
        let mut run = Run {
            c,
            vol,
            signals: Vec::new(),
        };
        run.apply_verdict(now, out);
        for i in 0..run.c.components.len() {
            if !run.c.components[i].phase.is_final() {
                run.vol[i].deadline = Some(now.mono_ms);
            }
        }
        run
    }

    pub(crate) fn start(&mut self, now: Now, cfg: &OrchestratorConfig, out: &mut Out) {
        out.dirty = true;
        for i in 0..self.c.components.len() {
            self.offer(i, now, cfg, out);
        }
    }

    fn index_of(&self, device: &DevicePath) -> Option<usize> {
        self.c.components.iter().position(|c| &c.device == device)
    }

    fn metadata(&self, i: usize) -> UpdateMetadata {
        let s = &self.c.components[i];
        let m = self
            .c
            .ready
            .component(&s.device)
            .map(|r| r.metadata.clone())
            .unwrap_or_default();
        UpdateMetadata {
            update_id: s.update_id,
            director: m.director,
            image: m.image,
        }
    }

    fn offer(&mut self, i: usize, now: Now, cfg: &OrchestratorConfig, out: &mut Out) {
        let s = &self.c.components[i];
        let (Some(r), Some(c)) = (
            self.c.ready.component(&s.device),
            self.c.ready.package.component(&s.device),
        ) else {
            return;
        };
        let offer = DownloadOffer {
            update_id: s.update_id,
            // The Director's entry (the full image's), which the Agent
            // verifies; a delta is described by the encoding.
            target_name: self
                .c
                .ready
                .director_target_name(&s.device)
                .unwrap_or_else(|| r.target_name.clone()),
            version: c.version.clone(),
            release_counter: c.release_counter,
            length: c.image.length,
            sha256: c.image.sha256,
            encoding: r.encoding.clone(),
            consent_required: c.policy.consent_required,
        };
        let dev = s.device.clone();
        out.send(&dev, self.metadata(i));
        out.send(&dev, offer);
        self.vol[i].deadline = Some(now.mono_ms + cfg.answer_timeout_ms);
    }

    fn plan(&self, i: usize) -> Option<(ChunkPlan, BlobHandle)> {
        let r = self.c.ready.component(&self.c.components[i].device)?;
        let plan = ChunkPlan::new(
            r.artifact.length,
            r.artifact.chunk_size,
            r.chunk_hashes.clone(),
            &esync_package::chunk::ChunkLimits::default(),
        )
        .ok()?;
        Some((plan, r.blob))
    }

    fn transfer_start(&mut self, i: usize, now: Now, cfg: &OrchestratorConfig, out: &mut Out) {
        let s = &self.c.components[i];
        match self.plan(i) {
            Some((plan, _)) => {
                out.send(&s.device, plan.transfer_start(s.transfer_id, s.update_id));
                self.vol[i].transfer = None;
                self.vol[i].deadline = Some(now.mono_ms + cfg.answer_timeout_ms);
            }
            None => {
                let f = failure(
                    ErrorClass::Terminal,
                    FailureCode::Internal,
                    "the blob's chunk list does not fit the chunk limits",
                );
                self.fail(i, f, now, out);
            }
        }
    }

    fn set_phase(&mut self, i: usize, phase: ComponentPhase, out: &mut Out) {
        if self.c.components[i].phase != phase {
            self.c.components[i].phase = phase;
            self.vol[i].resends = 0;
            out.dirty = true;
        }
    }

    /// Component `i` failed: the package is aborted.
    fn fail(&mut self, i: usize, f: Failure, now: Now, out: &mut Out) {
        let s = &mut self.c.components[i];
        let cause = format!("{}: {:?}: {}", s.device, f.code, f.message);
        s.failure.get_or_insert(f);
        out.dirty = true;
        if self.c.verdict == PackageVerdict::Open {
            self.c.verdict = PackageVerdict::Abort { cause };
            self.apply_verdict(now, out);
        }
    }

    /// Moves every component to where the verdict sends it and sends the
    /// commands due.
    fn apply_verdict(&mut self, now: Now, out: &mut Out) {
        for i in 0..self.c.components.len() {
            let phase = self.c.components[i].phase.clone();
            match &self.c.verdict {
                PackageVerdict::Open => {}
                PackageVerdict::Commit => {
                    if !phase.is_final() && phase != ComponentPhase::Confirming {
                        self.set_phase(i, ComponentPhase::Confirming, out);
                        self.vol[i].deadline = Some(now.mono_ms);
                    }
                }
                PackageVerdict::Abort { .. } => {
                    if phase.agent_holds() {
                        self.set_phase(i, ComponentPhase::RollingBack, out);
                        self.vol[i].deadline = Some(now.mono_ms);
                    } else if !phase.is_final() {
                        // Offered, transferring or preparing: the update was
                        // never in effect; stop its transfer.
                        if phase == ComponentPhase::Transferring {
                            let s = &self.c.components[i];
                            out.send(
                                &s.device,
                                TransferAbort {
                                    transfer_id: s.transfer_id,
                                    reason: "package aborted".into(),
                                },
                            );
                        }
                        self.set_phase(i, ComponentPhase::NotInstalled, out);
                        self.vol[i].deadline = None;
                    }
                }
            }
        }
    }

    fn rollback_target(&self, i: usize) -> RollbackTarget {
        match self
            .c
            .ready
            .package
            .component(&self.c.components[i].device)
            .map(|c| c.policy.rollback)
        {
            Some(RollbackBehaviour::RestoreBackup) => RollbackTarget::Backup,
            _ => RollbackTarget::PreviousSlot,
        }
    }

    /// Sends the command of component `i`'s phase (again).
    fn resend(&mut self, i: usize, now: Now, cfg: &OrchestratorConfig, out: &mut Out) {
        let s = self.c.components[i].clone();
        let next = now.mono_ms + cfg.answer_timeout_ms;
        match s.phase {
            ComponentPhase::Offered => self.offer(i, now, cfg, out),
            ComponentPhase::Transferring => self.transfer_start(i, now, cfg, out),
            ComponentPhase::Preparing => {
                out.send(
                    &s.device,
                    Prepare {
                        update_id: s.update_id,
                        transfer_id: s.transfer_id,
                    },
                );
                self.vol[i].deadline = Some(next);
            }
            ComponentPhase::Installing => {
                out.send(
                    &s.device,
                    InstallStart {
                        update_id: s.update_id,
                        stage: s.stage,
                        await_confirm: true,
                    },
                );
                self.vol[i].deadline = Some(now.mono_ms + cfg.install_timeout_ms);
            }
            ComponentPhase::Confirming => {
                out.send(
                    &s.device,
                    Confirm {
                        update_id: s.update_id,
                    },
                );
                self.vol[i].deadline = Some(next);
            }
            ComponentPhase::RollingBack => {
                out.send(
                    &s.device,
                    Rollback {
                        update_id: s.update_id,
                        target: self.rollback_target(i),
                    },
                );
                self.vol[i].deadline = Some(now.mono_ms + cfg.install_timeout_ms);
            }
            ComponentPhase::Prepared | ComponentPhase::Installed => self.vol[i].deadline = None,
            ComponentPhase::Confirmed { .. }
            | ComponentPhase::RolledBack { .. }
            | ComponentPhase::NotInstalled => self.vol[i].deadline = None,
        }
    }

    /// A verified message from `device`.
    pub(crate) fn on_message(
        &mut self,
        device: &DevicePath,
        payload: &Payload,
        now: Now,
        cfg: &OrchestratorConfig,
        out: &mut Out,
    ) {
        let Some(i) = self.index_of(device) else {
            return;
        };
        let s = self.c.components[i].clone();
        match (payload, &s.phase) {
            (Payload::DoNotDisturb(d), p) if !p.is_final() => {
                let wait = u64::from(d.retry_after_ms).clamp(10, cfg.answer_timeout_ms);
                self.vol[i].deadline = Some(now.mono_ms + wait);
            }
            (Payload::DownloadDecision(d), ComponentPhase::Offered)
                if d.update_id == s.update_id =>
            {
                match &d.decision {
                    Decision::Consent => {
                        self.set_phase(i, ComponentPhase::Transferring, out);
                        self.transfer_start(i, now, cfg, out);
                    }
                    Decision::Deny { reason } => {
                        let f = failure(
                            ErrorClass::Terminal,
                            FailureCode::ConsentDenied,
                            format!("download denied: {reason}"),
                        );
                        self.fail(i, f, now, out);
                    }
                    Decision::Postpone { until_ms } => {
                        let wait = until_ms.saturating_sub(now.wall_ms).max(1);
                        self.vol[i].deadline = Some(now.mono_ms + wait);
                    }
                }
            }
            (Payload::TransferAck(a), ComponentPhase::Transferring)
                if a.transfer_id == s.transfer_id =>
            {
                let Some((plan, blob)) = self.plan(i) else {
                    return;
                };
                let t = self.vol[i]
                    .transfer
                    .get_or_insert_with(|| Transfer::new(plan, blob, a.next_chunk));
                t.on_ack(a);
                if t.complete() {
                    self.vol[i].transfer = None;
                    self.set_phase(i, ComponentPhase::Preparing, out);
                    self.resend(i, now, cfg, out);
                } else {
                    t.fill(cfg.window, &mut out.needs);
                    self.vol[i].deadline = Some(now.mono_ms + cfg.answer_timeout_ms);
                }
            }
            (Payload::PrepareResult(r), ComponentPhase::Preparing)
                if r.update_id == s.update_id =>
            {
                match &r.outcome {
                    PrepareOutcome::Ready { .. } => {
                        self.set_phase(i, ComponentPhase::Prepared, out);
                        self.vol[i].deadline = None;
                    }
                    PrepareOutcome::Failed(f) => self.fail(i, f.clone(), now, out),
                }
            }
            (Payload::InstallResult(r), ComponentPhase::Installing)
                if r.update_id == s.update_id =>
            {
                match &r.outcome {
                    InstallOutcome::Installed { .. } => {
                        self.set_phase(i, ComponentPhase::Installed, out);
                        self.vol[i].deadline = None;
                    }
                    InstallOutcome::Failed { failure: f, .. } => {
                        let limit = self
                            .c
                            .ready
                            .package
                            .component(&s.device)
                            .map(|c| c.policy.retry_limit)
                            .unwrap_or(0);
                        if f.code == FailureCode::UnknownUpdate {
                            // An answer to a repeated command while the
                            // install runs: wait for the real result.
                            return;
                        }
                        if f.class == ErrorClass::Retryable
                            && s.attempts <= limit
                            && self.c.verdict == PackageVerdict::Open
                        {
                            self.c.components[i].attempts += 1;
                            out.dirty = true;
                            self.resend(i, now, cfg, out);
                        } else {
                            // The Agent switched back by itself; the
                            // rollback command confirms it runs the old one.
                            self.fail(i, f.clone(), now, out);
                        }
                    }
                }
            }
            (Payload::Confirmed(c), ComponentPhase::Confirming) if c.update_id == s.update_id => {
                self.set_phase(
                    i,
                    ComponentPhase::Confirmed {
                        version: c.version.clone(),
                    },
                    out,
                );
                self.vol[i].deadline = None;
            }
            (Payload::InstallResult(r), ComponentPhase::Confirming)
                if r.update_id == s.update_id =>
            {
                // Committed without a trial (or after a restart): the
                // Agent's report of a settled install.
                if let InstallOutcome::Installed {
                    version,
                    awaiting_confirm: false,
                } = &r.outcome
                {
                    self.set_phase(
                        i,
                        ComponentPhase::Confirmed {
                            version: version.clone(),
                        },
                        out,
                    );
                    self.vol[i].deadline = None;
                }
            }
            (Payload::RollbackResult(r), ComponentPhase::RollingBack)
                if r.update_id == s.update_id =>
            {
                match &r.outcome {
                    RollbackOutcome::RolledBack { version } => {
                        self.set_phase(
                            i,
                            ComponentPhase::RolledBack {
                                running: version.clone(),
                            },
                            out,
                        );
                        self.vol[i].deadline = None;
                    }
                    RollbackOutcome::Failed(f) => {
                        // Keep trying: the package is not done before
                        // every component is back.
                        if self.c.components[i].failure.is_none() {
                            self.c.components[i].failure = Some(f.clone());
                            out.dirty = true;
                        }
                        self.vol[i].deadline = Some(now.mono_ms + cfg.answer_timeout_ms);
                    }
                }
            }
            _ => {}
        }
        self.advance(now, cfg, out);
    }

    /// The host read `data` of `blob` at `offset`.
    pub(crate) fn on_blob(
        &mut self,
        blob: BlobHandle,
        offset: u64,
        data: &[u8],
        now: Now,
        cfg: &OrchestratorConfig,
        out: &mut Out,
    ) {
        for i in 0..self.c.components.len() {
            if self.c.components[i].phase != ComponentPhase::Transferring {
                continue;
            }
            let s = self.c.components[i].clone();
            let Some(t) = self.vol[i].transfer.as_mut() else {
                continue;
            };
            if t.blob() != blob {
                continue;
            }
            match t.provide(offset, data, s.transfer_id) {
                Ok(Some(chunk)) => {
                    out.send(&s.device, chunk);
                    return;
                }
                Ok(None) => {}
                Err(why) => {
                    let f = failure(ErrorClass::Terminal, FailureCode::HashMismatch, why);
                    self.fail(i, f, now, out);
                    self.advance(now, cfg, out);
                    return;
                }
            }
        }
    }

    /// Starts what can start: the next stage's installs, the verdict.
    fn advance(&mut self, now: Now, cfg: &OrchestratorConfig, out: &mut Out) {
        if self.c.verdict != PackageVerdict::Open {
            return;
        }
        let all_prepared = self.c.components.iter().all(|c| {
            matches!(
                c.phase,
                ComponentPhase::Prepared | ComponentPhase::Installing | ComponentPhase::Installed
            )
        });
        if !all_prepared {
            return;
        }
        let stage = self
            .c
            .components
            .iter()
            .filter(|c| c.phase != ComponentPhase::Installed)
            .map(|c| c.stage)
            .min();
        let Some(stage) = stage else {
            self.c.verdict = PackageVerdict::Commit;
            out.dirty = true;
            self.apply_verdict(now, out);
            return;
        };
        for i in 0..self.c.components.len() {
            let s = &self.c.components[i];
            if s.stage != stage || s.phase != ComponentPhase::Prepared {
                continue;
            }
            let pre = self
                .c
                .ready
                .package
                .component(&s.device)
                .and_then(|c| c.policy.precondition.clone());
            let met = pre
                .as_ref()
                .is_none_or(|p| p.eval(&self.signals).unwrap_or(false));
            if !met {
                let since = *self.vol[i].waiting_since.get_or_insert(now.mono_ms);
                if now.mono_ms >= since + cfg.precondition_wait_ms {
                    let f = failure(
                        ErrorClass::Retryable,
                        FailureCode::PreconditionFailed,
                        format!(
                            "vehicle state does not meet {}",
                            pre.map(|p| p.as_str().to_string()).unwrap_or_default()
                        ),
                    );
                    self.fail(i, f, now, out);
                    return;
                }
                self.vol[i].deadline = Some(since + cfg.precondition_wait_ms);
                continue;
            }
            self.vol[i].waiting_since = None;
            self.c.components[i].attempts += 1;
            self.set_phase(i, ComponentPhase::Installing, out);
            self.resend(i, now, cfg, out);
        }
    }

    /// Deadlines due at `now`.
    pub(crate) fn poll(&mut self, now: Now, cfg: &OrchestratorConfig, out: &mut Out) {
        for i in 0..self.c.components.len() {
            let Some(d) = self.vol[i].deadline else {
                continue;
            };
            if d > now.mono_ms {
                continue;
            }
            let phase = self.c.components[i].phase.clone();
            if phase == ComponentPhase::Prepared {
                // Waiting for a precondition: re-evaluated below.
                self.vol[i].deadline = None;
                continue;
            }
            let bounded = matches!(
                phase,
                ComponentPhase::Offered
                    | ComponentPhase::Transferring
                    | ComponentPhase::Preparing
                    | ComponentPhase::Installing
            );
            self.vol[i].resends += 1;
            if bounded && self.vol[i].resends > cfg.max_resends {
                let f = failure(
                    ErrorClass::Retryable,
                    FailureCode::Timeout,
                    format!("no answer in phase {phase:?}"),
                );
                self.fail(i, f, now, out);
                continue;
            }
            let resends = self.vol[i].resends;
            self.resend(i, now, cfg, out);
            self.vol[i].resends = resends;
        }
        self.advance(now, cfg, out);
    }

    /// The earliest deadline.
    pub(crate) fn deadline(&self) -> Option<u64> {
        self.vol.iter().filter_map(|v| v.deadline).min()
    }

    /// The report, once every component is final.
    pub(crate) fn report(&self) -> Option<PackageReport> {
        if !self.c.components.iter().all(|c| c.phase.is_final()) {
            return None;
        }
        let outcome = match &self.c.verdict {
            PackageVerdict::Commit => Outcome::Installed,
            PackageVerdict::Abort { cause } => Outcome::Failed {
                cause: cause.clone(),
            },
            PackageVerdict::Open => return None,
        };
        Some(PackageReport {
            package: self.c.ready.package.id().clone(),
            outcome,
            components: self
                .c
                .components
                .iter()
                .map(|c| ComponentReport {
                    device: c.device.clone(),
                    stage: c.stage,
                    target: c.version.clone(),
                    end: c.phase.clone(),
                    attempts: c.attempts,
                    failure: c.failure.clone(),
                })
                .collect(),
        })
    }
}
