//! The Client's tokio loop over the orchestrator (`runtime::vehicle`) with
//! real Agents (esync-agent's runtime on memory devices) connected to the
//! embedded broker over mutual TLS, an HMI listener answering install
//! consent, blobs read from a download directory and the campaign journal
//! on `esync_store::file::FileJournal`: a staged install that commits after
//! a postponement, a failing Agent that rolls every component back, and
//! power cuts of the Client at several journal writes, each resumed from
//! the journal by a restarted loop (never a mixed vehicle).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use ed25519_dalek::VerifyingKey;
use esync_agent::device::mem::MemDevice;
use esync_agent::device::{sha256, SelfTest};
use esync_agent::fault::{FaultKind, FaultyStore, PowerSwitch};
use esync_agent::policy::AlwaysConsent;
use esync_agent::runtime::{run_agent, AgentHost, Security};
use esync_agent::target::DirectedTarget;
use esync_agent::testing::{dangerous_unsigned_metadata, DangerousUnverifiedMetadata};
use esync_agent::AgentConfig;
use esync_api::BlobId;
use esync_client::broker::BrokerHandle;
use esync_client::core::orchestrate::{ComponentPhase, Outcome, PackageReport, PackageVerdict};
use esync_client::core::plan::{BlobHandle, ForwardedMetadata, ReadyComponent, ReadyPackage};
use esync_client::core::session::policy::{Conditions, Policy, Rules};
use esync_client::core::OrchestratorConfig;
use esync_client::runtime::vehicle::{
    api_report, blob_path, InstallAttempt, VehicleError, VehicleHost, VehicleRuntime,
};
use esync_package::package::{
    Artifact, ArtifactRef, Component, ComponentPolicy, Package, PackageId, PackageSpec,
    TargetDescription,
};
use esync_proto::envelope::{ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, Id128, ListenerName, ReleaseCounter, SoftwareVersion,
};
use esync_proto::message::{
    ConsentResponse, Decision, ImageEncoding, InstalledImage, Participant, Payload,
};
use esync_store::file::FileJournal;
use esync_store::journal::JournalStore;
use esync_transport::{Incoming, Transport, WallClock};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const CHUNK: u32 = 1024;
const LONG: Duration = Duration::from_secs(60);

fn v(s: &str) -> SoftwareVersion {
    SoftwareVersion::new(s).unwrap()
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
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

struct AgentSpec {
    device: DevicePath,
    hw: HardwareId,
    serial: EcuSerial,
    stage: u16,
    old: Vec<u8>,
    new: Vec<u8>,
    key: VerifyingKey,
}

struct RunningAgent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A vehicle: the embedded broker, N Agents, an HMI listener.
struct Rig {
    pki: Pki,
    broker: BrokerHandle,
    endpoint: Option<Transport>,
    agents: Vec<AgentSpec>,
    running: Vec<RunningAgent>,
    hmi: Option<(oneshot::Sender<()>, JoinHandle<u32>)>,
    keys: BTreeMap<Participant, VerifyingKey>,
    dir: tempfile::TempDir,
    conditions: watch::Sender<Conditions>,
    hmi_id: esync_identity::IssuedIdentity,
}

fn hmi_name() -> ListenerName {
    ListenerName::new("hmi").unwrap()
}

impl Rig {
    /// `stages[i]`: the stage of Agent `i`; `failing`: Agents whose new
    /// image fails its self-test.
    async fn new(stages: &[u16], failing: &[usize]) -> Rig {
        let pki = Pki::new();
        let mut cfg = pki.broker_config();
        cfg.presence_signer = Some(pki.client_signer());
        let (broker, endpoint) = start_broker(cfg).await;
        let mut keys = BTreeMap::new();
        let mut agents = Vec::new();
        let mut running = Vec::new();
        for (i, &stage) in stages.iter().enumerate() {
            let device = dev(&format!("/domain{}/ecu{i}", i % 2));
            let id = pki.agent(device.as_str());
            let old = bytes(i as u64 * 2 + 1, 6 * 1024 + 100);
            let mut new = old.clone();
            new[..64].copy_from_slice(&bytes(i as u64 + 500, 64));
            let spec = AgentSpec {
                device: device.clone(),
                hw: HardwareId::new(format!("hw-{i}")).unwrap(),
                serial: EcuSerial::new(format!("SER{i:03}")).unwrap(),
                stage,
                old,
                new,
                key: id.signing_key.verifying_key(),
            };
            keys.insert(Participant::Device(device.clone()), spec.key);
            running.push(start_agent(&pki, &broker, &spec, &id, failing.contains(&i)));
            agents.push(spec);
        }
        let hmi_id = pki.listener("hmi");
        keys.insert(
            Participant::Listener(hmi_name()),
            hmi_id.signing_key.verifying_key(),
        );
        let (conditions, _) = watch::channel(Conditions::default());
        Rig {
            pki,
            broker,
            endpoint: Some(endpoint),
            agents,
            running,
            hmi: None,
            keys,
            dir: tempfile::tempdir().unwrap(),
            conditions,
            hmi_id,
        }
    }

    /// An HMI listener that postpones the first `postpones` requests by
    /// `postpone_ms` and then answers `last` (consent, or a denial).
    fn start_hmi(&mut self, postpones: u32, postpone_ms: u64) {
        self.start_hmi_then(postpones, postpone_ms, Decision::Consent);
    }

    fn start_hmi_then(&mut self, postpones: u32, postpone_ms: u64, last: Decision) {
        let id = self.hmi_id.clone();
        let me = Participant::Listener(hmi_name());
        let mut link = Transport::boxed(self.pki.link(&self.broker, me.clone(), &id));
        let signer = shared(signer(me.clone(), &id.signing_key));
        let client_keys = keys(&[(
            Participant::Client,
            self.pki.vehicle.signing_key.verifying_key(),
        )]);
        let (tx, mut rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut verifier = verifier_for(me, vec![]);
            let mut asked = 0u32;
            loop {
                let inc = tokio::select! {
                    _ = &mut rx => return asked,
                    inc = link.recv() => inc,
                };
                let Some(Incoming::Frame(f)) = inc else {
                    if inc.is_none() {
                        return asked;
                    }
                    continue;
                };
                let Ok(m) = verifier.open(&f, &client_keys, now_ms()) else {
                    continue;
                };
                let Payload::ConsentRequest(req) = m.payload else {
                    continue;
                };
                asked += 1;
                let decision = if asked <= postpones {
                    Decision::Postpone {
                        until_ms: now_ms() + postpone_ms,
                    }
                } else {
                    last.clone()
                };
                let answer = seal(
                    &signer,
                    Recipient::Client,
                    Payload::ConsentResponse(ConsentResponse {
                        request_id: req.request_id,
                        decision,
                    }),
                );
                link.send(answer).await.unwrap();
            }
        });
        self.hmi = Some((tx, task));
    }

    fn journal_path(&self) -> &Path {
        self.dir.path()
    }

    fn downloads(&self) -> std::path::PathBuf {
        self.dir.path().join("downloads")
    }

    fn host(&self, journal: Box<dyn JournalStore + Send>, policy: Policy) -> VehicleHost {
        VehicleHost {
            config: OrchestratorConfig {
                answer_timeout_ms: 400,
                install_timeout_ms: 5_000,
                ..OrchestratorConfig::default()
            },
            journal,
            downloads: self.downloads(),
            signer: self.pki.client_signer(),
            verifier: Verifier::new(
                ReceiverIdentity {
                    me: Participant::Client,
                    groups: vec![],
                },
                FrameLimits::default(),
            ),
            keys: Box::new(self.keys.clone()),
            policy,
            hmi: Some(hmi_name()),
            conditions: self.conditions.subscribe(),
            clock: WallClock::system(),
        }
    }

    fn file_journal(&self) -> FileJournal {
        FileJournal::new(self.journal_path(), "client.journal")
    }

    async fn runtime(
        &mut self,
        journal: Box<dyn JournalStore + Send>,
        policy: Policy,
    ) -> VehicleRuntime {
        let host = self.host(journal, policy);
        let endpoint = self.endpoint.take().expect("the broker endpoint");
        VehicleRuntime::recover(host, endpoint).await.unwrap()
    }

    /// The package of every Agent's new image, full, and the blobs written
    /// to the download directory (as the session leaves them).
    fn ready(&self, id: &str) -> ReadyPackage {
        let spec = PackageSpec {
            id: PackageId::new(id).unwrap(),
            download: Default::default(),
            components: self
                .agents
                .iter()
                .map(|a| Component {
                    device: a.device.clone(),
                    hardware_id: a.hw.clone(),
                    version: v("2.0.0"),
                    release_counter: ReleaseCounter(2),
                    image: Artifact::describe(&a.new, CHUNK).unwrap(),
                    deltas: vec![],
                    depends_on: vec![],
                    stage: a.stage,
                    policy: ComponentPolicy::default(),
                })
                .collect(),
        };
        let package = Package::new(spec).unwrap();
        std::fs::create_dir_all(self.downloads()).unwrap();
        let mut components = vec![];
        for (i, c) in package.components().iter().enumerate() {
            let a = self.agents.iter().find(|a| a.device == c.device).unwrap();
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
                a.serial.clone(),
                a.hw.clone(),
                c,
                now_ms() + 86_400_000,
            );
            let md = dangerous_unsigned_metadata(Id128([0; 16]), &target);
            std::fs::write(
                blob_path(&self.downloads(), &BlobId(c.image.sha256)),
                &a.new,
            )
            .unwrap();
            components.push(ReadyComponent {
                device: c.device.clone(),
                target_name: name,
                encoding: ImageEncoding::Full,
                artifact: c.image.clone(),
                chunk_hashes: a.new.chunks(CHUNK as usize).map(sha256).collect(),
                blob: BlobHandle(i as u64 + 1),
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

    /// The Agents, and the HMI when it runs.
    fn participants(&self) -> Vec<Participant> {
        let mut p: Vec<Participant> = self
            .devices()
            .into_iter()
            .map(Participant::Device)
            .collect();
        if self.hmi.is_some() {
            p.push(Participant::Listener(hmi_name()));
        }
        p
    }

    fn devices(&self) -> Vec<DevicePath> {
        self.agents.iter().map(|a| a.device.clone()).collect()
    }

    /// What each Agent reports it runs: true for the new image.
    async fn on_new(&self, rt: &mut VehicleRuntime) -> Vec<bool> {
        let devices = self.devices();
        let inv = rt.inventory(&devices, LONG).await.unwrap().clone();
        self.agents
            .iter()
            .map(|a| {
                let r = inv.agent(&a.device).unwrap().report.as_ref().unwrap();
                let running = r.installed.sha256;
                assert!(
                    running == sha256(&a.new) || running == sha256(&a.old),
                    "{} runs neither image",
                    a.device
                );
                running == sha256(&a.new)
            })
            .collect()
    }

    /// Not mixed, and the report says what runs.
    async fn check_truthful(&self, rt: &mut VehicleRuntime, report: &PackageReport, what: &str) {
        let on_new = self.on_new(rt).await;
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

    async fn stop(mut self) -> u32 {
        for a in self.running.drain(..) {
            let _ = a.stop.send(());
            a.task.await.unwrap();
        }
        match self.hmi.take() {
            Some((tx, task)) => {
                let _ = tx.send(());
                task.await.unwrap()
            }
            None => 0,
        }
    }
}

fn start_agent(
    pki: &Pki,
    broker: &BrokerHandle,
    spec: &AgentSpec,
    id: &esync_identity::IssuedIdentity,
    failing: bool,
) -> RunningAgent {
    let mut device = MemDevice::new(v("1.0.0"), 1, spec.old.clone(), 1 << 20);
    if failing {
        let bad = sha256(&spec.new);
        device.set_self_test(Box::new(move |img: &InstalledImage| {
            if img.sha256 == bad {
                SelfTest::Failed("injected self-test failure".into())
            } else {
                SelfTest::Passed
            }
        }));
    }
    let mut config = AgentConfig::new(spec.device.clone(), spec.hw.clone(), spec.serial.clone());
    config.journal_every_chunks = 2;
    let mut host = AgentHost {
        config,
        device: Box::new(device),
        journal: Box::new(esync_store::journal::MemJournal::new()),
        verifier: Box::new(DangerousUnverifiedMetadata),
        patcher: Box::new(esync_agent::delta::PackageApplier),
        policy: Box::new(AlwaysConsent),
        reporter: None,
    };
    let me = Participant::Device(spec.device.clone());
    let mut sec = Security {
        signer: shared(signer(me.clone(), &id.signing_key)),
        verifier: verifier_for(me.clone(), vec![]),
        keys: Box::new(keys(&[(
            Participant::Client,
            pki.vehicle.signing_key.verifying_key(),
        )])),
    };
    let mut transport = Transport::boxed(pki.link(broker, me, id));
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run_agent(&mut host, &mut sec, &mut transport, now_ms, async {
            let _ = rx.await;
        })
        .await
        .expect("the Agent runs");
    });
    RunningAgent { stop, task }
}

fn consent_policy() -> Policy {
    Policy {
        install: Rules {
            consent_required: true,
            ..Rules::default()
        },
        ..Policy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_install_commits_after_an_hmi_postponement() {
    let mut rig = Rig::new(&[0, 0, 1], &[]).await;
    rig.start_hmi(1, 300);
    let journal = Box::new(rig.file_journal());
    let mut rt = rig.runtime(journal, consent_policy()).await;
    let devices = rig.devices();
    rt.wait_present(&rig.participants(), LONG).await.unwrap();
    rt.inventory(&devices, LONG).await.unwrap();
    let ready = rig.ready("staged-ok");
    let attempt = rt.install(ready, LONG, LONG).await.unwrap();
    let InstallAttempt::Report(report) = attempt else {
        panic!(
            "not installed: {attempt:?} {:?} {:?}",
            rt.stats(),
            rt.take_listener_messages()
        );
    };
    assert_eq!(report.outcome, Outcome::Installed, "{report:?}");
    rig.check_truthful(&mut rt, &report, "staged").await;
    // Asked twice: postponed, then consented.
    assert_eq!(rt.stats().consent_requests, 2);
    assert!(rt.stats().blob_bytes_read >= rig.agents.iter().map(|a| a.new.len() as u64).sum());
    // The report stays journaled (on the file) until delivered.
    assert_eq!(rt.client().state().outbox.len(), 1);
    let api = api_report(&report, rt.client().inventory(), now_ms()).expect("every ECU known");
    let json = serde_json::to_string(&api).unwrap();
    assert!(json.contains("\"outcome\":\"installed\""), "{json}");
    rt.report_delivered(&report.package).unwrap();
    assert!(rt.client().state().outbox.is_empty());
    assert!(rig.journal_path().join("client.journal").exists());
    let s = rig.broker.stats();
    assert_eq!((s.dropped_bad_signature, s.dropped_sender_mismatch), (0, 0));
    assert_eq!(rig.stop().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_two_agent_rolls_back_every_component() {
    let mut rig = Rig::new(&[0, 0, 1], &[2]).await;
    let journal = Box::new(rig.file_journal());
    let mut rt = rig.runtime(journal, Policy::default()).await;
    let devices = rig.devices();
    rt.wait_present(&rig.participants(), LONG).await.unwrap();
    rt.inventory(&devices, LONG).await.unwrap();
    let attempt = rt
        .install(rig.ready("stage2-fails"), LONG, LONG)
        .await
        .unwrap();
    let InstallAttempt::Report(report) = attempt else {
        panic!("{attempt:?}");
    };
    let Outcome::Failed { cause } = &report.outcome else {
        panic!("{report:?}");
    };
    assert!(cause.contains(rig.agents[2].device.as_str()), "{cause}");
    assert!(cause.contains("injected self-test failure"), "{cause}");
    rig.check_truthful(&mut rt, &report, "stage 2 fails").await;
    // No consent was asked (the default policy does not require it).
    assert_eq!(rt.stats().consent_requests, 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_consent_sends_nothing_to_any_agent() {
    let mut rig = Rig::new(&[0], &[]).await;
    // No HMI answers: the request lapses (counts as postponed).
    let journal = Box::new(rig.file_journal());
    let mut policy = consent_policy();
    policy.consent_timeout_ms = 200;
    let mut rt = rig.runtime(journal, policy).await;
    let devices = rig.devices();
    rt.wait_present(&rig.participants(), LONG).await.unwrap();
    rt.inventory(&devices, LONG).await.unwrap();
    let sent = rt.stats().frames_sent;
    let attempt = rt
        .install(rig.ready("no-answer"), Duration::from_millis(600), LONG)
        .await
        .unwrap();
    assert!(matches!(attempt, InstallAttempt::NotNow(_)), "{attempt:?}");
    assert!(!rt.client().busy());
    // Only the consent request went out.
    assert_eq!(rt.stats().frames_sent, sent + 1);
    assert_eq!(rt.stats().consent_requests, 1);
    assert_eq!(rig.on_new(&mut rt).await, vec![false]);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_install_sends_nothing_to_any_agent() {
    let mut rig = Rig::new(&[0, 1], &[]).await;
    rig.start_hmi_then(
        0,
        0,
        Decision::Deny {
            reason: "not now, driving to work".into(),
        },
    );
    let journal = Box::new(rig.file_journal());
    let mut rt = rig.runtime(journal, consent_policy()).await;
    rt.wait_present(&rig.participants(), LONG).await.unwrap();
    rt.inventory(&rig.devices(), LONG).await.unwrap();
    let sent = rt.stats().frames_sent;
    let attempt = rt.install(rig.ready("denied"), LONG, LONG).await.unwrap();
    assert_eq!(
        attempt,
        InstallAttempt::Denied("not now, driving to work".into())
    );
    assert!(!rt.client().busy());
    assert!(rt.client().state().campaign.is_none());
    // Only the consent request went out.
    assert_eq!(rt.stats().frames_sent, sent + 1);
    assert_eq!(rig.on_new(&mut rt).await, vec![false, false]);
    assert_eq!(rig.stop().await, 1);
}

/// Runs a 3-component, 2-stage package with the Client's journal cut
/// (`kind`: before or after the write took effect) at its write number
/// `cut` (from 0), restarts the loop from the file journal and checks
/// the vehicle ends all-new (verdict journaled) or all-old (not).
async fn cut_client_at(cut: u64, kind: FaultKind, failing: &[usize]) -> (bool, Outcome) {
    let mut rig = Rig::new(&[0, 0, 1], failing).await;
    let switch = PowerSwitch::new();
    let journal = Box::new(FaultyStore::new(rig.file_journal(), switch.clone()));
    let mut rt = rig.runtime(journal, Policy::default()).await;
    let devices = rig.devices();
    rt.wait_present(&rig.participants(), LONG).await.unwrap();
    rt.inventory(&devices, LONG).await.unwrap();
    switch.arm(cut, kind);
    let ready = rig.ready("cut");
    let first = rt.install(ready, LONG, LONG).await;
    let (report, restarted) = match first {
        Ok(InstallAttempt::Report(r)) => (r, false),
        Err(VehicleError::Client(esync_client::core::ClientError::Store(_))) => {
            // Power cut: the process is gone; a new loop recovers from the
            // file the cut left behind, on the same broker endpoint.
            let (mut host, endpoint) = rt.into_parts();
            host.journal = Box::new(rig.file_journal());
            host.verifier = Verifier::new(
                ReceiverIdentity {
                    me: Participant::Client,
                    groups: vec![],
                },
                FrameLimits::default(),
            );
            rt = VehicleRuntime::recover(host, endpoint).await.unwrap();
            let verdict = rt
                .client()
                .state()
                .campaign
                .as_ref()
                .map(|c| c.verdict.clone());
            let report = match rt.finish(LONG).await.unwrap() {
                Some(r) => r,
                // The campaign had ended (its report is journaled in the
                // outbox and comes out again), or it was cut before it was
                // first journaled (nothing ran).
                None => match rt.take_reports().pop() {
                    Some(r) => r,
                    None => {
                        assert!(verdict.is_none());
                        assert_eq!(rig.on_new(&mut rt).await, vec![false; 3]);
                        rig.stop().await;
                        return (
                            true,
                            Outcome::Failed {
                                cause: "never started".into(),
                            },
                        );
                    }
                },
            };
            match verdict {
                Some(PackageVerdict::Commit) => {
                    assert_eq!(report.outcome, Outcome::Installed, "cut {cut}")
                }
                Some(_) => assert!(
                    matches!(report.outcome, Outcome::Failed { .. }),
                    "cut {cut}: {report:?}"
                ),
                None => {}
            }
            (report, true)
        }
        other => panic!("cut {cut}: {other:?}"),
    };
    rig.check_truthful(&mut rt, &report, &format!("cut {cut}"))
        .await;
    rig.stop().await;
    (restarted, report.outcome)
}

/// Journal writes of the package run uncut (successful / failing), as
/// counted by the power switch.
async fn writes_of(failing: &[usize]) -> u64 {
    let mut rig = Rig::new(&[0, 0, 1], failing).await;
    let switch = PowerSwitch::new();
    let journal = Box::new(FaultyStore::new(rig.file_journal(), switch.clone()));
    let mut rt = rig.runtime(journal, Policy::default()).await;
    rt.wait_present(&rig.participants(), LONG).await.unwrap();
    rt.inventory(&rig.devices(), LONG).await.unwrap();
    let base = switch.count();
    let attempt = rt.install(rig.ready("cut"), LONG, LONG).await.unwrap();
    assert!(matches!(attempt, InstallAttempt::Report(_)));
    rig.stop().await;
    switch.count() - base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_power_cut_at_every_journal_write_resumes_from_the_journal() {
    for failing in [vec![], vec![2]] {
        let writes = writes_of(&failing).await;
        assert!(writes >= 10, "{writes}");
        let mut installed = 0;
        for cut in 0..writes {
            for kind in [FaultKind::CutBefore, FaultKind::CutAfter] {
                let (restarted, outcome) = cut_client_at(cut, kind, &failing).await;
                assert!(restarted, "cut {cut} {kind:?} never fired");
                installed += usize::from(outcome == Outcome::Installed);
            }
        }
        if failing.is_empty() {
            // Cuts before the verdict roll back, the ones after it confirm.
            assert!(
                installed > 0 && installed < 2 * writes as usize,
                "{installed}"
            );
        } else {
            assert_eq!(installed, 0);
        }
    }
}

/// The session's download consent goes to the HMI through the same loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_consent_request_is_answered_by_the_hmi() {
    use esync_proto::message::{ConsentKind, ConsentRequest};
    let mut rig = Rig::new(&[0], &[]).await;
    rig.start_hmi(1, 60_000);
    let journal = Box::new(rig.file_journal());
    let mut rt = rig.runtime(journal, Policy::default()).await;
    rt.wait_present(&rig.participants(), LONG).await.unwrap();
    let req = |n: u8| ConsentRequest {
        request_id: Id128([n; 16]),
        kind: ConsentKind::Download,
        title: "Update".into(),
        description: "1 component".into(),
        size_bytes: 4096,
        estimated_duration_s: 0,
        deadline_ms: now_ms() + 60_000,
    };
    let first = rt
        .ask_consent(req(1), LONG)
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(first.request_id, Id128([1; 16]));
    assert!(matches!(first.decision, Decision::Postpone { .. }));
    let second = rt
        .ask_consent(req(2), LONG)
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(second.decision, Decision::Consent);
    assert_eq!(rig.stop().await, 2);
}
