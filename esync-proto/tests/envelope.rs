//! Envelope verification: each check has a failing case.

mod common;

use common::*;
use esync_proto::envelope::{EnvelopeSigner, Recipient, SignedEnvelope};
use esync_proto::error::EnvelopeError;
use esync_proto::frame::FrameLimits;
use esync_proto::id::{GroupName, Id128};
use esync_proto::message::*;

fn query() -> Payload {
    InventoryQuery { nonce: [1; 16] }.into()
}

#[test]
fn valid_envelope_opens() {
    let frame = client_signer()
        .seal(to_ecm(), Id128([5; 16]), query(), NOW)
        .unwrap();
    let got = ecm_verifier().open(&frame, &keys(), NOW).unwrap();
    assert_eq!(got.header.sender, Participant::Client);
    assert_eq!(got.header.correlation, Id128([5; 16]));
    assert_eq!(got.payload, query());
}

#[test]
fn wrong_key_is_refused() {
    // Signed with a key that is not the Client's, while claiming to be the Client.
    let mut forger = EnvelopeSigner::new(Participant::Client, key(99), 1, FrameLimits::default());
    let frame = forger.seal(to_ecm(), Id128([0; 16]), query(), NOW).unwrap();
    let err = ecm_verifier().open(&frame, &keys(), NOW).unwrap_err();
    assert!(matches!(err, EnvelopeError::BadSignature(_)), "{err}");
}

#[test]
fn agent_key_cannot_speak_for_another_agent() {
    // The body control module's key, claiming to be the engine controller.
    let mut forger = EnvelopeSigner::new(
        Participant::Device(ecm()),
        key(3),
        1,
        FrameLimits::default(),
    );
    let report = DoNotDisturb {
        reason: BusyReason::DeviceBusy,
        retry_after_ms: 1,
    };
    let frame = forger
        .seal(Recipient::Client, Id128([0; 16]), report.into(), NOW)
        .unwrap();
    let err = client_verifier().open(&frame, &keys(), NOW).unwrap_err();
    assert!(matches!(err, EnvelopeError::BadSignature(_)), "{err}");
}

#[test]
fn tampered_payload_is_refused() {
    let signed = client_signer()
        .sign(to_ecm(), Id128([0; 16]), query(), NOW)
        .unwrap();
    // Flip every byte of the signed body in turn: none may verify.
    for i in 0..signed.signed.len() {
        let mut t = signed.clone();
        t.signed[i] ^= 0x01;
        let r = ecm_verifier().open_signed(&t, &keys(), NOW);
        assert!(r.is_err(), "tampered byte {i} accepted");
    }
    // Tampering the signature itself.
    let mut t = signed.clone();
    t.signature.0[10] ^= 0x80;
    let err = ecm_verifier().open_signed(&t, &keys(), NOW).unwrap_err();
    assert!(matches!(err, EnvelopeError::BadSignature(_)), "{err}");
}

#[test]
fn replayed_sequence_number_is_refused() {
    let mut signer = client_signer();
    let mut verifier = ecm_verifier();
    let first = signer.seal(to_ecm(), Id128([0; 16]), query(), NOW).unwrap();
    let second = signer.seal(to_ecm(), Id128([0; 16]), query(), NOW).unwrap();
    verifier.open(&first, &keys(), NOW).unwrap();
    verifier.open(&second, &keys(), NOW).unwrap();
    // The same frame again, and an older one.
    for frame in [&second, &first] {
        let err = verifier.open(frame, &keys(), NOW).unwrap_err();
        assert!(matches!(err, EnvelopeError::Replay { .. }), "{err}");
    }
    // Replay state survives a restart when persisted.
    let state = verifier.replay_state().clone();
    let mut restarted = ecm_verifier().with_replay_state(state);
    assert!(matches!(
        restarted.open(&second, &keys(), NOW),
        Err(EnvelopeError::Replay { .. })
    ));
}

#[test]
fn failed_envelope_does_not_advance_replay_state() {
    let mut verifier = ecm_verifier();
    let mut forger =
        EnvelopeSigner::new(Participant::Client, key(99), 1_000, FrameLimits::default());
    let forged = forger.seal(to_ecm(), Id128([0; 16]), query(), NOW).unwrap();
    assert!(verifier.open(&forged, &keys(), NOW).is_err());
    // A genuine message with a lower sequence number still gets through.
    let genuine = client_signer()
        .seal(to_ecm(), Id128([0; 16]), query(), NOW)
        .unwrap();
    verifier.open(&genuine, &keys(), NOW).unwrap();
}

#[test]
fn wrong_recipient_is_refused() {
    let frame = client_signer()
        .seal(Recipient::Device(bcm()), Id128([0; 16]), query(), NOW)
        .unwrap();
    let err = ecm_verifier().open(&frame, &keys(), NOW).unwrap_err();
    assert!(matches!(err, EnvelopeError::WrongRecipient(_)), "{err}");
    // A group the receiver is not in.
    let frame = client_signer()
        .seal(
            Recipient::Group(GroupName::new("hmi").unwrap()),
            Id128([0; 16]),
            query(),
            NOW,
        )
        .unwrap();
    assert!(matches!(
        ecm_verifier().open(&frame, &keys(), NOW),
        Err(EnvelopeError::WrongRecipient(_))
    ));
}

#[test]
fn prefix_and_group_recipients_are_accepted() {
    let mut signer = client_signer();
    let mut verifier = ecm_verifier();
    let powertrain = esync_proto::id::DevicePath::new("/powertrain").unwrap();
    let f1 = signer
        .seal(
            Recipient::DevicePrefix(powertrain),
            Id128([0; 16]),
            query(),
            NOW,
        )
        .unwrap();
    verifier.open(&f1, &keys(), NOW).unwrap();
    let group = Recipient::Group(GroupName::new("update-agents").unwrap());
    let f2 = signer.seal(group, Id128([0; 16]), query(), NOW).unwrap();
    verifier.open(&f2, &keys(), NOW).unwrap();
    let body = esync_proto::id::DevicePath::new("/body").unwrap();
    let f3 = signer
        .seal(Recipient::DevicePrefix(body), Id128([0; 16]), query(), NOW)
        .unwrap();
    assert!(verifier.open(&f3, &keys(), NOW).is_err());
}

#[test]
fn agent_cannot_issue_commands() {
    // A correctly signed envelope from an Agent carrying a Client-only command.
    let mut bcm_signer = EnvelopeSigner::new(
        Participant::Device(bcm()),
        key(3),
        1,
        FrameLimits::default(),
    );
    let cmd = InstallStart {
        update_id: Id128([1; 16]),
        stage: 0,
        await_confirm: false,
    };
    let frame = bcm_signer
        .seal(to_ecm(), Id128([0; 16]), cmd.into(), NOW)
        .unwrap();
    let err = ecm_verifier().open(&frame, &keys(), NOW).unwrap_err();
    assert!(matches!(err, EnvelopeError::NotAllowed { .. }), "{err}");
}

#[test]
fn unknown_sender_is_refused() {
    let stranger =
        Participant::Device(esync_proto::id::DevicePath::new("/aftermarket/dongle").unwrap());
    let mut s = EnvelopeSigner::new(stranger, key(50), 1, FrameLimits::default());
    let frame = s
        .seal(
            Recipient::Client,
            Id128([0; 16]),
            Payload::from(LogReport { records: vec![] }),
            NOW,
        )
        .unwrap();
    assert!(matches!(
        client_verifier().open(&frame, &keys(), NOW),
        Err(EnvelopeError::UnknownSender(_))
    ));
}

#[test]
fn stale_timestamp_is_refused_when_window_set() {
    let frame = client_signer()
        .seal(to_ecm(), Id128([0; 16]), query(), NOW)
        .unwrap();
    let mut v = ecm_verifier().with_max_skew(60_000);
    let err = v.open(&frame, &keys(), NOW + 120_000).unwrap_err();
    assert!(matches!(err, EnvelopeError::Stale { .. }), "{err}");
    v.open(&frame, &keys(), NOW + 30_000).unwrap();
}

#[test]
fn other_protocol_version_is_refused() {
    let mut signed = client_signer()
        .sign(to_ecm(), Id128([0; 16]), query(), NOW)
        .unwrap();
    signed.signed[0] = 2;
    assert!(matches!(
        ecm_verifier().open_signed(&signed, &keys(), NOW),
        Err(EnvelopeError::UnsupportedVersion(2))
    ));
}

#[test]
fn oversized_envelope_is_refused_before_consuming_a_sequence_number() {
    let mut s = EnvelopeSigner::new(Participant::Client, key(1), 1, FrameLimits::new(1024));
    let big = TransferChunk {
        transfer_id: Id128([0; 16]),
        index: 0,
        offset: 0,
        data: vec![0; 4096],
    };
    assert!(s.sign(to_ecm(), Id128([0; 16]), big.into(), NOW).is_err());
    assert_eq!(s.next_seq(), 1);
    let f = s.seal(to_ecm(), Id128([0; 16]), query(), NOW).unwrap();
    assert!(SignedEnvelope::from_frame(&f, FrameLimits::new(1024)).is_ok());
}
