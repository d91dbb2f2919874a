//! The synchronous endpoint alone: signed frames in, signed frames out, no
//! runtime. A replayed or forged frame is refused with a typed reason and
//! never reaches the Agent; final reports carry outbox ids and stay until
//! marked sent.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;

use common::*;
use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_agent::device::mem::MemDevice;
use esync_agent::device::Device;
use esync_agent::endpoint::{Endpoint, Envelopes, Input, Step};
use esync_agent::journal::MemJournal;
use esync_agent::policy::AlwaysConsent;
use esync_agent::testing::DangerousUnverifiedMetadata;
use esync_agent::{Context, Ignored, Now, VersionReporter};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::Id128;
use esync_proto::message::*;
use esync_proto::EnvelopeError;

/// The Agent's host: device, journal, envelope keys; and a Client that
/// signs commands and verifies answers.
struct Bench {
    dev: MemDevice,
    journal: MemJournal,
    verifier: DangerousUnverifiedMetadata,
    patcher: esync_agent::delta::PackageApplier,
    policy: AlwaysConsent,
    agent_verifier: Verifier,
    agent_signer: EnvelopeSigner,
    client_keys: BTreeMap<Participant, VerifyingKey>,
    endpoint: Option<Endpoint>,
    client: EnvelopeSigner,
    client_verifier: Verifier,
    agent_keys: BTreeMap<Participant, VerifyingKey>,
    /// Wall time (the monotonic clock runs 1 ms per frame from 0).
    now: u64,
}

macro_rules! parts {
    ($b:expr, $ctx:ident, $env:ident) => {
        let mut $ctx = Context {
            device: &mut $b.dev,
            journal: &mut $b.journal,
            verifier: &mut $b.verifier,
            patcher: &$b.patcher,
            policy: &mut $b.policy,
            reporter: None::<&mut dyn VersionReporter>,
        };
        let mut $env = Envelopes {
            verifier: &mut $b.agent_verifier,
            keys: &$b.client_keys,
            signer: &mut $b.agent_signer,
        };
    };
}

fn identity(me: Participant) -> ReceiverIdentity {
    ReceiverIdentity { me, groups: vec![] }
}

impl Bench {
    fn new(old: &[u8]) -> Bench {
        let dev_p = Participant::Device(config().device);
        let agent_key = SigningKey::from_bytes(&[5; 32]);
        let client_key = SigningKey::from_bytes(&[6; 32]);
        let mut b = Bench {
            dev: MemDevice::new(v("1.0.0"), 1, old.to_vec(), CAP),
            journal: MemJournal::new(),
            verifier: DangerousUnverifiedMetadata,
            patcher: esync_agent::delta::PackageApplier,
            policy: AlwaysConsent,
            agent_verifier: Verifier::new(identity(dev_p.clone()), FrameLimits::default()),
            agent_signer: EnvelopeSigner::new(
                dev_p.clone(),
                agent_key.clone(),
                1,
                FrameLimits::default(),
            ),
            client_keys: BTreeMap::from([(Participant::Client, client_key.verifying_key())]),
            endpoint: None,
            client: EnvelopeSigner::new(Participant::Client, client_key, 1, FrameLimits::default()),
            client_verifier: Verifier::new(identity(Participant::Client), FrameLimits::default()),
            agent_keys: BTreeMap::from([(dev_p, agent_key.verifying_key())]),
            now: T0,
        };
        let step = b.recover();
        assert!(step.frames.is_empty());
        b
    }

    fn clocks(&self) -> Now {
        Now {
            mono_ms: self.now - T0,
            wall_ms: self.now,
        }
    }

    fn recover(&mut self) -> Step {
        let now = self.clocks();
        parts!(self, ctx, env);
        let (e, step) = Endpoint::recover(config(), now, &mut ctx, &mut env).unwrap();
        self.endpoint = Some(e);
        step
    }

    /// A frame the Client signs now.
    fn frame(&mut self, p: Payload) -> Vec<u8> {
        self.now += 1;
        self.client
            .seal(
                Recipient::Device(config().device),
                Id128([self.now as u8; 16]),
                p,
                self.now,
            )
            .unwrap()
    }

    fn receive(&mut self, frame: &[u8]) -> Step {
        let now = self.clocks();
        parts!(self, ctx, env);
        let e = self.endpoint.as_mut().unwrap();
        e.receive(frame, now, &mut ctx, &mut env).unwrap()
    }

    fn poll(&mut self) -> Step {
        let now = self.clocks();
        parts!(self, ctx, env);
        let e = self.endpoint.as_mut().unwrap();
        e.poll(now, &mut ctx, &mut env).unwrap()
    }

    fn mark_sent(&mut self, id: u64) {
        parts!(self, ctx, env);
        let _ = &mut env;
        self.endpoint
            .as_mut()
            .unwrap()
            .mark_sent(id, &mut ctx)
            .unwrap();
    }

    /// What the Client reads from the Agent's frames (verified end to end).
    fn open(&mut self, step: &Step) -> Vec<Payload> {
        step.frames
            .iter()
            .map(|f| {
                let m = self
                    .client_verifier
                    .open(&f.bytes, &self.agent_keys, self.now)
                    .unwrap();
                assert_eq!(m.header.sender, Participant::Device(config().device));
                m.payload
            })
            .collect()
    }

    /// Sends a command, runs the work it starts, returns every answer and
    /// the outbox ids seen (not marked sent).
    fn exchange(&mut self, p: Payload) -> (Vec<Payload>, Vec<u64>) {
        let f = self.frame(p);
        let mut step = self.receive(&f);
        assert_eq!(step.input, Input::Handled);
        let mut msgs = self.open(&step);
        let mut ids: Vec<u64> = step.outbox_ids().collect();
        while step.poll {
            step = self.poll();
            msgs.extend(self.open(&step));
            ids.extend(step.outbox_ids());
        }
        (msgs, ids)
    }
}

#[test]
fn a_frame_in_gives_signed_frames_out() {
    let mut b = Bench::new(&image(1, 9_000));
    let f = b.frame(Payload::InventoryQuery(InventoryQuery { nonce: [3; 16] }));
    let step = b.receive(&f);
    assert_eq!(step.input, Input::Handled);
    assert!(!step.poll);
    let msgs = b.open(&step);
    assert!(
        matches!(&msgs[..], [Payload::InventoryReport(r)] if r.nonce == [3; 16]),
        "{msgs:?}"
    );
    assert_eq!(
        step.outbox_ids().count(),
        0,
        "an inventory is not journaled"
    );
}

#[test]
fn a_replayed_or_forged_frame_is_refused_with_a_typed_reason() {
    let mut b = Bench::new(&image(1, 9_000));
    let u = Update::full(1, "2.0.0", 2, &image(2, 5_000), 1024);
    let f = b.frame(u.metadata());
    assert_eq!(b.receive(&f).input, Input::Handled);
    let journal_before = b.endpoint.as_ref().unwrap().agent().state().clone();

    // The same frame again: a replay.
    let step = b.receive(&f);
    assert!(
        matches!(
            step.input,
            Input::Refused(EnvelopeError::Replay {
                seq: 1,
                last: 1,
                ..
            })
        ),
        "{:?}",
        step.input
    );
    assert!(step.frames.is_empty());

    // A Client frame signed by another key.
    let mut rogue = EnvelopeSigner::new(
        Participant::Client,
        SigningKey::from_bytes(&[7; 32]),
        100,
        FrameLimits::default(),
    );
    let forged = rogue
        .seal(
            Recipient::Device(config().device),
            Id128([9; 16]),
            u.rollback(RollbackTarget::PreviousSlot),
            b.now,
        )
        .unwrap();
    let step = b.receive(&forged);
    assert!(
        matches!(step.input, Input::Refused(EnvelopeError::BadSignature(_))),
        "{:?}",
        step.input
    );
    assert!(step.frames.is_empty());

    // A frame cut short.
    let genuine = b.frame(u.offer());
    let step = b.receive(&genuine[..genuine.len() - 1]);
    assert!(matches!(step.input, Input::Refused(_)), "{:?}", step.input);

    // None of them reached the Agent.
    assert_eq!(
        b.endpoint.as_ref().unwrap().agent().state(),
        &journal_before
    );
}

#[test]
fn an_ignored_message_says_why() {
    let mut b = Bench::new(&image(1, 9_000));
    let f = b.frame(Payload::Confirm(Confirm {
        update_id: Id128([4; 16]),
    }));
    let step = b.receive(&f);
    assert_eq!(step.input, Input::Ignored(Ignored::ConfirmUnknownUpdate));
    assert!(step.frames.is_empty());
    let f = b.frame(Payload::TransferAbort(TransferAbort {
        transfer_id: Id128([4; 16]),
        reason: "test".into(),
    }));
    let step = b.receive(&f);
    assert_eq!(step.input, Input::Ignored(Ignored::AbortUnknownTransfer));
}

#[test]
fn a_whole_update_with_final_reports_kept_until_marked_sent() {
    let new = image(2, 11_000);
    let mut b = Bench::new(&image(1, 9_000));
    let u = Update::full(1, "2.0.0", 2, &new, 2048);
    b.exchange(u.metadata());
    let (msgs, _) = b.exchange(u.offer());
    assert!(msgs
        .iter()
        .any(|p| matches!(p, Payload::DownloadDecision(d) if d.decision == Decision::Consent)));
    b.exchange(u.transfer_start());
    for i in 0..u.chunks() {
        b.exchange(u.chunk(i));
    }
    let (msgs, _) = b.exchange(u.prepare());
    assert!(msgs.iter().any(|p| matches!(p, Payload::PrepareResult(r) if matches!(r.outcome, PrepareOutcome::Ready { .. }))));
    let (msgs, ids) = b.exchange(u.install(true));
    assert!(msgs.iter().any(|p| matches!(p, Payload::InstallResult(r) if matches!(r.outcome, InstallOutcome::Installed { awaiting_confirm: true, .. }))), "{msgs:?}");
    assert_eq!(ids.len(), 1, "the install result is a final report");

    // Not marked sent: a reconnection and a restart send it again.
    let again = {
        let now = b.clocks();
        let mut env = Envelopes {
            verifier: &mut b.agent_verifier,
            keys: &b.client_keys,
            signer: &mut b.agent_signer,
        };
        b.endpoint
            .as_mut()
            .unwrap()
            .reconnected(now, &mut env)
            .unwrap()
    };
    assert_eq!(again.outbox_ids().collect::<Vec<_>>(), ids);
    let restarted = b.recover();
    assert_eq!(restarted.outbox_ids().collect::<Vec<_>>(), ids);
    assert!(matches!(
        &b.open(&restarted)[..],
        [Payload::InstallResult(_)]
    ));

    // Marked sent: gone from the journal.
    b.mark_sent(ids[0]);
    assert!(b
        .endpoint
        .as_ref()
        .unwrap()
        .agent()
        .state()
        .outbox
        .is_empty());
    let (msgs, ids) = b.exchange(u.confirm());
    assert!(matches!(&msgs[..], [Payload::Confirmed(_)]), "{msgs:?}");
    b.mark_sent(ids[0]);
    assert!(b
        .endpoint
        .as_ref()
        .unwrap()
        .agent()
        .state()
        .outbox
        .is_empty());
    assert_eq!(
        b.dev.running().unwrap().sha256,
        esync_agent::device::sha256(&new)
    );
}
