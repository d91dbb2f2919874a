//! The checks every transport shares, run as one table against every
//! transport kind available in-process: in-process channels, a transport a
//! host defines for its own bus (here a DoIP-like bus delivering whole
//! messages, implemented outside esync-transport), the broker link on
//! loopback to the embedded broker, and MQTT through the real Mosquitto at
//! 127.0.0.1:1883 (skipped with a SKIPPED line when it is not reachable).
//!
//! Each malformed or oversized frame must be refused with the same error as
//! through the broker link, before the transport puts anything on its wire;
//! inbound, the same frames are dropped and counted before the receiver sees
//! them. Also: the embedded broker stamps its presence envelopes with the
//! clock of its configuration.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use esync_proto::envelope::{EnvelopeSigner, Recipient, SignedEnvelope};
use esync_proto::frame::{self, FrameLimits};
use esync_proto::id::{GroupName, Id128, ListenerName};
use esync_proto::message::{InventoryQuery, Participant, Payload, PresenceState};
use esync_proto::FrameError;
use esync_transport::channel::{channel_pair, ChannelPeer};
use esync_transport::mqtt::Topics;
use esync_transport::{
    BoxFuture, CheckedFrame, FrameSink, FrameTransport, Incoming, MqttConfig, MqttPresence,
    MqttTransport, Outbound, Transport, TransportError, WallClock,
};
use tokio::sync::mpsc;

const LIMIT: u32 = 4096;

async fn mosquitto_reachable() -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect("127.0.0.1:1883")
        )
        .await,
        Ok(Ok(_))
    )
}

fn limits() -> FrameLimits {
    FrameLimits::new(LIMIT)
}

/// A row of the table: a name, the bytes, and the refusal expected.
type Row = (&'static str, Vec<u8>, fn(&FrameError) -> bool);

/// The rows of the table, built around a valid frame.
fn bad_frames(good: &[u8]) -> Vec<Row> {
    let oversized = frame::wrap(&vec![7; LIMIT as usize + 1], FrameLimits::new(LIMIT + 1)).unwrap();
    let mut huge_length = vec![frame::FRAME_VERSION, 0xff, 0xff, 0xff, 0xff];
    huge_length.extend_from_slice(&[0; 16]);
    let mut trailing = good.to_vec();
    trailing.push(0);
    let mut version = good.to_vec();
    version[0] = 9;
    vec![
        (
            "oversized body",
            oversized,
            |e| matches!(e, FrameError::TooLarge { declared, max } if *declared == u64::from(LIMIT) + 1 && *max == LIMIT),
        ),
        (
            "length near u32::MAX",
            huge_length,
            |e| matches!(e, FrameError::TooLarge { declared, .. } if *declared == u64::from(u32::MAX)),
        ),
        ("trailing byte", trailing, |e| {
            matches!(e, FrameError::Trailing(1))
        }),
        ("truncated body", good[..good.len() - 1].to_vec(), |e| {
            matches!(e, FrameError::Incomplete { needed: 1 })
        }),
        ("header only", good[..3].to_vec(), |e| {
            matches!(e, FrameError::Incomplete { .. })
        }),
        ("unknown version", version, |e| {
            matches!(e, FrameError::UnsupportedVersion(9))
        }),
        ("empty", Vec::new(), |e| {
            matches!(e, FrameError::Incomplete { .. })
        }),
    ]
}

// ---------------------------------------------------------------------------
// A host's own transport, defined here, outside esync-transport.

/// A DoIP-like bus: each message carries one whole frame. The host does no
/// frame checks of its own; [`Transport`] does them.
struct HostBus {
    out: Arc<HostSink>,
    rx: mpsc::Receiver<Vec<u8>>,
    groups: Arc<Mutex<Vec<GroupName>>>,
}

struct HostSink(mpsc::Sender<Vec<u8>>);

impl FrameSink for HostSink {
    fn send_checked(&self, frame: CheckedFrame) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            self.0
                .send(frame.into_bytes())
                .await
                .map_err(|_| TransportError::Closed)
        })
    }
}

impl FrameTransport for HostBus {
    fn limits(&self) -> FrameLimits {
        limits()
    }

    fn sink(&self) -> Arc<dyn FrameSink> {
        self.out.clone()
    }

    fn recv_raw(&mut self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(async move { self.rx.recv().await.map(Incoming::Frame) })
    }

    fn set_groups(&self, groups: Vec<GroupName>) -> BoxFuture<'_, Result<(), TransportError>> {
        *self.groups.lock().unwrap() = groups;
        Box::pin(async { Ok(()) })
    }
}

/// The far end of the host bus.
struct HostPeer {
    /// What the host put on the bus.
    wire: mpsc::Receiver<Vec<u8>>,
    /// Delivers to the host.
    inject: mpsc::Sender<Vec<u8>>,
    groups: Arc<Mutex<Vec<GroupName>>>,
}

fn host_bus() -> (HostBus, HostPeer) {
    let (out_tx, out_rx) = mpsc::channel(16);
    let (in_tx, in_rx) = mpsc::channel(16);
    let groups = Arc::new(Mutex::new(Vec::new()));
    (
        HostBus {
            out: Arc::new(HostSink(out_tx)),
            rx: in_rx,
            groups: Arc::clone(&groups),
        },
        HostPeer {
            wire: out_rx,
            inject: in_tx,
            groups,
        },
    )
}

// ---------------------------------------------------------------------------

/// The other side of the transport under test.
enum Peer {
    Channel(ChannelPeer),
    Host(HostPeer),
    /// The embedded broker's Client endpoint.
    Broker(Transport),
    /// A Client on MQTT, and a raw MQTT client that publishes anything on
    /// the tested transport's topic.
    Mqtt {
        client: Transport<MqttTransport>,
        raw: rumqttc::AsyncClient,
        topic: String,
    },
}

impl Peer {
    /// The next frame that reached the other side.
    async fn next_outbound(&mut self) -> Vec<u8> {
        let got = tokio::time::timeout(TIMEOUT, async {
            match self {
                Peer::Channel(p) => loop {
                    if let Some(Outbound::Frame(f)) = p.rx.recv().await {
                        return f;
                    }
                },
                Peer::Host(p) => p.wire.recv().await.unwrap(),
                Peer::Broker(client) => next_frame(client).await,
                Peer::Mqtt { client, .. } => next_frame(client).await,
            }
        })
        .await;
        got.expect("a frame reaches the other side")
    }

    /// Delivers raw bytes to the tested transport; false where the other
    /// side cannot send unchecked bytes (the embedded broker checks them
    /// itself).
    async fn inject(&mut self, bytes: Vec<u8>) -> bool {
        match self {
            Peer::Channel(p) => p.tx.send(Incoming::Frame(bytes)).await.is_ok(),
            Peer::Host(p) => p.inject.send(bytes).await.is_ok(),
            Peer::Broker(_) => false,
            Peer::Mqtt { raw, topic, .. } => raw
                .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, bytes)
                .await
                .is_ok(),
        }
    }
}

fn query(s: &mut EnvelopeSigner, to: Recipient) -> Vec<u8> {
    s.seal(
        to,
        Id128([0; 16]),
        Payload::InventoryQuery(InventoryQuery { nonce: [1; 16] }),
        now_ms(),
    )
    .unwrap()
}

/// Runs the table on `t`; returns the refusals, one line per row.
async fn run_table<T: FrameTransport + ?Sized>(
    kind: &str,
    t: &mut Transport<T>,
    peer: &mut Peer,
    good_out: Vec<u8>,
    good_in: Vec<u8>,
) -> Vec<String> {
    let rows = bad_frames(&good_out);
    let mut refusals = Vec::new();
    for (row, bytes, expected) in &rows {
        match t.send(bytes.clone()).await {
            Err(TransportError::Frame(e)) => {
                assert!(expected(&e), "{kind}/{row}: unexpected refusal {e:?}");
                refusals.push(format!("{row}: {e}"));
            }
            other => panic!("{kind}/{row}: not refused: {other:?}"),
        }
    }
    // A cloned sender applies the same checks.
    let sender = t.sender();
    for (row, bytes, _) in &rows {
        assert!(
            matches!(
                sender.send(bytes.clone()).await,
                Err(TransportError::Frame(_))
            ),
            "{kind}/{row} through a FrameSender"
        );
    }
    assert_eq!(
        t.check_stats().rejected_out,
        2 * rows.len() as u64,
        "{kind}"
    );
    // Nothing refused reached the wire: the first frame the other side sees
    // is the good one sent after them.
    t.send(good_out.clone()).await.unwrap();
    assert_eq!(peer.next_outbound().await, good_out, "{kind}");

    // Inbound: the same frames are dropped and counted; the good one after
    // them is delivered.
    let mut injected = 0;
    for (_, bytes, _) in &rows {
        if peer.inject(bytes.clone()).await {
            injected += 1;
        }
    }
    if injected > 0 {
        assert!(peer.inject(good_in.clone()).await);
        assert_eq!(next_frame(t).await, good_in, "{kind}");
        assert_eq!(t.check_stats().rejected_in, injected, "{kind}");
    }
    refusals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_refuses_malformed_and_oversized_frames_alike() {
    let pki = Pki::new();
    let ecm_path = dev("/powertrain/ecm");
    let ecm = Participant::Device(ecm_path.clone());
    let id = pki.agent("/powertrain/ecm");
    let mut agent_signer = EnvelopeSigner::new(ecm.clone(), id.signing_key.clone(), 1, limits());
    let mut client_signer = EnvelopeSigner::new(
        Participant::Client,
        pki.vehicle.signing_key.clone(),
        1,
        limits(),
    );

    // The broker link on loopback: the reference.
    let (broker, client) = start_broker(pki.broker_config()).await;
    let mut link_cfg_peer = Peer::Broker(client);
    let mut link = {
        let tls = esync_identity::vehicle_client_tls_config(&id, &pki.anchors, &vin()).unwrap();
        let mut cfg = esync_transport::BrokerLinkConfig::new(
            broker.local_addr(),
            "vehicle.invalid",
            tls,
            ecm.clone(),
        );
        cfg.limits = limits();
        Transport::new(esync_transport::BrokerTransport::connect(cfg))
    };
    link.inner().wait_connections(1).await.unwrap();
    let good = query(&mut agent_signer, Recipient::Client);
    let reference = run_table(
        "broker link",
        &mut link,
        &mut link_cfg_peer,
        good,
        Vec::new(),
    )
    .await;
    assert_eq!(reference.len(), bad_frames(&[1, 0, 0, 0, 0]).len());
    let s = broker.stats();
    assert_eq!(
        (s.frames_in, s.dropped_malformed),
        (1, 0),
        "only the good frame reached the broker: {s:?}"
    );

    // In-process channels.
    let (endpoint, peer) = channel_pair(ecm.clone(), 16, limits());
    let mut channel = Transport::boxed(endpoint);
    let good = query(&mut agent_signer, Recipient::Client);
    let good_in = query(&mut client_signer, Recipient::Device(ecm_path.clone()));
    let refusals = run_table(
        "channel",
        &mut channel,
        &mut Peer::Channel(peer),
        good,
        good_in,
    )
    .await;
    assert_eq!(refusals, reference, "channel refuses as the broker link");

    // A host's own bus plugs in and gets the same checks.
    let (bus, host_peer) = host_bus();
    let mut host = Transport::boxed(bus);
    let good = query(&mut agent_signer, Recipient::Client);
    let good_in = query(&mut client_signer, Recipient::Device(ecm_path.clone()));
    let mut host_peer = Peer::Host(host_peer);
    let refusals = run_table("host bus", &mut host, &mut host_peer, good, good_in).await;
    assert_eq!(refusals, reference, "host bus refuses as the broker link");
    // Groups go through the shared bound too.
    let too_many: Vec<GroupName> = (0..=esync_transport::MAX_GROUPS)
        .map(|i| group(&format!("g{i}")))
        .collect();
    assert!(matches!(
        host.subscribe(too_many).await,
        Err(TransportError::TooManyGroups { .. })
    ));
    host.subscribe(vec![group("presence")]).await.unwrap();
    let Peer::Host(p) = &host_peer else {
        unreachable!()
    };
    assert_eq!(*p.groups.lock().unwrap(), vec![group("presence")]);

    // MQTT through Mosquitto, when reachable.
    if !mosquitto_reachable().await {
        println!("SKIPPED: mosquitto not reachable at 127.0.0.1:1883 (MQTT row of the table)");
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = format!("esync-test/checks-{}-{nanos}", std::process::id());
    let config = |who: Participant| {
        let mut c = MqttConfig::new("127.0.0.1", 1883, vin(), who, MqttPresence::None)
            .with_topic_root(&root);
        c.limits = limits();
        c
    };
    let mqtt_client = Transport::new(MqttTransport::connect(config(Participant::Client)).unwrap());
    mqtt_client.inner().wait_connections(1).await.unwrap();
    let mut mqtt = Transport::new(MqttTransport::connect(config(ecm.clone())).unwrap());
    mqtt.inner().wait_connections(1).await.unwrap();
    let mut o = rumqttc::MqttOptions::new(format!("esync-test-raw-{nanos}"), "127.0.0.1", 1883);
    o.set_clean_session(true);
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    let (raw, mut ev) = rumqttc::AsyncClient::new(o, 32);
    let pump = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let topic = Topics::new(&root, &vin())
        .unwrap()
        .for_recipient(&Recipient::Device(ecm_path.clone()));
    let good = query(&mut agent_signer, Recipient::Client);
    let good_in = query(&mut client_signer, Recipient::Device(ecm_path));
    let mut mqtt_peer = Peer::Mqtt {
        client: mqtt_client,
        raw,
        topic,
    };
    let refusals = run_table("mqtt", &mut mqtt, &mut mqtt_peer, good, good_in).await;
    assert_eq!(refusals, reference, "MQTT refuses as the broker link");
    if let Peer::Mqtt { client, .. } = &mqtt_peer {
        assert_eq!(
            client.check_stats().rejected_in,
            0,
            "nothing bad was published"
        );
    }
    pump.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_presence_envelopes_use_the_configured_clock() {
    const FIXED: u64 = 1_600_000_000_123;
    let pki = Pki::new();
    let mut cfg = pki.broker_config();
    cfg.presence_signer = Some(pki.client_signer());
    cfg.clock = WallClock::new(|| FIXED);
    let (broker, mut client) = start_broker(cfg).await;
    let hmi = Participant::Listener(ListenerName::new("hmi").unwrap());
    let presence = group("presence");
    let mut hmi_link = Transport::boxed(pki.link(&broker, hmi.clone(), &pki.listener("hmi")));
    hmi_link.subscribe(vec![presence.clone()]).await.unwrap();
    wait_presence(&mut client, &hmi, PresenceState::Connected).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.groups(&hmi) != Some(vec![presence.clone()]) {
        assert!(tokio::time::Instant::now() < deadline, "subscription");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ecm = Participant::Device(dev("/powertrain/ecm"));
    let _agent = Transport::boxed(pki.link(&broker, ecm.clone(), &pki.agent("/powertrain/ecm")));
    let frame = next_frame(&mut hmi_link).await;
    let env = SignedEnvelope::from_frame(&frame, FrameLimits::default())
        .unwrap()
        .verify_signature(&pki.vehicle.signing_key.verifying_key())
        .unwrap();
    assert_eq!(env.header.timestamp_ms, FIXED);
    assert!(matches!(
        env.payload,
        Payload::Presence(p) if p.subject == ecm && p.state == PresenceState::Connected
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_presence_markers_use_the_configured_clock() {
    if !mosquitto_reachable().await {
        println!("SKIPPED: mosquitto not reachable at 127.0.0.1:1883");
        return;
    }
    const FIXED: u64 = 1_600_000_000_456;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = format!("esync-test/clock-{}-{nanos}", std::process::id());
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let who = Participant::Device(dev("/powertrain/ecm"));
    let topic = Topics::new(&root, &vin()).unwrap().presence(&who).unwrap();

    let mut o = rumqttc::MqttOptions::new(format!("esync-test-watch-{nanos}"), "127.0.0.1", 1883);
    o.set_clean_session(true);
    let (raw, mut ev) = rumqttc::AsyncClient::new(o, 32);
    raw.subscribe(topic.clone(), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    // Wait for the SUBACK so the marker published later reaches us.
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = ev.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .unwrap();

    let agent_signer = shared(signer(who.clone(), &key));
    let agent = Transport::new(
        MqttTransport::connect(
            MqttConfig::new(
                "127.0.0.1",
                1883,
                vin(),
                who.clone(),
                MqttPresence::Announce(agent_signer),
            )
            .with_topic_root(&root)
            .with_clock(WallClock::new(|| FIXED)),
        )
        .unwrap(),
    );
    agent.inner().wait_connections(1).await.unwrap();
    let marker = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev.poll().await.unwrap()
            {
                if p.topic == topic && !p.payload.is_empty() {
                    return p.payload.to_vec();
                }
            }
        }
    })
    .await
    .unwrap();
    let env = SignedEnvelope::from_frame(&marker, FrameLimits::default())
        .unwrap()
        .verify_signature(&key.verifying_key())
        .unwrap();
    assert_eq!(env.header.timestamp_ms, FIXED);
    let Payload::EventReport(r) = env.payload else {
        panic!("a presence marker is an event report");
    };
    assert_eq!(r.events[0].time_ms, FIXED);
    assert_eq!(r.events[0].code, esync_transport::mqtt::PRESENCE_CONNECTED);

    // The will ("disconnected", signed at connection time with the same
    // clock) follows the drop; then leave no retained marker behind.
    drop(agent);
    let will = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev.poll().await.unwrap()
            {
                if p.topic == topic && !p.payload.is_empty() {
                    return p.payload.to_vec();
                }
            }
        }
    })
    .await
    .unwrap();
    let env = SignedEnvelope::from_frame(&will, FrameLimits::default())
        .unwrap()
        .verify_signature(&key.verifying_key())
        .unwrap();
    assert_eq!(env.header.timestamp_ms, FIXED);
    raw.publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::<u8>::new())
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ev.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
