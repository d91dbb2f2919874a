//! Campaigns end to end in process: the admin router (operator and viewer
//! tokens) and the device router (the vehicle's VIN attached as its
//! verified certificate would be) on one SQLite store. Vehicles check in,
//! get offers, report results; the campaign pauses, opens waves, waits for
//! approval, completes; rollback blocks keep a rolled-back package away.

mod admin_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt;

use esync_api::body::{CheckInRequest, PackageOutcome, Report, ReportEvent};
use esync_package::package::{
    Artifact, Component, ComponentPolicy, DownloadPolicy, Package, PackageId, PackageSpec,
};
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin,
};
use esync_proto::message::InstalledImage;
use esync_server::device::{device_router, DevicePeer, DeviceState};
use esync_server::store::{Ecu, Image, PackageRecord, VehicleRecord};
use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
use esync_uptane::{PrivateKey, UnixTime};

use admin_support::{admin, now_s, Admin};

const HW: &str = "hw-1";
const PKG: &str = "pkg-2";

fn sha(b: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(b).into())
}

fn old_image() -> Vec<u8> {
    (0..4096u32).map(|i| (i % 251) as u8).collect()
}

fn new_image() -> Vec<u8> {
    let mut b = old_image();
    b[7] ^= 0x5a;
    b
}

fn vin(i: usize) -> Vin {
    Vin::new(format!("WVWZZZ1JZXW{i:06}")).expect("vin")
}

struct Fleet {
    a: Admin,
    device: axum::Router,
    clock: Arc<AtomicI64>,
}

impl Fleet {
    /// The admin API, a device API on its store with a settable clock, two
    /// images (1.0.0, 2.0.0) and package `pkg-2` (hw-1 to 2.0.0).
    async fn new() -> Self {
        let a = admin().await;
        let store = a.state.store.clone();
        for (bytes, version) in [(old_image(), "1.0.0"), (new_image(), "2.0.0")] {
            store
                .insert_image(
                    &Image {
                        name: "fw".into(),
                        version: version.into(),
                        sha256: sha(&bytes).0,
                        length: bytes.len() as u64,
                        hardware_id: HW.into(),
                    },
                    1,
                )
                .await
                .expect("image");
        }
        let pkg = Package::new(PackageSpec {
            id: PackageId::new(PKG).expect("id"),
            download: DownloadPolicy::default(),
            components: vec![Component {
                device: DevicePath::new("/ecu1").expect("device"),
                hardware_id: HardwareId::new(HW).expect("hw"),
                version: SoftwareVersion::new("2.0.0").expect("v"),
                release_counter: ReleaseCounter(2),
                image: Artifact::describe(&new_image(), esync_server::packages::DEFAULT_CHUNK_SIZE)
                    .expect("describe"),
                deltas: vec![],
                depends_on: vec![],
                stage: 0,
                policy: ComponentPolicy::default(),
            }],
        })
        .expect("package");
        store
            .insert_package(&PackageRecord {
                id: PKG.into(),
                model_json: serde_json::to_string(&pkg).expect("json"),
                created_ms: 1,
            })
            .await
            .expect("package");
        let clock = Arc::new(AtomicI64::new(now_s() * 1000));
        let c = clock.clone();
        let st = DeviceState::new(
            store,
            a.state.blobs.clone(),
            a.state.director.clone(),
            a.state.images.clone(),
        )
        .with_clock(Arc::new(move || c.load(Ordering::SeqCst)))
        .with_metrics(a.state.metrics.clone());
        Self {
            device: device_router(st),
            a,
            clock,
        }
    }

    /// Registers vehicles `0..n` (model/region from `kind`), each with a
    /// primary `GW-i` and an ECU `SER-i` of `hw-1`.
    async fn vehicles(&self, range: std::ops::Range<usize>, model: &str, region: &str) {
        for i in range {
            let v = vin(i);
            self.a
                .state
                .store
                .upsert_vehicle(
                    &VehicleRecord {
                        vin: v.to_string(),
                        model: model.into(),
                        region: region.into(),
                        hardware_ids: vec!["gw".into(), HW.into()],
                    },
                    1,
                )
                .await
                .expect("vehicle");
            for (serial, hw, primary, seed) in [("GW", "gw", true, 1u8), ("SER", HW, false, 2u8)] {
                self.a
                    .state
                    .store
                    .upsert_ecu(&Ecu {
                        serial: format!("{serial}-{i}"),
                        vin: v.to_string(),
                        hardware_id: hw.into(),
                        primary,
                        public_key: serde_json::to_vec(&key(i, seed).public_key()).expect("key"),
                    })
                    .await
                    .expect("ecu");
            }
        }
    }

    async fn device_call(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        req.extensions_mut().insert(DevicePeer(Ok(vin(i))));
        let resp = self.device.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let raw = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
    }

    /// Checks in vehicle `i` with `manifest` (or a hash the Server never saw).
    async fn check_in(&self, i: usize, manifest: Option<&[u8]>) -> Value {
        let body = serde_json::to_vec(&CheckInRequest {
            manifest_sha256: sha(manifest.unwrap_or(b"never sent")),
        })
        .expect("json");
        let (status, json) = self.device_call(i, Method::POST, "/v1/checkin", body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }

    async fn send_manifest(&self, i: usize, m: &[u8]) {
        let (status, json) = self
            .device_call(i, Method::POST, "/v1/manifest", m.to_vec())
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }

    /// Vehicle `i` reports the final `outcome` of `PKG` (report id per
    /// vehicle and package, as the Client makes it: a retry is the same).
    async fn report(&self, i: usize, outcome: PackageOutcome) -> StatusCode {
        let r = Report {
            created_wall_ms: 1,
            event: ReportEvent::Result {
                package: PKG.into(),
                outcome,
                components: vec![],
            },
        };
        let body = serde_json::to_vec(&r).expect("json");
        let id = format!("result-{i:08}-{}", outcome_tag(outcome));
        let (status, json) = self
            .device_call(i, Method::PUT, &format!("/v1/reports/{id}"), body)
            .await;
        assert!(status.is_success(), "{json}");
        status
    }

    async fn op(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.a.op(method, path, body).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.json);
        r.json
    }

    async fn dry(&self, target: Value, waves: Value) -> Value {
        let mut s = spec(waves);
        s["target"] = target;
        let r = self
            .a
            .op(Method::POST, "/admin/v1/campaigns/dry-run", Some(s))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        r.json
    }

    async fn campaign(&self, id: i64) -> Value {
        self.op(Method::GET, &format!("/admin/v1/campaigns/{id}"), None)
            .await
    }

    async fn create_and_start(&self, spec: Value) -> i64 {
        let r = self
            .a
            .op(Method::POST, "/admin/v1/campaigns", Some(spec))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        assert_eq!(r.json["state"], "draft");
        let id = r.json["id"].as_i64().expect("id");
        let v = self
            .op(
                Method::POST,
                &format!("/admin/v1/campaigns/{id}/start"),
                None,
            )
            .await;
        assert_eq!(v["state"], "running", "{v}");
        id
    }

    /// Member states by VIN index.
    async fn members(&self, id: i64) -> BTreeMap<String, (u64, String)> {
        let v = self
            .op(
                Method::GET,
                &format!("/admin/v1/campaigns/{id}/vehicles?limit=1000"),
                None,
            )
            .await;
        v["vehicles"]
            .as_array()
            .expect("vehicles")
            .iter()
            .map(|m| {
                (
                    m["vin"].as_str().expect("vin").to_owned(),
                    (
                        m["wave"].as_u64().expect("wave"),
                        m["state"].as_str().expect("state").to_owned(),
                    ),
                )
            })
            .collect()
    }

    async fn offered(&self, id: i64) -> Vec<usize> {
        let ms = self.members(id).await;
        (0..1000)
            .filter(|i| {
                ms.get(vin(*i).as_str())
                    .is_some_and(|(_, s)| s == "offered")
            })
            .collect()
    }
}

fn outcome_tag(o: PackageOutcome) -> &'static str {
    match o {
        PackageOutcome::Installed => "ok",
        PackageOutcome::RolledBack => "rb",
        _ => "fail",
    }
}

fn key(i: usize, seed: u8) -> PrivateKey {
    let mut s = [seed; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PrivateKey::from_seed(&s)
}

/// A signed manifest of vehicle `i` whose ECU reports `installed`.
fn manifest(i: usize, installed: &[u8]) -> Vec<u8> {
    let serial = EcuSerial::new(format!("SER-{i}")).expect("serial");
    let report = EcuVersionReport {
        ecu_serial: serial.clone(),
        installed_image: ReportedImage::from_installed(
            &InstalledImage {
                version: SoftwareVersion::new("1.0.0").expect("v"),
                release_counter: ReleaseCounter(1),
                length: installed.len() as u64,
                sha256: sha(installed),
            },
            "installed".into(),
        ),
        release_counter: 1,
        nonce: format!("{:032x}", rand::random::<u128>()),
        attacks_detected: String::new(),
        timestamp: UnixTime(now_s()),
    };
    let mut reports = BTreeMap::new();
    reports.insert(serial.to_string(), report.sign(&key(i, 2)).expect("sign"));
    VehicleManifest {
        vin: vin(i),
        primary_ecu_serial: EcuSerial::new(format!("GW-{i}")).expect("s"),
        ecu_version_reports: reports,
    }
    .sign(&key(i, 1))
    .expect("sign manifest")
}

fn spec(waves: Value) -> Value {
    json!({"name": "c1", "package": PKG, "waves": waves})
}

#[tokio::test]
async fn a_wave_pauses_by_itself_at_its_failure_threshold_and_abort_stops_offers() {
    let f = Fleet::new().await;
    f.vehicles(0..10, "M1", "eu").await;
    let mut s = spec(json!([{"count": 4}, {"percent": 100}]));
    s["failure_threshold_count"] = json!(2);
    let id = f.create_and_start(s).await;
    let c = f.campaign(id).await;
    assert_eq!(c["waves"][0]["size"], 4);
    assert_eq!(c["waves"][1]["size"], 6);

    // Everyone checks in (twice): only wave 1 is offered, once each.
    for _ in 0..2 {
        for i in 0..10 {
            f.check_in(i, None).await;
        }
    }
    let offered = f.offered(id).await;
    assert_eq!(offered.len(), 4, "{offered:?}");
    assert_eq!(f.a.state.metrics.campaign_offers(), 4);
    for &i in &offered {
        let assigned =
            f.a.state
                .store
                .assignments(vin(i).as_str())
                .await
                .expect("a");
        assert_eq!(assigned, [PKG]);
    }

    // One rollback: under the threshold. A retry of it counts nothing.
    f.report(offered[0], PackageOutcome::RolledBack).await;
    assert_eq!(
        f.report(offered[0], PackageOutcome::RolledBack).await,
        StatusCode::OK
    );
    let c = f.campaign(id).await;
    assert_eq!(c["state"], "running");
    assert_eq!(c["waves"][0]["rolled_back"], 1);
    // A second failure reaches it: paused by itself, with the reason.
    f.report(offered[1], PackageOutcome::Failed).await;
    let c = f.campaign(id).await;
    assert_eq!(c["state"], "paused", "{c}");
    assert!(
        c["reason"]
            .as_str()
            .expect("reason")
            .contains("failure threshold"),
        "{c}"
    );
    // The rest of wave 1 succeeds meanwhile: still paused, nothing offered.
    f.report(offered[2], PackageOutcome::Installed).await;
    f.report(offered[3], PackageOutcome::Installed).await;
    for i in 0..10 {
        f.check_in(i, None).await;
    }
    assert!(f.offered(id).await.is_empty());
    assert_eq!(f.campaign(id).await["state"], "paused");

    // Resume does not go past the success threshold (100 %, 2 of 4 failed):
    // the finished wave pauses it again, with that reason.
    let v = f
        .op(
            Method::POST,
            &format!("/admin/v1/campaigns/{id}/resume"),
            None,
        )
        .await;
    assert_eq!(v["state"], "paused", "{v}");
    assert!(v["reason"]
        .as_str()
        .expect("reason")
        .contains("success threshold"));

    // Abort: pending vehicles aborted, no offers, further actions refused.
    let v = f
        .op(
            Method::POST,
            &format!("/admin/v1/campaigns/{id}/abort"),
            None,
        )
        .await;
    assert_eq!(v["state"], "aborted");
    assert_eq!(v["waves"][1]["aborted"], 6);
    for i in 0..10 {
        f.check_in(i, None).await;
    }
    assert!(f.offered(id).await.is_empty());
    let r =
        f.a.op(
            Method::POST,
            &format!("/admin/v1/campaigns/{id}/resume"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    // History of a vehicle.
    let page = f
        .op(
            Method::GET,
            &format!("/admin/v1/campaigns/{id}/vehicles?limit=1000"),
            None,
        )
        .await;
    let m = page["vehicles"]
        .as_array()
        .expect("list")
        .iter()
        .find(|m| m["vin"] == vin(offered[0]).as_str())
        .expect("member");
    let events: Vec<&str> = m["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(events, ["offered", "rolled_back"]);
}

#[tokio::test]
async fn abort_mid_wave_stops_further_offers_and_offered_vehicles_still_report() {
    let f = Fleet::new().await;
    f.vehicles(0..6, "M1", "eu").await;
    let id = f.create_and_start(spec(json!([{"percent": 100}]))).await;
    for i in 0..3 {
        f.check_in(i, None).await;
    }
    assert_eq!(f.offered(id).await, [0, 1, 2]);
    f.op(
        Method::POST,
        &format!("/admin/v1/campaigns/{id}/abort"),
        None,
    )
    .await;
    for i in 0..6 {
        f.check_in(i, None).await;
    }
    let ms = f.members(id).await;
    let states: Vec<&str> = (0..6).map(|i| ms[vin(i).as_str()].1.as_str()).collect();
    assert_eq!(
        states,
        ["offered", "offered", "offered", "aborted", "aborted", "aborted"]
    );
    f.report(0, PackageOutcome::Installed).await;
    f.report(1, PackageOutcome::RolledBack).await;
    let c = f.campaign(id).await;
    assert_eq!(c["state"], "aborted");
    assert_eq!(c["waves"][0]["succeeded"], 1);
    assert_eq!(c["waves"][0]["rolled_back"], 1);
    assert_eq!(c["waves"][0]["offered"], 1);
}

#[tokio::test]
async fn waves_open_in_order_by_success_threshold_and_by_approval() {
    let f = Fleet::new().await;
    f.vehicles(0..8, "M1", "eu").await;
    // Auto: 50 % of wave 1 succeeding opens wave 2.
    let mut s = spec(json!([{"count": 2}, {"count": 6}]));
    s["success_threshold_percent"] = json!(50);
    let auto = f.create_and_start(s).await;
    for i in 0..8 {
        f.check_in(i, None).await;
    }
    let first = f.offered(auto).await;
    assert_eq!(first.len(), 2);
    f.report(first[0], PackageOutcome::Installed).await;
    let c = f.campaign(auto).await;
    assert_eq!(
        (c["state"].clone(), c["current_wave"].clone()),
        (json!("running"), json!(2))
    );
    for i in 0..8 {
        f.check_in(i, None).await;
    }
    assert_eq!(f.offered(auto).await.len(), 7);
    f.op(
        Method::POST,
        &format!("/admin/v1/campaigns/{auto}/abort"),
        None,
    )
    .await;

    // Manual: wave 2 waits for approval, then opens; the last wave done
    // completes the campaign.
    f.vehicles(100..104, "M2", "us").await;
    let mut s = spec(json!([{"percent": 50}, {"percent": 50}]));
    s["name"] = json!("manual");
    s["approval"] = json!("manual");
    s["target"] = json!({"models": ["M2"]});
    let id = f.create_and_start(s).await;
    for i in 100..104 {
        f.check_in(i, None).await;
    }
    let w1 = f.offered(id).await;
    assert_eq!(w1.len(), 2);
    for &i in &w1 {
        f.report(i, PackageOutcome::Installed).await;
    }
    let c = f.campaign(id).await;
    assert_eq!(c["state"], "waiting_approval", "{c}");
    for i in 100..104 {
        f.check_in(i, None).await;
    }
    assert!(f.offered(id).await.is_empty(), "no offer before approval");
    let v = f
        .op(
            Method::POST,
            &format!("/admin/v1/campaigns/{id}/approve"),
            None,
        )
        .await;
    assert_eq!(
        (v["state"].clone(), v["current_wave"].clone()),
        (json!("running"), json!(2))
    );
    for i in 100..104 {
        f.check_in(i, None).await;
    }
    let w2 = f.offered(id).await;
    assert_eq!(w2.len(), 2);
    assert!(w2.iter().all(|i| !w1.contains(i)));
    for &i in &w2 {
        f.report(i, PackageOutcome::Installed).await;
    }
    let c = f.campaign(id).await;
    assert_eq!(c["state"], "completed", "{c}");
    assert_eq!(c["waves"][1]["succeeded"], 2);
}

#[tokio::test]
async fn dry_run_counts_by_model_region_vin_and_installed_version_and_stores_nothing() {
    let f = Fleet::new().await;
    f.vehicles(0..5, "M1", "eu").await;
    f.vehicles(5..8, "M1", "us").await;
    f.vehicles(8..10, "M2", "eu").await;
    // Vehicles 0 and 1 report 2.0.0 already; 2 reports 1.0.0.
    f.send_manifest(0, &manifest(0, &new_image())).await;
    f.send_manifest(1, &manifest(1, &new_image())).await;
    f.send_manifest(2, &manifest(2, &old_image())).await;
    let dry = |target: Value, waves: Value| f.dry(target, waves);
    let w = json!([{"percent": 10}, {"count": 3}, {"percent": 100}]);
    assert_eq!(
        dry(json!({}), w.clone()).await,
        json!({"matched": 10, "wave_sizes": [1, 3, 6]})
    );
    assert_eq!(
        dry(json!({"models": ["M1"]}), w.clone()).await["matched"],
        8
    );
    assert_eq!(
        dry(json!({"models": ["M1"], "regions": ["eu"]}), w.clone()).await["matched"],
        5
    );
    assert_eq!(
        dry(json!({"hardware_ids": ["nope"]}), w.clone()).await["matched"],
        0
    );
    let installed = json!({"installed": [{"hardware_id": HW, "version": "1.0.0"}]});
    assert_eq!(dry(installed, w.clone()).await["matched"], 1);
    let installed =
        json!({"installed": [{"hardware_id": HW, "version": "2.0.0"}], "regions": ["eu"]});
    assert_eq!(dry(installed, w.clone()).await["matched"], 2);
    let vins =
        json!({"vins": [vin(3).as_str(), vin(9).as_str(), vin(999).as_str()], "models": ["M2"]});
    assert_eq!(dry(vins, w).await["matched"], 1);
    assert_eq!(
        f.op(Method::GET, "/admin/v1/campaigns", None).await,
        json!([])
    );
    // Bad specs are refused with a clear error, nothing stored.
    for bad in [
        json!({"name": "x", "package": PKG, "waves": []}),
        json!({"name": "x", "package": PKG, "waves": [{"percent": 0}]}),
        json!({"name": "x", "package": PKG, "waves": [{"count": 1}], "maintenance_window": {"start_utc": "25:00", "end_utc": "01:00"}}),
        json!({"name": "x", "package": PKG, "waves": [{"count": 1}], "surprise": 1}),
    ] {
        let r =
            f.a.op(Method::POST, "/admin/v1/campaigns", Some(bad.clone()))
                .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.json);
    }
    let r =
        f.a.op(
            Method::POST,
            "/admin/v1/campaigns",
            Some(json!({"name": "x", "package": "nope", "waves": [{"count": 1}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        f.op(Method::GET, "/admin/v1/campaigns", None).await,
        json!([])
    );
}

#[tokio::test]
async fn no_offer_outside_the_maintenance_window() {
    let f = Fleet::new().await;
    f.vehicles(0..2, "M1", "eu").await;
    let day = 86_400_000 * 20_000;
    f.clock.store(day + 12 * 3_600_000, Ordering::SeqCst); // 12:00 UTC
    let mut s = spec(json!([{"percent": 100}]));
    s["maintenance_window"] = json!({"start_utc": "22:00", "end_utc": "04:00"});
    let id = f.create_and_start(s).await;
    f.check_in(0, None).await;
    assert!(f.offered(id).await.is_empty());
    f.clock.store(day + 23 * 3_600_000, Ordering::SeqCst); // 23:00 UTC
    f.check_in(0, None).await;
    assert_eq!(f.offered(id).await, [0]);
    f.clock.store(day + 4 * 3_600_000, Ordering::SeqCst); // 04:00: closed
    f.check_in(1, None).await;
    assert_eq!(f.offered(id).await, [0]);
}

#[tokio::test]
async fn a_viewer_is_refused_every_campaign_change() {
    let f = Fleet::new().await;
    f.vehicles(0..2, "M1", "eu").await;
    let id = f.create_and_start(spec(json!([{"percent": 100}]))).await;
    let viewer = f.a.viewer.clone();
    let changes = [
        (
            Method::POST,
            "/admin/v1/campaigns".to_string(),
            Some(spec(json!([{"count": 1}]))),
        ),
        (
            Method::POST,
            "/admin/v1/campaigns/dry-run".to_string(),
            Some(spec(json!([{"count": 1}]))),
        ),
        (
            Method::POST,
            format!("/admin/v1/campaigns/{id}/start"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/campaigns/{id}/pause"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/campaigns/{id}/resume"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/campaigns/{id}/abort"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/campaigns/{id}/approve"),
            None,
        ),
        (
            Method::DELETE,
            format!("/admin/v1/rollback-blocks/{}/{PKG}", vin(0)),
            None,
        ),
    ];
    for (m, path, body) in changes {
        let r = f.a.call(m.clone(), &path, Some(&viewer), body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} {path}");
    }
    assert_eq!(f.campaign(id).await["state"], "running");
    for path in [
        "/admin/v1/campaigns".to_string(),
        format!("/admin/v1/campaigns/{id}"),
        format!("/admin/v1/campaigns/{id}/vehicles"),
        "/admin/v1/rollback-blocks".to_string(),
    ] {
        let r = f.a.call(Method::GET, &path, Some(&viewer), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn rollback_truth_the_old_version_is_recorded_and_not_offered_again_until_cleared() {
    let f = Fleet::new().await;
    f.vehicles(0..1, "M1", "eu").await;
    let m1 = manifest(0, &old_image());
    f.send_manifest(0, &m1).await;
    let mut s = spec(json!([{"percent": 100}]));
    s["target"] = json!({"installed": [{"hardware_id": HW, "version": "1.0.0"}]});
    let id = f.create_and_start(s.clone()).await;
    // Offered at check-in, and the Director directs it at once.
    let a = f.check_in(0, Some(&m1)).await;
    assert_eq!(a["status"], "new_director_metadata", "{a}");
    // The vehicle installs, fails its self-test, rolls back: its new
    // manifest reports the old image again, then the result.
    let m2 = manifest(0, &old_image());
    f.send_manifest(0, &m2).await;
    f.report(0, PackageOutcome::RolledBack).await;
    let v = f
        .op(Method::GET, &format!("/admin/v1/vehicles/{}", vin(0)), None)
        .await;
    assert_eq!(v["installed"][0]["version"], "1.0.0", "{v}");
    assert_eq!(
        v["installed"][0]["sha256"],
        hex::encode(sha(&old_image()).0)
    );
    assert_eq!(v["assignments"], json!([]));
    let blocks = f
        .op(
            Method::GET,
            &format!("/admin/v1/rollback-blocks?vin={}", vin(0)),
            None,
        )
        .await;
    assert_eq!(blocks[0]["package"], PKG);
    assert_eq!(blocks[0]["outcome"], "rolled_back");
    // Not directed again, by this campaign, a new one or the assignment.
    let a = f.check_in(0, Some(&m2)).await;
    assert_eq!(a["status"], "up_to_date", "{a}");
    s["name"] = json!("again");
    let r =
        f.a.op(Method::POST, "/admin/v1/campaigns/dry-run", Some(s.clone()))
            .await;
    assert_eq!(r.json["matched"], 0);
    assert_eq!(f.campaign(id).await["state"], "completed");
    // The operator says "offer again": the assignment is directed again.
    let r = f
        .op(
            Method::DELETE,
            &format!("/admin/v1/rollback-blocks/{}/{PKG}", vin(0)),
            None,
        )
        .await;
    assert_eq!(r, json!({"cleared": true}));
    let r =
        f.a.op(
            Method::DELETE,
            &format!("/admin/v1/rollback-blocks/{}/{PKG}", vin(0)),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let a = f.check_in(0, Some(&m2)).await;
    assert_eq!(a["status"], "new_director_metadata", "{a}");
    let r =
        f.a.op(Method::POST, "/admin/v1/campaigns/dry-run", Some(s))
            .await;
    assert_eq!(r.json["matched"], 1);
}
