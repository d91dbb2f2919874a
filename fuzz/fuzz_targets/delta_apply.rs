//! A whole patch applied to a fixed source image: header, stream decoders
//! (zstd, xz, bzip2, zero-run), control triples, bounded output.
#![no_main]

use esync_package::delta::format::{parse_header, sniff};
use esync_package::delta::{apply_patch, ApplyLimits, TargetSpec};
use esync_package::digest::sha256;
use esync_proto::id::Sha256Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|patch: &[u8]| {
    let source = esync_fuzz::delta_source();
    let Some(format) = sniff(patch) else { return };
    let Ok(header) = parse_header(format, patch, patch.len() as u64) else {
        return;
    };
    let limits = ApplyLimits {
        max_target_length: 1 << 20,
        block: 4096,
        ..ApplyLimits::default()
    };
    let target = TargetSpec {
        length: header.target_length,
        sha256: Sha256Digest([0; 32]),
    };
    let mut out = Vec::new();
    let r = apply_patch(
        format,
        &source,
        &sha256(source),
        &patch,
        &target,
        &mut out,
        &limits,
    );
    assert!(out.len() as u64 <= header.target_length.min(limits.max_target_length));
    assert!(r.is_err() || out.len() as u64 == header.target_length);
});
