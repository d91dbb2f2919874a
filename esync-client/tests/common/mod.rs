//! Shared helpers of the broker and transport integration tests: a test PKI,
//! broker start-up, and a scripted Agent / Client pair that runs one full
//! update lifecycle over any [`Transport`].

#![allow(dead_code, reason = "each test file uses a subset of the helpers")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_client::broker::{Broker, BrokerConfig, BrokerHandle};
use esync_identity::{FleetCa, IssuedIdentity, TrustAnchors, Validity};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verified, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{
    DevicePath, EcuSerial, GroupName, HardwareId, Id128, ListenerName, ReleaseCounter,
    Sha256Digest, SoftwareVersion, Vin,
};
use esync_proto::message::*;
use esync_transport::{
    BrokerLinkConfig, BrokerTransport, FrameTransport, Incoming, SharedSigner, Transport,
};
use sha2::{Digest, Sha256};

pub const VIN: &str = "WVWZZZ1JZXW000001";
pub const OTHER_VIN: &str = "WVWZZZ1JZXW000002";
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

pub fn vin() -> Vin {
    Vin::new(VIN).expect("valid VIN")
}

pub fn dev(p: &str) -> DevicePath {
    DevicePath::new(p).expect("valid device path")
}

pub fn group(g: &str) -> GroupName {
    GroupName::new(g).expect("valid group")
}

/// A fleet CA and the vehicle's identity.
pub struct Pki {
    pub ca: FleetCa,
    pub anchors: TrustAnchors,
    pub vehicle: IssuedIdentity,
}

fn validity() -> Validity {
    let now = (now_ms() / 1000) as i64;
    Validity::days_from(now - 3600, 2)
}

impl Pki {
    pub fn new() -> Self {
        let ca = FleetCa::new("esync test fleet", validity()).expect("CA");
        let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
        let vehicle = ca
            .issue_vehicle(&vin(), validity())
            .expect("vehicle identity");
        Pki {
            ca,
            anchors,
            vehicle,
        }
    }

    pub fn agent(&self, path: &str) -> IssuedIdentity {
        self.ca
            .issue_agent(&vin(), &dev(path), validity())
            .expect("agent identity")
    }

    pub fn agent_of_other_vehicle(&self, path: &str) -> IssuedIdentity {
        let other = Vin::new(OTHER_VIN).expect("valid VIN");
        self.ca
            .issue_agent(&other, &dev(path), validity())
            .expect("agent identity")
    }

    pub fn listener(&self, name: &str) -> IssuedIdentity {
        let n = ListenerName::new(name).expect("listener name");
        self.ca
            .issue_listener(&vin(), &n, validity())
            .expect("listener identity")
    }

    pub fn broker_config(&self) -> BrokerConfig {
        let tls =
            esync_identity::server_tls_config(&self.vehicle, &self.anchors).expect("server tls");
        BrokerConfig::new(tls, vin())
    }

    pub fn client_signer(&self) -> SharedSigner {
        Arc::new(Mutex::new(EnvelopeSigner::new(
            Participant::Client,
            self.vehicle.signing_key.clone(),
            1,
            FrameLimits::default(),
        )))
    }

    pub fn link(
        &self,
        broker: &BrokerHandle,
        who: Participant,
        id: &IssuedIdentity,
    ) -> BrokerTransport {
        let tls = esync_identity::vehicle_client_tls_config(id, &self.anchors, &vin())
            .expect("client tls");
        let mut cfg = BrokerLinkConfig::new(broker.local_addr(), "vehicle.invalid", tls, who);
        cfg.backoff_initial = Duration::from_millis(20);
        cfg.backoff_max = Duration::from_millis(200);
        BrokerTransport::connect(cfg)
    }
}

pub async fn start_broker(cfg: BrokerConfig) -> (BrokerHandle, Transport) {
    let (h, c) = Broker::start(cfg).await.expect("broker starts");
    (h, Transport::boxed(c))
}

/// Next frame from `t`, skipping presence and reconnection notices.
pub async fn next_frame<T: FrameTransport + ?Sized>(t: &mut Transport<T>) -> Vec<u8> {
    loop {
        match tokio::time::timeout(TIMEOUT, t.recv()).await {
            Ok(Some(Incoming::Frame(f))) => return f,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("transport closed"),
            Err(_) => panic!("no frame within {TIMEOUT:?}"),
        }
    }
}

/// Waits for a presence event about `who` in `state` (other items skipped).
pub async fn wait_presence<T: FrameTransport + ?Sized>(
    t: &mut Transport<T>,
    who: &Participant,
    state: PresenceState,
) {
    loop {
        match tokio::time::timeout(TIMEOUT, t.recv()).await {
            Ok(Some(Incoming::Presence(p))) if &p.participant == who && p.state == state => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("transport closed"),
            Err(_) => panic!("no presence {state:?} for {who} within {TIMEOUT:?}"),
        }
    }
}

/// Waits until every one of `who` is reported connected (any order).
pub async fn wait_all_connected<T: FrameTransport + ?Sized>(
    t: &mut Transport<T>,
    who: &[Participant],
) {
    let mut missing: Vec<Participant> = who.to_vec();
    while !missing.is_empty() {
        match tokio::time::timeout(TIMEOUT, t.recv()).await {
            Ok(Some(Incoming::Presence(p))) if p.state == PresenceState::Connected => {
                missing.retain(|m| m != &p.participant);
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("transport closed"),
            Err(_) => panic!("not connected within {TIMEOUT:?}: {missing:?}"),
        }
    }
}

/// Asserts nothing but presence/reconnect notices arrive within `wait`.
pub async fn assert_no_frame<T: FrameTransport + ?Sized>(t: &mut Transport<T>, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, t.recv()).await {
            Err(_) => return,
            Ok(Some(Incoming::Frame(_))) => panic!("unexpected frame delivered"),
            Ok(Some(_)) => continue,
            Ok(None) => return,
        }
    }
}

pub fn keys(entries: &[(Participant, VerifyingKey)]) -> BTreeMap<Participant, VerifyingKey> {
    entries.iter().cloned().collect()
}

pub fn verifier_for(me: Participant, groups: Vec<GroupName>) -> Verifier {
    Verifier::new(ReceiverIdentity { me, groups }, FrameLimits::default())
}

pub fn signer(me: Participant, key: &SigningKey) -> EnvelopeSigner {
    EnvelopeSigner::new(me, key.clone(), 1, FrameLimits::default())
}

pub fn shared(signer: EnvelopeSigner) -> SharedSigner {
    Arc::new(Mutex::new(signer))
}

pub fn seal(s: &SharedSigner, to: Recipient, payload: Payload) -> Vec<u8> {
    s.lock()
        .expect("signer lock")
        .seal(to, Id128([9; 16]), payload, now_ms())
        .expect("seal")
}

fn sha(data: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(data).into())
}

fn version(v: &str) -> SoftwareVersion {
    SoftwareVersion::new(v).expect("valid version")
}

/// The image the lifecycle transfers.
pub fn image() -> Vec<u8> {
    (0..40_000u32).map(|i| (i % 251) as u8).collect()
}

pub const CHUNK: usize = 8192;

/// A scripted Agent: answers each lifecycle request as a healthy Agent
/// would, verifying every frame with its own `Verifier` (only the Client may
/// command it). Returns once it has sent `Confirmed`, with the kinds it
/// received, in order.
pub async fn scripted_agent(
    mut t: Transport,
    me: DevicePath,
    signer: SharedSigner,
    client_key: VerifyingKey,
) -> Vec<&'static str> {
    let who = Participant::Device(me.clone());
    let mut verifier = verifier_for(who, vec![]);
    let keys = keys(&[(Participant::Client, client_key)]);
    let mut received = Vec::new();
    let mut hashes: Vec<Sha256Digest> = Vec::new();
    let mut next_chunk = 0u32;
    let mut data = Vec::new();
    loop {
        let frame = next_frame(&mut t).await;
        let Verified { header, payload } = match verifier.open(&frame, &keys, now_ms()) {
            Ok(v) => v,
            Err(e) => panic!("agent refused a frame: {e}"),
        };
        received.push(payload.kind());
        let reply = |p: Payload| {
            signer
                .lock()
                .expect("signer lock")
                .seal(Recipient::Client, header.correlation, p, now_ms())
                .expect("seal reply")
        };
        let mut out = Vec::new();
        let mut done = false;
        match payload {
            Payload::InventoryQuery(q) => {
                out.push(reply(Payload::InventoryReport(InventoryReport {
                    nonce: q.nonce,
                    device: me.clone(),
                    hardware_id: HardwareId::new("ecm-hw-1").expect("hw id"),
                    serial: EcuSerial::new("ECM0001").expect("serial"),
                    installed: InstalledImage {
                        version: version("1.0.0"),
                        release_counter: ReleaseCounter(1),
                        length: 4,
                        sha256: sha(b"old!"),
                    },
                    delta: DeltaCapability::default(),
                    rollback_versions: vec![],
                    verification: VerificationLevel::Partial,
                    criticality: Criticality::Normal,
                    state: AgentState::Idle,
                })))
            }
            Payload::DownloadOffer(o) => {
                out.push(reply(Payload::DownloadDecision(DownloadDecision {
                    update_id: o.update_id,
                    decision: Decision::Consent,
                })))
            }
            Payload::TransferStart(s) => {
                hashes = s.chunk_hashes;
                next_chunk = 0;
                out.push(reply(Payload::TransferAck(TransferAck {
                    transfer_id: s.transfer_id,
                    next_chunk,
                    rejected: vec![],
                })));
            }
            Payload::TransferChunk(c) => {
                let ok =
                    hashes.get(c.index as usize) == Some(&sha(&c.data)) && c.index == next_chunk;
                let mut rejected = vec![];
                if ok {
                    data.extend_from_slice(&c.data);
                    next_chunk += 1;
                } else {
                    rejected.push(c.index);
                }
                out.push(reply(Payload::TransferAck(TransferAck {
                    transfer_id: c.transfer_id,
                    next_chunk,
                    rejected,
                })));
            }
            Payload::Prepare(p) => {
                let outcome = PrepareOutcome::Ready {
                    version: version("2.0.0"),
                    sha256: sha(&data),
                };
                out.push(reply(Payload::PrepareResult(PrepareResult {
                    update_id: p.update_id,
                    outcome,
                })));
            }
            Payload::InstallStart(i) => {
                out.push(reply(Payload::Progress(Progress {
                    update_id: i.update_id,
                    phase: Phase::Write,
                    done: data.len() as u64 / 2,
                    total: data.len() as u64,
                })));
                out.push(reply(Payload::InstallResult(InstallResult {
                    update_id: i.update_id,
                    outcome: InstallOutcome::Installed {
                        version: version("2.0.0"),
                        awaiting_confirm: i.await_confirm,
                    },
                })));
            }
            Payload::Confirm(c) => {
                out.push(reply(Payload::Confirmed(Confirmed {
                    update_id: c.update_id,
                    version: version("2.0.0"),
                })));
                done = true;
            }
            other => panic!("scripted agent got unexpected {}", other.kind()),
        }
        for f in out {
            t.send(f).await.expect("agent sends");
        }
        if done {
            // Keep the transport open until the reply is flushed out.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return received;
        }
    }
}

/// Receives the next verified message from the Agent.
async fn client_expect<T: FrameTransport + ?Sized>(
    t: &mut Transport<T>,
    v: &mut Verifier,
    keys: &BTreeMap<Participant, VerifyingKey>,
) -> Payload {
    let frame = next_frame(t).await;
    v.open(&frame, keys, now_ms())
        .expect("client verifies agent frame")
        .payload
}

/// Drives one full lifecycle from the Client side against the Agent at
/// `agent`, verifying every answer; returns the kinds received, in order.
pub async fn lifecycle_client<T: FrameTransport + ?Sized>(
    t: &mut Transport<T>,
    signer: &SharedSigner,
    agent: &DevicePath,
    agent_key: VerifyingKey,
) -> Vec<&'static str> {
    let me = Participant::Device(agent.clone());
    let keys = keys(&[(me, agent_key)]);
    let mut v = verifier_for(Participant::Client, vec![]);
    let to = Recipient::Device(agent.clone());
    let mut kinds = Vec::new();
    let update = Id128([1; 16]);
    let transfer = Id128([2; 16]);

    t.send(seal(
        signer,
        to.clone(),
        Payload::InventoryQuery(InventoryQuery { nonce: [5; 16] }),
    ))
    .await
    .expect("send");
    match client_expect(t, &mut v, &keys).await {
        Payload::InventoryReport(r) => {
            assert_eq!(r.nonce, [5; 16]);
            assert_eq!(&r.device, agent);
            kinds.push("inventory-report");
        }
        other => panic!("expected inventory report, got {}", other.kind()),
    }

    let img = image();
    t.send(seal(
        signer,
        to.clone(),
        Payload::DownloadOffer(DownloadOffer {
            update_id: update,
            target_name: "ecm-2.0.0.bin".into(),
            version: version("2.0.0"),
            release_counter: ReleaseCounter(2),
            length: img.len() as u64,
            sha256: sha(&img),
            encoding: ImageEncoding::Full,
            consent_required: false,
        }),
    ))
    .await
    .expect("send");
    match client_expect(t, &mut v, &keys).await {
        Payload::DownloadDecision(d) => {
            assert_eq!(d.decision, Decision::Consent);
            kinds.push("download-decision");
        }
        other => panic!("expected decision, got {}", other.kind()),
    }

    let chunks: Vec<&[u8]> = img.chunks(CHUNK).collect();
    t.send(seal(
        signer,
        to.clone(),
        Payload::TransferStart(TransferStart {
            transfer_id: transfer,
            update_id: update,
            total_length: img.len() as u64,
            chunk_size: CHUNK as u32,
            chunk_hashes: chunks.iter().map(|c| sha(c)).collect(),
        }),
    ))
    .await
    .expect("send");
    match client_expect(t, &mut v, &keys).await {
        Payload::TransferAck(a) => assert_eq!(a.next_chunk, 0),
        other => panic!("expected transfer ack, got {}", other.kind()),
    }
    kinds.push("transfer-ack");
    for (i, c) in chunks.iter().enumerate() {
        t.send(seal(
            signer,
            to.clone(),
            Payload::TransferChunk(TransferChunk {
                transfer_id: transfer,
                index: i as u32,
                offset: (i * CHUNK) as u64,
                data: c.to_vec(),
            }),
        ))
        .await
        .expect("send");
        match client_expect(t, &mut v, &keys).await {
            Payload::TransferAck(a) => {
                assert!(a.rejected.is_empty(), "chunk {i} rejected");
                assert_eq!(a.next_chunk, i as u32 + 1);
            }
            other => panic!("expected transfer ack, got {}", other.kind()),
        }
        kinds.push("transfer-ack");
    }

    t.send(seal(
        signer,
        to.clone(),
        Payload::Prepare(Prepare {
            update_id: update,
            transfer_id: transfer,
        }),
    ))
    .await
    .expect("send");
    match client_expect(t, &mut v, &keys).await {
        Payload::PrepareResult(PrepareResult {
            outcome: PrepareOutcome::Ready { sha256, .. },
            ..
        }) => {
            assert_eq!(sha256, sha(&img), "agent reassembled the image");
            kinds.push("prepare-result");
        }
        other => panic!("expected ready, got {other:?}"),
    }

    t.send(seal(
        signer,
        to.clone(),
        Payload::InstallStart(InstallStart {
            update_id: update,
            stage: 0,
            await_confirm: true,
        }),
    ))
    .await
    .expect("send");
    match client_expect(t, &mut v, &keys).await {
        Payload::Progress(_) => kinds.push("progress"),
        other => panic!("expected progress, got {}", other.kind()),
    }
    match client_expect(t, &mut v, &keys).await {
        Payload::InstallResult(InstallResult {
            outcome:
                InstallOutcome::Installed {
                    awaiting_confirm: true,
                    ..
                },
            ..
        }) => kinds.push("install-result"),
        other => panic!("expected installed, got {other:?}"),
    }

    t.send(seal(
        signer,
        to,
        Payload::Confirm(Confirm { update_id: update }),
    ))
    .await
    .expect("send");
    match client_expect(t, &mut v, &keys).await {
        Payload::Confirmed(c) => {
            assert_eq!(c.version, version("2.0.0"));
            kinds.push("confirmed");
        }
        other => panic!("expected confirmed, got {}", other.kind()),
    }
    kinds
}

/// The kinds the Client must see in a full lifecycle.
pub fn expected_client_kinds() -> Vec<&'static str> {
    let chunks = image().len().div_ceil(CHUNK);
    let mut k = vec!["inventory-report", "download-decision"];
    k.extend(std::iter::repeat_n("transfer-ack", chunks + 1));
    k.extend(["prepare-result", "progress", "install-result", "confirmed"]);
    k
}

/// The kinds the Agent must see in a full lifecycle.
pub fn expected_agent_kinds() -> Vec<&'static str> {
    let chunks = image().len().div_ceil(CHUNK);
    let mut k = vec!["inventory-query", "download-offer", "transfer-start"];
    k.extend(std::iter::repeat_n("transfer-chunk", chunks));
    k.extend(["prepare", "install-start", "confirm"]);
    k
}
