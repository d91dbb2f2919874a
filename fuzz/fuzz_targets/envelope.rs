//! Any byte string through full envelope verification.
#![no_main]

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use esync_proto::envelope::{ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::DevicePath;
use esync_proto::message::Participant;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ecm = DevicePath::new("/powertrain/ecm").expect("valid path");
    let mut keys = BTreeMap::new();
    keys.insert(
        Participant::Client,
        SigningKey::from_bytes(&[1; 32]).verifying_key(),
    );
    let mut v = Verifier::new(
        ReceiverIdentity {
            me: Participant::Device(ecm),
            groups: vec![],
        },
        FrameLimits::new(64 * 1024),
    );
    let _ = v.open(data, &keys, 1_795_000_000_000);
});
