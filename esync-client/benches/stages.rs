//! 33 in-process Agents install a package in 3 stages, each simulating its
//! flash time (simulated time, driven by deadlines): reports the total
//! campaign time against the critical path (the sum over stages of the
//! longest flash time in the stage), which is the bound when Agents of a
//! stage install in parallel. Goal: total ≤ 1.05x the critical path.
//!
//! `cargo bench -p esync-client --bench stages`
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

#[path = "../tests/orchestrate_rig/mod.rs"]
mod orchestrate_rig;

use esync_client::core::orchestrate::Outcome;
use orchestrate_rig::*;

fn main() {
    const AGENTS: usize = 33;
    let stages: Vec<u16> = (0..AGENTS).map(|i| (i % 3) as u16).collect();
    // Flash times of 20 to 60 s, different per Agent.
    let flash: Vec<u64> = (0..AGENTS)
        .map(|i| 20_000 + (i as u64 * 7_919) % 40_000)
        .collect();
    let mut veh = Vehicle::new(&stages, &flash, 64 * 1024);
    veh.inventory();
    let spec = veh.package_spec("bench-33");
    let ready = veh.ready(spec);
    let t0 = veh.mono;
    let wall = std::time::Instant::now();
    veh.start(ready).unwrap();
    let report = veh.run_campaign(3_600_000).expect("a report");
    let total = veh.mono - t0;
    assert_eq!(report.outcome, Outcome::Installed, "{report:?}");
    veh.check_truthful(&report, "bench");
    let critical: u64 = (0..3u16)
        .map(|s| {
            (0..AGENTS)
                .filter(|&i| stages[i] == s)
                .map(|i| flash[i])
                .max()
                .unwrap_or(0)
        })
        .sum();
    let sum: u64 = flash.iter().sum();
    println!(
        "stages: {AGENTS} Agents, 3 stages, 64 KiB images: simulated total {total} ms, \
         critical path (flash) {critical} ms, ratio {:.4}x; sum of installs {sum} ms \
         ({:.2}x); host time {:.2?}",
        total as f64 / critical as f64,
        sum as f64 / total as f64,
        wall.elapsed()
    );
}
