//! The device API over real mutual TLS on loopback, driven by the real
//! Client (`esync_client::http::DeviceHttp` and, end to end, the Client's
//! sans-I/O session through `esync_client::runtime::session::drive`).

mod store_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use esync_api::body::{
    CheckInRequest, CheckInResponse, ComponentOutcome, ComponentResult, PackageOutcome, Report,
    ReportEvent,
};
use esync_api::{BlobId, ErrorCode, ReportId};
use esync_client::core::session::{Session, SessionConfig, SessionStep};
use esync_client::http::{DeviceHttp, DownloadLimits, HttpError, Repo};
use esync_client::runtime::session::{drive, SessionHost};
use esync_identity::{client_tls_config, FleetCa, IssuedIdentity, TrustAnchors, Validity};
use esync_package::package::{
    Artifact, Component, ComponentPolicy, DownloadPolicy, Package, PackageId, PackageSpec,
};
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin,
};
use esync_proto::message::{
    AgentState, Criticality, DeltaCapability, ImageEncoding, InstalledImage, InventoryReport,
    PatchFormat, VerificationLevel,
};
use esync_server::blob::{BlobStore, Expect};
use esync_server::deltas::{DeltaOutcome, DeltaWorker};
use esync_server::device::{device_router, serve_device, DeviceState};
use esync_server::director::{Director, DirectorConfig};
use esync_server::provision::Provisioner;
use esync_server::repo::{offline, ImageRepo, ImageRepoConfig};
use esync_server::store::{
    DeltaState, Ecu, Image, ManifestRecord, PackageRecord, SqliteStore, Store, VehicleRecord,
};
use esync_server::tls::DeviceTls;
use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
use esync_uptane::{MemoryStore, PrivateKey, UnixTime};
use sha2::{Digest as _, Sha256};

const T: Duration = Duration::from_secs(20);

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn now_ms() -> i64 {
    now_s() * 1000
}

fn sha(b: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(b).into())
}

fn vin_a() -> Vin {
    Vin::new("WVWZZZ1JZXW000001").expect("vin")
}

fn vin_b() -> Vin {
    Vin::new("WVWZZZ1JZXW000002").expect("vin")
}

/// One test vehicle: its primary (the Client) and one ECU.
struct Car {
    vin: Vin,
    primary: PrivateKey,
    ecu: PrivateKey,
    identity: IssuedIdentity,
}

const PRIMARY: &str = "GW0001";
const ECU: &str = "SER1";
const HW: &str = "hw-1";

fn old_image() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect()
}

fn new_image() -> Vec<u8> {
    let mut b = old_image();
    for x in b.iter_mut().step_by(997) {
        *x ^= 0x5a;
    }
    b
}

struct Fx {
    _dir: tempfile::TempDir,
    prov: Provisioner,
    anchors: TrustAnchors,
    tls: Arc<DeviceTls>,
    store: Arc<dyn Store>,
    blobs: BlobStore,
    director: Arc<Director>,
    url: String,
    image_root: Vec<u8>,
    director_root: Vec<u8>,
    pkg: Package,
}

impl Fx {
    fn http(&self, id: &IssuedIdentity) -> DeviceHttp {
        let cfg = client_tls_config(id, &self.anchors).expect("client tls");
        DeviceHttp::new(&self.url, cfg).expect("http")
    }

    async fn car(&self, vin: Vin, seed: u8) -> Car {
        let primary = PrivateKey::from_seed(&[seed; 32]);
        let ecu = PrivateKey::from_seed(&[seed + 1; 32]);
        self.store
            .upsert_vehicle(
                &VehicleRecord {
                    vin: vin.to_string(),
                    model: "M".into(),
                    region: "eu".into(),
                    hardware_ids: vec![HW.into()],
                },
                1,
            )
            .await
            .expect("vehicle");
        for (serial, key, primary) in [(PRIMARY, &primary, true), (ECU, &ecu, false)] {
            self.store
                .upsert_ecu(&Ecu {
                    serial: format!("{serial}-{vin}"),
                    vin: vin.to_string(),
                    hardware_id: if primary { "gw".into() } else { HW.into() },
                    primary,
                    public_key: serde_json::to_vec(&key.public_key()).expect("key json"),
                })
                .await
                .expect("ecu");
        }
        let identity = self
            .prov
            .ca()
            .issue_vehicle(&vin, Validity::days_from(now_s() - 60, 30))
            .expect("vehicle cert");
        Car {
            vin,
            primary,
            ecu,
            identity,
        }
    }
}

impl Car {
    fn ecu_serial(&self) -> EcuSerial {
        EcuSerial::new(format!("{ECU}-{}", self.vin)).expect("serial")
    }

    /// A signed manifest reporting `installed` on the ECU, with a fresh
    /// nonce.
    fn manifest(&self, installed: &[u8]) -> Vec<u8> {
        self.manifest_with(installed, &self.primary, &self.ecu, &self.ecu_serial())
    }

    fn manifest_with(
        &self,
        installed: &[u8],
        primary: &PrivateKey,
        ecu_key: &PrivateKey,
        serial: &EcuSerial,
    ) -> Vec<u8> {
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
        reports.insert(
            serial.to_string(),
            report.sign(ecu_key).expect("sign report"),
        );
        VehicleManifest {
            vin: self.vin.clone(),
            primary_ecu_serial: EcuSerial::new(format!("{PRIMARY}-{}", self.vin)).expect("s"),
            ecu_version_reports: reports,
        }
        .sign(primary)
        .expect("sign manifest")
    }

    fn inventory(&self, installed: &[u8]) -> InventoryReport {
        InventoryReport {
            nonce: [0; 16],
            device: DevicePath::new("/ecu1").expect("device"),
            hardware_id: HardwareId::new(HW).expect("hw"),
            serial: self.ecu_serial(),
            installed: InstalledImage {
                version: SoftwareVersion::new("1.0.0").expect("v"),
                release_counter: ReleaseCounter(1),
                length: installed.len() as u64,
                sha256: sha(installed),
            },
            delta: DeltaCapability {
                formats: vec![PatchFormat::BsdiffZstd],
                max_patch_memory: 1 << 20,
            },
            rollback_versions: vec![],
            verification: VerificationLevel::Partial,
            criticality: Criticality::Normal,
            state: AgentState::Idle,
        }
    }
}

/// A Server on loopback: SQLite, blobs, an initialised Director, an Image
/// repository whose root and targets were signed "offline" (snapshot and
/// timestamp by the Server's online keys, named by root version 2), two
/// images and a package updating the ECU from 1.0.0 to 2.0.0.
async fn start() -> Fx {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("s.db"))
            .await
            .expect("db"),
    );
    start_on(dir, store).await
}

/// Another Server node on the same database, blob directory and TLS
/// configuration; returns its URL.
async fn second_node(f: &Fx) -> String {
    let director = Arc::new(Director::new(
        f.store.clone(),
        f.blobs.clone(),
        DirectorConfig::default(),
    ));
    // Initialising again changes nothing: the keys and root are shared.
    assert_eq!(director.init(now_ms()).await.expect("init"), 1);
    let images = Arc::new(ImageRepo::new(f.store.clone(), ImageRepoConfig::default()));
    let state = DeviceState::new(f.store.clone(), f.blobs.clone(), director, images);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let t = f.tls.clone();
    let router = device_router(state);
    tokio::spawn(async move { serve_device(listener, t, router, std::future::pending()).await });
    url
}

async fn start_on(dir: tempfile::TempDir, store: Arc<dyn Store>) -> Fx {
    let blobs = BlobStore::open(dir.path().join("blobs"), 1 << 30)
        .await
        .expect("blobs");
    let ca = FleetCa::new("fleet", Validity::days_from(now_s() - 60, 365)).expect("ca");
    let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).expect("anchors");
    let server_id = ca
        .issue_server(&["127.0.0.1".into()], Validity::days_from(now_s() - 60, 30))
        .expect("server cert");
    let mut prov = Provisioner::new(ca).expect("prov");
    let crl = prov.crl_der(now_s() - 1, 3600).expect("crl");
    let tls = Arc::new(DeviceTls::new(server_id, anchors.clone(), &[crl]).expect("tls"));

    // Images and package.
    let (old, new) = (old_image(), new_image());
    for (bytes, version) in [(&old, "1.0.0"), (&new, "2.0.0")] {
        let info = blobs
            .put_bytes(Expect::sha256(sha(bytes).0), bytes)
            .await
            .expect("blob");
        store
            .insert_image(
                &Image {
                    name: "ecu-fw".into(),
                    version: version.into(),
                    sha256: info.sha256,
                    length: info.length,
                    hardware_id: HW.into(),
                },
                1,
            )
            .await
            .expect("image");
    }
    let pkg = Package::new(PackageSpec {
        id: PackageId::new("pkg-1").expect("id"),
        download: DownloadPolicy::default(),
        components: vec![Component {
            device: DevicePath::new("/ecu1").expect("device"),
            hardware_id: HardwareId::new(HW).expect("hw"),
            version: SoftwareVersion::new("2.0.0").expect("v"),
            release_counter: ReleaseCounter(2),
            image: Artifact::describe(&new, esync_server::packages::DEFAULT_CHUNK_SIZE)
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
            id: "pkg-1".into(),
            model_json: serde_json::to_string(&pkg).expect("json"),
            created_ms: 1,
        })
        .await
        .expect("package");

    // Director.
    let director = Arc::new(Director::new(
        store.clone(),
        blobs.clone(),
        DirectorConfig::default(),
    ));
    assert_eq!(director.init(now_ms()).await.expect("init"), 1);
    let director_root = store
        .metadata(esync_server::store::RepoKind::Director, "", "1.root.json")
        .await
        .expect("get")
        .expect("root 1")
        .body;

    // Image repository: offline root/targets keys, online snapshot/timestamp.
    let images = Arc::new(ImageRepo::new(store.clone(), ImageRepoConfig::default()));
    let root_k = PrivateKey::generate();
    let targets_k = PrivateKey::generate();
    let offline_snap = PrivateKey::generate();
    let offline_ts = PrivateKey::generate();
    let spec = |k: &PrivateKey| (vec![k.public_key()], 1u64);
    let roles: offline::RoleSpec = [
        ("root".to_string(), spec(&root_k)),
        ("targets".to_string(), spec(&targets_k)),
        ("snapshot".to_string(), spec(&offline_snap)),
        ("timestamp".to_string(), spec(&offline_ts)),
    ]
    .into_iter()
    .collect();
    let expires = UnixTime(now_s() + 30 * 86_400);
    let image_root =
        offline::initial_root(&roles, expires, std::slice::from_ref(&root_k)).expect("root 1");
    images
        .upload(&image_root, now_ms())
        .await
        .expect("upload root 1");
    let online = images.create_online_keys(now_ms()).await.expect("online");
    let changes: offline::RoleSpec = [
        ("snapshot".to_string(), (vec![online.snapshot.clone()], 1)),
        ("timestamp".to_string(), (vec![online.timestamp.clone()], 1)),
    ]
    .into_iter()
    .collect();
    let root2 = offline::rotate_root(
        &image_root,
        &changes,
        expires,
        std::slice::from_ref(&root_k),
        std::slice::from_ref(&root_k),
    )
    .expect("root 2");
    images
        .upload(&root2, now_ms())
        .await
        .expect("upload root 2");
    let targets = offline::sign_targets(
        std::slice::from_ref(&pkg),
        1,
        expires,
        std::slice::from_ref(&targets_k),
    )
    .expect("targets");
    let up = images.upload(&targets, now_ms()).await.expect("targets");
    assert_eq!(up.online_resigned, Some((1, 1)));

    let state = DeviceState::new(store.clone(), blobs.clone(), director.clone(), images);
    let router = device_router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let t = tls.clone();
    tokio::spawn(async move { serve_device(listener, t, router, std::future::pending()).await });
    Fx {
        _dir: dir,
        prov,
        anchors,
        tls,
        store,
        blobs,
        director,
        url,
        image_root,
        director_root,
        pkg,
    }
}

fn api_code(e: &HttpError) -> Option<ErrorCode> {
    match e {
        HttpError::Status { api: Some(a), .. } => Some(a.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_revoked_and_unregistered_certificates_are_refused() {
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    let req = CheckInRequest {
        manifest_sha256: sha(b"x"),
    };
    assert_eq!(
        f.http(&a.identity)
            .check_in(&req, T)
            .await
            .expect("fleet vehicle"),
        CheckInResponse::ManifestWanted
    );

    // A certificate of another CA never reaches HTTP.
    let other = FleetCa::new("other", Validity::days_from(now_s() - 60, 365)).expect("ca");
    let foreign = other
        .issue_vehicle(&vin_a(), Validity::days_from(now_s() - 60, 30))
        .expect("issue");
    let r = f.http(&foreign).check_in(&req, T).await;
    assert!(matches!(r, Err(HttpError::Transport(_))), "{r:?}");

    // A valid certificate of a vehicle the Server does not know: 403.
    let stranger = f
        .prov
        .ca()
        .issue_vehicle(&vin_b(), Validity::days_from(now_s() - 60, 30))
        .expect("issue");
    let r = f.http(&stranger).check_in(&req, T).await;
    assert_eq!(
        r.as_ref().err().and_then(api_code),
        Some(ErrorCode::Forbidden),
        "{r:?}"
    );

    // An Agent certificate of a registered vehicle: a fleet member, but not
    // a vehicle's Client: 403 on every route.
    let agent = f
        .prov
        .ca()
        .issue_agent(
            &vin_a(),
            &DevicePath::new("/ecu1").expect("device"),
            Validity::days_from(now_s() - 60, 30),
        )
        .expect("agent cert");
    let r = f.http(&agent).check_in(&req, T).await;
    assert_eq!(
        r.as_ref().err().and_then(api_code),
        Some(ErrorCode::Forbidden),
        "{r:?}"
    );

    // Revoked, once the CRL is reloaded: refused at the TLS layer (a new
    // client, so no connection from before the revocation is reused).
    let after = f.http(&a.identity);
    let mut prov = f.prov;
    let serial = esync_identity::parse_identity(&a.identity.cert_der)
        .expect("parse")
        .serial_hex;
    assert!(prov.revoke(&serial, now_s() - 1).expect("revoke"));
    f.tls
        .reload_crls(&[prov.crl_der(now_s() - 1, 3600).expect("crl")])
        .expect("reload");
    let r = after.check_in(&req, T).await;
    assert!(matches!(r, Err(HttpError::Transport(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vin_in_the_body_is_ignored_and_another_vehicles_manifest_is_dropped() {
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    let b = f.car(vin_b(), 20).await;
    // B's manifest is on record.
    let mb = b.manifest(&old_image());
    f.http(&b.identity)
        .upload_manifest(&mb, T)
        .await
        .expect("B uploads");
    // A sends B's manifest hash and B's VIN in the body: the Server answers
    // for A (whose manifest it does not have).
    let body = serde_json::to_vec(&serde_json::json!({
        "manifest_sha256": hex::encode(sha(&mb).0),
        "vin": vin_b().to_string(),
    }))
    .expect("json");
    let ha = f.http(&a.identity);
    assert_eq!(
        ha.check_in_raw(body, T).await.expect("check-in"),
        CheckInResponse::ManifestWanted
    );
    // A uploading B's manifest (signed for B): dropped, B's record unchanged.
    let r = ha.upload_manifest(&mb, T).await;
    assert_eq!(
        r.as_ref().err().and_then(api_code),
        Some(ErrorCode::ManifestRejected),
        "{r:?}"
    );
    assert!(f
        .store
        .manifest(vin_a().as_str())
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        f.store
            .manifest(vin_b().as_str())
            .await
            .expect("get")
            .map(|m| m.body),
        Some(mb)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_forged_and_unknown_ecu_manifests_are_dropped() {
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    let h = f.http(&a.identity);
    let m = a.manifest(&old_image());
    let accepted = h.upload_manifest(&m, T).await.expect("fresh manifest");
    assert_eq!(accepted.manifest_sha256, sha(&m));
    let stored = || async {
        let r: Option<ManifestRecord> = f.store.manifest(vin_a().as_str()).await.expect("get");
        r.map(|r| r.body)
    };
    let wrong = PrivateKey::from_seed(&[99; 32]);
    let cases = [
        ("replay", m.clone()),
        (
            "forged primary",
            a.manifest_with(&old_image(), &wrong, &a.ecu, &a.ecu_serial()),
        ),
        (
            "forged ECU report",
            a.manifest_with(&old_image(), &a.primary, &wrong, &a.ecu_serial()),
        ),
        (
            "unknown ECU",
            a.manifest_with(
                &old_image(),
                &a.primary,
                &a.ecu,
                &EcuSerial::new("NOT-REGISTERED").expect("serial"),
            ),
        ),
        ("not JSON", b"{not json".to_vec()),
    ];
    for (what, body) in cases {
        let r = h.upload_manifest(&body, T).await;
        assert_eq!(
            r.as_ref().err().and_then(api_code),
            Some(ErrorCode::ManifestRejected),
            "{what}: {r:?}"
        );
        assert_eq!(stored().await, Some(m.clone()), "{what} stored something");
    }
    // The check-in by the accepted hash is recognised.
    let r = h
        .check_in(
            &CheckInRequest {
                manifest_sha256: sha(&m),
            },
            T,
        )
        .await
        .expect("check-in");
    assert_eq!(r, CheckInResponse::UpToDate, "nothing assigned yet");
    // The answer is cached: an assignment behind the Director's back is
    // seen once the cache is told (as the admin API does) ...
    f.store
        .assign("pkg-1", vin_a().as_str(), 1)
        .await
        .expect("assign");
    let req = CheckInRequest {
        manifest_sha256: sha(&m),
    };
    assert_eq!(
        h.check_in(&req, T).await.expect("cached"),
        CheckInResponse::UpToDate
    );
    f.director.forget(&vin_a());
    assert!(matches!(
        h.check_in(&req, T).await.expect("check-in"),
        CheckInResponse::NewDirectorMetadata { .. }
    ));
    let targets = || async {
        let name = esync_api::MetadataFileName::new("targets.json").expect("name");
        let body = h
            .metadata_file(Repo::Director, &name, 1 << 20, T)
            .await
            .expect("get")
            .expect("targets.json");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        v["signed"]["targets"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .expect("targets")
    };
    assert_eq!(targets().await, vec!["pkg-1/ecu1/2.0.0/full".to_string()]);
    // Unassigned: the directed targets are withdrawn (re-signed empty).
    assert!(f
        .store
        .unassign("pkg-1", vin_a().as_str())
        .await
        .expect("unassign"));
    f.director.forget(&vin_a());
    assert_eq!(
        h.check_in(&req, T).await.expect("check-in"),
        CheckInResponse::UpToDate
    );
    assert!(targets().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_served_with_range_and_reports_are_idempotent() {
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    let h = f.http(&a.identity);
    let img = new_image();
    let id = BlobId(sha(&img));
    let dir = tempfile::tempdir().expect("dir");
    let dest = dir.path().join("blob");
    // A partial download on disk: the Client resumes with Range.
    std::fs::write(esync_client::http::partial_path(&dest), &img[..12_345]).expect("partial");
    let d = h
        .download_blob(&id, img.len() as u64, &dest, DownloadLimits::default())
        .await
        .expect("resumed download");
    assert_eq!(d.resumed_from, 12_345);
    assert_eq!(d.fetched, img.len() as u64 - 12_345);
    assert_eq!(std::fs::read(&dest).expect("read"), img);
    // Past the end: 416.
    let r = h.open_blob(&id, img.len() as u64, T).await;
    assert!(
        matches!(&r, Err(HttpError::Status { status, .. }) if status.as_u16() == 416),
        "{:?}",
        r.err()
    );
    // Unknown blob: 404.
    let r = h.open_blob(&BlobId(sha(b"nothing")), 0, T).await;
    assert_eq!(
        r.err().as_ref().and_then(api_code),
        Some(ErrorCode::NotFound)
    );

    let report = Report {
        created_wall_ms: 1,
        event: ReportEvent::Result {
            package: "pkg-1".into(),
            outcome: PackageOutcome::Installed,
            components: vec![ComponentResult {
                ecu: a.ecu_serial(),
                outcome: ComponentOutcome::Installed,
                running: SoftwareVersion::new("2.0.0").expect("v"),
                failure: None,
            }],
        },
    };
    let rid = ReportId::new("report-0001").expect("id");
    assert!(
        !h.put_report(&rid, &report, T)
            .await
            .expect("first")
            .duplicate
    );
    assert!(
        h.put_report(&rid, &report, T)
            .await
            .expect("retry")
            .duplicate
    );
    let mut other = report.clone();
    other.created_wall_ms = 2;
    let r = h.put_report(&rid, &other, T).await;
    assert_eq!(
        r.err().as_ref().and_then(api_code),
        Some(ErrorCode::ReportConflict)
    );
    assert_eq!(
        f.store
            .reports(vin_a().as_str())
            .await
            .expect("reports")
            .len(),
        1
    );
}

async fn run_session(
    f: &Fx,
    car: &Car,
    installed: &[u8],
    downloads: &std::path::Path,
) -> SessionStep {
    let http = f.http(&car.identity);
    let mut s = Session::open(
        MemoryStore::new(f.director_root.clone()),
        MemoryStore::new(f.image_root.clone()),
        car.vin.clone(),
        None,
        SessionConfig::default(),
    )
    .expect("session");
    let host = SessionHost {
        http: &http,
        downloads: downloads.to_owned(),
        request_timeout: T,
        idle_timeout: T,
        started: Instant::now(),
    };
    let step = s
        .check_in(
            host.now(),
            car.manifest(installed),
            vec![car.inventory(installed)],
        )
        .expect("check-in");
    drive(&mut s, &host, step, |_| None).await.expect("drive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_gets_its_assigned_package_then_the_delta_once_it_is_done() {
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    let (old, new) = (old_image(), new_image());
    let dl = tempfile::tempdir().expect("dl");

    // Nothing assigned: up to date, and no Director targets signed.
    let step = run_session(&f, &a, &old, dl.path()).await;
    assert!(matches!(step, SessionStep::UpToDate), "{step:?}");
    // ... and that check-in signed and wrote nothing.
    let d = esync_server::store::RepoKind::Director;
    for name in ["timestamp.json", "snapshot.json", "targets.json"] {
        assert_eq!(
            f.store
                .metadata(d, vin_a().as_str(), name)
                .await
                .expect("get"),
            None
        );
    }
    assert_eq!(
        f.store
            .director_version(vin_a().as_str(), "timestamp")
            .await
            .expect("v"),
        0
    );

    f.store
        .assign("pkg-1", vin_a().as_str(), 1)
        .await
        .expect("assign");
    // First session: the delta job is queued, the full image is directed.
    let step = run_session(&f, &a, &old, dl.path()).await;
    let SessionStep::Ready(ready) = step else {
        panic!("not ready: {step:?}");
    };
    assert_eq!(ready.package.id().as_str(), "pkg-1");
    assert_eq!(ready.components.len(), 1);
    assert_eq!(ready.components[0].encoding, ImageEncoding::Full);
    assert_eq!(ready.components[0].artifact.sha256, sha(&new));
    let job = f
        .store
        .delta_job(&sha(&old).0, &sha(&new).0, "BsdiffZstd")
        .await
        .expect("job")
        .expect("queued for the reported pair");
    assert_eq!(job.state, DeltaState::Queued);

    // The worker generates it; the next session gets the delta.
    let worker = DeltaWorker::new(f.store.clone(), f.blobs.clone(), "w1", 60_000);
    let out = worker.run_once(now_ms()).await.expect("worker");
    let DeltaOutcome::Done { patch, .. } = out else {
        panic!("delta not generated: {out:?}");
    };
    assert_eq!(
        worker.run_once(now_ms()).await.expect("idle"),
        DeltaOutcome::Idle
    );
    let dl2 = tempfile::tempdir().expect("dl");
    let step = run_session(&f, &a, &old, dl2.path()).await;
    let SessionStep::Ready(ready) = step else {
        panic!("not ready: {step:?}");
    };
    match &ready.components[0].encoding {
        ImageEncoding::Delta {
            format,
            source_sha256,
            patch_sha256,
            ..
        } => {
            assert_eq!(*format, PatchFormat::BsdiffZstd);
            assert_eq!(*source_sha256, sha(&old));
            assert_eq!(patch_sha256.0, patch.sha256);
        }
        other => panic!("expected the delta, got {other:?}"),
    }
    let on_disk = std::fs::read(
        dl2.path()
            .join(BlobId(Sha256Digest(patch.sha256)).to_string()),
    )
    .expect("patch downloaded");
    assert_eq!(on_disk.len() as u64, patch.length);

    // Once the vehicle reports the new image, nothing is pending.
    let h = f.http(&a.identity);
    let m = a.manifest(&new);
    h.upload_manifest(&m, T).await.expect("manifest");
    let r = h
        .check_in(
            &CheckInRequest {
                manifest_sha256: sha(&m),
            },
            T,
        )
        .await
        .expect("check-in");
    assert_eq!(r, CheckInResponse::UpToDate);
    // Still exactly one job for the pair.
    assert_eq!(
        worker.run_once(now_ms()).await.expect("idle"),
        DeltaOutcome::Idle
    );
    let _ = &f.pkg;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn director_key_rotation_is_followed_by_the_client() {
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    f.store
        .assign("pkg-1", vin_a().as_str(), 1)
        .await
        .expect("assign");
    let dl = tempfile::tempdir().expect("dl");
    assert!(matches!(
        run_session(&f, &a, &old_image(), dl.path()).await,
        SessionStep::Ready(_)
    ));
    // Rotate every role; the Client, pinned at root 1, follows the chain.
    let mut v = 1;
    for role in ["timestamp", "snapshot", "targets", "root"] {
        v = f
            .director
            .rotate_keys(role, now_ms())
            .await
            .expect("rotate");
    }
    assert_eq!(v, 5);
    let h = f.http(&a.identity);
    for n in 1..=5 {
        let name = esync_api::MetadataFileName::new(&format!("{n}.root.json")).expect("name");
        assert!(h
            .metadata_file(Repo::Director, &name, 1 << 20, T)
            .await
            .expect("get")
            .is_some());
    }
    let dl2 = tempfile::tempdir().expect("dl");
    let step = run_session(&f, &a, &old_image(), dl2.path()).await;
    assert!(matches!(step, SessionStep::Ready(_)), "{step:?}");
}

/// One raw HTTP/1.1 request over mutual TLS; returns (status, body).
async fn raw(f: &Fx, id: &IssuedIdentity, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = client_tls_config(id, &f.anchors).expect("client tls");
    let addr = f.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("tls");
    let req = format!("{head}Host: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    tls.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = match text.find("\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => vec![],
    };
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_error_body_of_their_code() {
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    let big = vec![b' '; 2048];
    let len = |n: usize| format!("Content-Type: application/json\r\nContent-Length: {n}\r\n");
    let cases: Vec<(String, Vec<u8>, ErrorCode)> = vec![
        (
            format!("POST /v1/checkin HTTP/1.1\r\n{}", len(big.len())),
            big.clone(),
            ErrorCode::BodyTooLarge,
        ),
        (
            "POST /v1/checkin HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n".into(),
            b"{}".to_vec(),
            ErrorCode::UnsupportedMediaType,
        ),
        (
            format!("POST /v1/checkin HTTP/1.1\r\n{}", len(5)),
            b"{\"a\":".to_vec(),
            ErrorCode::MalformedBody,
        ),
        (
            "GET /v1/checkin HTTP/1.1\r\n".into(),
            vec![],
            ErrorCode::MethodNotAllowed,
        ),
        (
            "GET /v1/nothing HTTP/1.1\r\n".into(),
            vec![],
            ErrorCode::NotFound,
        ),
        (
            "GET /v1/blobs/xyz HTTP/1.1\r\n".into(),
            vec![],
            ErrorCode::BadPath,
        ),
        (
            "GET /v1/director/..%2Fx.json HTTP/1.1\r\n".into(),
            vec![],
            ErrorCode::BadPath,
        ),
        (
            "GET /v1/image/nothing.json HTTP/1.1\r\n".into(),
            vec![],
            ErrorCode::NotFound,
        ),
        (
            format!("PUT /v1/reports/short HTTP/1.1\r\n{}", len(2)),
            b"{}".to_vec(),
            ErrorCode::BadPath,
        ),
    ];
    for (head, body, code) in cases {
        let (status, answer) = raw(&f, &a.identity, &head, &body).await;
        assert_eq!(status, code.status().as_u16(), "{head}");
        let e: esync_api::ErrorBody = serde_json::from_slice(&answer)
            .unwrap_or_else(|err| panic!("{head}: not an ErrorBody ({err}): {answer:?}"));
        assert_eq!(e.code, code, "{head}");
    }
    // A 206 carries its Content-Range; the body is exactly the range.
    let img = new_image();
    let head = format!(
        "GET /v1/blobs/{} HTTP/1.1\r\nRange: bytes=100-199\r\n",
        BlobId(sha(&img))
    );
    let (status, body) = raw(&f, &a.identity, &head, &[]).await;
    assert_eq!(status, 206);
    assert_eq!(body, img[100..200].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_serve_one_truth() {
    let Some((store, schema)) = store_support::postgres("device").await else {
        return;
    };
    let f = start_on(tempfile::tempdir().expect("dir"), store).await;
    let url2 = second_node(&f).await;
    let a = f.car(vin_a(), 10).await;
    f.store
        .assign("pkg-1", vin_a().as_str(), 1)
        .await
        .expect("assign");
    // The manifest goes to node 1; node 2 knows it at once.
    let h1 = f.http(&a.identity);
    let cfg = client_tls_config(&a.identity, &f.anchors).expect("tls");
    let h2 = DeviceHttp::new(&url2, cfg).expect("http");
    let m = a.manifest(&old_image());
    h1.upload_manifest(&m, T).await.expect("manifest");
    // A replay at the other node is caught too (nonces in the database).
    let r = h2.upload_manifest(&m, T).await;
    assert_eq!(
        r.err().as_ref().and_then(api_code),
        Some(ErrorCode::ManifestRejected)
    );
    let req = CheckInRequest {
        manifest_sha256: sha(&m),
    };
    let CheckInResponse::NewDirectorMetadata { timestamp_version } =
        h2.check_in(&req, T).await.expect("check-in")
    else {
        panic!("node 2 does not see the assignment");
    };
    // Node 1 answers with the same version: nothing re-signed.
    assert_eq!(
        h1.check_in(&req, T).await.expect("check-in"),
        CheckInResponse::NewDirectorMetadata { timestamp_version }
    );
    for name in [
        "timestamp.json",
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
    ] {
        let n = esync_api::MetadataFileName::new(name).expect("name");
        let one = h1
            .metadata_file(Repo::Director, &n, 1 << 20, T)
            .await
            .expect("node 1");
        let two = h2
            .metadata_file(Repo::Director, &n, 1 << 20, T)
            .await
            .expect("node 2");
        assert!(one.is_some(), "{name}");
        assert_eq!(one, two, "{name}");
    }
    // The Client completes its session against node 2.
    let f2 = Fx { url: url2, ..f };
    let dl = tempfile::tempdir().expect("dl");
    let step = run_session(&f2, &a, &old_image(), dl.path()).await;
    assert!(matches!(step, SessionStep::Ready(_)), "{step:?}");
    drop(f2);
    schema.drop_schema().await;
}

/// Two nodes publishing at once can leave the highest timestamp naming the
/// lower snapshot; the next `timestamp.json` served names the stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_left_behind_by_a_race_is_re_signed_before_it_is_served() {
    use esync_server::store::{MetadataRecord, RepoKind};
    let f = start().await;
    let a = f.car(vin_a(), 10).await;
    f.store
        .assign("pkg-1", vin_a().as_str(), 1)
        .await
        .expect("assign");
    let h = f.http(&a.identity);
    let m = a.manifest(&old_image());
    h.upload_manifest(&m, T).await.expect("manifest");
    let req = CheckInRequest {
        manifest_sha256: sha(&m),
    };
    assert!(matches!(
        h.check_in(&req, T).await.expect("check-in"),
        CheckInResponse::NewDirectorMetadata { .. }
    ));
    let store = f.store.clone();
    let key = |role: &'static str| {
        let store = store.clone();
        async move {
            let rec = store
                .signing_keys(RepoKind::Director, role)
                .await
                .expect("keys")
                .remove(0);
            PrivateKey::from_seed(&rec.secret.as_slice().try_into().expect("seed"))
        }
    };
    let put = |name: &str, version: u64, body: Vec<u8>| MetadataRecord {
        repo: RepoKind::Director,
        scope: vin_a().to_string(),
        name: name.into(),
        version,
        body,
        created_ms: now_ms(),
    };
    let exp = UnixTime(now_s() + 86_400);
    // "Node B" signs snapshot N; "node A", which signed snapshot 1, then
    // signs timestamp M naming snapshot 1 (versions from the shared counters).
    let vin = vin_a();
    let sv = f
        .store
        .next_director_versions(vin.as_str(), &["snapshot"])
        .await
        .expect("v")[0];
    let tv = f
        .store
        .next_director_versions(vin.as_str(), &["timestamp"])
        .await
        .expect("v")[0];
    let snap2 = esync_server::meta::sign(
        &esync_server::meta::snapshot(sv, exp, 1),
        &[key("snapshot").await],
    )
    .expect("sign");
    let snap1 = f
        .store
        .metadata(RepoKind::Director, vin_a().as_str(), "1.snapshot.json")
        .await
        .expect("get")
        .expect("snapshot 1")
        .body;
    let ts5 = esync_server::meta::sign(
        &esync_server::meta::timestamp(tv, exp, 1, &snap1),
        &[key("timestamp").await],
    )
    .expect("sign");
    for (name, v, body) in [
        (format!("{sv}.snapshot.json").as_str(), sv, snap2.clone()),
        ("snapshot.json", sv, snap2),
        ("timestamp.json", tv, ts5),
    ] {
        assert!(f
            .store
            .put_metadata(&put(name, v, body))
            .await
            .expect("put"));
    }
    let name = esync_api::MetadataFileName::new("timestamp.json").expect("name");
    let body = h
        .metadata_file(Repo::Director, &name, 1 << 20, T)
        .await
        .expect("get")
        .expect("timestamp");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["signed"]["meta"]["snapshot.json"]["version"], sv);
    assert!(v["signed"]["version"].as_u64().expect("version") > tv);
}
