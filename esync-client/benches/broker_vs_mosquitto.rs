//! Throughput and latency of the embedded broker (mutual TLS, per-frame
//! sender and signature checks) beside Mosquitto at 127.0.0.1:1883 (plain
//! MQTT, QoS 1, through the same `esync-transport` MQTT transport, rumqttc),
//! with 50 Agents on loopback and identical signed envelopes.
//!
//! Workload per payload size: every Agent sends N requests to the Client,
//! keeping at most W in flight (N = 200, W = 8 by default), and the Client
//! answers each with a message to that Agent, so 2 × 50 × N messages cross
//! the broker. Each message carries its send time; latency is one-way,
//! measured at the receiver from just before signing to reception (same
//! process clock). Throughput is messages delivered per second of the run.
//! Bounded: 50 Agents × N requests, each run limited to 60 s.
//!
//! Run: `cargo bench -p esync-client --bench broker_vs_mosquitto`
//! (`ESYNC_BENCH_AGENTS`, `ESYNC_BENCH_MSGS`, `ESYNC_BENCH_WINDOW` override
//! the counts).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use esync_client::broker::{Broker, BrokerConfig};
use esync_identity::{FleetCa, TrustAnchors, Validity};
use esync_proto::envelope::{Envelope, EnvelopeSigner, Recipient, SignedEnvelope};
use esync_proto::frame::{self, FrameLimits};
use esync_proto::id::{DevicePath, Id128, Vin};
use esync_proto::message::{
    Event, EventReport, Participant, Payload, PresenceState, Severity, Signal, SignalValue,
};
use esync_transport::{
    BrokerLinkConfig, BrokerTransport, Incoming, MqttConfig, MqttPresence, MqttTransport, Transport,
};
use tokio::sync::Mutex;

const PHASE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Broker,
    Mosquitto,
}

#[derive(Clone, Debug, Default)]
struct PhaseResult {
    sent: usize,
    delivered: usize,
    msgs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn summarise(sent: usize, mut lat_ns: Vec<u64>, elapsed: Duration) -> PhaseResult {
    lat_ns.sort_unstable();
    let pick = |q: f64| -> f64 {
        if lat_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((lat_ns.len() as f64 - 1.0) * q).round() as usize;
        lat_ns[i] as f64 / 1e6
    };
    PhaseResult {
        sent,
        delivered: lat_ns.len(),
        msgs_per_s: lat_ns.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
    }
}

fn now_ns(epoch: Instant) -> i64 {
    epoch.elapsed().as_nanos() as i64
}

fn payload(epoch: Instant, size: usize) -> Payload {
    Payload::EventReport(EventReport {
        events: vec![Event {
            time_ms: 0,
            code: "bench".into(),
            severity: Severity::Info,
            data: vec![
                Signal {
                    name: "t".into(),
                    value: SignalValue::Int(now_ns(epoch)),
                },
                Signal {
                    name: "pad".into(),
                    value: SignalValue::Bytes(vec![0x5a; size]),
                },
            ],
        }],
    })
}

/// Latency of a received frame, from the send time it carries.
fn latency(epoch: Instant, frame: &[u8]) -> Option<u64> {
    let signed = SignedEnvelope::from_frame(frame, FrameLimits::default()).ok()?;
    let env: Envelope = frame::decode_body(&signed.signed).ok()?;
    let Payload::EventReport(r) = env.payload else {
        return None;
    };
    let sig = r.events.first()?.data.first()?;
    let SignalValue::Int(t) = sig.value else {
        return None;
    };
    Some((now_ns(epoch) - t).max(0) as u64)
}

fn ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Fleet {
    client: Transport,
    client_signer: EnvelopeSigner,
    agents: Vec<(DevicePath, Transport, EnvelopeSigner)>,
    _broker: Option<esync_client::broker::BrokerHandle>,
}

fn device(i: usize) -> DevicePath {
    DevicePath::new(format!("/bench/ecu{i:03}")).expect("valid device path")
}

async fn broker_fleet(n: usize) -> Fleet {
    let vin = Vin::new("WVWZZZ1JZXW000001").expect("valid VIN");
    let now = (ms_now() / 1000) as i64;
    let validity = Validity::days_from(now - 3600, 2);
    let ca = FleetCa::new("esync bench fleet", validity).expect("CA");
    let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
    let vehicle = ca.issue_vehicle(&vin, validity).expect("vehicle identity");
    let tls = esync_identity::server_tls_config(&vehicle, &anchors).expect("server tls");
    let mut cfg = BrokerConfig::new(tls, vin.clone());
    // Sized so that the measured traffic is never dropped by the policy.
    cfg.client_queue = 1 << 16;
    cfg.queue_frames = 1 << 14;
    cfg.queue_bytes = 256 << 20;
    let (broker, client) = Broker::start(cfg).await.expect("broker starts");
    let mut client = Transport::boxed(client);
    let mut agents = Vec::new();
    for i in 0..n {
        let path = device(i);
        let id = ca
            .issue_agent(&vin, &path, validity)
            .expect("agent identity");
        let tls =
            esync_identity::vehicle_client_tls_config(&id, &anchors, &vin).expect("client tls");
        let mut lc = BrokerLinkConfig::new(
            broker.local_addr(),
            "vehicle.invalid",
            tls,
            Participant::Device(path.clone()),
        );
        lc.queue = 4096;
        let t = Transport::boxed(BrokerTransport::connect(lc));
        let signer = EnvelopeSigner::new(
            Participant::Device(path.clone()),
            id.signing_key.clone(),
            1,
            FrameLimits::default(),
        );
        agents.push((path, t, signer));
    }
    let mut connected = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while connected < n {
        match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(Some(Incoming::Presence(p))) if p.state == PresenceState::Connected => {
                connected += 1
            }
            Ok(Some(_)) => {}
            _ => panic!("only {connected} of {n} agents connected to the broker"),
        }
    }
    let client_signer = EnvelopeSigner::new(
        Participant::Client,
        vehicle.signing_key.clone(),
        1,
        FrameLimits::default(),
    );
    Fleet {
        client,
        client_signer,
        agents,
        _broker: Some(broker),
    }
}

async fn mosquitto_fleet(n: usize) -> Fleet {
    let vin = Vin::new("WVWZZZ1JZXW000001").expect("valid VIN");
    let root = format!("esync-bench/{}-{}", std::process::id(), ms_now());
    let mut cc = MqttConfig::new(
        "127.0.0.1",
        1883,
        vin.clone(),
        Participant::Client,
        MqttPresence::None,
    )
    .with_topic_root(&root);
    cc.queue = 1 << 16;
    let client = MqttTransport::connect(cc).expect("mqtt client");
    client.wait_connections(1).await.expect("client connects");
    let mut agents = Vec::new();
    for i in 0..n {
        let path = device(i);
        let who = Participant::Device(path.clone());
        let mut ac = MqttConfig::new(
            "127.0.0.1",
            1883,
            vin.clone(),
            who.clone(),
            MqttPresence::None,
        )
        .with_topic_root(&root);
        ac.queue = 4096;
        let t = MqttTransport::connect(ac).expect("mqtt agent");
        t.wait_connections(1).await.expect("agent connects");
        let key = ed25519_dalek::SigningKey::from_bytes(&[(i % 250) as u8 + 1; 32]);
        agents.push((
            path,
            Transport::boxed(t),
            EnvelopeSigner::new(who, key, 1, FrameLimits::default()),
        ));
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[255; 32]);
    Fleet {
        client: Transport::boxed(client),
        client_signer: EnvelopeSigner::new(Participant::Client, key, 1, FrameLimits::default()),
        agents,
        _broker: None,
    }
}

/// Request/response with a window: every Agent keeps up to `window`
/// messages to the Client in flight; the Client answers each with a message
/// to that Agent. Returns the one-way latencies of both directions.
async fn run(fleet: Fleet, msgs: usize, size: usize, window: usize) -> PhaseResult {
    let epoch = Instant::now();
    let n = fleet.agents.len();
    let Fleet {
        mut client,
        mut client_signer,
        agents,
        _broker,
    } = fleet;
    let start = Arc::new(Mutex::new(()));
    let gate = start.lock().await;
    let mut tasks = Vec::new();
    for (_, mut t, mut signer) in agents {
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            drop(start.lock().await);
            let mut lat = Vec::with_capacity(msgs);
            let (mut sent, mut inflight) = (0, 0);
            let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
            while lat.len() < msgs {
                while inflight < window && sent < msgs {
                    let f = signer
                        .seal(
                            Recipient::Client,
                            Id128([0; 16]),
                            payload(epoch, size),
                            ms_now(),
                        )
                        .expect("seal");
                    if t.send(f).await.is_err() {
                        return (lat, t);
                    }
                    sent += 1;
                    inflight += 1;
                }
                match tokio::time::timeout_at(deadline, t.recv()).await {
                    Ok(Some(Incoming::Frame(f))) => {
                        if let Some(l) = latency(epoch, &f) {
                            lat.push(l);
                            inflight -= 1;
                        }
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            (lat, t)
        }));
    }
    let t0 = Instant::now();
    drop(gate);
    let mut lat = Vec::with_capacity(2 * n * msgs);
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    let mut answered = 0;
    while answered < n * msgs {
        match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(Some(Incoming::Frame(f))) => {
                let Some(l) = latency(epoch, &f) else {
                    continue;
                };
                lat.push(l);
                let Ok(header) = SignedEnvelope::from_frame(&f, FrameLimits::default())
                    .and_then(|s| s.unverified_header())
                else {
                    continue;
                };
                let Participant::Device(from) = header.sender else {
                    continue;
                };
                let reply = client_signer
                    .seal(
                        Recipient::Device(from),
                        Id128([0; 16]),
                        payload(epoch, size),
                        ms_now(),
                    )
                    .expect("seal");
                if client.send(reply).await.is_err() {
                    break;
                }
                answered += 1;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let mut keep = Vec::new();
    for t in tasks {
        if let Ok((l, transport)) = t.await {
            lat.extend(l);
            keep.push(transport);
        }
    }
    let result = summarise(2 * n * msgs, lat, t0.elapsed());
    drop(keep);
    drop(client);
    result
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let agents = env_usize("ESYNC_BENCH_AGENTS", 50);
    let msgs = env_usize("ESYNC_BENCH_MSGS", 200);
    let window = env_usize("ESYNC_BENCH_WINDOW", 8).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mosquitto_up = rt.block_on(async {
        matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect("127.0.0.1:1883")
            )
            .await,
            Ok(Ok(_))
        )
    });
    println!("# broker vs mosquitto: {agents} agents x {msgs} requests each, window {window}, answered by the Client");
    println!();
    println!("| payload | transport | messages | delivered | msg/s | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut ratios = Vec::new();
    for size in [256usize, 4096] {
        let mut rows: Vec<(Kind, PhaseResult)> = Vec::new();
        for kind in [Kind::Broker, Kind::Mosquitto] {
            if kind == Kind::Mosquitto && !mosquitto_up {
                println!("SKIPPED: mosquitto not reachable at 127.0.0.1:1883");
                continue;
            }
            let r = rt.block_on(async {
                let fleet = match kind {
                    Kind::Broker => broker_fleet(agents).await,
                    Kind::Mosquitto => mosquitto_fleet(agents).await,
                };
                run(fleet, msgs, size, window).await
            });
            println!(
                "| {size} B | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                match kind {
                    Kind::Broker => "embedded broker (mTLS, sender+signature check)",
                    Kind::Mosquitto => "mosquitto (plain MQTT, QoS 1)",
                },
                r.sent,
                r.delivered,
                r.msgs_per_s,
                r.p50_ms,
                r.p99_ms,
                r.max_ms
            );
            rows.push((kind, r));
        }
        if let [(Kind::Broker, b), (Kind::Mosquitto, m)] = rows.as_slice() {
            ratios.push((size, b.msgs_per_s / m.msgs_per_s, b.p99_ms / m.p99_ms));
        }
    }
    if !ratios.is_empty() {
        println!();
        println!("| payload | throughput broker/mosquitto | p99 latency broker/mosquitto |");
        println!("| --- | --- | --- |");
        for (size, thr, p99) in ratios {
            println!("| {size} B | {thr:.2}x | {p99:.2}x |");
        }
    }
}
