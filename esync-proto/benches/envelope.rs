//! Encode + sign and decode + verify of a typical status message
//! (an Agent's `Progress` report), in messages per second.
//!
//! `cargo bench -p esync-proto --bench envelope`

#![allow(
    missing_docs,
    reason = "criterion macros generate undocumented functions"
)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, Id128};
use esync_proto::message::{Participant, Payload, Phase, Progress};
use std::collections::BTreeMap;

const NOW: u64 = 1_795_000_000_000;

fn status() -> Payload {
    Progress {
        update_id: Id128([0x11; 16]),
        phase: Phase::Write,
        done: 3_407_872,
        total: 8_388_608,
    }
    .into()
}

fn bench(c: &mut Criterion) {
    let ecm = DevicePath::new("/powertrain/ecm").expect("valid path");
    let key = SigningKey::from_bytes(&[2; 32]);
    let me = Participant::Device(ecm);
    let mut keys = BTreeMap::new();
    keys.insert(me.clone(), key.verifying_key());
    let limits = FrameLimits::default();

    let mut group = c.benchmark_group("status-message");
    group.throughput(Throughput::Elements(1));

    let mut signer = EnvelopeSigner::new(me.clone(), key.clone(), 1, limits);
    group.bench_function("encode+sign", |b| {
        b.iter(|| {
            signer
                .seal(Recipient::Client, Id128([1; 16]), black_box(status()), NOW)
                .expect("fits")
        })
    });

    // Pre-sign a large batch with increasing sequence numbers so that every
    // verification is a fresh, accepted message (not a replay).
    let mut signer = EnvelopeSigner::new(me, key, 1, limits);
    let frames: Vec<Vec<u8>> = (0..20_000)
        .map(|_| {
            signer
                .seal(Recipient::Client, Id128([1; 16]), status(), NOW)
                .expect("fits")
        })
        .collect();
    println!("typical status frame: {} bytes", frames[0].len());
    let identity = ReceiverIdentity {
        me: Participant::Client,
        groups: vec![],
    };
    let mut verifier = Verifier::new(identity.clone(), limits);
    let mut i = 0usize;
    group.bench_function("decode+verify", |b| {
        b.iter(|| {
            if i == frames.len() {
                // Start over with a fresh replay state.
                verifier = Verifier::new(identity.clone(), limits);
                i = 0;
            }
            let v = verifier.open(&frames[i], &keys, NOW).expect("verifies");
            i += 1;
            black_box(v)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
