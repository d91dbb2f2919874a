//! Any byte string through the frame decoder and the envelope body decoder.
#![no_main]

use esync_proto::envelope::{Envelope, SignedEnvelope};
use esync_proto::frame::{self, FrameLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = FrameLimits::new(64 * 1024);
    if let Ok(signed) = SignedEnvelope::from_frame(data, limits) {
        let _ = signed.unverified_header();
        let _ = frame::decode_body::<Envelope>(&signed.signed);
    }
    let _ = frame::decode::<Envelope>(data, limits);
});
