//! Property tests: every message kind round-trips through postcard, frames
//! and signed envelopes.

mod common;

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use common::*;
use esync_proto::envelope::{Envelope, EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::{self, FrameLimits};
use esync_proto::id::Id128;
use esync_proto::message::{Participant, Payload};
use proptest::prelude::*;

/// Round-trips one envelope; compares encodings (floats may be NaN, which
/// is not equal to itself) and, when there is no NaN, values too.
fn round_trip(env: &Envelope) -> Result<(), TestCaseError> {
    let limits = FrameLimits::new(16 << 20);
    let bytes = frame::encode(env, limits).expect("encodes");
    let back: Envelope = frame::decode(&bytes, limits).expect("decodes");
    let again = frame::encode(&back, limits).expect("re-encodes");
    prop_assert_eq!(&bytes, &again);
    if !format!("{env:?}").contains("NaN") {
        prop_assert_eq!(env, &back);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_envelopes_round_trip(seed in proptest::collection::vec(any::<u8>(), 64..2048)) {
        let mut u = Unstructured::new(&seed);
        if let Ok(env) = Envelope::arbitrary(&mut u) {
            round_trip(&env)?;
        }
    }

    #[test]
    fn arbitrary_payloads_sign_and_verify(seed in proptest::collection::vec(any::<u8>(), 64..2048)) {
        let mut u = Unstructured::new(&seed);
        let Ok(payload) = Payload::arbitrary(&mut u) else { return Ok(()) };
        // Send each payload from a participant allowed to send it, to a receiver that accepts it.
        let (sender, seed_byte) = match payload.allowed_senders() {
            esync_proto::message::SenderClass::Device => (Participant::Device(ecm()), 2),
            _ => (Participant::Client, 1),
        };
        let receiver = match &sender {
            Participant::Client => Participant::Device(ecm()),
            _ => Participant::Client,
        };
        let recipient = match &receiver {
            Participant::Client => esync_proto::envelope::Recipient::Client,
            _ => to_ecm(),
        };
        let limits = FrameLimits::new(16 << 20);
        let mut signer = EnvelopeSigner::new(sender, key(seed_byte), 5, limits);
        let frame = signer.seal(recipient, Id128([1; 16]), payload.clone(), NOW).expect("seals");
        let mut verifier = Verifier::new(ReceiverIdentity { me: receiver, groups: vec![] }, limits);
        let opened = verifier.open(&frame, &keys(), NOW).expect("verifies");
        prop_assert_eq!(
            postcard::to_allocvec(&opened.payload).expect("encodes"),
            postcard::to_allocvec(&payload).expect("encodes")
        );
        prop_assert_eq!(opened.header.seq, 5);
    }
}

/// Every payload kind is produced by the generator and round-trips: the
/// property tests above cannot silently skip a message type.
#[test]
fn every_message_kind_round_trips() {
    let mut seen = BTreeSet::new();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1024];
    for _ in 0..200_000 {
        for b in buf.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let mut u = Unstructured::new(&buf);
        if let Ok(env) = Envelope::arbitrary(&mut u) {
            round_trip(&env).expect("round trip");
            seen.insert(env.payload.kind());
        }
        if seen.len() == Payload::KINDS.len() {
            break;
        }
    }
    let missing: Vec<_> = Payload::KINDS
        .iter()
        .filter(|k| !seen.contains(*k))
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
