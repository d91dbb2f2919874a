//! The delta header parser (classic BSDIFF40 and the esync container, v1
//! and v2): accepted sections lie inside the patch, in order.
#![no_main]

use esync_package::delta::format::{parse_header, sniff};
use esync_proto::message::PatchFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sniff(data);
    for format in [
        PatchFormat::Bsdiff40,
        PatchFormat::BsdiffZstd,
        PatchFormat::BsdiffXz,
    ] {
        for patch_len in [data.len() as u64, u64::MAX] {
            let Ok(h) = parse_header(format, data, patch_len) else {
                continue;
            };
            assert_eq!(sniff(data), Some(format));
            let mut end = 0;
            for (off, len) in h.sections {
                assert!(off >= end && off.checked_add(len).is_some_and(|e| e <= patch_len));
                end = off + len;
            }
        }
    }
});
