//! MQTT transport against the real Mosquitto at 127.0.0.1:1883: after the
//! connection is lost, the transport reconnects, re-subscribes (its own
//! topics and its groups) and announces itself with fresh signed presence
//! markers that the Client accepts. Prints a SKIPPED line and returns when
//! Mosquitto is not reachable.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use esync_proto::envelope::{EnvelopeSigner, Recipient};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, GroupName, Id128, Vin};
use esync_proto::message::{InventoryQuery, Participant, Payload, PresenceState};
use esync_transport::mqtt::Topics;
use esync_transport::{Incoming, MqttConfig, MqttPresence, MqttTransport, Transport};

async fn next(t: &mut Transport<MqttTransport>) -> Incoming {
    tokio::time::timeout(Duration::from_secs(10), t.recv())
        .await
        .unwrap()
        .unwrap()
}

async fn presence(t: &mut Transport<MqttTransport>, state: PresenceState) {
    loop {
        if let Incoming::Presence(p) = next(t).await {
            if p.state == state {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_transport_reconnects_and_resumes() {
    let reachable = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect("127.0.0.1:1883")
        )
        .await,
        Ok(Ok(_))
    );
    if !reachable {
        println!("SKIPPED: mosquitto not reachable at 127.0.0.1:1883");
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = format!("esync-test/reconnect-{}-{nanos}", std::process::id());
    let vin = Vin::new("WVWZZZ1JZXW000001").unwrap();
    let path = DevicePath::new("/powertrain/ecm").unwrap();
    let who = Participant::Device(path.clone());
    let agent_key = SigningKey::from_bytes(&[7; 32]);
    let client_key = SigningKey::from_bytes(&[8; 32]);
    let mut presence_keys = BTreeMap::new();
    presence_keys.insert(who.clone(), agent_key.verifying_key());
    let mut client = Transport::new(
        MqttTransport::connect(
            MqttConfig::new(
                "127.0.0.1",
                1883,
                vin.clone(),
                Participant::Client,
                MqttPresence::Watch(Arc::new(presence_keys)),
            )
            .with_topic_root(&root),
        )
        .unwrap(),
    );
    client.inner().wait_connections(1).await.unwrap();
    let agent_signer = Arc::new(Mutex::new(EnvelopeSigner::new(
        who.clone(),
        agent_key,
        1,
        FrameLimits::default(),
    )));
    let cfg = MqttConfig::new(
        "127.0.0.1",
        1883,
        vin.clone(),
        who.clone(),
        MqttPresence::Announce(agent_signer),
    )
    .with_topic_root(&root);
    let client_id = cfg.client_id.clone();
    let mut agent = Transport::new(MqttTransport::connect(cfg).unwrap());
    agent.inner().wait_connections(1).await.unwrap();
    let g = GroupName::new("update-listeners").unwrap();
    agent.subscribe(vec![g.clone()]).await.unwrap();
    presence(&mut client, PresenceState::Connected).await;

    // Another client takes over the agent's MQTT client id: Mosquitto closes
    // the agent's connection (publishing its will), the agent reconnects.
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", 1883);
    o.set_clean_session(true);
    let (intruder, mut ev) = rumqttc::AsyncClient::new(o, 10);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = ev.poll().await.unwrap() {
            break;
        }
    }
    drop(intruder);
    drop(ev);
    presence(&mut client, PresenceState::Disconnected).await;
    loop {
        if next(&mut agent).await == Incoming::Reconnected {
            break;
        }
    }
    agent.inner().wait_connections(2).await.unwrap();
    // Fresh markers: the new "connected" is above the will's sequence number.
    presence(&mut client, PresenceState::Connected).await;

    // Own topic and group subscriptions were restored.
    let mut s = EnvelopeSigner::new(Participant::Client, client_key, 1, FrameLimits::default());
    for to in [Recipient::Device(path.clone()), Recipient::Group(g)] {
        let f = s
            .seal(
                to,
                Id128([0; 16]),
                Payload::InventoryQuery(InventoryQuery { nonce: [1; 16] }),
                1,
            )
            .unwrap();
        client.send(f.clone()).await.unwrap();
        loop {
            if let Incoming::Frame(got) = next(&mut agent).await {
                assert_eq!(got, f);
                break;
            }
        }
    }
    let st = client.inner().stats();
    assert_eq!(st.presence_rejected, 0, "{st:?}");
    assert!(st.presence_accepted >= 3, "{st:?}");
    // Leave no retained marker behind.
    drop(agent);
    presence(&mut client, PresenceState::Disconnected).await;
    let topic = Topics::new(&root, &vin).unwrap().presence(&who).unwrap();
    let mut o = rumqttc::MqttOptions::new(format!("esync-test-clear-{nanos}"), "127.0.0.1", 1883);
    o.set_clean_session(true);
    let (c, mut ev) = rumqttc::AsyncClient::new(o, 10);
    c.publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::<u8>::new())
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(e) = ev.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = e {
                break;
            }
        }
    })
    .await;
}
