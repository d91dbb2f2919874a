//! Peak heap of the C Agent (`examples/c/agent/agent.c` over the C ABI)
//! during a 10 MiB delta update, measured with valgrind's massif.
//!
//! ```text
//! cargo bench -p esync-ffi --bench c_agent_heap [-- IMAGE_MIB [CHUNK_KIB]]
//! ```
//!
//! The C host keeps images on files and its frame buffer in static memory,
//! so the heap massif reports is the library's: the Agent, its journal,
//! Uptane verification, patch application and the frames it queues (plus
//! the C host's short-lived reads of journal and trust-store files).
//! Prints SKIPPED without valgrind. `ESYNC_MASSIF_OUT=FILE` keeps the
//! massif profile (read it with `ms_print FILE`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use esync_proto::message::InstallOutcome;
use support::*;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mib: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let chunk_kib: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    if !have("valgrind") {
        println!("SKIPPED: valgrind is not installed");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let exe = build_c_agent(out.path(), &["-O2"]);
    let t = Instant::now();
    let w = world_sized(mib << 20, chunk_kib * 1024);
    println!(
        "update: {mib} MiB image, {} B patch, {chunk_kib} KiB chunks (generated in {:.1?})",
        w.patch.len(),
        t.elapsed()
    );
    let massif = out.path().join("massif.out");
    let arg = format!("--massif-out-file={}", massif.display());
    let t = Instant::now();
    let (_dir, outcome, status) = run_update_of(
        &w,
        &AgentCmd::c(&exe, &["valgrind", "--tool=massif", "--depth=40", &arg]),
        &RunOpts::default(),
        Duration::from_secs(900),
    );
    assert!(
        matches!(outcome, InstallOutcome::Installed { .. }),
        "{outcome:?}"
    );
    assert_eq!(status, 0);
    let text = std::fs::read_to_string(&massif).unwrap();
    // ESYNC_MASSIF_OUT=FILE keeps the profile (for `ms_print FILE`).
    if let Some(keep) = std::env::var_os("ESYNC_MASSIF_OUT") {
        std::fs::write(&keep, &text).unwrap();
    }
    let field = |name: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().parse().unwrap())
            .collect()
    };
    let heap = field("mem_heap_B=");
    let extra = field("mem_heap_extra_B=");
    let (i, peak) = heap
        .iter()
        .copied()
        .enumerate()
        .max_by_key(|(_, b)| *b)
        .unwrap();
    println!(
        "peak heap: {peak} B ({:.1} KiB) + {} B allocator overhead, over {} snapshots; run under massif took {:.1?}",
        peak as f64 / 1024.0,
        extra[i],
        heap.len(),
        t.elapsed()
    );
}
