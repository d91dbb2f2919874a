//! The in-process hub: sender check, bounded queues, routing and presence.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use esync_proto::envelope::{EnvelopeSigner, Recipient};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, Id128};
use esync_proto::message::{InventoryQuery, Participant, Payload, PresenceState};
use esync_transport::{ChannelHub, Incoming, Transport};

fn dev(p: &str) -> Participant {
    Participant::Device(DevicePath::new(p).unwrap())
}

fn query(s: &mut EnvelopeSigner, to: Recipient) -> Vec<u8> {
    s.seal(
        to,
        Id128([0; 16]),
        Payload::InventoryQuery(InventoryQuery { nonce: [1; 16] }),
        1,
    )
    .unwrap()
}

async fn next(t: &mut Transport) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), t.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn hub_checks_sender_bounds_queues_and_routes_prefixes() {
    let hub = ChannelHub::new(4, FrameLimits::default());
    let mut client = Transport::boxed(hub.connect(Participant::Client));
    let info = Transport::boxed(hub.connect(dev("/body/infotainment")));
    let mut ecm = Transport::boxed(hub.connect(dev("/powertrain/ecm")));
    for _ in 0..2 {
        assert!(
            matches!(next(&mut client).await, Incoming::Presence(p) if p.state == PresenceState::Connected)
        );
    }
    // An endpoint speaking as someone else is dropped and counted.
    let key = SigningKey::from_bytes(&[1; 32]);
    let mut as_client =
        EnvelopeSigner::new(Participant::Client, key.clone(), 1, FrameLimits::default());
    info.send(query(
        &mut as_client,
        Recipient::Device(DevicePath::new("/powertrain/ecm").unwrap()),
    ))
    .await
    .unwrap();
    // The real Client reaches the ECM through a prefix.
    let mut real = EnvelopeSigner::new(Participant::Client, key, 1, FrameLimits::default());
    let f = query(
        &mut real,
        Recipient::DevicePrefix(DevicePath::new("/powertrain").unwrap()),
    );
    client.send(f.clone()).await.unwrap();
    assert_eq!(next(&mut ecm).await, Incoming::Frame(f));
    assert_eq!(hub.stats().dropped_sender_mismatch, 1);

    // The ECM stops reading: at most 4 frames wait for it, the rest are
    // dropped and counted, and the Client is not blocked.
    for _ in 0..50 {
        let f = query(
            &mut real,
            Recipient::Device(DevicePath::new("/powertrain/ecm").unwrap()),
        );
        client.send(f).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while hub.stats().delivered + hub.stats().dropped_full < 51 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = hub.stats();
    assert_eq!(s.delivered, 1 + 4);
    assert_eq!(s.dropped_full, 46);

    // Dropping an endpoint is reported to the Client.
    drop(info);
    loop {
        if let Incoming::Presence(p) = next(&mut client).await {
            assert_eq!(
                (p.participant, p.state),
                (dev("/body/infotainment"), PresenceState::Disconnected)
            );
            break;
        }
    }
}

/// The channel endpoint gets the shared checks of every transport: an
/// oversized or malformed frame is refused on the way out and dropped on the
/// way in (the full table over every transport kind is in esync-client's
/// `tests/transport_checks.rs`).
#[tokio::test]
async fn channel_endpoint_refuses_malformed_and_oversized_frames() {
    let limits = FrameLimits::new(64);
    let (endpoint, mut peer) = esync_transport::channel::channel_pair(dev("/body/hvac"), 4, limits);
    let mut t = Transport::boxed(endpoint);
    let oversized = esync_proto::frame::wrap(&[0; 65], FrameLimits::new(65)).unwrap();
    let good = esync_proto::frame::wrap(b"ok", limits).unwrap();
    let mut trailing = good.clone();
    trailing.push(0);
    for bad in [oversized.clone(), trailing.clone(), vec![9, 0, 0, 0, 0]] {
        assert!(matches!(
            t.send(bad).await,
            Err(esync_transport::TransportError::Frame(_))
        ));
    }
    t.send(good.clone()).await.unwrap();
    assert_eq!(
        peer.rx.recv().await,
        Some(esync_transport::Outbound::Frame(good.clone()))
    );
    for bad in [oversized, trailing] {
        peer.tx.send(Incoming::Frame(bad)).await.unwrap();
    }
    peer.tx.send(Incoming::Frame(good.clone())).await.unwrap();
    assert_eq!(next(&mut t).await, Incoming::Frame(good));
    let s = t.check_stats();
    assert_eq!((s.rejected_out, s.rejected_in), (3, 2));
}
