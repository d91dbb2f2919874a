//! Simulated vehicles rehearse a campaign against a real Server node in
//! process (SQLite in a temporary directory, admin API over HTTPS, device
//! API over mutual TLS): provisioned through the admin API, a package of two
//! components (engine and brake ECUs), the Image repository signed offline,
//! a campaign in two waves. The outcome the simulator reports for every
//! vehicle is predicted from the seed (`esync_sim::fails`) and compared with
//! the Server's record.

use std::collections::BTreeMap;
use std::time::Duration;

use esync_api::body::PackageOutcome;
use esync_proto::id::{HardwareId, SoftwareVersion, Vin};
use esync_server::admin::VehicleView;
use esync_sim::rehearsal::{LocalServer, Operator};
use esync_sim::{fails, provision_with, EcuType, Fleet, FleetConfig, FleetReport, FleetSpec};
use http::Method;
use serde_json::{json, Value};

const PKG: &str = "pkg-sim";
const N: usize = 50;

fn image(seed: u8, version: u8) -> Vec<u8> {
    let mut b: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    for x in b.iter_mut().step_by(97) {
        *x = x.wrapping_add(version);
    }
    b
}

struct Rig {
    _dir: tempfile::TempDir,
    server: LocalServer,
    op: Operator,
    spec: FleetSpec,
    vehicles: Vec<esync_sim::SimVehicle>,
}

fn hw(s: &str) -> HardwareId {
    HardwareId::new(s).expect("hardware id")
}

/// A Server, images 1.0.0 (factory) and 2.0.0 of `sim-engine` and
/// `sim-brake`, package `pkg-sim` (both at 2.0.0), the Image repository
/// signed, and `N` vehicles provisioned: a gateway and 1 to 3 of engine,
/// brake and body (synthetic factory image) ECUs.
async fn rig(seed: u64) -> Rig {
    let dir = tempfile::tempdir().expect("dir");
    let server = LocalServer::start(&dir.path().join("srv"), None)
        .await
        .expect("server");
    let mut op = Operator::new(server.admin.clone());
    let mut components = Vec::new();
    let mut types = Vec::new();
    for (i, (name, device)) in [("sim-engine", "/engine"), ("sim-brake", "/brake")]
        .into_iter()
        .enumerate()
    {
        let old = image(i as u8, 1);
        let new = image(i as u8, 2);
        op.upload_image(name, "1.0.0", name, &old)
            .await
            .expect("v1");
        let sha = op
            .upload_image(name, "2.0.0", name, &new)
            .await
            .expect("v2");
        components.push(json!({"device": device, "image": sha, "release_counter": 2}));
        types.push(EcuType::with_image(
            hw(name),
            SoftwareVersion::new("1.0.0").expect("v"),
            1,
            &old,
        ));
    }
    types.push(EcuType::synthetic(hw("sim-body")).expect("type"));
    op.create_package(&json!({"id": PKG, "components": components}))
        .await
        .expect("package");
    op.sign_image_targets(&[PKG]).await.expect("image repo");
    let spec = FleetSpec {
        count: N,
        vin_prefix: "SMCAMP".into(),
        model: "sim-model".into(),
        region: "eu".into(),
        primary: EcuType::synthetic(hw("sim-gateway")).expect("type"),
        ecu_types: types,
        min_ecus: 2,
        max_ecus: 4,
        seed,
    };
    let cache = dir.path().join("cache");
    let p = provision_with(&server.admin, &spec, Some(&cache), 16)
        .await
        .expect("provision");
    assert_eq!((p.registered, p.reused), (N, 0));
    // A second run reuses every cached identity the Server knows.
    let again = provision_with(&server.admin, &spec, Some(&cache), 16)
        .await
        .expect("provision again");
    assert_eq!((again.registered, again.reused), (0, N));
    assert_eq!(again.vehicles, p.vehicles);
    Rig {
        _dir: dir,
        server,
        op,
        spec,
        vehicles: p.vehicles,
    }
}

impl Rig {
    fn fleet(&self, failure_rate: f64) -> esync_sim::FleetHandle {
        self.fleet_on(vec![self.server.device_url()], failure_rate)
    }

    fn fleet_on(&self, servers: Vec<String>, failure_rate: f64) -> esync_sim::FleetHandle {
        let mut cfg = FleetConfig::new(servers, self.server.ca_pem.clone());
        cfg.interval = Duration::from_millis(300);
        cfg.jitter = Duration::from_millis(100);
        cfg.failure_rate = failure_rate;
        cfg.seed = self.spec.seed;
        cfg.request_timeout = Duration::from_secs(10);
        Fleet::spawn(cfg, &self.vehicles).expect("fleet")
    }

    /// Vehicles with an engine or a brake ECU (the campaign's target).
    fn targeted(&self) -> Vec<&esync_sim::SimVehicle> {
        self.vehicles
            .iter()
            .filter(|v| {
                v.ecus
                    .iter()
                    .any(|e| matches!(e.hardware_id.as_str(), "sim-engine" | "sim-brake"))
            })
            .collect()
    }

    async fn server_vehicle(&self, vin: &str) -> VehicleView {
        let v: Value = self
            .server
            .admin
            .json(Method::GET, &format!("/vehicles/{vin}"), None)
            .await
            .expect("vehicle");
        serde_json::from_value(v).expect("vehicle view")
    }
}

fn campaign_spec(failure_threshold_percent: u32) -> Value {
    json!({
        "name": "rehearsal",
        "package": PKG,
        "target": {"hardware_ids": ["sim-engine", "sim-brake"]},
        "waves": [{"percent": 40}, {"percent": 100}],
        "success_threshold_percent": 60,
        "failure_threshold_percent": failure_threshold_percent,
    })
}

/// Waits until every vehicle that reported has uploaded its manifest
/// (bounded), then stops the fleet.
async fn settle_and_stop(fleet: esync_sim::FleetHandle) -> FleetReport {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = fleet.snapshot();
        // Each report is followed by a manifest upload; give them a moment.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let later = fleet.snapshot();
        if later.manifests_uploaded == s.manifests_uploaded || tokio::time::Instant::now() > until {
            break;
        }
    }
    fleet.stop().await
}

impl Rig {
    /// Starts the campaign with `failure_threshold_percent` while the fleet
    /// runs; its view once it completed, paused or aborted.
    async fn campaign_until_it_stops(
        &self,
        failure_threshold_percent: u32,
    ) -> (i64, esync_server::campaigns::CampaignView) {
        let id = self
            .op
            .start_campaign(&campaign_spec(failure_threshold_percent))
            .await
            .expect("campaign");
        let view = self
            .op
            .wait_for(
                id,
                &["completed", "paused", "aborted"],
                Duration::from_secs(40),
            )
            .await
            .expect("campaign stopped");
        (id, view)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_in_two_waves_completes_and_the_servers_record_is_the_simulators_truth() {
    let seed = 11;
    let rate = 0.1;
    let rig = rig(seed).await;
    let fleet = rig.fleet(rate);
    let (id, done) = rig.campaign_until_it_stops(50).await;
    assert_eq!(
        done.state, "completed",
        "{:?} {:?}",
        done.reason, done.waves
    );
    assert_eq!(done.waves.len(), 2);
    let report = settle_and_stop(fleet).await;
    println!("{}", report.summary());

    let targeted = rig.targeted();
    assert_eq!(done.matched as usize, targeted.len());
    let members: BTreeMap<String, String> = rig
        .op
        .members(id)
        .await
        .expect("members")
        .into_iter()
        .map(|m| (m.vin, m.state))
        .collect();
    let by_vin: BTreeMap<&str, &esync_sim::VehicleReport> = report
        .vehicles
        .iter()
        .map(|v| (v.vin.as_str(), v))
        .collect();
    assert_eq!(by_vin.len(), N);
    let (mut installed, mut rolled_back) = (0, 0);
    for v in &rig.vehicles {
        let vin = v.vin.as_str();
        let sim = by_vin[vin];
        let is_target = targeted.iter().any(|t| t.vin == v.vin);
        // Offered exactly once if targeted, never otherwise.
        let offers = sim.offers.get(PKG).copied().unwrap_or(0);
        assert_eq!(
            offers,
            u32::from(is_target),
            "{vin}: offers {:?}",
            sim.offers
        );
        assert!(sim.manifest_accepted, "{vin}");
        assert_eq!(sim.unfinished, None, "{vin}");
        if is_target {
            let expect_fail = fails(seed, &Vin::new(vin).expect("vin"), PKG, rate);
            let (outcome, state, version) = if expect_fail {
                rolled_back += 1;
                (PackageOutcome::RolledBack, "rolled_back", "1.0.0")
            } else {
                installed += 1;
                (PackageOutcome::Installed, "succeeded", "2.0.0")
            };
            assert_eq!(sim.outcomes.get(PKG), Some(&outcome), "{vin}");
            assert_eq!(members.get(vin).map(String::as_str), Some(state), "{vin}");
            for e in sim.ecus.values() {
                if matches!(e.hardware_id.as_str(), "sim-engine" | "sim-brake") {
                    assert_eq!(e.version, version, "{vin} {e:?}");
                }
            }
        } else {
            assert!(sim.outcomes.is_empty(), "{vin}");
        }
        // The Server's record of what each ECU runs is the simulator's.
        let record = rig.server_vehicle(vin).await;
        let server: BTreeMap<String, String> = record
            .installed
            .iter()
            .map(|i| (i.ecu.clone(), i.sha256.clone()))
            .collect();
        let truth: BTreeMap<String, String> = sim
            .ecus
            .iter()
            .map(|(s, e)| (s.clone(), e.sha256.clone()))
            .collect();
        assert_eq!(server, truth, "{vin}");
    }
    assert!(
        installed > 0 && rolled_back > 0,
        "{installed} {rolled_back}"
    );
    let t = &report.totals;
    assert_eq!(t.installed, installed);
    assert_eq!(t.rolled_back, rolled_back);
    assert_eq!(t.offers.get(PKG).copied(), Some(targeted.len() as u64));
    assert!(t.check_ins > N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_crossing_the_waves_threshold_pause_the_campaign_by_itself() {
    let seed = 5;
    let rate = 0.6;
    let rig = rig(seed).await;
    let fleet = rig.fleet(rate);
    let (id, paused) = rig.campaign_until_it_stops(20).await;
    assert_eq!(paused.state, "paused", "{:?}", paused.waves);
    assert!(
        paused.reason.as_deref().unwrap_or("").contains("fail"),
        "{:?}",
        paused.reason
    );
    assert_eq!(paused.current_wave, 1);
    // While paused, more check-ins bring no offer to wave 2.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = settle_and_stop(fleet).await;
    println!("{}", report.summary());
    let members = rig.op.members(id).await.expect("members");
    let by_vin: BTreeMap<&str, &esync_sim::VehicleReport> = report
        .vehicles
        .iter()
        .map(|v| (v.vin.as_str(), v))
        .collect();
    let mut wave2 = 0;
    for m in &members {
        let sim = by_vin[m.vin.as_str()];
        let offers = sim.offers.get(PKG).copied().unwrap_or(0);
        if m.wave == 2 {
            wave2 += 1;
            assert_eq!(m.state, "pending", "{}", m.vin);
            assert_eq!(offers, 0, "{}", m.vin);
        } else {
            assert!(offers <= 1, "{}: {offers}", m.vin);
        }
    }
    assert!(wave2 > 0);
    let w1 = &paused.waves[0];
    assert!((w1.failed + w1.rolled_back) * 100 >= 20 * w1.size, "{w1:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vehicles_whose_first_server_refuses_connections_carry_on_through_the_next() {
    let rig = rig(3).await;
    // Nothing listens on `dead`: half the vehicles start there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("https://{}", l.local_addr().expect("addr"))
    };
    let live = rig.server.device_url();
    let fleet = rig.fleet_on(vec![dead.clone(), live.clone()], 0.0);
    let (_, done) = rig.campaign_until_it_stops(50).await;
    assert_eq!(done.state, "completed", "{:?}", done.waves);
    let report = settle_and_stop(fleet).await;
    let t = &report.totals;
    assert!(t.failovers >= (N / 2) as u64, "{}", report.summary());
    assert!(
        t.errors
            .get(&esync_sim::ErrorKind::Transport)
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert_eq!(t.installed, rig.targeted().len() as u64);
    for v in &report.vehicles {
        assert_eq!(v.server, live, "{}", v.vin);
        assert!(v.manifest_accepted, "{}", v.vin);
    }
}
