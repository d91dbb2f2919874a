//! Compartmentalisation through the embedded broker: impersonation (A17),
//! commands not signed by the Client, replays, a slow consumer's bounded
//! memory, reconnection that resumes, and identities that are refused.

#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use esync_proto::envelope::Recipient;
use esync_proto::id::{Id128, ListenerName, UpdateId};
use esync_proto::message::*;
use esync_proto::EnvelopeError;
use esync_transport::{BrokerLinkConfig, BrokerTransport, Incoming, Transport};

fn progress(update: UpdateId) -> Payload {
    Payload::Progress(Progress {
        update_id: update,
        phase: Phase::Write,
        done: 1,
        total: 2,
    })
}

fn install(update: UpdateId) -> Payload {
    Payload::InstallStart(InstallStart {
        update_id: update,
        stage: 0,
        await_confirm: true,
    })
}

fn inventory_query(n: u8) -> Payload {
    Payload::InventoryQuery(InventoryQuery { nonce: [n; 16] })
}

/// Waits until `f` holds (counters are updated by broker tasks).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !f() {
        if tokio::time::Instant::now() >= deadline {
            println!("timed out waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_cannot_send_as_another_device_a17() {
    let pki = Pki::new();
    let (broker, mut client) = start_broker(pki.broker_config()).await;
    let info = Participant::Device(dev("/body/infotainment"));
    let brake = Participant::Device(dev("/chassis/brake"));
    let info_id = pki.agent("/body/infotainment");
    let brake_id = pki.agent("/chassis/brake");
    let info_link = Transport::boxed(pki.link(&broker, info.clone(), &info_id));
    let mut brake_link = Transport::boxed(pki.link(&broker, brake.clone(), &brake_id));
    wait_all_connected(&mut client, &[info.clone(), brake.clone()]).await;

    // 1. The infotainment Agent claims to be the brake controller, signing
    //    with its own key.
    let forged_report = shared(signer(brake.clone(), &info_id.signing_key));
    let f1 = seal(&forged_report, Recipient::Client, progress(Id128([1; 16])));
    info_link.send(f1.clone()).await.unwrap();
    // 2. ... and claims to be the Client, commanding the brake.
    let forged_client = shared(signer(Participant::Client, &info_id.signing_key));
    let f2 = seal(
        &forged_client,
        Recipient::Device(dev("/chassis/brake")),
        install(Id128([1; 16])),
    );
    info_link.send(f2.clone()).await.unwrap();
    // 3. Names itself but signs with a key that is not its certificate's.
    let rogue = SigningKey::from_bytes(&[66; 32]);
    let f3 = seal(
        &shared(signer(info.clone(), &rogue)),
        Recipient::Client,
        progress(Id128([1; 16])),
    );
    info_link.send(f3).await.unwrap();
    // 4. Signs correctly, then alters the signed bytes.
    let own = shared(signer(info.clone(), &info_id.signing_key));
    let mut f4 = seal(&own, Recipient::Client, progress(Id128([2; 16])));
    let last = f4.len() - 70; // inside the signed bytes, before the signature
    f4[last] ^= 1;
    info_link.send(f4).await.unwrap();
    // 5. A genuine message still flows: frames of one connection are handled
    //    in order, so once it arrives the forgeries above were all judged.
    let genuine = seal(&own, Recipient::Client, progress(Id128([3; 16])));
    info_link.send(genuine).await.unwrap();

    let client_keys = keys(&[
        (info.clone(), info_id.signing_key.verifying_key()),
        (brake.clone(), brake_id.signing_key.verifying_key()),
    ]);
    let mut client_verifier = verifier_for(Participant::Client, vec![]);
    let frame = next_frame(&mut client).await;
    let v = client_verifier
        .open(&frame, &client_keys, now_ms())
        .unwrap();
    assert_eq!(v.header.sender, info);
    assert_eq!(v.header.correlation, Id128([9; 16]));
    assert!(matches!(
        v.payload,
        Payload::Progress(Progress {
            update_id: Id128([3, ..]),
            ..
        })
    ));

    // The delivery is counted just after the frame is handed over.
    assert!(eventually("delivery count", || broker.stats().deliveries == 1).await);
    let s = broker.stats();
    assert_eq!(s.dropped_sender_mismatch, 2, "claims to be brake / Client");
    assert_eq!(s.dropped_bad_signature, 2, "rogue key / altered bytes");
    assert_eq!(s.deliveries, 1);
    assert_no_frame(&mut client, Duration::from_millis(200)).await;
    assert_no_frame(&mut brake_link, Duration::from_millis(50)).await;

    // Injected another way (bypassing the broker), receivers refuse the same
    // forgeries with their own Verifier: the signature is not the brake's /
    // the Client's.
    let err = client_verifier
        .open(&f1, &client_keys, now_ms())
        .unwrap_err();
    assert!(matches!(err, EnvelopeError::BadSignature(_)), "{err:?}");
    let mut brake_verifier = verifier_for(brake.clone(), vec![]);
    let brake_keys = keys(&[(Participant::Client, pki.vehicle.signing_key.verifying_key())]);
    let err = brake_verifier.open(&f2, &brake_keys, now_ms()).unwrap_err();
    assert!(matches!(err, EnvelopeError::BadSignature(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_not_signed_by_the_client_is_refused() {
    let pki = Pki::new();
    let (broker, mut client) = start_broker(pki.broker_config()).await;
    let info = Participant::Device(dev("/body/infotainment"));
    let brake = Participant::Device(dev("/chassis/brake"));
    let info_id = pki.agent("/body/infotainment");
    let brake_id = pki.agent("/chassis/brake");
    let info_link = Transport::boxed(pki.link(&broker, info.clone(), &info_id));
    let mut brake_link = Transport::boxed(pki.link(&broker, brake.clone(), &brake_id));
    wait_all_connected(&mut client, &[info.clone(), brake.clone()]).await;

    // The infotainment Agent, honestly named and signed, commands the brake:
    // the broker routes it (it is authentic), the brake's Verifier refuses it
    // because only the Client may send commands.
    let own = shared(signer(info.clone(), &info_id.signing_key));
    info_link
        .send(seal(
            &own,
            Recipient::Device(dev("/chassis/brake")),
            install(Id128([1; 16])),
        ))
        .await
        .unwrap();
    info_link
        .send(seal(
            &own,
            Recipient::DevicePrefix(dev("/chassis")),
            Payload::Confirm(Confirm {
                update_id: Id128([1; 16]),
            }),
        ))
        .await
        .unwrap();
    let mut brake_verifier = verifier_for(brake.clone(), vec![]);
    let brake_keys = keys(&[
        (Participant::Client, pki.vehicle.signing_key.verifying_key()),
        (info.clone(), info_id.signing_key.verifying_key()),
    ]);
    for kind in ["install-start", "confirm"] {
        let f = next_frame(&mut brake_link).await;
        match brake_verifier.open(&f, &brake_keys, now_ms()) {
            Err(EnvelopeError::NotAllowed { kind: k, .. }) => assert_eq!(k, kind),
            other => panic!("expected NotAllowed for {kind}, got {other:?}"),
        }
    }
    // The Client's own command is accepted.
    let client_signer = pki.client_signer();
    client
        .send(seal(
            &client_signer,
            Recipient::Device(dev("/chassis/brake")),
            install(Id128([1; 16])),
        ))
        .await
        .unwrap();
    let f = next_frame(&mut brake_link).await;
    let v = brake_verifier.open(&f, &brake_keys, now_ms()).unwrap();
    assert_eq!(v.header.sender, Participant::Client);
    assert_eq!(v.payload.kind(), "install-start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_frames_are_dropped_by_the_receiver() {
    let pki = Pki::new();
    let (broker, mut client) = start_broker(pki.broker_config()).await;
    let ecm = Participant::Device(dev("/powertrain/ecm"));
    let id = pki.agent("/powertrain/ecm");
    let mut agent = Transport::new(pki.link(&broker, ecm.clone(), &id));
    wait_presence(&mut client, &ecm, PresenceState::Connected).await;

    let client_signer = pki.client_signer();
    let to = Recipient::Device(dev("/powertrain/ecm"));
    let q1 = seal(&client_signer, to.clone(), inventory_query(1));
    let q2 = seal(&client_signer, to.clone(), inventory_query(2));
    // q1 twice (a replay), then q2, then q1 again (older than accepted).
    for f in [&q1, &q1, &q2, &q1] {
        client.send(f.clone()).await.unwrap();
    }
    let mut v = verifier_for(ecm.clone(), vec![]);
    let k = keys(&[(Participant::Client, pki.vehicle.signing_key.verifying_key())]);
    let mut results = Vec::new();
    for _ in 0..4 {
        let f = next_frame(&mut agent).await;
        results.push(v.open(&f, &k, now_ms()).map(|m| m.header.seq));
    }
    assert_eq!(results[0], Ok(1));
    assert!(
        matches!(
            results[1],
            Err(EnvelopeError::Replay {
                seq: 1,
                last: 1,
                ..
            })
        ),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Ok(2));
    assert!(
        matches!(
            results[3],
            Err(EnvelopeError::Replay {
                seq: 1,
                last: 2,
                ..
            })
        ),
        "{:?}",
        results[3]
    );

    // The same on the way back: an Agent report replayed to the Client.
    let agent_signer = shared(signer(ecm.clone(), &id.signing_key));
    let r = seal(&agent_signer, Recipient::Client, progress(Id128([1; 16])));
    agent.send(r.clone()).await.unwrap();
    agent.send(r).await.unwrap();
    let mut cv = verifier_for(Participant::Client, vec![]);
    let ck = keys(&[(ecm.clone(), id.signing_key.verifying_key())]);
    assert!(cv
        .open(&next_frame(&mut client).await, &ck, now_ms())
        .is_ok());
    let err = cv
        .open(&next_frame(&mut client).await, &ck, now_ms())
        .unwrap_err();
    assert!(matches!(err, EnvelopeError::Replay { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_does_not_grow_broker_memory_beyond_its_bound() {
    const BOUND_FRAMES: usize = 32;
    const BOUND_BYTES: usize = 256 * 1024;
    let pki = Pki::new();
    let mut cfg = pki.broker_config();
    cfg.queue_frames = BOUND_FRAMES;
    cfg.queue_bytes = BOUND_BYTES;
    // Frames up to 64 KiB, so that the byte bound holds several.
    cfg.limits = esync_proto::frame::FrameLimits::new(64 * 1024);
    let (broker, mut client) = start_broker(cfg).await;
    let slow = Participant::Device(dev("/body/slow"));
    let fast = Participant::Device(dev("/body/fast"));
    // The slow Agent's link holds one frame and is never read: its socket
    // stops being read, the kernel buffers fill, then the broker's queue.
    let tls =
        esync_identity::vehicle_client_tls_config(&pki.agent("/body/slow"), &pki.anchors, &vin())
            .unwrap();
    let mut slow_cfg =
        BrokerLinkConfig::new(broker.local_addr(), "vehicle.invalid", tls, slow.clone());
    slow_cfg.queue = 1;
    let _slow_link = BrokerTransport::connect(slow_cfg);
    let mut fast_link = Transport::boxed(pki.link(&broker, fast.clone(), &pki.agent("/body/fast")));
    wait_all_connected(&mut client, &[slow.clone(), fast.clone()]).await;

    // One 32 KiB chunk, sent 1500 times (48 MiB in all; the broker does not
    // track replays, receivers do, so the same bytes are fine here).
    let client_signer = pki.client_signer();
    let chunk = seal(
        &client_signer,
        Recipient::Device(dev("/body/slow")),
        Payload::TransferChunk(TransferChunk {
            transfer_id: Id128([1; 16]),
            index: 0,
            offset: 0,
            data: vec![0xAB; 32 * 1024],
        }),
    );
    let mut fast_sent = 0;
    let mut max_seen_bytes = 0;
    let mut max_seen_frames = 0;
    for i in 0..1500 {
        client.send(chunk.clone()).await.unwrap();
        if i % 50 == 0 {
            client
                .send(seal(
                    &client_signer,
                    Recipient::Device(dev("/body/fast")),
                    inventory_query(1),
                ))
                .await
                .unwrap();
            fast_sent += 1;
            if let Some(q) = broker.queue_stats(&slow) {
                max_seen_bytes = max_seen_bytes.max(q.queued_bytes);
                max_seen_frames = max_seen_frames.max(q.queued_frames);
                assert!(
                    q.queued_bytes <= BOUND_BYTES && q.queued_frames <= BOUND_FRAMES,
                    "{q:?}"
                );
            }
        }
    }
    // The fast Agent got every one of its messages, undisturbed.
    for _ in 0..fast_sent {
        next_frame(&mut fast_link).await;
    }
    assert!(
        eventually("the flood to be routed", || {
            let q = broker.queue_stats(&slow).unwrap();
            q.enqueued + q.dropped_full >= 1500
        })
        .await
    );
    let q = broker.queue_stats(&slow).unwrap();
    println!(
        "slow consumer: bound {BOUND_FRAMES} frames / {BOUND_BYTES} B; high-water {} frames / {} B; sampled max {max_seen_frames} frames / {max_seen_bytes} B; enqueued {}, dropped {}",
        q.max_queued_frames, q.max_queued_bytes, q.enqueued, q.dropped_full
    );
    assert!(q.max_queued_bytes <= BOUND_BYTES, "{q:?}");
    assert!(q.max_queued_frames <= BOUND_FRAMES, "{q:?}");
    assert!(
        q.max_queued_bytes > BOUND_BYTES / 2,
        "the queue did fill: {q:?}"
    );
    assert!(q.dropped_full > 0, "{q:?}");
    assert!(
        eventually("broker counter", || broker.stats().dropped_queue_full
            == broker.queue_stats(&slow).unwrap().dropped_full)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_agent_resumes() {
    let pki = Pki::new();
    let client_signer = pki.client_signer();
    let mut cfg = pki.broker_config();
    cfg.presence_signer = Some(Arc::clone(&client_signer));
    let (broker, mut client) = start_broker(cfg).await;
    let ecm = Participant::Device(dev("/powertrain/ecm"));
    let id = pki.agent("/powertrain/ecm");
    let updates = group("update-listeners");
    let presence = group("presence");
    // An HMI listener watches presence through signed envelopes.
    let hmi = Participant::Listener(ListenerName::new("hmi").unwrap());
    let mut hmi_link = Transport::boxed(pki.link(&broker, hmi.clone(), &pki.listener("hmi")));
    hmi_link.subscribe(vec![presence.clone()]).await.unwrap();
    wait_presence(&mut client, &hmi, PresenceState::Connected).await;
    // The broker must have processed the HMI's subscription before the
    // Agent connects, or the first presence event is (rightly) not sent to it.
    assert!(
        eventually("the HMI's subscription", || broker
            .groups(&hmi)
            .is_some_and(|g| g.contains(&presence)))
        .await
    );

    let mut agent = Transport::new(pki.link(&broker, ecm.clone(), &id));
    agent.subscribe(vec![updates.clone()]).await.unwrap();
    wait_presence(&mut client, &ecm, PresenceState::Connected).await;
    assert!(eventually("the subscription", || broker.connected().contains(&ecm)).await);

    let mut av = verifier_for(ecm.clone(), vec![updates.clone()]);
    let ak = keys(&[(Participant::Client, pki.vehicle.signing_key.verifying_key())]);
    let mut cv = verifier_for(Participant::Client, vec![]);
    let ck = keys(&[(ecm.clone(), id.signing_key.verifying_key())]);
    let agent_signer = shared(signer(ecm.clone(), &id.signing_key));

    // Group message before the disconnection (retry until the subscription
    // has reached the broker).
    let before = loop {
        let f = seal(
            &client_signer,
            Recipient::Group(updates.clone()),
            inventory_query(1),
        );
        client.send(f.clone()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(300), agent.recv()).await {
            Ok(Some(Incoming::Frame(got))) => {
                assert_eq!(got, f);
                break f;
            }
            _ => continue,
        }
    };
    av.open(&before, &ak, now_ms()).unwrap();
    let report = seal(&agent_signer, Recipient::Client, progress(Id128([1; 16])));
    agent.send(report).await.unwrap();
    cv.open(&next_frame(&mut client).await, &ck, now_ms())
        .unwrap();

    // The broker drops the connection; the link reconnects by itself.
    assert!(broker.disconnect(&ecm));
    wait_presence(&mut client, &ecm, PresenceState::Disconnected).await;
    loop {
        match tokio::time::timeout(TIMEOUT, agent.recv()).await.unwrap() {
            Some(Incoming::Reconnected) => break,
            Some(_) => continue,
            None => panic!("link closed"),
        }
    }
    wait_presence(&mut client, &ecm, PresenceState::Connected).await;
    assert_eq!(agent.inner().stats().connections, 2);

    // Subscriptions were restored: a group message arrives, and the same
    // Verifier accepts it (sequence numbers simply continue).
    let after = loop {
        let f = seal(
            &client_signer,
            Recipient::Group(updates.clone()),
            inventory_query(2),
        );
        client.send(f.clone()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(300), agent.recv()).await {
            Ok(Some(Incoming::Frame(got))) => break got,
            _ => continue,
        }
    };
    assert!(av.open(&after, &ak, now_ms()).is_ok());
    // The pre-disconnection frame, sent again, is still a replay.
    client.send(before.clone()).await.unwrap();
    let again = next_frame(&mut agent).await;
    assert!(matches!(
        av.open(&again, &ak, now_ms()),
        Err(EnvelopeError::Replay { .. })
    ));
    // The Agent's own sequence continues towards the Client.
    agent
        .send(seal(
            &agent_signer,
            Recipient::Client,
            progress(Id128([2; 16])),
        ))
        .await
        .unwrap();
    let v = cv
        .open(&next_frame(&mut client).await, &ck, now_ms())
        .unwrap();
    assert_eq!(v.header.seq, 2);

    // The HMI saw connected, disconnected, connected as Client-signed envelopes.
    let mut hv = verifier_for(hmi.clone(), vec![presence.clone()]);
    let mut states = Vec::new();
    while states.len() < 3 {
        let f = next_frame(&mut hmi_link).await;
        match hv.open(&f, &ak, now_ms()).unwrap().payload {
            Payload::Presence(p) if p.subject == ecm => states.push(p.state),
            _ => {}
        }
    }
    assert_eq!(
        states,
        vec![
            PresenceState::Connected,
            PresenceState::Disconnected,
            PresenceState::Connected
        ]
    );

    // The Agent process restarts: its old link is gone, a new one with the
    // same identity is admitted, and the Agent's persisted Verifier state
    // still applies.
    let tls = esync_identity::vehicle_client_tls_config(&id, &pki.anchors, &vin()).unwrap();
    let c2 = BrokerLinkConfig::new(broker.local_addr(), "vehicle.invalid", tls, ecm.clone());
    drop(agent);
    let mut replacement = Transport::boxed(BrokerTransport::connect(c2));
    wait_presence(&mut client, &ecm, PresenceState::Connected).await;
    let f = seal(
        &client_signer,
        Recipient::Device(dev("/powertrain/ecm")),
        inventory_query(3),
    );
    client.send(f.clone()).await.unwrap();
    assert_eq!(next_frame(&mut replacement).await, f);
    assert!(av.open(&f, &ak, now_ms()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_with_the_same_identity_replaces_the_old() {
    let pki = Pki::new();
    let (broker, mut client) = start_broker(pki.broker_config()).await;
    let ecm = Participant::Device(dev("/powertrain/ecm"));
    let id = pki.agent("/powertrain/ecm");
    let slow_link = |pki: &Pki| {
        let tls = esync_identity::vehicle_client_tls_config(&id, &pki.anchors, &vin()).unwrap();
        let mut c = BrokerLinkConfig::new(broker.local_addr(), "vehicle.invalid", tls, ecm.clone());
        // Long backoff: a replaced link does not take the identity back.
        c.backoff_initial = Duration::from_secs(60);
        c.backoff_max = Duration::from_secs(60);
        BrokerTransport::connect(c)
    };
    let old = slow_link(&pki);
    wait_presence(&mut client, &ecm, PresenceState::Connected).await;
    let mut new = Transport::boxed(slow_link(&pki));
    wait_presence(&mut client, &ecm, PresenceState::Connected).await;
    assert!(
        eventually("replacement", || broker.stats().connections_replaced == 1).await,
        "{:?}",
        broker.stats()
    );
    // The old link noticed its connection was closed.
    assert!(
        eventually("old link closed", || old.stats().disconnects == 1).await,
        "{:?}",
        old.stats()
    );
    let client_signer = pki.client_signer();
    let f = seal(
        &client_signer,
        Recipient::Device(dev("/powertrain/ecm")),
        inventory_query(1),
    );
    client.send(f.clone()).await.unwrap();
    assert_eq!(next_frame(&mut new).await, f);
    assert!(
        eventually("one active connection", || broker
            .stats()
            .connections_active
            == 1)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_client_identities_are_refused() {
    let pki = Pki::new();
    let (broker, mut client) = start_broker(pki.broker_config()).await;
    // An Agent certificate of another vehicle, and the vehicle's own Client
    // certificate presented by a network peer.
    let foreign = pki.agent_of_other_vehicle("/powertrain/ecm");
    let _l1 = pki.link(
        &broker,
        Participant::Device(dev("/powertrain/ecm")),
        &foreign,
    );
    let _l2 = pki.link(&broker, Participant::Client, &pki.vehicle);
    assert!(eventually("refusals", || broker.stats().connections_refused >= 2).await);
    assert_eq!(broker.stats().connections_admitted, 0);
    assert_eq!(broker.connected(), vec![Participant::Client]);
    assert_no_frame(&mut client, Duration::from_millis(100)).await;
}
