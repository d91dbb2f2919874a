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
//! * The same vehicle at both nodes at once (four concurrent check-ins,
//!   then four concurrent copies of its report, over both nodes): offered
//!   once and counted once, whichever node wins each race.
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

    /// Panics unless every wave's predicted successes reach `success_pct`
    /// and its failures stay under `failure_pct` (the seed fits the test).
    fn assert_within(&self, success_pct: u64, failure_pct: u64) {
        for w in 1..=self.sizes.len() as u32 {
            let (size, ok, rb) = self.wave(w);
            assert!(
                ok * 100 >= size * success_pct && rb * 100 < size * failure_pct,
                "the seed does not fit: wave {w} of {size}: {ok} succeed, {rb} roll back"
            );
        }
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

/// Waits for campaign `id` to stop (through the operator's node), lets the
/// fleet settle and stops it, then checks the end state ([`check_end`],
/// the Server's vehicle records read through node `node`).
async fn run_to_end(
    rig: &TwoNodes,
    node: usize,
    id: i64,
    fleet: FleetHandle,
    p: &Prediction,
) -> (Vec<MemberView>, FleetReport) {
    let c = rig
        .op
        .wait_for(
            id,
            &["completed", "paused", "aborted"],
            Duration::from_secs(60),
        )
        .await
        .expect("campaign ends");
    let report = settle(fleet, rig.vehicles.len() as u64).await;
    let members = rig.op.members(id).await.expect("members");
    check_end(rig, node, &c, &members, p, &report).await;
    (members, report)
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
    p.assert_within(75, 34);
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
    let (_, report) = run_to_end(&rig, 0, id, fleet, &p).await;

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
    run_to_end(&rig, 0, id, fleet, &p).await;
    let offers = [campaign_offers(&rig, 0), campaign_offers(&rig, 1)];
    assert!(
        offers[0] > offers_before[0] && offers[1] > offers_before[1],
        "both nodes offered after the resume: {offers_before:?} -> {offers:?}"
    );
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
    p.assert_within(75, 40);
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
    // Kill node 1 while several of its vehicles hold an offer without a
    // result (verifying, downloading or about to report: about 200 ms of
    // each vehicle's update here), in wave 1.
    let in_wave_1 = home1
        .iter()
        .filter(|v| p.members[v.as_str()].0 == 1)
        .count();
    let want = in_wave_1.min(3);
    let busy = wait_for(
        "node 1's vehicles between offer and report",
        Duration::from_secs(30),
        || {
            let pg = &rig.pg;
            let vins = &home1;
            async move {
                let busy = pg.members_in(id, "offered", vins).await;
                (busy.len() >= want).then_some(busy.len())
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
    let (members, report) = run_to_end(&rig, 1, id, fleet, &p).await;
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
         and report and {} not offered yet, {} failovers, completed {:?} after the kill; {:?}; \
         offer to result median {} ms; {}",
        offered_at_kill.len(),
        pending_at_kill.len(),
        report.totals.failovers,
        killed.elapsed(),
        t0.elapsed(),
        median_offer_to_result(&members),
        report.summary()
    );
}

/// The median time from a member's offer to its result (ms).
fn median_offer_to_result(members: &[MemberView]) -> i64 {
    let mut d: Vec<i64> = members
        .iter()
        .filter_map(|m| Some(m.finished_ms? - m.offered_ms?))
        .collect();
    d.sort_unstable();
    d.get(d.len() / 2).copied().unwrap_or(0)
}

/// The same vehicle at both nodes at once: each vehicle's check-ins go to
/// both nodes concurrently (two on each, on their own connections), then
/// its one Result report is PUT concurrently to both (twice each). Both
/// nodes compete for every claim and every count; the database lets one
/// win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_vehicle_at_both_nodes_at_once_is_offered_once_and_counted_once() {
    use esync_api::body::{CheckInRequest, PackageOutcome, Report, ReportEvent};
    use esync_api::ReportId;
    use esync_client::http::DeviceHttp;
    use esync_identity::{client_tls_config, TrustAnchors};
    use esync_proto::id::Sha256Digest;

    const N: usize = 16;
    // N racing vehicles and one more, the only member of a first campaign
    // that keeps both nodes' gates open ("a campaign is offering") while
    // the racers' connections are opened.
    let Some(rig) = TwoNodes::start("race", "NDRACE", N + 1, 0).await else {
        return;
    };
    let t0 = std::time::Instant::now();
    let anchors = TrustAnchors::from_pem(&rig.dir.ca_pem).expect("fleet CA");
    let urls = [rig.nodes[0].device_url(), rig.nodes[1].device_url()];
    let (racers, keeper) = rig.vehicles.split_at(N);
    rig.op
        .start_campaign(&json!({
            "name": "two-nodes-keeper",
            "package": PKG,
            "target": {"vins": [keeper[0].vin.as_str()]},
            "waves": [{"count": 1}],
        }))
        .await
        .expect("keeper campaign");
    let t = Duration::from_secs(20);
    let check_in = |c: DeviceHttp| async move {
        let req = CheckInRequest {
            manifest_sha256: Sha256Digest([0; 32]),
        };
        c.check_in(&req, t).await.map(|_| ())
    };
    // Four clients per racer: two per node, each with its own connection,
    // opened by one check-in (nothing is due to a racer yet).
    let clients: Vec<Vec<DeviceHttp>> = racers
        .iter()
        .map(|v| {
            let tls = client_tls_config(&v.identity().expect("identity"), &anchors).expect("tls");
            (0..4)
                .map(|k| DeviceHttp::new(&urls[k % 2], tls.clone()).expect("client"))
                .collect()
        })
        .collect();
    for c in clients.iter().flatten() {
        check_in(c.clone()).await.expect("warm-up check-in");
    }
    assert_eq!(campaign_offers(&rig, 0) + campaign_offers(&rig, 1), 0);
    let name = "two-nodes-race";
    let vins: Vec<&str> = racers.iter().map(|v| v.vin.as_str()).collect();
    let id = rig
        .op
        .start_campaign(&json!({
            "name": name,
            "package": PKG,
            "target": {"vins": vins},
            "waves": [{"percent": 100}],
        }))
        .await
        .expect("campaign");
    let t = Duration::from_secs(20);
    let mut calls = tokio::task::JoinSet::new();
    for c in clients.iter().flatten() {
        calls.spawn(check_in(c.clone()));
    }
    while let Some(r) = calls.join_next().await {
        r.expect("task").expect("check-in");
    }
    let offers = [campaign_offers(&rig, 0), campaign_offers(&rig, 1)];
    assert_eq!(offers[0] + offers[1], N as u64, "offers by node {offers:?}");
    let log = rig.pg.campaign_log(id).await;
    let mut offered: BTreeMap<&str, usize> = BTreeMap::new();
    for e in log.iter().filter(|e| e.event == "offered") {
        *offered.entry(e.vin.as_deref().expect("vin")).or_default() += 1;
    }
    assert_eq!(offered.len(), N);
    assert!(offered.values().all(|&n| n == 1), "{offered:?}");

    for cs in &clients {
        let report = Report {
            created_wall_ms: 1,
            event: ReportEvent::Result {
                package: PKG.into(),
                outcome: PackageOutcome::Installed,
                components: Vec::new(),
            },
        };
        // One id for the four copies (a retry sends the same).
        let rid = ReportId::from_bytes(rand::random::<[u8; 16]>());
        for c in cs {
            let (c, report, rid) = (c.clone(), report.clone(), rid.clone());
            calls.spawn(async move { c.put_report(&rid, &report, t).await.map(|_| ()) });
        }
    }
    while let Some(r) = calls.join_next().await {
        r.expect("task").expect("report");
    }
    let c = rig
        .op
        .wait_for(
            id,
            &["completed", "paused", "aborted"],
            Duration::from_secs(20),
        )
        .await
        .expect("campaign ends");
    assert_eq!(c.state, "completed", "{:?}", c.waves);
    assert_eq!(
        (c.waves[0].size, c.waves[0].succeeded),
        (N as u64, N as u64)
    );
    let results =
        [0, 1].map(|n| rig.nodes[n].metric("esync_server_campaign_results_total", &[]) as u64);
    assert_eq!(
        results[0] + results[1],
        N as u64,
        "results by node {results:?}"
    );
    let members = rig.op.members(id).await.expect("members");
    for m in &members {
        assert_eq!(m.state, "succeeded", "{}", m.vin);
        assert_eq!(events(m, "offered"), 1, "{}: {:?}", m.vin, m.history);
        assert_eq!(events(m, "succeeded"), 1, "{}: {:?}", m.vin, m.history);
    }
    let completed = rig
        .pg
        .campaign_log(id)
        .await
        .iter()
        .filter(|e| e.event == "completed")
        .count();
    assert_eq!(completed, 1);
    println!(
        "two nodes, races: {N} vehicles x 4 concurrent check-ins and 4 concurrent copies of \
         their report over both nodes: offers by node {offers:?}, results counted by node \
         {results:?}; {:?}",
        t0.elapsed()
    );
}
