//! The tokio runtime over esync-transport's in-process channel hub: a Client
//! signs commands, the Agent runtime verifies them end to end, installs, and
//! its signed reports come back. Also: a frame signed by the wrong key is
//! dropped.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use esync_agent::device::mem::MemDevice;
use esync_agent::device::sha256;
use esync_agent::journal::MemJournal;
use esync_agent::policy::AlwaysConsent;
use esync_agent::runtime::{run_agent, AgentHost, Security};
use esync_agent::testing::DangerousUnverifiedMetadata;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::Id128;
use esync_proto::message::*;
use esync_transport::{ChannelHub, Incoming, Transport};

struct Client {
    t: Transport,
    signer: EnvelopeSigner,
    verifier: Verifier,
    keys: BTreeMap<Participant, ed25519_dalek::VerifyingKey>,
    now: u64,
}

impl Client {
    async fn send(&mut self, p: Payload) {
        self.now += 1;
        let dev = config().device;
        let f = self
            .signer
            .seal(
                Recipient::Device(dev),
                Id128([self.now as u8; 16]),
                p,
                self.now,
            )
            .unwrap();
        self.t.send(f).await.unwrap();
    }

    /// Waits for a message matching `want`, returning everything seen.
    async fn until(&mut self, want: impl Fn(&Payload) -> bool) -> Vec<Payload> {
        let mut seen = vec![];
        loop {
            let inc = tokio::time::timeout(Duration::from_secs(20), self.t.recv())
                .await
                .expect("agent answered")
                .expect("open");
            if let Incoming::Frame(f) = inc {
                let m = self.verifier.open(&f, &self.keys, self.now).unwrap();
                assert_eq!(m.header.sender, Participant::Device(config().device));
                let hit = want(&m.payload);
                seen.push(m.payload);
                if hit {
                    return seen;
                }
            }
        }
    }
}

#[tokio::test]
async fn lifecycle_over_the_channel_transport() {
    let hub = ChannelHub::new(64, FrameLimits::default());
    let dev_path = config().device;
    let agent_key = SigningKey::from_bytes(&[5; 32]);
    let client_key = SigningKey::from_bytes(&[6; 32]);
    let rogue_key = SigningKey::from_bytes(&[7; 32]);

    let mut client_t = hub.connect(Participant::Client);
    let _ = &mut client_t;
    let mut agent_t = Transport::boxed(hub.connect(Participant::Device(dev_path.clone())));
    let (o, n) = (image(1, 9_000), image(2, 11_000));
    let mut host = AgentHost {
        config: config(),
        device: Box::new(MemDevice::new(v("1.0.0"), 1, o.clone(), CAP)),
        journal: Box::new(MemJournal::new()),
        verifier: Box::new(DangerousUnverifiedMetadata),
        patcher: Box::new(esync_agent::delta::PackageApplier),
        policy: Box::new(AlwaysConsent),
        reporter: None,
    };
    let mut keys = BTreeMap::new();
    keys.insert(Participant::Client, client_key.verifying_key());
    let mut sec = Security {
        signer: Arc::new(Mutex::new(EnvelopeSigner::new(
            Participant::Device(dev_path.clone()),
            agent_key.clone(),
            1,
            FrameLimits::default(),
        ))),
        verifier: Verifier::new(
            ReceiverIdentity {
                me: Participant::Device(dev_path.clone()),
                groups: vec![],
            },
            FrameLimits::default(),
        ),
        keys: Box::new(keys),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(async move {
        let stats = run_agent(&mut host, &mut sec, &mut agent_t, || T0 + 1_000, async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        (stats, host)
    });

    let mut ckeys = BTreeMap::new();
    ckeys.insert(
        Participant::Device(dev_path.clone()),
        agent_key.verifying_key(),
    );
    let mut client = Client {
        t: Transport::boxed(client_t),
        signer: EnvelopeSigner::new(Participant::Client, client_key, 1, FrameLimits::default()),
        verifier: Verifier::new(
            ReceiverIdentity {
                me: Participant::Client,
                groups: vec![],
            },
            FrameLimits::default(),
        ),
        keys: ckeys,
        now: T0,
    };

    // A command signed by a key the Agent does not know is dropped; the
    // next genuine query is answered.
    let mut rogue = EnvelopeSigner::new(
        Participant::Client,
        rogue_key,
        1_000,
        FrameLimits::default(),
    );
    let f = rogue
        .seal(
            Recipient::Device(dev_path.clone()),
            Id128([0; 16]),
            Payload::Rollback(Rollback {
                update_id: Id128([1; 16]),
                target: RollbackTarget::PreviousSlot,
            }),
            T0,
        )
        .unwrap();
    client.t.send(f).await.unwrap();
    client
        .send(Payload::InventoryQuery(InventoryQuery { nonce: [4; 16] }))
        .await;
    let seen = client
        .until(|p| matches!(p, Payload::InventoryReport(_)))
        .await;
    assert_eq!(
        seen.len(),
        1,
        "the rogue rollback produced no answer: {seen:?}"
    );

    let u = Update::full(1, "2.0.0", 2, &n, 2048);
    client.send(u.metadata()).await;
    client.send(u.offer()).await;
    client
        .until(|p| matches!(p, Payload::DownloadDecision(d) if d.decision == Decision::Consent))
        .await;
    client.send(u.transfer_start()).await;
    for i in 0..u.chunks() {
        client.send(u.chunk(i)).await;
    }
    client
        .until(|p| matches!(p, Payload::TransferAck(a) if a.next_chunk == u.chunks()))
        .await;
    client.send(u.prepare()).await;
    client.until(|p| matches!(p, Payload::PrepareResult(r) if matches!(r.outcome, PrepareOutcome::Ready { .. }))).await;
    client.send(u.install(true)).await;
    let seen = client
        .until(|p| matches!(p, Payload::InstallResult(_)))
        .await;
    assert!(seen.iter().any(|p| matches!(p, Payload::Progress(_))));
    assert!(
        matches!(seen.last(), Some(Payload::InstallResult(r)) if matches!(r.outcome, InstallOutcome::Installed { awaiting_confirm: true, .. }))
    );
    client.send(u.confirm()).await;
    client.until(|p| matches!(p, Payload::Confirmed(_))).await;

    stop_tx.send(()).unwrap();
    let (stats, host) = agent.await.unwrap();
    assert_eq!(stats.dropped, 1);
    assert!(stats.accepted >= 8);
    assert_eq!(host.device.running().unwrap().sha256, sha256(&n));
}
