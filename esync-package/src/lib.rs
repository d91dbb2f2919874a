//! # esync-package
//!
//! Update packages, bsdiff-family deltas and resumable chunked transfers for
//! esync-rs.
//!
//! * [`package`]: multi-component update packages (validated on
//!   construction and on decoding), their mapping onto Uptane targets entries
//!   (`custom.esync`): the model, with no knowledge of how patches are made.
//! * [`build`]: [`build::PackageBuilder`], packages built from images (with
//!   feature `generate`, generating their deltas), and its own
//!   [`build::BuildError`].
//! * [`delta`]: patch headers and the application interface; with feature
//!   `apply` (default), device-side patch application (`delta::apply_patch`,
//!   stepwise `delta::PatchApplication`) with bounded memory and bounded
//!   work per step; with feature `generate`, server-side generation
//!   (`delta::generate`) and a delta cache (`delta::cache`).
//! * [`chunk`]: chunk lists in signed metadata, the receiver-side
//!   [`chunk::ChunkAssembler`] and sender-side [`chunk::ChunkSender`]
//!   (sans-I/O).
//!
//! ## Features: a pure model and two layers on it
//!
//! | feature | adds | C code | compression crates |
//! | --- | --- | --- | --- |
//! | none (`default-features = false`) | the model: [`package`] (packages, components, artifacts, delta descriptions, target descriptions, validation), [`chunk`], [`digest`], [`delta::format`], [`delta::zero_run`], the application interface types | none | none |
//! | `apply` (default) | the device-side applier | zstd and xz decoders | zstd, xz2, bzip2 (pure-Rust `libbz2-rs-sys`) |
//! | `generate` (implies `apply`) | qbsdiff generation, the delta cache, `build::PackageBuilder::component_with_deltas`, the `esync-pkg` CLI | qbsdiff's `divsufsort` | as `apply`, plus zstd multithreading |
//!
//! The Agent's core needs only the model; `.ci/run` checks with `cargo tree`
//! that the model pulls in no zstd, xz2, bzip2 or `cc`.
//!
//! ## Applying a patch (the Agent's API, feature `apply`)
//!
//! ```
//! # #[cfg(feature = "applier")]
//! # fn demo(installed: &dyn esync_package::delta::SourceImage,
//! #         stored_patch: &dyn esync_package::delta::SourceImage,
//! #         installed_sha: esync_proto::id::Sha256Digest,
//! #         target: esync_package::delta::TargetSpec)
//! #         -> Result<(), esync_package::delta::DeltaError> {
//! use esync_package::delta::{apply_patch, ApplyLimits, ApplyStep, PatchApplication};
//! use esync_proto::message::PatchFormat;
//! let mut slot: Vec<u8> = Vec::new(); // anything implementing `SlotWriter` (every `io::Write` does)
//! let report = apply_patch(
//!     PatchFormat::BsdiffZstd,
//!     installed,        // positioned reads of the installed image (e.g. `FileSource`)
//!     &installed_sha,   // `ImageEncoding::Delta::source_sha256` from signed metadata
//!     stored_patch,     // the received patch, positioned reads (`&[u8]` works)
//!     &target,          // `TargetSpec { length, sha256 }` of the new image
//!     &mut slot,
//!     &ApplyLimits::default(),
//! )?;
//! assert_eq!(report.written, target.length);
//!
//! // The same, a bounded quantum per call (e.g. one per `Agent::poll`):
//! let mut app = PatchApplication::new(
//!     PatchFormat::BsdiffZstd, installed, installed_sha, stored_patch, target,
//!     ApplyLimits::default(),
//! );
//! let mut slot: Vec<u8> = Vec::new();
//! let report = loop {
//!     // At most 256 KiB of work, plus one 64 KiB block, per step.
//!     match app.step(&mut slot, 256 << 10)? {
//!         ApplyStep::Pending { written, total } => assert!(written <= total),
//!         ApplyStep::Done(report) => break report,
//!     }
//! };
//! assert_eq!(report.written, target.length);
//! # Ok(()) }
//! ```
//!
//! Guarantees: the source is hashed and compared **before** anything is
//! written; the header's declared target length must equal `target.length`;
//! output is streamed in blocks and never exceeds `target.length`; the result
//! is hashed while written and compared at the end. Any truncated, corrupted
//! or mismatching patch gives a [`delta::DeltaError`] (with
//! [`delta::DeltaError::failure_code`] for the protocol report), never `Ok`.
//! The patch is taken by positioned reads rather than as an `io::Read`
//! because the three bsdiff streams are consumed side by side.
//!
//! ### Bounded work per step
//!
//! `delta::PatchApplicationState` holds one application in memory and no
//! reader: each `step` is lent the source and the patch for that call (so a
//! caller that can only borrow them per call, like an Agent borrowing its
//! device for one `poll`, keeps the state between calls) and does at most its byte budget of work plus one internal block
//! ([`delta::ApplyLimits::block`]), where a byte of work is a source byte
//! hashed, an output byte written or a control-stream byte decoded (so a
//! patch of empty controls cannot stall one step either). The first steps
//! only hash the source; nothing is written before it matches. The state is
//! resumable across calls while it is held, not across a power cut: after a
//! restart the reconstruction begins again (the Agent restarts it from its
//! journal). `delta::PatchApplication` is the state owning its readers;
//! `apply_patch` is the same state stepped to the end in one call,
//! so both give the same output, report and errors.

//! ## Memory bound of application
//!
//! The source and the patch are read with positioned reads (`pread`), so
//! neither is resident. With `B` = [`delta::ApplyLimits::block`] (64 KiB),
//! peak heap is about
//!
//! * `BsdiffZstd` (decoded by ruzstd, pure Rust, feature `apply-zstd`):
//!   `3B + Σ_streams (window_s + block_s + a few KiB of FSE/Huffman
//!   tables)`, where `window_s ≤ min(stream length, 2^window_log)` and
//!   `window_log` is bounded by [`delta::ApplyLimits::max_window_log`]
//!   (checked from each frame header before decoding; the generator uses
//!   log 22 = 4 MiB by default, so ≤ ~8.5 MiB for the diff and extra streams
//!   together, the control stream being small; a zero-run coded diff stream
//!   is itself short, e.g. 0.7 MiB for the 7.7 MiB libpython diff, so its
//!   window is too), and `block_s` is the block being decoded with its
//!   literals and sequences (each at most 128 KiB, as large as the stream's
//!   blocks really are), plus 8 KiB between the diff decompressor and the
//!   zero-run decoder. No input buffer: ruzstd reads each block from the
//!   patch itself;
//! * `BsdiffXz`: `3B + 3·16 KiB + Σ_streams (dict_s + ~100 KiB)` with
//!   `dict_s ≤ min(2^window_log, ApplyLimits::xz_memlimit)` (same 4 MiB
//!   default);
//! * `Bsdiff40`: `3B + 3·16 KiB + 3·(400 KiB · level)` for bzip2's decode
//!   tables (≤ 3 × 3.6 MiB at level 9).
//!
//! (Each bzip2 or xz stream's 16 KiB is the compressed input read from the
//! patch and not yet decoded, kept in the application state between steps.)
//!
//! Codec features: `apply` is all three; an Agent-only firmware can take
//! `apply-zstd` alone (pure Rust, no C code), and
//! [`delta::APPLY_FORMATS`] is what the build decodes.
//!
//! It does not grow with the image size.
//!
//! ## Patch formats
//!
//! All three carry the classic bsdiff streams: *control* (triples of
//! sign-magnitude little-endian i64 `add, copy, seek`), *diff* (bytes added
//! to the source) and *extra* (new bytes).
//!
//! **`BSDIFF40`** (`PatchFormat::Bsdiff40`): 32-byte header `"BSDIFF40"`,
//! compressed control length, compressed diff length, new length (each
//! sign-magnitude i64), then three bzip2 streams (control, diff, extra to
//! the end of the file). This is what the standard `bsdiff` tool writes and
//! what qbsdiff writes.
//!
//! **esync container** (`PatchFormat::BsdiffZstd` magics `"ESBDZST1"` and
//! `"ESBDZST2"`, `PatchFormat::BsdiffXz` magics `"ESBDXZ01"` and
//! `"ESBDXZ02"`): a header of little-endian u64 fields, 64 bytes in version 1
//! (magic ending in `1`) and 72 bytes in version 2 (magic ending in `2`)
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | magic (8 bytes) |
//! | 8 | target length |
//! | 16, 24, 32 | compressed length of the control, diff, extra stream |
//! | 40, 48, 56 | uncompressed length of the control, diff, extra stream |
//! | 64 | version 2 only: flags (bit 0: the diff stream is zero-run coded; any other bit set is refused) |
//!
//! followed by the three compressed streams back to back, nothing after.
//! With flag bit 0 the diff stream is coded as records
//! `varint(zeros) varint(literal_len) literal_bytes` before compression (see
//! [`delta::zero_run`]); its declared uncompressed length is then the
//! *decoded* length. Appliers read both versions; the generator writes
//! version 2 with the flag unless
//! `delta::generate::GenerateOptions::zero_run_diff` is
//! off.
//! Each stream is exactly one zstd frame (window ≤ 2^window_log, content
//! size and checksum included) or one `.xz` stream (LZMA2, CRC32 check,
//! dictionary ≤ 2^window_log). A header is refused unless: the stream
//! lengths add up to the patch length exactly (no overflow, no trailing
//! bytes), the control length is a multiple of 24, and diff + extra equals
//! the target length. After application every stream must be consumed
//! exactly.
//!
//! ## Which encoding is the default, and why
//!
//! Both new encodings are generated and measured by `benches/delta.rs` on the
//! corpus pairs (numbers in BENCHMARKS.md). bsdiff's diff stream is as long
//! as the target and 92 to 96 % zero; compressed raw, the zero runs took most
//! of the generation time and libpython stayed at 0.97x of `bsdiff`.
//! Zero-run coding it first (container version 2) makes it about 11 times
//! shorter (libpython: 7.7 MB to 0.69 MB), so xz compresses it in a
//! fraction of the time, and (with no LZMA position context) the result is
//! also smaller. On the three pairs xz
//! patches are 0.81x to 0.87x of `bsdiff`, zstd level 19 ones 0.89x to 0.93x;
//! xz is the smallest on every pair, and both apply faster than `bspatch`
//! within the same memory bound, so [`DEFAULT_FORMAT`] is
//! [`PatchFormat::BsdiffXz`](esync_proto::message::PatchFormat::BsdiffXz);
//! Agents short of CPU advertise `BsdiffZstd` first and get it.
//!
//! Tried, measured and not adopted:
//!
//! * an x86 branch-target filter (rewriting `E8`/`E9` rel32 displacements
//!   as absolute targets in both images before diffing, as xz's BCJ filter
//!   does): the coded diff stream grew by 6 to 15 % on all three pairs,
//!   because bsdiff already turns a uniform code shift into repeated diff
//!   bytes while absolute targets change for every call inside moved code;
//! * an own match search that keeps the current alignment and consults the
//!   suffix array only where it stops matching: about twice as fast as
//!   qbsdiff's search, but 7 to 14 % larger patches;
//! * other LZMA settings for the coded diff stream: presets 3 and below
//!   (fast mode) cost 8 to 11 % in size; the longest `nice_len` (273) saves
//!   about 1 % for 60 % more LZMA time; other match finders and depths
//!   were no better.
//!
//! ## Resumable transfers
//!
//! See [`chunk`]. The chunk-list digest of every artifact is in the signed
//! component description, so a [`esync_proto::message::TransferStart`] is
//! trusted only when its chunk hashes hash to it.

#![forbid(unsafe_code)]

#[cfg(all(
    feature = "applier",
    not(any(feature = "apply-zstd", feature = "apply-xz", feature = "apply-bzip2"))
))]
compile_error!("feature `applier` needs a codec feature: apply-zstd, apply-xz or apply-bzip2");

pub mod build;
pub mod chunk;
pub mod delta;
pub mod digest;
pub mod package;

/// The patch format the server prefers to offer (when the Agent supports it).
pub const DEFAULT_FORMAT: esync_proto::message::PatchFormat =
    esync_proto::message::PatchFormat::BsdiffXz;
