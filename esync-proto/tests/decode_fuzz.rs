//! Total, bounded decoding: random and mutated inputs through every decoder
//! never panic, and no single allocation exceeds a bound derived from the
//! frame limit (measured by a counting global allocator).
//!
//! Iterations: `ESYNC_FUZZ_ITERS` (default 100 000 per run). The README says
//! how the 1 000 000+ run was made; coverage-guided targets live in `fuzz/`.

#![allow(
    unsafe_code,
    reason = "a global allocator wrapper must implement the unsafe GlobalAlloc trait"
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use esync_proto::envelope::{Envelope, SignedEnvelope};
use esync_proto::frame::{self, FrameDecoder, FrameLimits};
use esync_proto::id::Id128;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Feeds one input to every decoder; returns how many decoded successfully.
fn feed(
    input: &[u8],
    limits: FrameLimits,
    verifier: &mut esync_proto::envelope::Verifier,
    keys: &dyn esync_proto::envelope::KeyResolver,
) -> usize {
    let mut ok = 0;
    if let Ok(signed) = SignedEnvelope::from_frame(input, limits) {
        ok += 1;
        let _ = signed.unverified_header();
        if frame::decode_body::<Envelope>(&signed.signed).is_ok() {
            ok += 1;
        }
        let _ = verifier.open_signed(&signed, keys, NOW);
    }
    if frame::decode::<Envelope>(input, limits).is_ok() {
        ok += 1;
    }
    let mut d = FrameDecoder::new(limits);
    for piece in input.chunks(7) {
        d.push(piece);
        while let Ok(Some(_)) = d.next_body() {}
    }
    ok
}

#[test]
fn random_and_mutated_inputs_never_panic_and_allocate_within_bounds() {
    let iters: usize = std::env::var("ESYNC_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let limits = FrameLimits::new(64 * 1024);
    // Valid frames to mutate.
    let mut seeds = Vec::new();
    for (_, sender, recipient, payload) in representative() {
        let seed = match sender {
            esync_proto::message::Participant::Client => 1,
            _ => 2,
        };
        let mut s = esync_proto::envelope::EnvelopeSigner::new(sender, key(seed), 1, limits);
        seeds.push(s.seal(recipient, Id128([0; 16]), payload, NOW).unwrap());
    }
    let baseline = LARGEST.load(Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut verifier = ecm_verifier();
    let keys = keys();
    let mut decoded = 0usize;
    let mut input = Vec::with_capacity(limits.max_body as usize + 64);
    for i in 0..iters {
        input.clear();
        match i % 4 {
            // Pure random bytes with a valid version byte.
            0 => {
                let len = rng.below(512);
                input.push(1);
                input.extend((0..len).map(|_| rng.next() as u8));
            }
            // Bit flips in a valid frame.
            1 => {
                input.extend_from_slice(&seeds[rng.below(seeds.len())]);
                for _ in 0..=rng.below(4) {
                    let at = rng.below(input.len());
                    input[at] ^= 1 << rng.below(8);
                }
            }
            // Truncations and length-field lies.
            2 => {
                input.extend_from_slice(&seeds[rng.below(seeds.len())]);
                let cut = rng.below(input.len());
                input.truncate(cut.max(1));
                if input.len() >= 5 && rng.below(2) == 0 {
                    let lie = (rng.next() as u32).to_be_bytes();
                    input[1..5].copy_from_slice(&lie);
                }
            }
            // Random bytes spliced into a valid body (hostile length prefixes inside postcard).
            _ => {
                input.extend_from_slice(&seeds[rng.below(seeds.len())]);
                let at = 5 + rng.below(input.len() - 5);
                let n = rng.below(9);
                for k in 0..n {
                    if at + k < input.len() {
                        input[at + k] = 0xff;
                    }
                }
            }
        }
        decoded += feed(&input, limits, &mut verifier, &keys);
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    eprintln!(
        "{iters} inputs, {decoded} successful decodes, largest allocation {largest} bytes (limit {} , before {baseline})",
        limits.max_body
    );
    assert!(
        decoded > 0,
        "mutations never produced a decodable frame: generator broken"
    );
    // Decoded values can be larger than their encoding (a Vec of enums), so
    // allow a constant factor, but never anything near a hostile 4 GiB length.
    assert!(
        largest <= 16 * limits.max_body as usize,
        "an allocation of {largest} bytes exceeds the bound"
    );
}
