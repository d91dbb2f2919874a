//! Structured fuzzing: every generated envelope encodes and decodes to itself.
#![no_main]

use esync_proto::envelope::Envelope;
use esync_proto::frame::{self, FrameLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|env: Envelope| {
    let limits = FrameLimits::new(16 << 20);
    let bytes = frame::encode(&env, limits).expect("generated envelopes fit");
    let back: Envelope = frame::decode(&bytes, limits).expect("own encoding decodes");
    assert_eq!(bytes, frame::encode(&back, limits).expect("re-encodes"));
});
