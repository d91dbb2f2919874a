//! Two `esync-server serve` processes on one PostgreSQL behave as one
//! Server (issue 11). Each test starts two real nodes on a fresh schema of
//! the PostgreSQL at 127.0.0.1:5432 (`nodes_support`), provisions simulated
//! vehicles (`esync_sim`: own certificate, three ECUs, mutual TLS,
//! keep-alive) and spreads them over both nodes: vehicle `i` checks in with
//! node `i % 2 + 1` and fails over to the other node on connection errors.
//!
//! * A campaign in three waves with a small failure rate runs to
//!   completion: every vehicle offered exactly once, results counted once
//!   (the wave counters are the outcomes the simulator's seed predicts),
//!   the next wave opened only after the previous one reached its success
//!   threshold, both nodes offering, and every vehicle's installed record
//!   what the vehicle runs.
//! * A pause through node 1 stops node 2's offers at once (no offer made by
//!   a check-in that began after the pause returned); a resume through node
//!   2 restarts node 1's offers within `OFFER_GATE_RECHECK_MS` plus one
//!   check-in interval.
//! * Node 1 killed with SIGKILL in the middle of a wave, some of its
//!   vehicles between offer and report: they carry on through node 2 and
//!   the campaign completes with every result recorded once and no vehicle
//!   offered twice.
//!
//! PostgreSQL unreachable: "SKIPPED" (a failure under `CI=true`).

mod nodes_support;

use std::collections::BTreeMap;
use std::time::Duration;

use esync_proto::id::Vin;
use esync_server::campaigns::{
    assign_waves, wave_sizes, CampaignView, MemberView, WaveSpec, OFFER_GATE_RECHECK_MS,
};
use esync_sim::{fails, FleetHandle, FleetReport};
use serde_json::json;

use nodes_support::{wait_for, TwoNodes, ENGINE, PKG};

/// What the seed says about every member: its wave and whether it fails.
struct Prediction {
    /// VIN → (wave, fails).
    members: BTreeMap<String, (u32, bool)>,
    sizes: Vec<u64>,
}

impl Prediction {
    fn new(rig: &TwoNodes, name: &str, waves: &[WaveSpec], seed: u64, rate: f64) -> Self {
        let vins: Vec<String> = rig.vehicles.iter().map(|v| v.vin.to_string()).collect();
        let sizes = wave_sizes(waves, vins.len() as u64);
        let members = assign_waves(name, vins, &sizes)
            .into_iter()
            .map(|(vin, wave)| {
                let f = fails(seed, &Vin::new(vin.clone()).expect("vin"), PKG, rate);
                (vin, (wave, f))
            })
            .collect();
        Self { members, sizes }
    }

    /// (size, succeeded, rolled back) of `wave`.
    fn wave(&self, wave: u32) -> (u64, u64, u64) {
        let (mut n, mut ok, mut rb) = (0, 0, 0);
        for &(w, f) in self.members.values() {
            if w == wave {
                n += 1;
                if f {
                    rb += 1;
                } else {
                    ok += 1;
                }
            }
        }
        (n, ok, rb)
    }
}

fn events(m: &MemberView, name: &str) -> usize {
    m.history.iter().filter(|h| h.event == name).count()
}

/// Waits until every vehicle reported once and uploaded its manifest after
/// it (two accepted manifests each: before and after the update), then
/// stops the fleet.
async fn settle(fleet: FleetHandle, n: u64) -> FleetReport {
    wait_for(
        "every vehicle's result report and last manifest",
        Duration::from_secs(30),
        || {
            let s = fleet.snapshot();
            async move { (s.reports >= n && s.manifests_uploaded >= 2 * n).then_some(()) }
        },
    )
    .await;
    fleet.stop().await
}

/// The end state every test checks: campaign completed with the predicted
/// counters; each member offered once and finished once, as predicted; the
/// simulator took one offer per vehicle and finished it; the Server's
/// installed record of each vehicle is the simulator's truth.
async fn check_end(
    rig: &TwoNodes,
    node: usize,
    c: &CampaignView,
    members: &[MemberView],
    p: &Prediction,
    report: &FleetReport,
) {
    assert_eq!(c.state, "completed", "{:?} {:?}", c.reason, c.waves);
    assert_eq!(c.wave_count as usize, p.sizes.len());
    for w in &c.waves {
        let (size, ok, rb) = p.wave(w.wave);
        assert_eq!(
            (w.size, w.succeeded, w.rolled_back, w.failed),
            (size, ok, rb, 0),
            "wave {} counters: {w:?}",
            w.wave
        );
        assert_eq!((w.pending, w.offered, w.aborted), (0, 0, 0), "{w:?}");
    }
    assert_eq!(members.len(), rig.vehicles.len());
    let sim: BTreeMap<&str, &esync_sim::VehicleReport> = report
        .vehicles
        .iter()
        .map(|v| (v.vin.as_str(), v))
        .collect();
    for m in members {
        let (wave, f) = p.members[&m.vin];
        let want = if f { "rolled_back" } else { "succeeded" };
        assert_eq!((m.wave, m.state.as_str()), (wave, want), "{}", m.vin);
        assert_eq!(
            events(m, "offered"),
            1,
            "{} offered once: {:?}",
            m.vin,
            m.history
        );
        let results = events(m, "succeeded") + events(m, "rolled_back") + events(m, "failed");
        assert_eq!(results, 1, "{} counted once: {:?}", m.vin, m.history);
        assert_eq!(events(m, want), 1, "{}: {:?}", m.vin, m.history);
        let v = sim[m.vin.as_str()];
        assert_eq!(v.offers.get(PKG), Some(&1), "{}: {:?}", m.vin, v.offers);
        assert_eq!(v.unfinished, None, "{}", m.vin);
        assert!(v.manifest_accepted, "{}", m.vin);
        let server = rig.vehicle(node, &m.vin).await;
        let installed: BTreeMap<&str, &str> = server
            .installed
            .iter()
            .map(|i| (i.ecu.as_str(), i.sha256.as_str()))
            .collect();
        let truth: BTreeMap<&str, &str> = v
            .ecus
            .iter()
            .map(|(serial, e)| (serial.as_str(), e.sha256.as_str()))
            .collect();
        assert_eq!(installed, truth, "{}: installed record", m.vin);
        let engine = v
            .ecus
            .values()
            .find(|e| e.hardware_id == ENGINE)
            .expect("an engine ECU");
        assert_eq!(
            engine.version,
            if f { "1.0.0" } else { "2.0.0" },
            "{}",
            m.vin
        );
    }
}

/// Each wave opened only once the previous one had reached its success
/// threshold (`success_pct`), and none of its members was offered before:
/// in the order the events were written (ids of one sequence, taken inside
/// each transaction; the campaign's row lock orders results and openings).
async fn check_waves_opened(rig: &TwoNodes, id: i64, p: &Prediction, success_pct: u64) {
    let log = rig.pg.campaign_log(id).await;
    let opened: Vec<i64> = log
        .iter()
        .filter(|e| e.event == "wave_opened")
        .map(|e| e.id)
        .collect();
    assert_eq!(opened.len(), p.sizes.len() - 1, "{log:?}");
    assert!(!log.iter().any(|e| e.event == "paused"), "{log:?}");
    for (i, at) in opened.iter().enumerate() {
        let prev = i as u32 + 1;
        let (size, _, _) = p.wave(prev);
        let needed = (size * success_pct).div_ceil(100) as usize;
        let before = log
            .iter()
            .filter(|e| e.id < *at && e.wave == Some(prev) && e.event == "succeeded")
            .count();
        assert!(
            before >= needed,
            "wave {} opened after {before} of the {needed} successes of wave {prev} it needs",
            prev + 1
        );
        let early: Vec<_> = log
            .iter()
            .filter(|e| e.id < *at && e.wave == Some(prev + 1) && e.event == "offered")
            .collect();
        assert!(
            early.is_empty(),
            "offered before wave {} opened: {early:?}",
            prev + 1
        );
    }
}

/// When the first offer to one of `vins` made by a check-in after `after`
/// (ms) was made (waits for it).
async fn first_offer_after(rig: &TwoNodes, id: i64, vins: &[String], after: i64) -> i64 {
    wait_for("an offer", Duration::from_secs(30), || async move {
        rig.pg
            .campaign_log(id)
            .await
            .iter()
            .filter(|e| e.event == "offered" && e.at_ms > after)
            .filter(|e| e.vin.as_ref().is_some_and(|v| vins.contains(v)))
            .map(|e| e.at_ms)
            .min()
    })
    .await
}

fn campaign_offers(rig: &TwoNodes, node: usize) -> u64 {
    rig.nodes[node].metric("esync_server_campaign_offers_total", &[]) as u64
}

fn check_ins(rig: &TwoNodes, node: usize) -> u64 {
    rig.nodes[node].metric(
        "esync_server_http_requests_total",
        &["route=\"/v1/checkin\""],
    ) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_in_waves_over_two_nodes_offers_each_vehicle_once_and_counts_each_result_once() {
    const N: usize = 48;
    let (seed, rate) = (3, 0.08);
    let Some(rig) = TwoNodes::start("waves", "NDWAVE", N, 0).await else {
        return;
    };
    let t0 = std::time::Instant::now();
    let waves = [
        WaveSpec::Percent(20),
        WaveSpec::Percent(30),
        WaveSpec::Percent(50),
    ];
    let name = "two-nodes-waves";
    let p = Prediction::new(&rig, name, &waves, seed, rate);
    // The seed's failures stay under the thresholds below, and there are
    // some (the rollback path is taken).
    let failing = p.members.values().filter(|(_, f)| *f).count();
    assert!(failing > 0, "seed {seed} makes no vehicle fail");
    for w in 1..=p.sizes.len() as u32 {
        let (size, ok, rb) = p.wave(w);
        assert!(
            ok * 100 >= size * 75 && rb * 100 < size * 34,
            "seed: wave {w}"
        );
    }
    let fleet = rig.fleet(
        Duration::from_millis(300),
        Duration::from_millis(100),
        rate,
        seed,
    );
    let id = rig
        .op
        .start_campaign(&json!({
            "name": name,
            "package": PKG,
            "waves": waves,
            "success_threshold_percent": 75,
            "failure_threshold_percent": 34,
        }))
        .await
        .expect("campaign");
    let c = rig
        .op
        .wait_for(
            id,
            &["completed", "paused", "aborted"],
            Duration::from_secs(60),
        )
        .await
        .expect("campaign ends");
    let report = settle(fleet, N as u64).await;
    let members = rig.op.members(id).await.expect("members");
    check_end(&rig, 0, &c, &members, &p, &report).await;

    check_waves_opened(&rig, id, &p, 75).await;

    // Both nodes offered: exactly their own vehicles (no failover here).
    assert_eq!(report.totals.failovers, 0, "{}", report.summary());
    let offers = [campaign_offers(&rig, 0), campaign_offers(&rig, 1)];
    let homes = [0, 1].map(|n| {
        rig.vehicles
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == n)
            .count() as u64
    });
    assert_eq!(offers, homes, "offers by node");
    println!(
        "two nodes, waves: {N} vehicles, offers by node {offers:?}, {} rolled back, campaign {:?}; {}",
        failing,
        t0.elapsed(),
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_through_node_1_stops_node_2_at_once_and_a_resume_through_node_2_restarts_node_1_within_the_gate_bound(
) {
    const N: usize = 30;
    let interval = Duration::from_secs(3);
    let jitter = Duration::from_millis(500);
    let Some(rig) = TwoNodes::start("pause", "NDPAUSE", N, 0).await else {
        return;
    };
    let t0 = std::time::Instant::now();
    let home = |node: usize| -> Vec<String> {
        rig.vehicles
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == node)
            .map(|(_, v)| v.vin.to_string())
            .collect()
    };
    let fleet = rig.fleet(interval, jitter, 0.0, 1);
    // Every vehicle known to the Server (manifest uploaded) before the
    // campaign starts.
    wait_for("every first manifest", Duration::from_secs(30), || {
        let s = fleet.snapshot();
        async move { (s.manifests_uploaded >= N as u64).then_some(()) }
    })
    .await;
    let waves = [WaveSpec::Percent(100)];
    let name = "two-nodes-pause";
    let p = Prediction::new(&rig, name, &waves, 1, 0.0);
    let id = rig
        .op
        .start_campaign(&json!({"name": name, "package": PKG, "waves": waves}))
        .await
        .expect("campaign");
    let started_at = nodes_support::now_ms();
    let homes = [home(0), home(1)];
    let gap = i64::try_from((interval + jitter).as_millis()).expect("ms");
    // Started through node 1: node 2, which last read "nothing is
    // offering", makes its first offer within its gate bound plus one
    // check-in interval (plus 1 s for a loaded machine).
    let first_start = first_offer_after(&rig, id, &homes[1], 0).await - started_at;
    assert!(
        first_start <= OFFER_GATE_RECHECK_MS + gap + 1000,
        "node 2 offered {first_start} ms after the start through node 1"
    );

    rig.act(0, id, "pause").await;
    let paused_at = nodes_support::now_ms();
    let pending = [
        rig.pg.members_in(id, "pending", &homes[0]).await.len(),
        rig.pg.members_in(id, "pending", &homes[1]).await.len(),
    ];
    assert!(
        pending[0] > 0 && pending[1] > 0,
        "vehicles left to offer on both nodes at the pause: {pending:?}"
    );
    // Both nodes keep answering check-ins (each vehicle checks in about
    // twice more) ...
    let before = [check_ins(&rig, 0), check_ins(&rig, 1)];
    wait_for(
        "two more check-ins per vehicle on each node",
        Duration::from_secs(30),
        || {
            let now = [check_ins(&rig, 0), check_ins(&rig, 1)];
            let want = 2 * (N as u64 / 2);
            async move { (now[0] >= before[0] + want && now[1] >= before[1] + want).then_some(()) }
        },
    )
    .await;
    // ... and no offer was made by a check-in that began after the pause
    // returned, on either node.
    let log = rig.pg.campaign_log(id).await;
    let late: Vec<_> = log
        .iter()
        .filter(|e| e.event == "offered" && e.at_ms > paused_at)
        .collect();
    assert!(late.is_empty(), "offers after the pause: {late:?}");
    let c = rig.op.campaign(id).await.expect("campaign");
    assert_eq!(c.state, "paused");
    assert_eq!(
        [
            rig.pg.members_in(id, "pending", &homes[0]).await.len(),
            rig.pg.members_in(id, "pending", &homes[1]).await.len()
        ],
        pending,
        "nothing offered while paused"
    );

    // Resume through node 2: node 2 offers at its next check-ins, node 1
    // (which last read "nothing is offering") within its gate bound.
    let offers_before = [campaign_offers(&rig, 0), campaign_offers(&rig, 1)];
    rig.act(1, id, "resume").await;
    let resumed_at = nodes_support::now_ms();
    let first = [
        first_offer_after(&rig, id, &homes[0], paused_at).await,
        first_offer_after(&rig, id, &homes[1], paused_at).await,
    ];
    let latency = first.map(|at| at - resumed_at);
    // Node 1: the gate's re-read, then the next check-in of one of its
    // pending vehicles (at most one interval plus jitter), plus 1 s for a
    // loaded machine. Node 2: the next check-in.
    assert!(
        latency[0] <= OFFER_GATE_RECHECK_MS + gap + 1000,
        "node 1 offered {} ms after the resume",
        latency[0]
    );
    assert!(
        latency[1] <= gap + 1000,
        "node 2 offered {} ms after the resume",
        latency[1]
    );
    let c = rig
        .op
        .wait_for(
            id,
            &["completed", "paused", "aborted"],
            Duration::from_secs(60),
        )
        .await
        .expect("campaign ends");
    let report = settle(fleet, N as u64).await;
    let offers = [campaign_offers(&rig, 0), campaign_offers(&rig, 1)];
    assert!(
        offers[0] > offers_before[0] && offers[1] > offers_before[1],
        "both nodes offered after the resume: {offers_before:?} -> {offers:?}"
    );
    let members = rig.op.members(id).await.expect("members");
    check_end(&rig, 0, &c, &members, &p, &report).await;
    println!(
        "two nodes, pause/resume: {N} vehicles, pending at the pause by node {pending:?}, \
         first offer by node 2 {first_start} ms after the start through node 1, first offer \
         after the resume through node 2 by node {latency:?} ms, offers by node {offers:?}; {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_1_killed_mid_wave_its_vehicles_finish_through_node_2_with_every_result_recorded_once()
{
    const N: usize = 40;
    let (seed, rate) = (5, 0.05);
    let Some(mut rig) = TwoNodes::start("kill", "NDSGKL", N, 1).await else {
        return;
    };
    let t0 = std::time::Instant::now();
    let home1: Vec<String> = rig
        .vehicles
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, v)| v.vin.to_string())
        .collect();
    let waves = [WaveSpec::Percent(50), WaveSpec::Percent(50)];
    let name = "two-nodes-kill";
    let p = Prediction::new(&rig, name, &waves, seed, rate);
    for w in 1..=p.sizes.len() as u32 {
        let (size, ok, rb) = p.wave(w);
        assert!(
            ok * 100 >= size * 75 && rb * 100 < size * 40,
            "seed: wave {w}"
        );
    }
    let fleet = rig.fleet(
        Duration::from_millis(400),
        Duration::from_millis(100),
        rate,
        seed,
    );
    wait_for("every first manifest", Duration::from_secs(30), || {
        let s = fleet.snapshot();
        async move { (s.manifests_uploaded >= N as u64).then_some(()) }
    })
    .await;
    // Through node 2: node 1's admin API dies with it.
    let id = rig
        .op
        .start_campaign(&json!({
            "name": name,
            "package": PKG,
            "waves": waves,
            "success_threshold_percent": 75,
            "failure_threshold_percent": 40,
        }))
        .await
        .expect("campaign");
    // Kill node 1 while some of its vehicles hold an offer without a
    // result (verifying, downloading or about to report).
    let busy = wait_for(
        "node 1's vehicles between offer and report",
        Duration::from_secs(30),
        || {
            let pg = &rig.pg;
            let vins = &home1;
            async move {
                let busy = pg.members_in(id, "offered", vins).await;
                (!busy.is_empty()).then_some(busy.len())
            }
        },
    )
    .await;
    rig.nodes[0].kill();
    let killed = std::time::Instant::now();
    let offered_at_kill = rig.pg.members_in(id, "offered", &home1).await;
    let pending_at_kill = rig.pg.members_in(id, "pending", &home1).await;
    assert!(
        !offered_at_kill.is_empty(),
        "node 1 killed with none of its vehicles between offer and report (seen {busy} just before)"
    );
    let c = rig
        .op
        .wait_for(
            id,
            &["completed", "paused", "aborted"],
            Duration::from_secs(60),
        )
        .await
        .expect("campaign ends");
    let report = settle(fleet, N as u64).await;
    let members = rig.op.members(id).await.expect("members");
    check_end(&rig, 1, &c, &members, &p, &report).await;
    check_waves_opened(&rig, id, &p, 75).await;
    // Every vehicle of node 1 ended on node 2.
    let node2 = rig.nodes[1].device_url();
    for v in report.vehicles.iter().filter(|v| home1.contains(&v.vin)) {
        assert_eq!(v.server, node2, "{} did not fail over", v.vin);
    }
    assert!(
        report.totals.failovers >= home1.len() as u64,
        "{}",
        report.summary()
    );
    println!(
        "two nodes, SIGKILL: {N} vehicles, node 1 killed with {} of its vehicles between offer \
         and report and {} not offered yet, {} failovers, completed {:?} after the kill; {:?}; {}",
        offered_at_kill.len(),
        pending_at_kill.len(),
        report.totals.failovers,
        killed.elapsed(),
        t0.elapsed(),
        report.summary()
    );
}
