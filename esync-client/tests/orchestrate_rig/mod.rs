//! An in-process vehicle: the Client core and N Agents (esync-agent
//! `Endpoint`s on `MemDevice`s behind power switches), exchanging signed
//! frames through a simulated link, on simulated time driven by deadlines.
//! Flash time is simulated as the delay before an Agent's install result
//! reaches the Client.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test rig"
)]

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_agent::device::mem::MemDevice;
use esync_agent::device::{sha256, Device as _, SelfTest};
use esync_agent::endpoint::{Endpoint, Envelopes as AgentEnvelopes};
use esync_agent::fault::{FaultKind, FaultyDevice, FaultyStore, PowerSwitch};
use esync_agent::policy::AlwaysConsent;
use esync_agent::target::DirectedTarget;
use esync_agent::testing::{dangerous_unsigned_metadata, DangerousUnverifiedMetadata};
use esync_agent::{AgentConfig, Context, Now};
use esync_client::core::orchestrate::{ComponentPhase, Outcome, PackageReport};
use esync_client::core::plan::{BlobHandle, ForwardedMetadata, ReadyComponent, ReadyPackage};
use esync_client::core::{Client, ClientStep, Envelopes, HostNeed, OrchestratorConfig};
use esync_package::package::{
    Artifact, ArtifactRef, Component, ComponentPolicy, Package, PackageId, PackageSpec,
    TargetDescription,
};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, SignedEnvelope, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, SoftwareVersion};
use esync_proto::message::*;
use esync_store::journal::MemJournal;

pub const T0: u64 = 1_800_000_000_000;
pub const CHUNK: u32 = 1024;

pub fn v(s: &str) -> SoftwareVersion {
    SoftwareVersion::new(s).unwrap()
}

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

/// One Agent of the vehicle.
pub struct Node {
    pub device: DevicePath,
    pub config: AgentConfig,
    pub ep: Option<Endpoint>,
    pub dev: FaultyDevice<MemDevice>,
    pub journal: FaultyStore<MemJournal>,
    pub switch: PowerSwitch,
    pub verifier: Verifier,
    pub signer: EnvelopeSigner,
    pub key: VerifyingKey,
    pub flash_ms: u64,
    pub stage: u16,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub poll: bool,
    pub deadline: Option<u64>,
    pub crashes: u32,
    /// Messages the Client sent it (kinds, for assertions).
    pub received: Vec<&'static str>,
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Agent(usize),
    Client,
}

pub struct Vehicle {
    pub nodes: Vec<Node>,
    pub client: Option<Client>,
    pub config: OrchestratorConfig,
    pub cjournal: FaultyStore<MemJournal>,
    pub cswitch: PowerSwitch,
    cverifier: Verifier,
    csigner: EnvelopeSigner,
    agent_keys: BTreeMap<Participant, VerifyingKey>,
    client_keys: BTreeMap<Participant, VerifyingKey>,
    pub mono: u64,
    pub wall: u64,
    queue: Vec<(u64, u64, Dest, Vec<u8>)>,
    order: u64,
    needs: VecDeque<HostNeed>,
    pub blobs: BTreeMap<BlobHandle, Vec<u8>>,
    pub reports: Vec<PackageReport>,
    pub client_crashes: u32,
    /// Blob bytes read for the Client.
    pub blob_bytes_read: u64,
    pub link_ms: u64,
    pub signals: Vec<Signal>,
    client_deadline: Option<u64>,
    /// Record the kind of every message the Client sends (costs a
    /// signature check per frame).
    pub record: bool,
}

pub fn device(i: usize) -> DevicePath {
    DevicePath::new(format!("/domain{}/ecu{i:02}", i % 4)).unwrap()
}

impl Vehicle {
    /// `stages[i]`: the install stage of Agent `i`; `flash_ms[i]` its flash time.
    pub fn new(stages: &[u16], flash_ms: &[u64], image_len: usize) -> Self {
        let cswitch = PowerSwitch::new();
        let ckey = SigningKey::from_bytes(&[0xC1; 32]);
        let mut client_keys = BTreeMap::new();
        client_keys.insert(Participant::Client, ckey.verifying_key());
        let mut agent_keys = BTreeMap::new();
        let mut nodes = Vec::new();
        for (i, &stage) in stages.iter().enumerate() {
            let d = device(i);
            let mut config = AgentConfig::new(
                d.clone(),
                HardwareId::new(format!("hw-{i}")).unwrap(),
                EcuSerial::new(format!("SER{i:04}")).unwrap(),
            );
            config.journal_every_chunks = 4;
            config.write_quantum = 4096;
            let key = SigningKey::from_bytes(&[i as u8 + 1; 32]);
            agent_keys.insert(Participant::Device(d.clone()), key.verifying_key());
            let switch = PowerSwitch::new();
            let old = image(i as u64 * 2 + 1, image_len);
            let mut new = old.clone();
            new[..64].copy_from_slice(&image(i as u64 * 2 + 1000, 64));
            nodes.push(Node {
                device: d.clone(),
                ep: None,
                dev: FaultyDevice::new(
                    MemDevice::new(v("1.0.0"), 1, old.clone(), 1 << 20),
                    switch.clone(),
                ),
                journal: FaultyStore::new(MemJournal::new(), switch.clone()),
                switch,
                verifier: Verifier::new(
                    ReceiverIdentity {
                        me: Participant::Device(d.clone()),
                        groups: vec![],
                    },
                    FrameLimits::default(),
                ),
                signer: EnvelopeSigner::new(
                    Participant::Device(d),
                    key.clone(),
                    1,
                    FrameLimits::default(),
                ),
                key: key.verifying_key(),
                config,
                flash_ms: flash_ms.get(i).copied().unwrap_or(0),
                stage,
                old,
                new,
                poll: false,
                deadline: None,
                crashes: 0,
                received: vec![],
            });
        }
        let mut veh = Vehicle {
            nodes,
            client: None,
            config: OrchestratorConfig::default(),
            cjournal: FaultyStore::new(MemJournal::new(), cswitch.clone()),
            cswitch,
            cverifier: Verifier::new(
                ReceiverIdentity {
                    me: Participant::Client,
                    groups: vec![],
                },
                FrameLimits::default(),
            ),
            csigner: EnvelopeSigner::new(Participant::Client, ckey, 1, FrameLimits::default()),
            agent_keys,
            client_keys,
            mono: 0,
            wall: T0,
            queue: vec![],
            order: 0,
            needs: VecDeque::new(),
            blobs: BTreeMap::new(),
            reports: vec![],
            client_crashes: 0,
            blob_bytes_read: 0,
            link_ms: 1,
            signals: vec![],
            client_deadline: None,
            record: true,
        };
        for i in 0..veh.nodes.len() {
            veh.boot_agent(i);
        }
        veh.boot_client();
        veh
    }

    pub fn now(&self) -> Now {
        Now {
            mono_ms: self.mono,
            wall_ms: self.wall,
        }
    }

    /// The components of a package: each Agent's new image, full.
    pub fn package_spec(&self, id: &str) -> PackageSpec {
        PackageSpec {
            id: PackageId::new(id).unwrap(),
            download: Default::default(),
            components: self
                .nodes
                .iter()
                .map(|n| Component {
                    device: n.device.clone(),
                    hardware_id: n.config.hardware_id.clone(),
                    version: v("2.0.0"),
                    release_counter: ReleaseCounter(2),
                    image: Artifact::describe(&n.new, CHUNK).unwrap(),
                    deltas: vec![],
                    depends_on: vec![],
                    stage: n.stage,
                    policy: ComponentPolicy::default(),
                })
                .collect(),
        }
    }

    /// The ready package the Server side would produce for `spec`.
    pub fn ready(&mut self, spec: PackageSpec) -> ReadyPackage {
        let package = Package::new(spec).unwrap();
        let mut components = vec![];
        for (i, c) in package.components().iter().enumerate() {
            let n = self.nodes.iter().find(|n| n.device == c.device).unwrap();
            let desc = TargetDescription {
                package: package.id().clone(),
                download: package.download().clone(),
                component_count: package.components().len() as u32,
                component: c.clone(),
                artifact: ArtifactRef::Full,
            };
            let name = desc.target_name();
            let target = DirectedTarget::from_component(
                name.clone(),
                n.config.serial.clone(),
                n.config.hardware_id.clone(),
                c,
                T0 + 86_400_000,
            );
            let md = dangerous_unsigned_metadata(Id128([0; 16]), &target);
            let blob = BlobHandle(i as u64 + 1);
            self.blobs.insert(blob, n.new.clone());
            components.push(ReadyComponent {
                device: c.device.clone(),
                target_name: name,
                encoding: ImageEncoding::Full,
                artifact: c.image.clone(),
                chunk_hashes: n.new.chunks(CHUNK as usize).map(sha256).collect(),
                blob,
                metadata: ForwardedMetadata {
                    director: md.director,
                    image: vec![],
                },
            });
        }
        ReadyPackage {
            package,
            components,
        }
    }

    fn boot_agent(&mut self, i: usize) {
        loop {
            let now = self.now();
            let n = &mut self.nodes[i];
            let mut verifier = DangerousUnverifiedMetadata;
            let mut policy = AlwaysConsent;
            let patcher = esync_agent::delta::PackageApplier;
            let mut ctx = Context {
                device: &mut n.dev,
                journal: &mut n.journal,
                verifier: &mut verifier,
                patcher: &patcher,
                policy: &mut policy,
                reporter: None,
            };
            let mut env = AgentEnvelopes {
                verifier: &mut n.verifier,
                keys: &self.client_keys,
                signer: &mut n.signer,
            };
            match Endpoint::recover(n.config.clone(), now, &mut ctx, &mut env) {
                Ok((ep, step)) => {
                    n.ep = Some(ep);
                    self.agent_step(i, Ok(step));
                    return;
                }
                Err(_) => self.crash_agent_raw(i),
            }
        }
    }

    fn crash_agent_raw(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.ep = None;
        n.poll = false;
        n.deadline = None;
        n.switch.power_on();
        n.dev.inner_mut().power_cycle();
        n.crashes += 1;
    }

    pub fn crash_agent(&mut self, i: usize) {
        self.crash_agent_raw(i);
        self.boot_agent(i);
    }

    fn agent_step(
        &mut self,
        i: usize,
        step: Result<esync_agent::endpoint::Step, esync_agent::endpoint::EndpointError>,
    ) {
        let step = match step {
            Ok(s) => s,
            Err(_) => {
                self.crash_agent(i);
                return;
            }
        };
        self.nodes[i].poll = step.poll;
        self.nodes[i].deadline = step.deadline_ms;
        for f in step.frames {
            let delay = if self.nodes[i].flash_ms == 0 {
                0
            } else {
                match SignedEnvelope::from_frame(&f.bytes, FrameLimits::default())
                    .ok()
                    .and_then(|s| s.verify_signature(&self.nodes[i].key).ok())
                    .map(|e| e.payload)
                {
                    Some(Payload::InstallResult(_)) => self.nodes[i].flash_ms,
                    _ => 0,
                }
            };
            self.push(self.mono + self.link_ms + delay, Dest::Client, f.bytes);
            if let Some(id) = f.outbox_id {
                let r = self.with_agent(i, |ep, ctx, _, _| {
                    ep.mark_sent(id, ctx)
                        .map_err(esync_agent::endpoint::EndpointError::from)
                });
                if r.is_err() {
                    self.crash_agent(i);
                    return;
                }
            }
        }
    }

    fn with_agent<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(
            &mut Endpoint,
            &mut Context<'_>,
            &mut AgentEnvelopes<'_>,
            Now,
        ) -> Result<R, esync_agent::endpoint::EndpointError>,
    ) -> Result<R, esync_agent::endpoint::EndpointError> {
        let now = self.now();
        let n = &mut self.nodes[i];
        let ep = n.ep.as_mut().expect("agent running");
        let mut verifier = DangerousUnverifiedMetadata;
        let mut policy = AlwaysConsent;
        let patcher = esync_agent::delta::PackageApplier;
        let mut ctx = Context {
            device: &mut n.dev,
            journal: &mut n.journal,
            verifier: &mut verifier,
            patcher: &patcher,
            policy: &mut policy,
            reporter: None,
        };
        let mut env = AgentEnvelopes {
            verifier: &mut n.verifier,
            keys: &self.client_keys,
            signer: &mut n.signer,
        };
        f(ep, &mut ctx, &mut env, now)
    }

    fn push(&mut self, at: u64, dest: Dest, bytes: Vec<u8>) {
        self.order += 1;
        self.queue.push((at, self.order, dest, bytes));
    }

    fn boot_client(&mut self) {
        loop {
            let now = self.now();
            let mut env = Envelopes {
                verifier: &mut self.cverifier,
                keys: &self.agent_keys,
                signer: &mut self.csigner,
            };
            let inv = self
                .client
                .as_ref()
                .map(|c| c.inventory().clone())
                .unwrap_or_default();
            match Client::recover(self.config.clone(), inv, now, &mut self.cjournal, &mut env) {
                Ok((c, step)) => {
                    self.client = Some(c);
                    self.client_out(step);
                    return;
                }
                Err(_) => {
                    self.cswitch.power_on();
                }
            }
        }
    }

    /// Power cut on the Client: its memory is gone (the inventory, which
    /// it rebuilds by asking, is kept by the rig to save the round trip),
    /// its journal stays.
    pub fn crash_client(&mut self) {
        let inv = self.client.take().map(|c| c.inventory().clone());
        self.cswitch.power_on();
        self.client_crashes += 1;
        self.needs.clear();
        loop {
            let now = self.now();
            let mut env = Envelopes {
                verifier: &mut self.cverifier,
                keys: &self.agent_keys,
                signer: &mut self.csigner,
            };
            match Client::recover(
                self.config.clone(),
                inv.clone().unwrap_or_default(),
                now,
                &mut self.cjournal,
                &mut env,
            ) {
                Ok((c, step)) => {
                    self.client = Some(c);
                    self.client_out(step);
                    return;
                }
                Err(_) => self.cswitch.power_on(),
            }
        }
    }

    fn client_out(&mut self, step: ClientStep) {
        self.client_deadline = step.deadline_ms;
        for f in step.frames {
            let i = self.nodes.iter().position(|n| n.device == f.to).unwrap();
            self.push(self.mono + self.link_ms, Dest::Agent(i), f.bytes);
        }
        self.needs.extend(step.needs);
        for r in step.reports {
            if !self.reports.contains(&r) {
                self.reports.push(r.clone());
            }
            let c = self.client.as_mut().unwrap();
            if c.report_delivered(&r.package, &mut self.cjournal).is_err() {
                self.crash_client();
                return;
            }
        }
    }

    fn with_client(
        &mut self,
        f: impl FnOnce(
            &mut Client,
            Now,
            &mut FaultyStore<MemJournal>,
            &mut Envelopes<'_>,
        ) -> Result<ClientStep, esync_client::core::ClientError>,
    ) {
        let now = self.now();
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let mut env = Envelopes {
            verifier: &mut self.cverifier,
            keys: &self.agent_keys,
            signer: &mut self.csigner,
        };
        match f(c, now, &mut self.cjournal, &mut env) {
            Ok(step) => self.client_out(step),
            Err(_) => self.crash_client(),
        }
    }

    /// The Client asks every Agent for its inventory; the rig runs until answered.
    pub fn inventory(&mut self) {
        let devs: Vec<DevicePath> = self.nodes.iter().map(|n| n.device.clone()).collect();
        self.with_client(|c, now, j, env| c.query_inventory(&devs, [7; 16], now, j, env));
        self.run_until(
            |veh| {
                let c = veh.client.as_ref().unwrap();
                veh.nodes.iter().all(|n| {
                    c.inventory()
                        .agent(&n.device)
                        .is_some_and(|a| a.report.is_some())
                })
            },
            10_000,
        );
    }

    pub fn start(&mut self, ready: ReadyPackage) -> Result<(), esync_client::core::ClientError> {
        let now = self.now();
        let c = self.client.as_mut().unwrap();
        let mut env = Envelopes {
            verifier: &mut self.cverifier,
            keys: &self.agent_keys,
            signer: &mut self.csigner,
        };
        match c.start(ready, now, &mut self.cjournal, &mut env) {
            Ok(step) => {
                self.client_out(step);
                Ok(())
            }
            Err(esync_client::core::ClientError::Store(_)) => {
                self.crash_client();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn set_signals(&mut self, signals: Vec<Signal>) {
        self.signals = signals.clone();
        self.with_client(|c, now, j, env| c.signals(signals, now, j, env));
    }

    /// Does everything due now; false when nothing was.
    fn step_once(&mut self) -> bool {
        if let Some(HostNeed::ReadBlob { blob, offset, len }) = self.needs.pop_front() {
            let data = self.blobs[&blob][offset as usize..][..len as usize].to_vec();
            self.blob_bytes_read += u64::from(len);
            self.with_client(|c, now, j, env| c.provide_blob(blob, offset, &data, now, j, env));
            return true;
        }
        if let Some(pos) = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, q)| q.0 <= self.mono)
            .min_by_key(|(_, q)| (q.0, q.1))
            .map(|(p, _)| p)
        {
            let (_, _, dest, bytes) = self.queue.remove(pos);
            match dest {
                Dest::Client => {
                    self.with_client(|c, now, j, env| c.receive(&bytes, now, j, env));
                }
                Dest::Agent(i) => {
                    if !self.record {
                    } else if let Some(kind) =
                        SignedEnvelope::from_frame(&bytes, FrameLimits::default())
                            .ok()
                            .and_then(|s| {
                                s.verify_signature(&self.client_keys[&Participant::Client])
                                    .ok()
                            })
                            .map(|e| e.payload.kind())
                    {
                        self.nodes[i].received.push(kind);
                    }
                    let r =
                        self.with_agent(i, |ep, ctx, env, now| ep.receive(&bytes, now, ctx, env));
                    self.agent_step(i, r);
                }
            }
            return true;
        }
        for i in 0..self.nodes.len() {
            let due = self.nodes[i].poll || self.nodes[i].deadline.is_some_and(|d| d <= self.mono);
            if due && self.nodes[i].ep.is_some() {
                let r = self.with_agent(i, |ep, ctx, env, now| ep.poll(now, ctx, env));
                self.agent_step(i, r);
                return true;
            }
        }
        let cd = self
            .client
            .as_ref()
            .and(self.client_deadline)
            .filter(|d| *d <= self.mono);
        if cd.is_some() {
            self.client_deadline = None;
            self.with_client(|c, now, j, env| c.poll(now, j, env));
            return true;
        }
        false
    }

    /// The next time something is due.
    fn next_time(&self) -> Option<u64> {
        let q = self.queue.iter().map(|q| q.0).min();
        let a = self.nodes.iter().filter_map(|n| n.deadline).min();
        [q, a, self.client_deadline].into_iter().flatten().min()
    }

    /// Runs until `done` or `max_ms` of simulated time passed.
    pub fn run_until(&mut self, done: impl Fn(&Vehicle) -> bool, max_ms: u64) -> bool {
        let end = self.mono + max_ms;
        let mut steps = 0u64;
        loop {
            if done(self) {
                return true;
            }
            steps += 1;
            assert!(steps < 5_000_000, "rig livelock");
            if self.step_once() {
                continue;
            }
            match self.next_time() {
                Some(t) if t <= end => {
                    let t = t.max(self.mono);
                    self.wall += t - self.mono;
                    self.mono = t;
                }
                _ => return done(self),
            }
        }
    }

    /// Runs until a report for `package` is out.
    pub fn run_campaign(&mut self, max_ms: u64) -> Option<PackageReport> {
        self.run_until(|veh| !veh.reports.is_empty(), max_ms);
        self.reports.last().cloned()
    }

    /// Which Agents run their new image (by hash of what the device runs).
    pub fn on_new(&self) -> Vec<bool> {
        self.nodes
            .iter()
            .map(|n| {
                let run = sha256(n.dev.inner().running_bytes());
                assert!(
                    run == sha256(&n.new) || run == sha256(&n.old),
                    "{} runs neither image",
                    n.device
                );
                run == sha256(&n.new)
            })
            .collect()
    }

    /// Asserts the vehicle is not mixed and the report says what runs.
    pub fn check_truthful(&self, report: &PackageReport, what: &str) {
        let on_new = self.on_new();
        let all_new = on_new.iter().all(|x| *x);
        let all_old = on_new.iter().all(|x| !*x);
        assert!(all_new || all_old, "{what}: mixed vehicle {on_new:?}");
        match &report.outcome {
            Outcome::Installed => {
                assert!(all_new, "{what}: reported installed, old image runs");
                for c in &report.components {
                    assert!(
                        matches!(c.end, ComponentPhase::Confirmed { .. }),
                        "{what}: {c:?}"
                    );
                }
                for n in &self.nodes {
                    assert!(!n.dev.inner().on_trial().unwrap(), "{what}: left on trial");
                }
            }
            Outcome::Failed { .. } => {
                assert!(all_old, "{what}: reported failed, new image runs");
                for c in &report.components {
                    assert!(
                        matches!(
                            c.end,
                            ComponentPhase::RolledBack { .. } | ComponentPhase::NotInstalled
                        ),
                        "{what}: {c:?}"
                    );
                }
            }
        }
    }

    /// Makes Agent `i`'s self-test fail on every attempt.
    pub fn fail_self_test(&mut self, i: usize) {
        let new_sha = sha256(&self.nodes[i].new);
        self.nodes[i]
            .dev
            .inner_mut()
            .set_self_test(Box::new(move |img: &InstalledImage| {
                if img.sha256 == new_sha {
                    SelfTest::Failed("injected self-test failure".into())
                } else {
                    SelfTest::Passed
                }
            }));
    }

    pub fn arm_client(&mut self, at: u64, kind: FaultKind) {
        self.cswitch.arm(at, kind);
    }
}
