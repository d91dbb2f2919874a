//! Shared test rig: an Agent with a device and a journal behind a power
//! switch, a Client-side script, and end-state checks.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers"
)]

use esync_agent::device::file::FileDevice;
use esync_agent::device::mem::MemDevice;
use esync_agent::device::{hash_with, sha256, Device};
use esync_agent::fault::{FaultyDevice, FaultyStore, PowerSwitch};
use esync_agent::journal::{FileJournal, JournalStore, MemJournal};
use esync_agent::patch::PatchApplier;
use esync_agent::policy::{AlwaysConsent, ConsentPolicy};
use esync_agent::target::{DeltaEntry, DirectedTarget, MetadataVerifier};
use esync_agent::testing::{dangerous_unsigned_metadata, DangerousUnverifiedMetadata};
use esync_agent::{Agent, AgentConfig, AgentError, Context, Now, Output};
use esync_proto::envelope::{Header, Recipient, Verified, PROTOCOL_VERSION};
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, Sha256Digest, SoftwareVersion,
};
use esync_proto::message::*;

pub const T0: u64 = 1_800_000_000_000;
pub const CAP: u64 = 1 << 20;

pub fn v(s: &str) -> SoftwareVersion {
    SoftwareVersion::new(s).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn config() -> AgentConfig {
    let mut c = AgentConfig::new(
        DevicePath::new("/powertrain/ecm").unwrap(),
        HardwareId::new("ecm-hw-1").unwrap(),
        EcuSerial::new("ECM0001").unwrap(),
    );
    c.journal_every_chunks = 4;
    c.progress_every_chunks = 4;
    c.write_quantum = 4096;
    c
}

pub fn chunk_hashes(bytes: &[u8], chunk: u32) -> Vec<Sha256Digest> {
    bytes.chunks(chunk as usize).map(sha256).collect()
}

pub fn list_digest(h: &[Sha256Digest]) -> Sha256Digest {
    let mut all = Vec::new();
    for d in h {
        all.extend_from_slice(&d.0);
    }
    sha256(&all)
}

/// What the Client sends for one update.
#[derive(Clone, Debug)]
pub struct Update {
    pub id: Id128,
    pub target: DirectedTarget,
    /// Bytes that travel: the image or the patch.
    pub payload: Vec<u8>,
    pub encoding: ImageEncoding,
    pub chunk_size: u32,
    pub transfer_id: Id128,
    /// Signed metadata to send instead of the unsigned test encoding.
    pub signed: Option<UpdateMetadata>,
}

impl Update {
    pub fn full(id: u8, version: &str, rc: u64, img: &[u8], chunk_size: u32) -> Self {
        let cfg = config();
        let hashes = chunk_hashes(img, chunk_size);
        Update {
            id: Id128([id; 16]),
            target: DirectedTarget {
                target_name: format!("ecm-{version}.bin"),
                version: v(version),
                release_counter: ReleaseCounter(rc),
                length: img.len() as u64,
                sha256: sha256(img),
                hardware_id: cfg.hardware_id.clone(),
                ecu_serial: cfg.serial.clone(),
                chunk_list_digest: Some(list_digest(&hashes)),
                deltas: vec![],
                expires_ms: T0 + 86_400_000,
            },
            payload: img.to_vec(),
            encoding: ImageEncoding::Full,
            chunk_size,
            transfer_id: Id128([id ^ 0xff; 16]),
            signed: None,
        }
    }

    /// A delta update from `from` (version `from_version`) to `to`.
    #[allow(
        clippy::too_many_arguments,
        reason = "test helper mirroring the offer's fields"
    )]
    pub fn delta(
        id: u8,
        version: &str,
        rc: u64,
        from_version: &str,
        from: &[u8],
        to: &[u8],
        format: PatchFormat,
        patch: Vec<u8>,
        chunk_size: u32,
    ) -> Self {
        let mut u = Update::full(id, version, rc, to, chunk_size);
        let hashes = chunk_hashes(&patch, chunk_size);
        u.target.deltas.push(DeltaEntry {
            format,
            from_version: v(from_version),
            source_sha256: sha256(from),
            patch_length: patch.len() as u64,
            patch_sha256: sha256(&patch),
            chunk_list_digest: Some(list_digest(&hashes)),
        });
        u.encoding = ImageEncoding::Delta {
            format,
            from_version: v(from_version),
            source_sha256: sha256(from),
            patch_length: patch.len() as u64,
            patch_sha256: sha256(&patch),
        };
        u.payload = patch;
        u
    }

    pub fn metadata(&self) -> Payload {
        match &self.signed {
            Some(m) => Payload::UpdateMetadata(m.clone()),
            None => Payload::UpdateMetadata(dangerous_unsigned_metadata(self.id, &self.target)),
        }
    }

    pub fn offer(&self) -> Payload {
        Payload::DownloadOffer(DownloadOffer {
            update_id: self.id,
            target_name: self.target.target_name.clone(),
            version: self.target.version.clone(),
            release_counter: self.target.release_counter,
            length: self.target.length,
            sha256: self.target.sha256,
            encoding: self.encoding.clone(),
            consent_required: false,
        })
    }

    pub fn chunks(&self) -> u32 {
        self.payload.len().div_ceil(self.chunk_size as usize) as u32
    }

    pub fn transfer_start(&self) -> Payload {
        Payload::TransferStart(TransferStart {
            transfer_id: self.transfer_id,
            update_id: self.id,
            total_length: self.payload.len() as u64,
            chunk_size: self.chunk_size,
            chunk_hashes: chunk_hashes(&self.payload, self.chunk_size),
        })
    }

    pub fn chunk(&self, i: u32) -> Payload {
        let s = i as usize * self.chunk_size as usize;
        let e = (s + self.chunk_size as usize).min(self.payload.len());
        Payload::TransferChunk(TransferChunk {
            transfer_id: self.transfer_id,
            index: i,
            offset: s as u64,
            data: self.payload[s..e].to_vec(),
        })
    }

    pub fn prepare(&self) -> Payload {
        Payload::Prepare(Prepare {
            update_id: self.id,
            transfer_id: self.transfer_id,
        })
    }

    pub fn install(&self, await_confirm: bool) -> Payload {
        Payload::InstallStart(InstallStart {
            update_id: self.id,
            stage: 0,
            await_confirm,
        })
    }

    pub fn confirm(&self) -> Payload {
        Payload::Confirm(Confirm { update_id: self.id })
    }

    pub fn rollback(&self, target: RollbackTarget) -> Payload {
        Payload::Rollback(Rollback {
            update_id: self.id,
            target,
        })
    }
}

/// A device the rig can restart and inspect.
pub trait TestDev: Device {
    fn restart(&mut self);
    /// SHA-256 of the bytes the device really runs.
    fn actual_running_sha(&self) -> Sha256Digest {
        let r = self.running().unwrap();
        let mut buf = vec![0u8; 4096];
        hash_with(r.length, &mut buf, |o, b| self.read_running(o, b)).unwrap()
    }
}

impl TestDev for MemDevice {
    fn restart(&mut self) {
        self.power_cycle();
    }
    fn actual_running_sha(&self) -> Sha256Digest {
        sha256(self.running_bytes())
    }
}

impl TestDev for FileDevice {
    fn restart(&mut self) {
        FileDevice::restart(self).unwrap();
    }
}

pub struct Rig<D: TestDev, J: JournalStore> {
    pub dev: FaultyDevice<D>,
    pub journal: FaultyStore<J>,
    pub switch: PowerSwitch,
    pub verifier: Box<dyn MetadataVerifier>,
    pub patcher: Box<dyn PatchApplier>,
    pub policy: Box<dyn ConsentPolicy>,
    pub reporter: Option<Box<dyn esync_agent::VersionReporter>>,
    pub config: AgentConfig,
    pub agent: Option<Agent>,
    /// Wall time.
    pub now: u64,
    /// Monotonic time (restarts at 0 after a crash, like a host's).
    pub mono: u64,
    seq: u64,
    /// Every message the Agent sent.
    pub log: Vec<Payload>,
    pub crashes: u32,
}

pub type MemRig = Rig<MemDevice, MemJournal>;
pub type FileRig = Rig<FileDevice, FileJournal>;

pub fn patcher() -> Box<dyn PatchApplier> {
    Box::new(esync_agent::delta::PackageApplier)
}

pub fn mem_rig(old: &[u8]) -> MemRig {
    Rig::new(
        MemDevice::new(v("1.0.0"), 1, old.to_vec(), CAP),
        MemJournal::new(),
        config(),
    )
}

pub fn file_rig(dir: &std::path::Path, old: &[u8]) -> FileRig {
    let dev = FileDevice::create(&dir.join("dev"), v("1.0.0"), 1, old, CAP).unwrap();
    Rig::new(dev, FileJournal::new(dir, "agent.journal"), config())
}

impl<D: TestDev, J: JournalStore> Rig<D, J> {
    pub fn new(dev: D, journal: J, config: AgentConfig) -> Self {
        let switch = PowerSwitch::new();
        let mut rig = Rig {
            dev: FaultyDevice::new(dev, switch.clone()),
            journal: FaultyStore::new(journal, switch.clone()),
            switch,
            verifier: Box::new(DangerousUnverifiedMetadata),
            patcher: patcher(),
            policy: Box::new(AlwaysConsent),
            reporter: None,
            config,
            agent: None,
            now: T0,
            mono: 0,
            seq: 0,
            log: vec![],
            crashes: 0,
        };
        rig.boot().expect("first boot");
        rig
    }

    /// Both clocks now.
    pub fn clocks(&self) -> Now {
        Now {
            mono_ms: self.mono,
            wall_ms: self.now,
        }
    }

    /// Lets `ms` pass on both clocks.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.mono += ms;
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Agent, &mut Context<'_>, Now) -> R) -> R {
        let now = self.clocks();
        let agent = self.agent.as_mut().expect("agent running");
        let mut ctx = Context {
            device: &mut self.dev,
            journal: &mut self.journal,
            verifier: &mut *self.verifier,
            patcher: &*self.patcher,
            policy: &mut *self.policy,
            reporter: match &mut self.reporter {
                Some(r) => Some(&mut **r as &mut dyn esync_agent::VersionReporter),
                None => None,
            },
        };
        f(agent, &mut ctx, now)
    }

    /// Starts the Agent from the journal (after a restart).
    pub fn boot(&mut self) -> Result<Vec<Payload>, AgentError> {
        let now = self.clocks();
        let mut ctx = Context {
            device: &mut self.dev,
            journal: &mut self.journal,
            verifier: &mut *self.verifier,
            patcher: &*self.patcher,
            policy: &mut *self.policy,
            reporter: match &mut self.reporter {
                Some(r) => Some(&mut **r as &mut dyn esync_agent::VersionReporter),
                None => None,
            },
        };
        let (agent, out) = Agent::recover(self.config.clone(), now, &mut ctx)?;
        self.agent = Some(agent);
        let poll = out.poll;
        let mut msgs = self.deliver(out)?;
        if poll {
            msgs.extend(self.poll_all()?);
        }
        Ok(msgs)
    }

    /// Power cut: drop every in-memory state of the Agent, restart the device.
    pub fn crash(&mut self) {
        self.agent = None;
        self.mono = 0;
        self.switch.power_on();
        self.dev.inner_mut().restart();
        self.crashes += 1;
    }

    fn envelope(&mut self, payload: Payload) -> Verified {
        self.seq += 1;
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&self.seq.to_be_bytes());
        Verified {
            header: Header {
                version: PROTOCOL_VERSION,
                sender: Participant::Client,
                recipient: Recipient::Device(self.config.device.clone()),
                seq: self.seq,
                timestamp_ms: self.now,
                correlation: Id128(c),
            },
            payload,
        }
    }

    /// Sends, collects messages, marks final reports sent (the host did).
    fn deliver(&mut self, out: Output) -> Result<Vec<Payload>, AgentError> {
        let mut msgs = vec![];
        for m in out.messages {
            if let Some(id) = m.outbox_id {
                self.with(|a, ctx, _| a.mark_sent(id, ctx))?;
            }
            self.log.push(m.payload.clone());
            msgs.push(m.payload);
        }
        Ok(msgs)
    }

    /// Handles one message without running pending work.
    pub fn send_only(&mut self, payload: Payload) -> Result<(Vec<Payload>, bool), AgentError> {
        let msg = self.envelope(payload);
        let out = self.with(|a, ctx, now| a.handle(now, &msg, ctx))?;
        let poll = out.poll;
        Ok((self.deliver(out)?, poll))
    }

    /// Handles one message and runs the work it started to completion.
    pub fn send(&mut self, payload: Payload) -> Result<Vec<Payload>, AgentError> {
        let (mut msgs, mut poll) = self.send_only(payload)?;
        let mut guard = 0;
        while poll {
            guard += 1;
            assert!(guard < 100_000, "agent never finished its work");
            let out = self.with(|a, ctx, now| a.poll(now, ctx))?;
            poll = out.poll;
            msgs.extend(self.deliver(out)?);
        }
        Ok(msgs)
    }

    /// One poll: its messages, and whether more work is pending.
    pub fn poll_once(&mut self) -> Result<(Vec<Payload>, bool), AgentError> {
        let out = self.with(|a, ctx, now| a.poll(now, ctx))?;
        let more = out.poll;
        Ok((self.deliver(out)?, more))
    }

    /// Runs pending work (after recovery, or at a deadline).
    pub fn poll_all(&mut self) -> Result<Vec<Payload>, AgentError> {
        let mut msgs = vec![];
        loop {
            let out = self.with(|a, ctx, now| a.poll(now, ctx))?;
            let more = out.poll;
            msgs.extend(self.deliver(out)?);
            if !more {
                return Ok(msgs);
            }
        }
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    /// The last final report (install, confirm, rollback) for `id` in the log.
    pub fn last_final(&self, id: Id128) -> Option<Payload> {
        self.log
            .iter()
            .rev()
            .find(|p| match p {
                Payload::InstallResult(r) => r.update_id == id,
                Payload::Confirmed(r) => r.update_id == id,
                Payload::RollbackResult(r) => r.update_id == id,
                _ => false,
            })
            .cloned()
    }
}

/// What a Client round ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Round {
    Done,
    Retry,
    Stop,
}

pub fn find<T>(msgs: &[Payload], f: impl Fn(&Payload) -> Option<T>) -> Option<T> {
    msgs.iter().find_map(f)
}

/// One round of the Client's install script; every step is idempotent on
/// the Agent side, so a round after a crash simply starts again.
pub fn install_round<D: TestDev, J: JournalStore>(
    rig: &mut Rig<D, J>,
    u: &Update,
    await_confirm: bool,
) -> Result<Round, AgentError> {
    rig.send(u.metadata())?;
    let r = rig.send(u.offer())?;
    match find(&r, |p| match p {
        Payload::DownloadDecision(d) => Some(d.decision.clone()),
        _ => None,
    }) {
        Some(Decision::Consent) => {}
        Some(_) => return Ok(Round::Stop),
        None => return Ok(Round::Retry),
    }
    let r = rig.send(u.transfer_start())?;
    let Some(next) = find(&r, |p| match p {
        Payload::TransferAck(a) => Some(a.next_chunk),
        _ => None,
    }) else {
        let retryable = r.iter().any(|p| matches!(p, Payload::PrepareResult(PrepareResult { outcome: PrepareOutcome::Failed(f), .. }) if f.class == ErrorClass::Retryable));
        return Ok(if retryable { Round::Retry } else { Round::Stop });
    };
    for i in next..u.chunks() {
        rig.send(u.chunk(i))?;
    }
    let r = rig.send(u.prepare())?;
    match find(&r, |p| match p {
        Payload::PrepareResult(p) => Some(p.outcome.clone()),
        _ => None,
    }) {
        Some(PrepareOutcome::Ready { .. }) => {}
        Some(PrepareOutcome::Failed(f)) if f.class == ErrorClass::Retryable => {
            return Ok(Round::Retry)
        }
        _ => return Ok(Round::Stop),
    }
    let r = rig.send(u.install(await_confirm))?;
    let result = find(&r, |p| match p {
        Payload::InstallResult(x) if x.update_id == u.id => Some(x.outcome.clone()),
        Payload::Confirmed(c) if c.update_id == u.id => Some(InstallOutcome::Installed {
            version: c.version.clone(),
            awaiting_confirm: false,
        }),
        _ => None,
    });
    match result {
        Some(InstallOutcome::Installed {
            awaiting_confirm: true,
            ..
        }) => {
            let r = rig.send(u.confirm())?;
            if find(&r, |p| matches!(p, Payload::Confirmed(_)).then_some(())).is_some() {
                Ok(Round::Done)
            } else {
                Ok(Round::Retry)
            }
        }
        Some(InstallOutcome::Installed { .. }) => Ok(Round::Done),
        Some(InstallOutcome::Failed { failure, .. }) if failure.class == ErrorClass::Terminal => {
            Ok(Round::Stop)
        }
        _ => Ok(Round::Retry),
    }
}

/// Drives an install to its end through crashes (power cut → restart →
/// recover → the Client starts its script again).
pub fn drive_install<D: TestDev, J: JournalStore>(
    rig: &mut Rig<D, J>,
    u: &Update,
    await_confirm: bool,
) -> Round {
    for _ in 0..12 {
        match install_round(rig, u, await_confirm) {
            Ok(Round::Retry) => continue,
            Ok(r) => return r,
            Err(_) => {
                rig.crash();
                while rig.boot().is_err() {
                    rig.crash();
                }
            }
        }
    }
    Round::Stop
}
