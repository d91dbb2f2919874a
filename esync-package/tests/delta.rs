//! Delta generation and application: exact output, refusal of a wrong
//! source before any write, typed errors for damaged patches, and
//! compatibility with the standard `bsdiff` tool.
#![cfg(feature = "generate")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io;
use std::process::Command;

use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_package::delta::{
    apply_patch, format, ApplyLimits, ApplyStep, DeltaError, PatchApplication,
    PatchApplicationState, SlotWriter, Stream, TargetSpec,
};
use esync_package::digest::sha256;
use esync_proto::message::{FailureCode, PatchFormat};
use proptest::prelude::*;

const FORMATS: [PatchFormat; 3] = [
    PatchFormat::Bsdiff40,
    PatchFormat::BsdiffZstd,
    PatchFormat::BsdiffXz,
];

/// A deterministic pseudo-random "firmware" and an edited version of it.
fn images(len: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Structured content: repeated records with small varying fields.
    let mut old = Vec::with_capacity(len);
    while old.len() < len {
        let r = next();
        old.extend_from_slice(b"\x55\x48\x89\xe5\x48\x83\xec");
        old.extend_from_slice(&r.to_le_bytes()[..(r % 8) as usize]);
    }
    old.truncate(len);
    let mut new = old.clone();
    // Shift addresses, insert and delete regions.
    for i in (0..new.len()).step_by(97) {
        new[i] = new[i].wrapping_add(4);
    }
    let ins: Vec<u8> = (0..len / 20).map(|_| next() as u8).collect();
    new.splice(len / 3..len / 3, ins);
    new.drain(len / 2..len / 2 + len / 30);
    (old, new)
}

fn spec(new: &[u8]) -> TargetSpec {
    TargetSpec {
        length: new.len() as u64,
        sha256: sha256(new),
    }
}

fn apply(format: PatchFormat, old: &[u8], patch: &[u8], new: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::new();
    apply_patch(
        format,
        &old,
        &sha256(old),
        &patch,
        &spec(new),
        &mut out,
        &ApplyLimits::default(),
    )?;
    Ok(out)
}

#[test]
fn every_format_reproduces_the_exact_target() {
    let (old, new) = images(300_000, 7);
    for f in FORMATS {
        let patch = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
        let out = apply(f, &old, &patch, &new).unwrap();
        assert!(out == new, "{f:?} output differs");
        assert!(
            patch.len() < new.len() / 4,
            "{f:?} patch {} too large",
            patch.len()
        );
    }
}

#[test]
fn edge_cases_empty_and_identical() {
    for f in FORMATS {
        for (old, new) in [
            (vec![], b"brand new".to_vec()),
            (b"old content".to_vec(), vec![]),
            (b"same same same".to_vec(), b"same same same".to_vec()),
        ] {
            let patch = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
            assert_eq!(apply(f, &old, &patch, &new).unwrap(), new, "{f:?}");
        }
    }
}

#[test]
fn segmented_generation_is_still_exact() {
    // Windows of 1 MiB over a 3 MiB image: three segments joined by seeks.
    let (old, new) = images(3 << 20, 11);
    for f in [PatchFormat::BsdiffZstd, PatchFormat::Bsdiff40] {
        let opts = GenerateOptions {
            max_window: 1 << 20,
            ..GenerateOptions::new(f)
        };
        let patch = generate_patch(&old, &new, &opts).unwrap();
        assert!(apply(f, &old, &patch, &new).unwrap() == new, "{f:?}");
    }
}

#[test]
fn container_versions_one_and_two_both_apply() {
    let (old, new) = images(200_000, 21);
    for f in [PatchFormat::BsdiffZstd, PatchFormat::BsdiffXz] {
        let v2 = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
        let v1 = generate_patch(
            &old,
            &new,
            &GenerateOptions {
                zero_run_diff: false,
                ..GenerateOptions::new(f)
            },
        )
        .unwrap();
        assert!(v2[..8].ends_with(b"2"), "{f:?} default is container v2");
        assert!(!v1[..8].ends_with(b"2"), "{f:?} v1 on request");
        let h2 = format::parse_header(f, &v2[..72], v2.len() as u64).unwrap();
        let h1 = format::parse_header(f, &v1[..72], v1.len() as u64).unwrap();
        assert!(h2.zero_run_diff && !h1.zero_run_diff);
        assert_eq!(h1.raw_lengths, h2.raw_lengths, "same bsdiff streams");
        assert_eq!(apply(f, &old, &v1, &new).unwrap(), new, "{f:?} v1");
        assert_eq!(apply(f, &old, &v2, &new).unwrap(), new, "{f:?} v2");
    }
}

fn zstd_frame(data: &[u8]) -> Vec<u8> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    e.include_checksum(true).unwrap();
    e.set_pledged_src_size(Some(data.len() as u64)).unwrap();
    io::Write::write_all(&mut e, data).unwrap();
    e.finish().unwrap()
}

/// A hand-built version 2 zstd patch: one control `(add = len, 0, 0)` and
/// the given zero-run coded diff stream.
fn handmade_v2(len: u64, coded_diff: &[u8]) -> Vec<u8> {
    let mut ctrl = Vec::new();
    for v in [len as i64, 0, 0] {
        ctrl.extend_from_slice(&format::encode_int(v));
    }
    let (c, d, e) = (zstd_frame(&ctrl), zstd_frame(coded_diff), zstd_frame(&[]));
    let mut p = format::container_header_v2(
        PatchFormat::BsdiffZstd,
        len,
        [c.len() as u64, d.len() as u64, e.len() as u64],
        [24, len, 0],
        format::FLAG_ZERO_RUN_DIFF,
    )
    .to_vec();
    p.extend_from_slice(&c);
    p.extend_from_slice(&d);
    p.extend_from_slice(&e);
    p
}

#[test]
fn handmade_zero_run_patch_follows_the_documented_layout() {
    let old = b"abcdefgh".to_vec();
    let mut new = old.clone();
    new[3] = new[3].wrapping_add(5);
    // 3 zeros, 1 literal (5), 4 zeros.
    let patch = handmade_v2(8, &[3, 1, 5, 4, 0]);
    let f = PatchFormat::BsdiffZstd;
    assert_eq!(apply(f, &old, &patch, &new).unwrap(), new);
    // The generator codes the same diff stream the same way.
    assert_eq!(
        esync_package::delta::zero_run::encode(&[0, 0, 0, 5, 0, 0, 0, 0]),
        [3, 1, 5, 4, 0]
    );
}

#[test]
fn malformed_zero_run_streams_give_typed_errors() {
    let old = b"abcdefgh".to_vec();
    let new = old.clone();
    let f = PatchFormat::BsdiffZstd;
    for (coded, what) in [
        (&[0u8, 0, 8, 0][..], "empty record"),
        (&[0x80], "varint cut"),
        (&[0xff; 11], "overlong varint"),
        (&[4], "record cut between its lengths"),
        (&[0, 3, 1, 2], "literals cut"),
        (&[4, 0], "diff stream shorter than the control's add"),
        (&[9, 0], "diff stream longer than declared"),
        (&[8, 0, 1, 0], "trailing record"),
    ] {
        let mut slot = Recorder::default();
        let r = apply_patch(
            f,
            &old,
            &sha256(&old),
            &handmade_v2(8, coded),
            &spec(&new),
            &mut slot,
            &ApplyLimits::default(),
        );
        assert!(
            matches!(
                r,
                Err(DeltaError::Decompress {
                    stream: Stream::Diff,
                    ..
                } | DeltaError::Truncated(Stream::Diff)
                    | DeltaError::Corrupt(_))
            ),
            "{what}: {r:?}"
        );
        assert_eq!(r.unwrap_err().failure_code(), FailureCode::DeltaCorrupt);
    }
    // The well-formed stream for the same images applies.
    assert_eq!(apply(f, &old, &handmade_v2(8, &[8, 0]), &new).unwrap(), new);
}

/// The five patch encodings: `BSDIFF40` and both container versions of
/// zstd and xz.
fn every_encoding(old: &[u8], new: &[u8]) -> Vec<(&'static str, PatchFormat, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, f, zero_run) in [
        ("bsdiff40", PatchFormat::Bsdiff40, false),
        ("zstd v1", PatchFormat::BsdiffZstd, false),
        ("zstd v2", PatchFormat::BsdiffZstd, true),
        ("xz v1", PatchFormat::BsdiffXz, false),
        ("xz v2", PatchFormat::BsdiffXz, true),
    ] {
        let opts = GenerateOptions {
            zero_run_diff: zero_run,
            ..GenerateOptions::new(f)
        };
        let patch = generate_patch(old, new, &opts).unwrap();
        if f != PatchFormat::Bsdiff40 {
            let v = if zero_run { b'2' } else { b'1' };
            assert_eq!(patch[7], v, "{name}: container version");
        }
        out.push((name, f, patch));
    }
    out
}

/// Steps `app` to the end with the budgets `budgets` (cycled), checking after
/// every step that it wrote at most `budget + block` bytes and that the
/// reported progress is what reached the slot.
fn step_to_end<S, P>(
    app: &mut PatchApplication<S, P>,
    budgets: &[u64],
    slot: &mut Recorder,
    total: u64,
) -> (esync_package::delta::ApplyReport, usize)
where
    S: esync_package::delta::SourceImage,
    P: esync_package::delta::SourceImage + Clone,
{
    let block = app.block() as u64;
    for (steps, budget) in budgets.iter().copied().cycle().enumerate() {
        let before = slot.bytes.len() as u64;
        let r = app.step(slot, budget).unwrap();
        let wrote = slot.bytes.len() as u64 - before;
        assert!(
            wrote <= budget + block,
            "step {steps} wrote {wrote} > budget {budget} + block {block}"
        );
        match r {
            ApplyStep::Pending { written, total: t } => {
                assert_eq!(written, slot.bytes.len() as u64);
                assert_eq!(t, total);
                // All bytes may be written while the stream ends are checked.
                assert!(written <= total, "{written} of {total} bytes");
            }
            ApplyStep::Done(report) => return (report, steps + 1),
        }
    }
    unreachable!("cycle() never ends")
}

#[test]
fn stepwise_application_respects_the_budget_and_equals_one_shot() {
    let (old, new) = images(120_000, 31);
    let limits = ApplyLimits {
        block: 4096,
        ..ApplyLimits::default()
    };
    for (name, f, patch) in every_encoding(&old, &new) {
        let mut one_shot = Recorder::default();
        let expected = apply_patch(
            f,
            &old,
            &sha256(&old),
            &patch,
            &spec(&new),
            &mut one_shot,
            &limits,
        )
        .unwrap();
        assert!(one_shot.bytes == new, "{name}: one-shot output");
        for budgets in [
            &[1u64][..],
            &[1000],
            &[3 * 4096 + 7],
            &[1, 50_000, 10, 4096, 333],
        ] {
            let mut app =
                PatchApplication::new(f, &old[..], sha256(&old), &patch[..], spec(&new), limits);
            let mut slot = Recorder::default();
            let (report, steps) = step_to_end(&mut app, budgets, &mut slot, new.len() as u64);
            assert!(slot.bytes == one_shot.bytes, "{name} {budgets:?}: output");
            assert_eq!(report, expected, "{name} {budgets:?}: report");
            // Hashing the source and writing the target each take their
            // share of steps: the work really is spread out.
            let budget_max = budgets.iter().max().copied().unwrap();
            let least = (old.len() + new.len()) as u64 / (budget_max + 4096);
            assert!(steps as u64 >= least, "{name} {budgets:?}: {steps} steps");
            // A finished application refuses further steps.
            assert!(matches!(app.step(&mut slot, 1), Err(DeltaError::Ended)));
        }
    }
}

#[test]
fn reader_free_state_lent_fresh_readers_each_step_equals_one_shot() {
    // The state holds no reader: every step gets its own copies of the
    // source and the patch (as an Agent lends its device for one poll), and
    // the output is the one-shot output, within the budget at every step.
    let (old, new) = images(90_000, 37);
    let limits = ApplyLimits {
        block: 2048,
        ..ApplyLimits::default()
    };
    for (name, f, patch) in every_encoding(&old, &new) {
        let mut state = PatchApplicationState::new(f, sha256(&old), spec(&new), limits);
        let mut slot = Recorder::default();
        let budget = 10_000u64;
        let mut steps = 0u64;
        let report = loop {
            let (source, lent_patch) = (old.clone(), patch.clone());
            let before = slot.bytes.len() as u64;
            let r = state.step(&source, &lent_patch, &mut slot, budget).unwrap();
            drop((source, lent_patch));
            let wrote = slot.bytes.len() as u64 - before;
            assert!(wrote <= budget + 2048, "{name}: step wrote {wrote}");
            assert_eq!(state.written(), slot.bytes.len() as u64);
            steps += 1;
            if let ApplyStep::Done(report) = r {
                break report;
            }
        };
        assert!(slot.bytes == new, "{name}: output");
        assert_eq!(report.sha256, sha256(&new), "{name}");
        assert!(
            steps >= (old.len() + new.len()) as u64 / (budget + 2048),
            "{name}: {steps}"
        );
        assert!(matches!(
            state.step(&old, &patch, &mut slot, 1),
            Err(DeltaError::Ended)
        ));
    }
}

#[test]
fn interleaved_applications_give_the_one_shot_output() {
    // Two applications held at once (as an Agent holds one per component
    // between polls), stepped alternately with changing budgets.
    let (old, new) = images(80_000, 41);
    let encodings = every_encoding(&old, &new);
    let limits = ApplyLimits {
        block: 1024,
        ..ApplyLimits::default()
    };
    for pair in encodings.windows(2) {
        let [(na, fa, pa), (nb, fb, pb)] = pair else {
            unreachable!("windows(2)")
        };
        let mut a = PatchApplication::new(*fa, &old[..], sha256(&old), &pa[..], spec(&new), limits);
        let mut b = PatchApplication::new(*fb, &old[..], sha256(&old), &pb[..], spec(&new), limits);
        let (mut sa, mut sb) = (Recorder::default(), Recorder::default());
        let (mut done_a, mut done_b) = (None, None);
        let mut budget = 7u64;
        while done_a.is_none() || done_b.is_none() {
            budget = budget * 31 % 20_011 + 1;
            if done_a.is_none() {
                if let ApplyStep::Done(r) = a.step(&mut sa, budget).unwrap() {
                    done_a = Some(r);
                }
            }
            if done_b.is_none() {
                if let ApplyStep::Done(r) = b.step(&mut sb, budget / 2).unwrap() {
                    done_b = Some(r);
                }
            }
        }
        assert!(sa.bytes == new, "{na}: interleaved output");
        assert!(sb.bytes == new, "{nb}: interleaved output");
        assert_eq!(done_a.unwrap().sha256, sha256(&new));
        assert_eq!(done_b.unwrap().sha256, sha256(&new));
    }
}

#[test]
fn stepwise_source_check_comes_before_any_write_and_ends_the_application() {
    let (old, new) = images(60_000, 43);
    let mut wrong = old.clone();
    wrong[59_000] ^= 1;
    let limits = ApplyLimits {
        block: 512,
        ..ApplyLimits::default()
    };
    for (name, f, patch) in every_encoding(&old, &new) {
        let mut app =
            PatchApplication::new(f, &wrong[..], sha256(&old), &patch[..], spec(&new), limits);
        let mut slot = Recorder::default();
        let mut steps = 0u64;
        let err = loop {
            match app.step(&mut slot, 1000) {
                Ok(ApplyStep::Pending { written, .. }) => {
                    assert_eq!(written, 0, "{name}: nothing written while hashing");
                    steps += 1;
                }
                Ok(ApplyStep::Done(_)) => panic!("{name}: wrong source accepted"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, DeltaError::SourceMismatch), "{name}: {err:?}");
        // Hashing 60 000 bytes at about 1000 a step takes many steps.
        assert!(steps >= 50, "{name}: hashed in {steps} steps");
        assert_eq!(slot.writes, 0, "{name}: slot untouched");
        assert!(matches!(app.step(&mut slot, 1000), Err(DeltaError::Ended)));
    }
}

#[test]
fn empty_controls_count_against_the_step_budget() {
    // 20 000 controls that produce nothing, then one that adds 8 bytes: a
    // step of budget 240 (ten triples) must not run through all of them.
    let old = b"abcdefgh".to_vec();
    let new = old.clone();
    let mut ctrl = format::encode_control([0, 0, 0]).repeat(20_000);
    ctrl.extend_from_slice(&format::encode_control([8, 0, 0]));
    let (c, d, e) = (zstd_frame(&ctrl), zstd_frame(&[0; 8]), zstd_frame(&[]));
    let mut patch = format::container_header(
        PatchFormat::BsdiffZstd,
        8,
        [c.len() as u64, d.len() as u64, e.len() as u64],
        [ctrl.len() as u64, 8, 0],
    )
    .to_vec();
    patch.extend_from_slice(&c);
    patch.extend_from_slice(&d);
    patch.extend_from_slice(&e);
    let mut app = PatchApplication::new(
        PatchFormat::BsdiffZstd,
        &old[..],
        sha256(&old),
        &patch[..],
        spec(&new),
        ApplyLimits::default(),
    );
    let mut slot = Recorder::default();
    let (report, steps) = step_to_end(&mut app, &[240], &mut slot, 8);
    assert_eq!(slot.bytes, new);
    assert_eq!(report.controls, 20_001);
    assert!(steps >= 20_000 / 10, "{steps} steps for 20 001 controls");
}

#[test]
fn an_application_can_move_between_threads() {
    // An Agent holding an application between polls may live in a
    // multi-threaded runtime: with `Send` inputs the state is `Send`.
    fn send<T: Send>(t: T) -> T {
        t
    }
    let (old, new) = images(20_000, 47);
    let patch = generate_patch(&old, &new, &GenerateOptions::new(PatchFormat::BsdiffXz)).unwrap();
    let (old_a, patch_a) = (std::sync::Arc::new(old.clone()), std::sync::Arc::new(patch));
    let mut app = send(PatchApplication::new(
        PatchFormat::BsdiffXz,
        old_a,
        sha256(&old),
        patch_a,
        spec(&new),
        ApplyLimits::default(),
    ));
    let mut slot = Recorder::default();
    // Start here, finish on another thread.
    assert!(matches!(
        app.step(&mut slot, 1000).unwrap(),
        ApplyStep::Pending { .. }
    ));
    let slot = std::thread::spawn(move || {
        while let ApplyStep::Pending { .. } = app.step(&mut slot, 4096).unwrap() {}
        slot
    })
    .join()
    .unwrap();
    assert!(slot.bytes == new);
}

/// A slot writer that records whether it was touched.
#[derive(Default)]
struct Recorder {
    writes: usize,
    bytes: Vec<u8>,
}

impl SlotWriter for Recorder {
    fn write_slot(&mut self, data: &[u8]) -> io::Result<()> {
        self.writes += 1;
        self.bytes.extend_from_slice(data);
        Ok(())
    }
}

#[test]
fn wrong_source_is_refused_before_any_write() {
    let (old, new) = images(100_000, 3);
    for f in FORMATS {
        let patch = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
        let mut wrong = old.clone();
        wrong[5000] ^= 1;
        let mut slot = Recorder::default();
        // The signed source digest is the real one; the installed image differs.
        let r = apply_patch(
            f,
            &wrong,
            &sha256(&old),
            &patch,
            &spec(&new),
            &mut slot,
            &ApplyLimits::default(),
        );
        assert!(matches!(r, Err(DeltaError::SourceMismatch)), "{f:?}: {r:?}");
        assert_eq!(slot.writes, 0, "slot writer untouched");
    }
}

#[test]
fn declared_length_and_limits_are_enforced_before_writing() {
    let (old, new) = images(50_000, 5);
    let f = PatchFormat::BsdiffZstd;
    let patch = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
    let mut slot = Recorder::default();
    let mut short = spec(&new);
    short.length -= 1;
    let r = apply_patch(
        f,
        &old,
        &sha256(&old),
        &patch,
        &short,
        &mut slot,
        &ApplyLimits::default(),
    );
    assert!(
        matches!(r, Err(DeltaError::TargetLengthMismatch { .. })),
        "{r:?}"
    );
    let limits = ApplyLimits {
        max_target_length: 1000,
        ..ApplyLimits::default()
    };
    let r = apply_patch(
        f,
        &old,
        &sha256(&old),
        &patch,
        &spec(&new),
        &mut slot,
        &limits,
    );
    assert!(matches!(r, Err(DeltaError::LimitExceeded { .. })), "{r:?}");
    // A window larger than the device allows is refused by the decoder
    // (a plain diff stream, so that it needs a 64 KiB window).
    let big = generate_patch(
        &old,
        &new,
        &GenerateOptions {
            window_log: 20,
            zero_run_diff: false,
            ..GenerateOptions::new(f)
        },
    )
    .unwrap();
    let tight = ApplyLimits {
        max_window_log: 10,
        ..ApplyLimits::default()
    };
    let r = apply_patch(f, &old, &sha256(&old), &big, &spec(&new), &mut slot, &tight);
    assert!(matches!(r, Err(DeltaError::Decompress { .. })), "{r:?}");
    // Wrong format for the bytes.
    let r = apply_patch(
        PatchFormat::BsdiffXz,
        &old,
        &sha256(&old),
        &patch,
        &spec(&new),
        &mut slot,
        &ApplyLimits::default(),
    );
    assert!(matches!(r, Err(DeltaError::BadMagic(_))), "{r:?}");
    assert_eq!(slot.writes, 0);
}

#[test]
fn every_truncation_fails_with_a_typed_error() {
    let (old, new) = images(20_000, 9);
    for f in FORMATS {
        let patch = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
        let step = (patch.len() / 150).max(1);
        for cut in (0..patch.len()).step_by(step).chain([patch.len() - 1]) {
            let r = apply(f, &old, &patch[..cut], &new);
            assert!(
                r.is_err(),
                "{f:?} truncated at {cut}/{} reported success",
                patch.len()
            );
        }
    }
}

/// Patches generated once for the property test.
/// (format, old, new, patch).
type Fixture = (PatchFormat, Vec<u8>, Vec<u8>, Vec<u8>);

fn fixtures() -> &'static [Fixture] {
    static F: std::sync::OnceLock<Vec<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let (old, new) = images(8_000, 13);
        FORMATS
            .iter()
            .map(|&f| {
                let p = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
                (f, old.clone(), new.clone(), p)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any mutation of a patch either still yields the exact target (a
    /// mutation the hash cannot tell apart is impossible, so in practice:
    /// only if the bytes were unchanged) or a typed error, never a wrong
    /// success.
    #[test]
    fn mutated_patches_never_succeed_wrongly(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
    ) {
        let (f, old, new, patch) = &fixtures()[which];
        let mut p = patch.clone();
        for (idx, byte, kind) in edits {
            if p.is_empty() { break; }
            let i = idx.index(p.len());
            match kind {
                0 => p[i] ^= byte | 1,
                1 => { p.remove(i); }
                2 => p.insert(i, byte),
                _ => p.truncate(i),
            }
        }
        let mut out = Vec::new();
        let r = apply_patch(*f, old, &sha256(old), &p, &spec(new), &mut out, &ApplyLimits::default());
        if let Ok(rep) = r {
            prop_assert_eq!(&out, new);
            prop_assert_eq!(rep.sha256, sha256(new));
        }
        prop_assert!(out.len() <= new.len(), "never writes past the target length");
    }
}

fn tool(name: &str) -> bool {
    Command::new(name).arg("--help").output().is_ok()
}

#[test]
fn patch_from_the_bsdiff_tool_applies() {
    if !tool("bsdiff") {
        println!("SKIPPED: bsdiff not installed (apt-get install bsdiff)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = images(200_000, 21);
    let (o, n, p) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("patch"),
    );
    std::fs::write(&o, &old).unwrap();
    std::fs::write(&n, &new).unwrap();
    let st = Command::new("bsdiff").args([&o, &n, &p]).status().unwrap();
    assert!(st.success());
    let patch = std::fs::read(&p).unwrap();
    assert_eq!(&patch[..8], b"BSDIFF40");
    assert!(apply(PatchFormat::Bsdiff40, &old, &patch, &new).unwrap() == new);
}

#[test]
fn our_bsdiff40_applies_with_the_bspatch_tool() {
    if !tool("bspatch") {
        println!("SKIPPED: bspatch not installed (apt-get install bsdiff)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = images(200_000, 22);
    let patch = generate_patch(&old, &new, &GenerateOptions::new(PatchFormat::Bsdiff40)).unwrap();
    let (o, n, p) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("patch"),
    );
    std::fs::write(&o, &old).unwrap();
    std::fs::write(&p, &patch).unwrap();
    let st = Command::new("bspatch").args([&o, &n, &p]).status().unwrap();
    assert!(st.success());
    assert!(
        std::fs::read(&n).unwrap() == new,
        "bspatch reproduces our BSDIFF40 patch"
    );
}

/// Corpus-size round trip (slow in debug builds):
/// `cargo test -p esync-package --all-features --release -- --ignored corpus`.
#[test]
#[ignore = "corpus-size; run with --release -- --ignored"]
fn corpus_pairs_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/delta");
    let pairs = [
        ("libcrypto-3.0.17.bin", "libcrypto-3.0.20.bin"),
        ("postgres-15.18.bin", "postgres-15.20.bin"),
        ("libpython-3.11.2-u8.bin", "libpython-3.11.2-u9.bin"),
    ];
    for (a, b) in pairs {
        let Ok(old) = std::fs::read(dir.join(a)) else {
            println!("SKIPPED: corpus not found at {}", dir.display());
            return;
        };
        let new = std::fs::read(dir.join(b)).unwrap();
        for f in FORMATS {
            let patch = generate_patch(&old, &new, &GenerateOptions::new(f)).unwrap();
            assert!(apply(f, &old, &patch, &new).unwrap() == new, "{a} {f:?}");
        }
    }
}
