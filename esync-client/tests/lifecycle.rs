//! One full update lifecycle (inventory, consent, transfer, prepare, install,
//! confirm) between a Client and a scripted Agent over each of the three
//! transports: in-process channels, the embedded broker (mutual TLS), and
//! MQTT through the real Mosquitto at 127.0.0.1:1883.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ed25519_dalek::SigningKey;
use esync_proto::envelope::Recipient;
use esync_proto::frame::FrameLimits;
use esync_proto::id::Id128;
use esync_proto::message::{Event, EventReport, Participant, Payload, PresenceState, Severity};
use esync_transport::mqtt::{Topics, PRESENCE_CONNECTED};
use esync_transport::{ChannelHub, MqttConfig, MqttPresence, MqttTransport, Transport};

const MOSQUITTO: &str = "127.0.0.1:1883";

async fn mosquitto_reachable() -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(MOSQUITTO)
        )
        .await,
        Ok(Ok(_))
    )
}

fn unique_root(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("esync-test/{tag}-{}-{nanos}", std::process::id())
}

/// Removes a retained message so test runs leave nothing behind.
async fn clear_retained(topic: String) {
    let mut o = rumqttc::MqttOptions::new(
        format!("esync-test-clear-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    o.set_clean_session(true);
    let (c, mut ev) = rumqttc::AsyncClient::new(o, 10);
    c.publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::<u8>::new())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_over_in_process_channels() {
    let hub = ChannelHub::new(64, FrameLimits::default());
    let client_key = SigningKey::from_bytes(&[1; 32]);
    let agent_key = SigningKey::from_bytes(&[2; 32]);
    let ecm = dev("/powertrain/ecm");
    let mut client = Transport::boxed(hub.connect(Participant::Client));
    let agent = Transport::boxed(hub.connect(Participant::Device(ecm.clone())));
    wait_presence(
        &mut client,
        &Participant::Device(ecm.clone()),
        PresenceState::Connected,
    )
    .await;

    let agent_signer = shared(signer(Participant::Device(ecm.clone()), &agent_key));
    let task = tokio::spawn(scripted_agent(
        agent,
        ecm.clone(),
        agent_signer,
        client_key.verifying_key(),
    ));
    let client_signer = shared(signer(Participant::Client, &client_key));
    let kinds =
        lifecycle_client(&mut client, &client_signer, &ecm, agent_key.verifying_key()).await;
    assert_eq!(kinds, expected_client_kinds());
    assert_eq!(task.await.unwrap(), expected_agent_kinds());
    // The agent's transport was dropped: the Client hears of it.
    wait_presence(
        &mut client,
        &Participant::Device(ecm),
        PresenceState::Disconnected,
    )
    .await;
    let s = hub.stats();
    assert_eq!(
        (
            s.dropped_full,
            s.dropped_sender_mismatch,
            s.dropped_malformed
        ),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_over_embedded_broker_with_mutual_tls() {
    let pki = Pki::new();
    let client_signer = pki.client_signer();
    let mut cfg = pki.broker_config();
    cfg.presence_signer = Some(Arc::clone(&client_signer));
    let (broker, mut client) = start_broker(cfg).await;
    let ecm = dev("/powertrain/ecm");
    let id = pki.agent("/powertrain/ecm");
    let link = pki.link(&broker, Participant::Device(ecm.clone()), &id);
    wait_presence(
        &mut client,
        &Participant::Device(ecm.clone()),
        PresenceState::Connected,
    )
    .await;

    let agent_signer = shared(signer(Participant::Device(ecm.clone()), &id.signing_key));
    let task = tokio::spawn(scripted_agent(
        Transport::boxed(link),
        ecm.clone(),
        agent_signer,
        pki.vehicle.signing_key.verifying_key(),
    ));
    let kinds = lifecycle_client(
        &mut client,
        &client_signer,
        &ecm,
        id.signing_key.verifying_key(),
    )
    .await;
    assert_eq!(kinds, expected_client_kinds());
    assert_eq!(task.await.unwrap(), expected_agent_kinds());
    wait_presence(
        &mut client,
        &Participant::Device(ecm),
        PresenceState::Disconnected,
    )
    .await;
    let s = broker.stats();
    assert_eq!(s.connections_admitted, 1);
    assert_eq!(
        (
            s.dropped_sender_mismatch,
            s.dropped_bad_signature,
            s.dropped_malformed,
            s.dropped_queue_full
        ),
        (0, 0, 0, 0)
    );
    // Every frame of the exchange went through the broker's checks.
    let n = expected_client_kinds().len() as u64 + expected_agent_kinds().len() as u64;
    assert_eq!(s.frames_in, n);
    assert_eq!(s.deliveries, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_over_mosquitto() {
    if !mosquitto_reachable().await {
        println!("SKIPPED: mosquitto not reachable at 127.0.0.1:1883");
        return;
    }
    let root = unique_root("lifecycle");
    let client_key = SigningKey::from_bytes(&[3; 32]);
    let agent_key = SigningKey::from_bytes(&[4; 32]);
    let ecm = dev("/powertrain/ecm");
    let who = Participant::Device(ecm.clone());
    let presence_keys = Arc::new(keys(&[(who.clone(), agent_key.verifying_key())]));
    let client_t = MqttTransport::connect(
        MqttConfig::new(
            "127.0.0.1",
            1883,
            vin(),
            Participant::Client,
            MqttPresence::Watch(presence_keys),
        )
        .with_topic_root(&root),
    )
    .unwrap();
    client_t.wait_connections(1).await.unwrap();
    let agent_signer = shared(signer(who.clone(), &agent_key));
    let agent_t = MqttTransport::connect(
        MqttConfig::new(
            "127.0.0.1",
            1883,
            vin(),
            who.clone(),
            MqttPresence::Announce(Arc::clone(&agent_signer)),
        )
        .with_topic_root(&root),
    )
    .unwrap();
    agent_t.wait_connections(1).await.unwrap();
    let mut client = Transport::new(client_t);
    // Presence arrives as a signed, verified marker.
    wait_presence(&mut client, &who, PresenceState::Connected).await;

    let task = tokio::spawn(scripted_agent(
        Transport::boxed(agent_t),
        ecm.clone(),
        agent_signer,
        client_key.verifying_key(),
    ));
    let client_signer = shared(signer(Participant::Client, &client_key));
    let kinds =
        lifecycle_client(&mut client, &client_signer, &ecm, agent_key.verifying_key()).await;
    assert_eq!(kinds, expected_client_kinds());
    assert_eq!(task.await.unwrap(), expected_agent_kinds());
    // The agent's transport was dropped without DISCONNECT: Mosquitto
    // publishes its signed "disconnected" will.
    wait_presence(&mut client, &who, PresenceState::Disconnected).await;
    let c = client.inner();
    let s = c.stats();
    assert_eq!(s.presence_accepted, 2);
    assert_eq!((s.presence_rejected, s.dropped_full), (0, 0));
    let topics = Topics::new(&root, &vin()).unwrap();
    clear_retained(topics.presence(&who).unwrap()).await;
}

/// A presence marker signed by the wrong key, or replayed, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_presence_markers_are_verified() {
    if !mosquitto_reachable().await {
        println!("SKIPPED: mosquitto not reachable at 127.0.0.1:1883");
        return;
    }
    let root = unique_root("presence");
    let brake = Participant::Device(dev("/chassis/brake"));
    let brake_key = SigningKey::from_bytes(&[5; 32]);
    let attacker_key = SigningKey::from_bytes(&[6; 32]);
    let presence_keys = Arc::new(keys(&[(brake.clone(), brake_key.verifying_key())]));
    let client_t = MqttTransport::connect(
        MqttConfig::new(
            "127.0.0.1",
            1883,
            vin(),
            Participant::Client,
            MqttPresence::Watch(presence_keys),
        )
        .with_topic_root(&root),
    )
    .unwrap();
    client_t.wait_connections(1).await.unwrap();
    let topic = Topics::new(&root, &vin())
        .unwrap()
        .presence(&brake)
        .unwrap();
    let marker = |key: &SigningKey, seq: u64| {
        let mut s = esync_proto::envelope::EnvelopeSigner::new(
            brake.clone(),
            key.clone(),
            seq,
            FrameLimits::default(),
        );
        s.seal(
            Recipient::Client,
            Id128([0; 16]),
            Payload::EventReport(EventReport {
                events: vec![Event {
                    time_ms: now_ms(),
                    code: PRESENCE_CONNECTED.into(),
                    severity: Severity::Info,
                    data: vec![],
                }],
            }),
            now_ms(),
        )
        .unwrap()
    };
    // Publish with a raw MQTT client, as an attacker on the broker would.
    let mut o = rumqttc::MqttOptions::new(
        format!("esync-test-attacker-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    o.set_clean_session(true);
    let (raw, mut ev) = rumqttc::AsyncClient::new(o, 10);
    let pump = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let genuine = marker(&brake_key, 10);
    raw.publish(
        &topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        marker(&attacker_key, 20),
    )
    .await
    .unwrap();
    raw.publish(&topic, rumqttc::QoS::AtLeastOnce, false, genuine.clone())
        .await
        .unwrap();
    raw.publish(&topic, rumqttc::QoS::AtLeastOnce, false, genuine)
        .await
        .unwrap();
    let mut client = Transport::new(client_t);
    wait_presence(&mut client, &brake, PresenceState::Connected).await;
    let c = client.inner();
    // Messages on one topic arrive in order: the replay follows the genuine one.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while c.stats().presence_rejected < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = c.stats();
    assert_eq!(s.presence_accepted, 1, "only the genuine marker");
    assert_eq!(s.presence_rejected, 2, "forged signature and replay");
    pump.abort();
}
