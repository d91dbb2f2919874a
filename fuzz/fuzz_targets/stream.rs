//! Any byte string, split at arbitrary points, through the stream reassembler.
#![no_main]

use esync_proto::frame::{FrameDecoder, FrameLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let mut d = FrameDecoder::new(FrameLimits::new(4096));
    for piece in rest.chunks(usize::from(step).max(1)) {
        d.push(piece);
        while let Ok(Some(body)) = d.next_body() {
            assert!(body.len() <= 4096);
        }
        assert!(d.buffered() <= 4096 + 5 + usize::from(step).max(1));
    }
});
