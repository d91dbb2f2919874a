//! The Client's sans-I/O orchestration core.
//!
//! [`Client`] takes frame bytes from Agents (verified with the host's
//! [`Verifier`](esync_proto::envelope::Verifier), as the Agent's endpoint does), presence and vehicle-state
//! signals from the host, blob bytes the host read for it, and both clocks
//! ([`Now`]); it returns frames to send ([`ClientStep::frames`]), what it needs
//! from the host ([`ClientStep::needs`], in the manner of `esync_uptane::repo`'s
//! `Need`/`provide`), final package reports and its next deadline. It
//! journals its campaign through the host's [`JournalStore`] (the same
//! mechanism as the Agent's) before it sends anything that depends on the
//! new state. No socket, file, clock or thread.
//!
//! - [`plan`]: the input, a verified and downloaded [`plan::ReadyPackage`],
//!   and the admission check that runs before anything is downloaded.
//! - [`inventory`]: the vehicle's Agents.
//! - [`session`]: the Server-facing session (check-in, full Uptane
//!   verification, planning, consent, downloads) producing the
//!   [`plan::ReadyPackage`].
//! - [`orchestrate`]: the campaign (stages, parallel installs, retries,
//!   atomic commit or rollback).
//! - [`transfer`]: chunked transfers to Agents.
//! - [`journal`]: the campaign journal record.
//!
//! An `Err` from a method means the journal could not be written (a power
//! cut): drop the Client and [`Client::recover`] it after the restart.

use esync_proto::envelope::Recipient;
use esync_proto::id::{DevicePath, Id128};
use esync_proto::message::{Participant, Payload, PresenceState, Signal};
use esync_proto::{EnvelopeError, FrameError};

/// The envelope side (verifier, the Agents' keys, the Client's sealer),
/// passed in at each call: the Agent endpoint's type, one for both sides.
pub use esync_agent::endpoint::{Envelopes, Sealer};
/// The host's two clocks (the Agent's type: monotonic for deadlines, wall
/// for envelope timestamps and expiry).
pub use esync_agent::Now;
pub use esync_store::journal::JournalStore;
pub use esync_store::StoreError;

pub mod inventory;
pub mod journal;
pub mod orchestrate;
pub mod plan;
pub mod session;
pub mod transfer;

use inventory::Inventory;
use journal::ClientJournal;
use orchestrate::{Out, PackageReport, Run};
use plan::{BlobHandle, ReadyPackage, Refusal};

/// Tuning of the orchestrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrchestratorConfig {
    /// How long to wait for an answer before sending a command again (ms).
    pub answer_timeout_ms: u64,
    /// How long an install or a rollback may take before `InstallStart` or
    /// `Rollback` is sent again (ms).
    pub install_timeout_ms: u64,
    /// Commands sent again without an answer before a component fails
    /// with `Timeout` (offer, transfer, prepare, install). Confirm and
    /// rollback are sent again until answered.
    pub max_resends: u32,
    /// Chunks in flight per transfer.
    pub window: u32,
    /// How long a component waits for its precondition to hold once its
    /// stage is due (ms).
    pub precondition_wait_ms: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            answer_timeout_ms: 5_000,
            install_timeout_ms: 10 * 60_000,
            max_resends: 10,
            window: 8,
            precondition_wait_ms: 10 * 60_000,
        }
    }
}

/// A frame for one Agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFrame {
    /// The Agent.
    pub to: DevicePath,
    /// The framed, signed envelope.
    pub bytes: Vec<u8>,
}

/// What the Client needs from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostNeed {
    /// `len` bytes of `blob` at `offset`: answer with
    /// [`Client::provide_blob`].
    ReadBlob {
        /// The blob.
        blob: BlobHandle,
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
    },
}

/// What became of an input frame.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientInput {
    /// No frame.
    None,
    /// Verified and handled.
    Handled,
    /// Refused by envelope verification.
    Refused(EnvelopeError),
    /// Verified, from a sender that is not an Agent (a listener such as
    /// the HMI): not the orchestrator's; the message is handed to the host.
    NotFromAgent(Box<esync_proto::envelope::Verified>),
}

/// What a call produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientStep {
    /// Frames to send, in order.
    pub frames: Vec<AgentFrame>,
    /// Host work to do.
    pub needs: Vec<HostNeed>,
    /// Final package reports (also kept in the journal until
    /// [`Client::report_delivered`]).
    pub reports: Vec<PackageReport>,
    /// What became of the input.
    pub input: ClientInput,
    /// Call [`Client::poll`] at this monotonic time.
    pub deadline_ms: Option<u64>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The journal could not be read or written: drop the Client and
    /// recover it.
    #[error("journal: {0}")]
    Store(#[from] StoreError),
    /// The journal could not be encoded.
    #[error("encoding the journal: {0}")]
    Encode(#[from] postcard::Error),
    /// A message could not be sealed.
    #[error("sealing a message: {0}")]
    Frame(#[from] FrameError),
    /// The package is refused (nothing was sent).
    #[error("package refused: {0}")]
    Refused(#[from] Refusal),
    /// A campaign is running already.
    #[error("a campaign is running")]
    Busy,
}

/// The Client core. See the module docs.
#[derive(Debug)]
pub struct Client {
    config: OrchestratorConfig,
    inventory: Inventory,
    journal: ClientJournal,
    run: Option<Run>,
    signals: Vec<Signal>,
    correlation: u64,
}

impl Client {
    /// Recovers the Client from its journal (an empty journal is a fresh
    /// Client). A campaign found open is aborted (presumed abort) and its
    /// rollback resumes; a committed one is confirmed to the end. Unsent
    /// reports come out again.
    pub fn recover(
        config: OrchestratorConfig,
        inventory: Inventory,
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<(Client, ClientStep), ClientError> {
        let state = match journal.load()? {
            Some(bytes) => journal::decode(&bytes)?,
            None => ClientJournal::default(),
        };
        let mut out = Out::default();
        let mut c = Client {
            config,
            inventory,
            correlation: state.generation << 24,
            run: None,
            signals: Vec::new(),
            journal: state,
        };
        if let Some(campaign) = c.journal.campaign.clone() {
            c.run = Some(Run::recover(campaign, now, &mut out));
        }
        let mut step = c.finish(out, ClientInput::None, now, journal, env)?;
        step.reports = c.journal.outbox.clone();
        Ok((c, step))
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The inventory, to update from presence and inventory reports the
    /// host routes here.
    pub fn inventory_mut(&mut self) -> &mut Inventory {
        &mut self.inventory
    }

    /// The journaled state.
    pub fn state(&self) -> &ClientJournal {
        &self.journal
    }

    /// Whether a campaign is running.
    pub fn busy(&self) -> bool {
        self.run.is_some()
    }

    /// Starts installing `ready`: checked against the inventory first
    /// ([`ReadyPackage::check`]); a refused package sends nothing.
    pub fn start(
        &mut self,
        ready: ReadyPackage,
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        if self.run.is_some() {
            return Err(ClientError::Busy);
        }
        ready.check(&self.inventory)?;
        let mut run = Run::new(ready, now);
        run.signals = self.signals.clone();
        let mut out = Out::default();
        run.start(now, &self.config, &mut out);
        self.run = Some(run);
        self.finish(out, ClientInput::None, now, journal, env)
    }

    /// One frame from the broker.
    pub fn receive(
        &mut self,
        frame: &[u8],
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        let msg = match env.verifier.open(frame, env.keys, now.wall_ms) {
            Ok(m) => m,
            Err(e) => {
                return self.finish(Out::default(), ClientInput::Refused(e), now, journal, env)
            }
        };
        let Participant::Device(device) = msg.header.sender.clone() else {
            let input = ClientInput::NotFromAgent(Box::new(msg));
            return self.finish(Out::default(), input, now, journal, env);
        };
        let device = &device;
        match &msg.payload {
            Payload::InventoryReport(r) => {
                // A report naming another device is dropped.
                let _ = self.inventory.report(device, r.clone());
            }
            Payload::DoNotDisturb(d) => {
                let _ = self.inventory.do_not_disturb(device, d, now.mono_ms);
            }
            Payload::VersionReport(v) => {
                let _ = self.inventory.version_report(device, v.signed_json.clone());
            }
            Payload::Confirmed(c) => self.inventory.installed_version(device, &c.version),
            Payload::RollbackResult(esync_proto::message::RollbackResult {
                outcome: esync_proto::message::RollbackOutcome::RolledBack { version },
                ..
            }) => self.inventory.installed_version(device, version),
            _ => {}
        }
        let mut out = Out::default();
        if let Some(run) = self.run.as_mut() {
            run.on_message(device, &msg.payload, now, &self.config, &mut out);
        }
        self.finish(out, ClientInput::Handled, now, journal, env)
    }

    /// Asks `devices` for their inventory (answers update [`Self::inventory`]).
    pub fn query_inventory(
        &mut self,
        devices: &[DevicePath],
        nonce: [u8; 16],
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        let mut out = Out::default();
        for d in devices {
            out.messages.push((
                d.clone(),
                Payload::InventoryQuery(esync_proto::message::InventoryQuery { nonce }),
            ));
        }
        self.finish(out, ClientInput::None, now, journal, env)
    }

    /// Asks `devices` for a signed Uptane version report carrying `nonce`
    /// (answers land in each [`inventory::AgentEntry::version_report`]).
    pub fn request_version_reports(
        &mut self,
        devices: &[DevicePath],
        nonce: [u8; 16],
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        let mut out = Out::default();
        for d in devices {
            out.messages.push((
                d.clone(),
                Payload::VersionReportRequest(esync_proto::message::VersionReportRequest { nonce }),
            ));
        }
        self.finish(out, ClientInput::None, now, journal, env)
    }

    /// The broker reported an Agent's presence.
    pub fn presence(&mut self, device: &DevicePath, state: PresenceState) {
        let _ = self.inventory.presence(device, state);
    }

    /// The vehicle state changed (speed, gear, battery...): preconditions
    /// are evaluated on it.
    pub fn signals(
        &mut self,
        signals: Vec<Signal>,
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        self.signals = signals;
        if let Some(run) = self.run.as_mut() {
            run.signals = self.signals.clone();
        }
        self.poll(now, journal, env)
    }

    /// The host's answer to [`HostNeed::ReadBlob`].
    pub fn provide_blob(
        &mut self,
        blob: BlobHandle,
        offset: u64,
        data: &[u8],
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        let mut out = Out::default();
        if let Some(run) = self.run.as_mut() {
            run.on_blob(blob, offset, data, now, &self.config, &mut out);
        }
        self.finish(out, ClientInput::None, now, journal, env)
    }

    /// Handles the deadlines due at `now`.
    pub fn poll(
        &mut self,
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        let mut out = Out::default();
        if let Some(run) = self.run.as_mut() {
            run.poll(now, &self.config, &mut out);
        }
        self.finish(out, ClientInput::None, now, journal, env)
    }

    /// The host delivered the report of `package`: it leaves the journal.
    pub fn report_delivered(
        &mut self,
        package: &esync_package::package::PackageId,
        journal: &mut dyn JournalStore,
    ) -> Result<(), ClientError> {
        let before = self.journal.outbox.len();
        self.journal.outbox.retain(|r| &r.package != package);
        if self.journal.outbox.len() != before {
            self.persist(journal)?;
        }
        Ok(())
    }

    fn persist(&mut self, journal: &mut dyn JournalStore) -> Result<(), ClientError> {
        let mut next = self.journal.clone();
        next.generation += 1;
        next.campaign = self.run.as_ref().map(|r| r.c.clone());
        let bytes = journal::encode(&next)?;
        journal.store(&bytes)?;
        self.journal = next;
        Ok(())
    }

    /// Journals (when the state changed) and then seals the messages.
    fn finish(
        &mut self,
        out: Out,
        input: ClientInput,
        now: Now,
        journal: &mut dyn JournalStore,
        env: &mut Envelopes<'_>,
    ) -> Result<ClientStep, ClientError> {
        let mut reports = Vec::new();
        let mut dirty = out.dirty;
        if let Some(report) = self.run.as_ref().and_then(|r| r.report()) {
            self.run = None;
            self.journal.outbox.push(report.clone());
            reports.push(report);
            dirty = true;
        }
        if dirty {
            self.persist(journal)?;
        }
        let mut frames = Vec::with_capacity(out.messages.len());
        for (to, payload) in out.messages {
            self.correlation += 1;
            let mut c = [0u8; 16];
            c[..8].copy_from_slice(&self.journal.generation.to_be_bytes());
            c[8..].copy_from_slice(&self.correlation.to_be_bytes());
            let bytes = env.signer.seal(
                Recipient::Device(to.clone()),
                Id128(c),
                payload,
                now.wall_ms,
            )?;
            frames.push(AgentFrame { to, bytes });
        }
        Ok(ClientStep {
            frames,
            needs: out.needs,
            reports,
            input,
            deadline_ms: self.run.as_ref().and_then(|r| r.deadline()),
        })
    }
}
