//! The tokio loop over the orchestrator ([`crate::core::Client`]): the
//! vehicle's Agents through the embedded broker (any
//! [`esync_transport::Transport`], normally the broker's in-process
//! endpoint), the campaign journal on the host's
//! [`JournalStore`](crate::core::JournalStore) (in production
//! `esync_store::file::FileJournal`, the Agent's mechanism), blobs read from
//! the download directory ([`crate::core::HostNeed::ReadBlob`]: `DOWNLOADS/SHA256`,
//! as [`super::session`] leaves them), the monotonic clock for deadlines and
//! the injected [`WallClock`] for envelope timestamps and consent.
//!
//! Before a package starts, its install policy runs
//! ([`InstallGate`]: the install rules, then consent through the HMI
//! listener on the broker, with postponement). Vehicle-state changes come
//! through a `watch` channel from the host's provider and reach both the
//! gate and the orchestrator's preconditions.
//!
//! Restart: [`VehicleRuntime::recover`] reads the journal; a campaign whose
//! verdict was journaled is confirmed to the end, one without is rolled
//! back ([`VehicleRuntime::finish`] drives it). Final reports stay in the
//! orchestrator's journal until the host has put them somewhere durable
//! ([`VehicleRuntime::report_delivered`], e.g. after queueing them in the
//! session's [`ReportOutbox`](crate::core::session::reports::ReportOutbox),
//! which sends them when the link to the Server returns: [`send_reports`]).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use esync_api::body::{ComponentOutcome, ComponentResult, PackageOutcome, Report, ReportEvent};
use esync_api::{BlobId, ReportId};
use esync_package::package::PackageId;
use esync_proto::envelope::{KeyResolver, Recipient, Verified, Verifier};
use esync_proto::id::{DevicePath, Id128, ListenerName};
use esync_proto::message::{ConsentResponse, Participant, Payload};
use esync_proto::FrameError;
use esync_store::journal::JournalStore;
use esync_transport::{Incoming, SharedSigner, Transport, WallClock};
use esync_uptane::crypto::RawSigned;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::core::inventory::Inventory;
use crate::core::orchestrate::{ComponentPhase, Outcome, PackageReport};
use crate::core::plan::{BlobHandle, ReadyPackage};
use crate::core::session::policy::{Blocked, Conditions, GateStep, InstallGate, Policy};
use crate::core::session::reports::{OutboxError, ReportOutbox};
use crate::core::{
    Client, ClientError, ClientInput, ClientStep, Envelopes, HostNeed, Now, OrchestratorConfig,
    Sealer,
};
use crate::http::DeviceHttp;

/// Most bytes one [`HostNeed::ReadBlob`] may ask for (the chunk bound of
/// `esync_package::chunk`).
const MAX_READ: u32 = 16 * 1024 * 1024;

/// Why the vehicle loop stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VehicleError {
    /// The orchestrator failed; a journal error means: drop the runtime and
    /// [`VehicleRuntime::recover`] it.
    #[error("orchestrator: {0}")]
    Client(#[from] ClientError),
    /// A downloaded blob could not be read.
    #[error("{path}: {source}")]
    Blob {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The orchestrator asked for a blob the running campaign does not name.
    #[error("no blob {0:?} in the running campaign")]
    UnknownBlob(BlobHandle),
    /// A request to the HMI listener could not be sealed.
    #[error("sealing a consent request: {0}")]
    Frame(#[from] FrameError),
    /// The broker endpoint closed.
    #[error("the broker endpoint closed")]
    TransportClosed,
    /// Nothing happened in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The vehicle manifest could not be signed.
    #[error("signing the vehicle manifest: {0}")]
    Manifest(esync_uptane::Error),
}

/// What the host plugs into the vehicle loop.
pub struct VehicleHost {
    /// Orchestrator tuning.
    pub config: OrchestratorConfig,
    /// The campaign journal.
    pub journal: Box<dyn JournalStore + Send>,
    /// Where the verified blobs are (`DOWNLOADS/SHA256`).
    pub downloads: PathBuf,
    /// Seals the Client's envelopes (the vehicle key; shared with the
    /// broker, which signs presence with it).
    pub signer: SharedSigner,
    /// Verifies envelopes addressed to the Client.
    pub verifier: Verifier,
    /// Keys of the Agents and listeners.
    pub keys: Box<dyn KeyResolver + Send + Sync>,
    /// Install rules and consent.
    pub policy: Policy,
    /// The HMI listener that answers consent requests (`None`: a package
    /// that needs consent waits, it is never installed without).
    pub hmi: Option<ListenerName>,
    /// The vehicle's conditions (network, battery, signals) from the host's
    /// vehicle-state provider.
    pub conditions: watch::Receiver<Conditions>,
    /// Wall time.
    pub clock: WallClock,
}

/// Counters of the loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VehicleStats {
    /// Frames sent to Agents.
    pub frames_sent: u64,
    /// Frames the transport did not accept (sent again at the deadline).
    pub send_failed: u64,
    /// Frames refused by envelope verification.
    pub refused: u64,
    /// Blob bytes read for transfers.
    pub blob_bytes_read: u64,
    /// Consent requests sent to the HMI.
    pub consent_requests: u64,
}

/// What became of [`VehicleRuntime::install`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum InstallAttempt {
    /// The campaign ran to its report (installed, or rolled back).
    Report(PackageReport),
    /// The user refused the install: nothing was sent to any Agent.
    Denied(String),
    /// The install policy did not let it start within the wait (rules not
    /// met, or consent pending or postponed): nothing was sent to any
    /// Agent; try again later.
    NotNow(Vec<Blocked>),
}

/// What woke one turn of the loop.
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    Input,
    Conditions,
    Timer,
}

/// The vehicle loop: one [`Client`] and its host.
pub struct VehicleRuntime {
    client: Client,
    host: VehicleHost,
    transport: Transport,
    origin: Instant,
    deadline: Option<u64>,
    needs: VecDeque<HostNeed>,
    reports: Vec<PackageReport>,
    inbox: VecDeque<Verified>,
    present: BTreeSet<Participant>,
    conditions_open: bool,
    nonce_counter: u64,
    stats: VehicleStats,
}

/// The envelope side, built per call from the host's fields so that no
/// `dyn` borrow lives across an `.await`.
macro_rules! env {
    ($host:expr, $signer:ident) => {
        &mut Envelopes {
            verifier: &mut $host.verifier,
            keys: &*$host.keys,
            signer: &mut $signer,
        }
    };
}

/// The path of a verified blob in `downloads`.
pub fn blob_path(downloads: &Path, blob: &BlobId) -> PathBuf {
    downloads.join(blob.to_string())
}

impl VehicleRuntime {
    /// Recovers the orchestrator from the host's journal (empty: a fresh
    /// Client) and sends what the recovery asks (rollbacks of a campaign
    /// cut before its verdict, confirmations after it). Reports not yet
    /// delivered are in [`Self::take_reports`].
    pub async fn recover(host: VehicleHost, transport: Transport) -> Result<Self, VehicleError> {
        let origin = Instant::now();
        let mut host = host;
        let now = Now {
            mono_ms: 0,
            wall_ms: host.clock.now_ms(),
        };
        let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> = &host.signer;
        let (client, step) = Client::recover(
            host.config.clone(),
            Inventory::new(),
            now,
            &mut *host.journal,
            env!(host, signer),
        )?;
        let mut rt = VehicleRuntime {
            client,
            host,
            transport,
            origin,
            deadline: None,
            needs: VecDeque::new(),
            reports: Vec::new(),
            inbox: VecDeque::new(),
            present: BTreeSet::new(),
            conditions_open: true,
            nonce_counter: 0,
            stats: VehicleStats::default(),
        };
        rt.apply(step).await;
        Ok(rt)
    }

    /// The host and the broker endpoint back (to restart the loop on them,
    /// e.g. with a journal reopened after a power cut).
    pub fn into_parts(self) -> (VehicleHost, Transport) {
        (self.host, self.transport)
    }

    /// Both clocks now.
    pub fn now(&self) -> Now {
        Now {
            mono_ms: u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX),
            wall_ms: self.host.clock.now_ms(),
        }
    }

    /// The orchestrator (inventory, journaled state).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Counters.
    pub fn stats(&self) -> VehicleStats {
        self.stats
    }

    /// Agents and listeners the broker reported connected.
    pub fn present(&self) -> &BTreeSet<Participant> {
        &self.present
    }

    /// Final reports out of the orchestrator and not yet delivered.
    pub fn take_reports(&mut self) -> Vec<PackageReport> {
        std::mem::take(&mut self.reports)
    }

    /// The host has put the report of `package` somewhere durable: it
    /// leaves the orchestrator's journal.
    pub fn report_delivered(&mut self, package: &PackageId) -> Result<(), VehicleError> {
        self.client
            .report_delivered(package, &mut *self.host.journal)?;
        Ok(())
    }

    /// Messages from listeners (other than the consent answers the gate
    /// consumed).
    pub fn take_listener_messages(&mut self) -> Vec<Verified> {
        self.inbox.drain(..).collect()
    }

    async fn apply(&mut self, step: ClientStep) {
        self.deadline = step.deadline_ms;
        self.needs.extend(step.needs);
        for r in step.reports {
            if !self.reports.contains(&r) {
                self.reports.push(r);
            }
        }
        match step.input {
            ClientInput::NotFromAgent(v) => {
                if self.inbox.len() >= 256 {
                    self.inbox.pop_front();
                }
                self.inbox.push_back(*v);
            }
            ClientInput::Refused(_) => self.stats.refused += 1,
            _ => {}
        }
        for f in step.frames {
            match self.transport.send(f.bytes).await {
                Ok(()) => self.stats.frames_sent += 1,
                // The orchestrator sends every command again at its
                // deadline until answered.
                Err(_) => self.stats.send_failed += 1,
            }
        }
    }

    fn blob_file(&self, blob: BlobHandle) -> Result<PathBuf, VehicleError> {
        let campaign = self
            .client
            .state()
            .campaign
            .as_ref()
            .ok_or(VehicleError::UnknownBlob(blob))?;
        let c = campaign
            .ready
            .components
            .iter()
            .find(|c| c.blob == blob)
            .ok_or(VehicleError::UnknownBlob(blob))?;
        Ok(blob_path(&self.host.downloads, &BlobId(c.artifact.sha256)))
    }

    async fn serve_needs(&mut self) -> Result<(), VehicleError> {
        while let Some(need) = self.needs.pop_front() {
            let HostNeed::ReadBlob { blob, offset, len } = need;
            let path = self.blob_file(blob)?;
            let data = read_at(&path, offset, len.min(MAX_READ))?;
            self.stats.blob_bytes_read += data.len() as u64;
            let now = self.now();
            let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> =
                &self.host.signer;
            let step = self.client.provide_blob(
                blob,
                offset,
                &data,
                now,
                &mut *self.host.journal,
                env!(self.host, signer),
            )?;
            self.apply(step).await;
        }
        Ok(())
    }

    /// One turn: host work, then the first of a frame or presence from the
    /// broker, the orchestrator's deadline, a change of the vehicle's
    /// conditions, or `wake` (monotonic ms).
    async fn turn(&mut self, wake: Option<u64>) -> Result<Woke, VehicleError> {
        self.serve_needs().await?;
        let now_ms = self.now().mono_ms;
        let at = [self.deadline, wake].into_iter().flatten().min();
        let sleep_ms = at.map_or(3_600_000, |t| t.saturating_sub(now_ms));
        let conditions_open = self.conditions_open;
        enum Ev {
            In(Option<Incoming>),
            Cond(bool),
            Timer,
        }
        let ev = tokio::select! {
            inc = self.transport.recv() => Ev::In(inc),
            r = self.host.conditions.changed(), if conditions_open => Ev::Cond(r.is_ok()),
            () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => Ev::Timer,
        };
        let now = self.now();
        let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> =
            &self.host.signer;
        let journal = &mut *self.host.journal;
        let step = match ev {
            Ev::In(None) => return Err(VehicleError::TransportClosed),
            Ev::In(Some(Incoming::Frame(f))) => {
                self.client
                    .receive(&f, now, journal, env!(self.host, signer))?
            }
            Ev::In(Some(Incoming::Presence(p))) => {
                match p.state {
                    esync_proto::message::PresenceState::Connected => {
                        self.present.insert(p.participant.clone());
                    }
                    esync_proto::message::PresenceState::Disconnected => {
                        self.present.remove(&p.participant);
                    }
                }
                if let Participant::Device(d) = &p.participant {
                    self.client.presence(d, p.state);
                }
                return Ok(Woke::Input);
            }
            Ev::In(Some(Incoming::Reconnected)) => return Ok(Woke::Input),
            Ev::Cond(false) => {
                self.conditions_open = false;
                return Ok(Woke::Input);
            }
            Ev::Cond(true) => {
                let signals = self.host.conditions.borrow_and_update().signals.clone();
                let step = self
                    .client
                    .signals(signals, now, journal, env!(self.host, signer))?;
                self.apply(step).await;
                return Ok(Woke::Conditions);
            }
            Ev::Timer => {
                if self.deadline.is_some_and(|d| d <= now.mono_ms) {
                    let step = self.client.poll(now, journal, env!(self.host, signer))?;
                    self.apply(step).await;
                }
                return Ok(Woke::Timer);
            }
        };
        self.apply(step).await;
        Ok(Woke::Input)
    }

    /// Runs the loop until `done` holds or `timeout` passes.
    async fn run_until(
        &mut self,
        what: &'static str,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), VehicleError> {
        let end = self.now().mono_ms.saturating_add(ms(timeout));
        loop {
            if done(self) {
                return Ok(());
            }
            if self.now().mono_ms >= end {
                return Err(VehicleError::Timeout(what));
            }
            self.turn(Some(end)).await?;
        }
    }

    /// Waits until every one of `who` (Agents, the HMI listener) is
    /// connected to the broker.
    pub async fn wait_present(
        &mut self,
        who: &[Participant],
        timeout: Duration,
    ) -> Result<(), VehicleError> {
        self.run_until("the Agents to connect", timeout, |rt| {
            who.iter().all(|p| rt.present.contains(p))
        })
        .await
    }

    /// Asks `devices` for their inventory and runs until each answered
    /// this query (identity, installed image, delta formats, backups).
    pub async fn inventory(
        &mut self,
        devices: &[DevicePath],
        timeout: Duration,
    ) -> Result<&Inventory, VehicleError> {
        let nonce = self.fresh_nonce(b"esync-inventory-nonce\0");
        let now = self.now();
        let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> =
            &self.host.signer;
        let step = self.client.query_inventory(
            devices,
            nonce,
            now,
            &mut *self.host.journal,
            env!(self.host, signer),
        )?;
        self.apply(step).await;
        self.run_until("inventory reports", timeout, |rt| {
            devices.iter().all(|d| {
                rt.client
                    .inventory()
                    .agent(d)
                    .and_then(|a| a.report.as_ref())
                    .is_some_and(|r| r.nonce == nonce)
            })
        })
        .await?;
        Ok(self.client.inventory())
    }

    fn fresh_nonce(&mut self, tag: &[u8]) -> [u8; 16] {
        self.nonce_counter += 1;
        let now = self.now();
        let mut h = Sha256::new();
        h.update(tag);
        h.update(now.wall_ms.to_be_bytes());
        h.update(now.mono_ms.to_be_bytes());
        h.update(self.nonce_counter.to_be_bytes());
        h.update(self.client.state().generation.to_be_bytes());
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&h.finalize()[..16]);
        nonce
    }

    /// The signed vehicle manifest: asks every Agent of `devices` for a
    /// signed Uptane version report with a fresh nonce, keeps the ones that
    /// carry it, and signs the manifest with `key` (the vehicle's) as
    /// `primary` (the Client's ECU serial). The Server checks each report's
    /// signature against the ECU's key.
    pub async fn vehicle_manifest(
        &mut self,
        devices: &[DevicePath],
        vin: esync_proto::id::Vin,
        primary: esync_proto::id::EcuSerial,
        key: &esync_uptane::PrivateKey,
        timeout: Duration,
    ) -> Result<Vec<u8>, VehicleError> {
        let nonce = self.fresh_nonce(b"esync-version-report-nonce\0");
        let want = hex::encode(nonce);
        let now = self.now();
        let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> =
            &self.host.signer;
        let step = self.client.request_version_reports(
            devices,
            nonce,
            now,
            &mut *self.host.journal,
            env!(self.host, signer),
        )?;
        self.apply(step).await;
        let fresh = |rt: &Self, d: &DevicePath| -> Option<RawSigned> {
            let bytes = rt.client.inventory().agent(d)?.version_report.as_ref()?;
            let raw = RawSigned::from_slice("ecu version report", bytes).ok()?;
            (raw.signed.get("nonce").and_then(|n| n.as_str()) == Some(want.as_str())).then_some(raw)
        };
        self.run_until("version reports", timeout, |rt| {
            devices.iter().all(|d| fresh(rt, d).is_some())
        })
        .await?;
        let mut reports = std::collections::BTreeMap::new();
        for d in devices {
            let Some(raw) = fresh(self, d) else { continue };
            let Some(serial) = raw.signed.get("ecu_serial").and_then(|s| s.as_str()) else {
                continue;
            };
            reports.insert(serial.to_string(), raw);
        }
        esync_uptane::manifest::VehicleManifest {
            vin,
            primary_ecu_serial: primary,
            ecu_version_reports: reports,
        }
        .sign(key)
        .map_err(VehicleError::Manifest)
    }

    async fn ask_hmi(
        &mut self,
        req: esync_proto::message::ConsentRequest,
    ) -> Result<bool, VehicleError> {
        let Some(hmi) = self.host.hmi.clone() else {
            return Ok(false);
        };
        let wall = self.host.clock.now_ms();
        let corr = Id128(req.request_id.0);
        let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> =
            &self.host.signer;
        let frame = Sealer::seal(
            &mut signer,
            Recipient::Listener(hmi),
            corr,
            Payload::ConsentRequest(req),
            wall,
        )?;
        self.stats.consent_requests += 1;
        match self.transport.send(frame).await {
            Ok(()) => self.stats.frames_sent += 1,
            Err(_) => self.stats.send_failed += 1,
        }
        Ok(true)
    }

    /// Asks the HMI listener `req` (e.g. the session's download consent)
    /// and runs the loop until its answer, for at most `timeout`. `None`:
    /// no HMI is configured, or it did not answer in time.
    pub async fn ask_consent(
        &mut self,
        req: esync_proto::message::ConsentRequest,
        timeout: Duration,
    ) -> Result<Option<ConsentResponse>, VehicleError> {
        let id = req.request_id;
        if !self.ask_hmi(req).await? {
            return Ok(None);
        }
        let found = |rt: &Self| {
            rt.inbox.iter().any(|v| {
                matches!(&v.payload, Payload::ConsentResponse(r) if r.request_id == id)
                    && matches!(v.header.sender, Participant::Listener(ref l) if Some(l) == rt.host.hmi.as_ref())
            })
        };
        match self.run_until("the HMI's answer", timeout, found).await {
            Ok(()) => {}
            Err(VehicleError::Timeout(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(self.take_consent_answer())
    }

    fn take_consent_answer(&mut self) -> Option<ConsentResponse> {
        let i = self.inbox.iter().position(|v| {
            matches!(v.header.sender, Participant::Listener(ref l) if Some(l) == self.host.hmi.as_ref())
                && matches!(v.payload, Payload::ConsentResponse(_))
        })?;
        match self.inbox.remove(i)?.payload {
            Payload::ConsentResponse(r) => Some(r),
            _ => None,
        }
    }

    /// Installs `ready`: its install policy first (rules; consent through
    /// the HMI listener, postponements), for at most `gate_wait`; then the
    /// orchestrator runs the campaign to its report, for at most
    /// `timeout`. The report is also kept until [`Self::report_delivered`].
    pub async fn install(
        &mut self,
        ready: ReadyPackage,
        gate_wait: Duration,
        timeout: Duration,
    ) -> Result<InstallAttempt, VehicleError> {
        let wall0 = self.host.clock.now_ms();
        let mut seed = [0u8; 7];
        let h =
            Sha256::digest([ready.package.id().as_str().as_bytes(), &wall0.to_be_bytes()].concat());
        seed.copy_from_slice(&h[..7]);
        let mut gate = InstallGate::new(&self.host.policy, &ready.package, seed);
        let gate_end = self.now().mono_ms.saturating_add(ms(gate_wait));
        let mut last_blocked = Vec::new();
        loop {
            let conditions = self.host.conditions.borrow().clone();
            let wall = self.host.clock.now_ms();
            let step = match self.take_consent_answer() {
                Some(r) => gate
                    .answer(&r, wall)
                    .unwrap_or_else(|| gate.poll(&conditions, wall)),
                None => gate.poll(&conditions, wall),
            };
            let wake_wall = match step {
                GateStep::Go => break,
                GateStep::Denied(why) => return Ok(InstallAttempt::Denied(why)),
                GateStep::Ask(req) => {
                    let deadline = req.deadline_ms;
                    if !self.ask_hmi(req).await? {
                        last_blocked.clear();
                    }
                    Some(deadline)
                }
                GateStep::WaitUntilWall(t) => Some(t),
                GateStep::Blocked(why) => {
                    last_blocked = why;
                    None
                }
            };
            let now = self.now();
            if now.mono_ms >= gate_end {
                return Ok(InstallAttempt::NotNow(last_blocked));
            }
            let wake = wake_wall
                .map(|t| now.mono_ms.saturating_add(t.saturating_sub(now.wall_ms)))
                .map_or(gate_end, |t| t.min(gate_end));
            // Until an answer, a change of conditions or the wake time.
            loop {
                let before = self.inbox.len();
                let woke = self.turn(Some(wake)).await?;
                if woke != Woke::Input || self.inbox.len() != before || self.now().mono_ms >= wake {
                    break;
                }
            }
        }
        // The orchestrator evaluates preconditions on the current state.
        let now = self.now();
        let signals = self.host.conditions.borrow().signals.clone();
        let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> =
            &self.host.signer;
        let step = self.client.signals(
            signals,
            now,
            &mut *self.host.journal,
            env!(self.host, signer),
        )?;
        self.apply(step).await;
        let package = ready.package.id().clone();
        let now = self.now();
        let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> =
            &self.host.signer;
        let step =
            self.client
                .start(ready, now, &mut *self.host.journal, env!(self.host, signer))?;
        self.apply(step).await;
        self.finish_package(&package, timeout)
            .await
            .map(InstallAttempt::Report)
    }

    async fn finish_package(
        &mut self,
        package: &PackageId,
        timeout: Duration,
    ) -> Result<PackageReport, VehicleError> {
        self.run_until("the package report", timeout, |rt| {
            rt.reports.iter().any(|r| &r.package == package)
        })
        .await?;
        self.reports
            .iter()
            .find(|r| &r.package == package)
            .cloned()
            .ok_or(VehicleError::Timeout("the package report"))
    }

    /// After [`Self::recover`]: runs a campaign found in the journal to its
    /// report (`None`: there was none).
    pub async fn finish(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<PackageReport>, VehicleError> {
        let Some(package) = self
            .client
            .state()
            .campaign
            .as_ref()
            .map(|c| c.ready.package.id().clone())
        else {
            return Ok(None);
        };
        self.finish_package(&package, timeout).await.map(Some)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn read_at(path: &Path, offset: u64, len: u32) -> Result<Vec<u8>, VehicleError> {
    use std::io::{Read, Seek, SeekFrom};
    let err = |source| VehicleError::Blob {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    f.seek(SeekFrom::Start(offset)).map_err(err)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(err)?;
    Ok(buf)
}

/// The Server's view of a final package report (`PUT /v1/reports/{id}`),
/// with each component's ECU serial from `inventory`; `None` when a
/// component's Agent never reported its identity.
pub fn api_report(report: &PackageReport, inventory: &Inventory, wall_ms: u64) -> Option<Report> {
    let mut components = Vec::with_capacity(report.components.len());
    for c in &report.components {
        let agent = inventory.agent(&c.device)?.report.as_ref()?;
        let (outcome, running) = match &c.end {
            ComponentPhase::Confirmed { version } => (ComponentOutcome::Installed, version.clone()),
            ComponentPhase::RolledBack { running } if c.failure.is_some() => {
                (ComponentOutcome::Failed, running.clone())
            }
            ComponentPhase::RolledBack { running } => {
                (ComponentOutcome::RolledBack, running.clone())
            }
            _ if c.failure.is_some() => (ComponentOutcome::Failed, agent.installed.version.clone()),
            _ => (
                ComponentOutcome::NotStarted,
                agent.installed.version.clone(),
            ),
        };
        components.push(ComponentResult {
            ecu: agent.serial.clone(),
            outcome,
            running,
            failure: c.failure.clone(),
        });
    }
    Some(Report {
        created_wall_ms: wall_ms,
        event: ReportEvent::Result {
            package: report.package.to_string(),
            outcome: match report.outcome {
                Outcome::Installed => PackageOutcome::Installed,
                Outcome::Failed { .. } => PackageOutcome::RolledBack,
            },
            components,
        },
    })
}

/// The idempotent report id of a package's final report.
pub fn report_id(package: &PackageId) -> Option<ReportId> {
    let d = Sha256::digest([b"esync-result\0".as_slice(), package.as_str().as_bytes()].concat());
    ReportId::new(&format!("result-{}", hex::encode(&d[..12]))).ok()
}

/// Sends what `outbox` holds, one report at a time, until it is empty or
/// a send fails (the report stays queued and backs off: it goes out when
/// the link returns, on a later call). Returns how many were stored.
pub async fn send_reports<J: JournalStore>(
    outbox: &mut ReportOutbox<J>,
    http: &DeviceHttp,
    mono_ms: impl Fn() -> u64,
    timeout: Duration,
) -> Result<usize, OutboxError> {
    let mut stored = 0;
    while let Some(r) = outbox.next(mono_ms()) {
        let report: Report = match serde_json::from_slice(&r.body) {
            Ok(b) => b,
            Err(e) => return Err(OutboxError::Corrupt(e.to_string())),
        };
        match http.put_report(&r.id, &report, timeout).await {
            Ok(_) => {
                outbox.on_stored(&r.id)?;
                stored += 1;
            }
            Err(_) => {
                outbox.on_failed(mono_ms());
                break;
            }
        }
    }
    Ok(stored)
}
