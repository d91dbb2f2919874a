//! The demo on the real Server: the in-process esync-server's provisioning,
//! delta and Director paths with the real Client session; one vehicle
//! installing through its Agents. The fleet demo itself runs in CI as the
//! binary's short mode (`demo --short`, a step of `.ci/run`), whose exit
//! code carries the checks of `esync_examples::fleet::run_fleet`.
#![allow(clippy::unwrap_used, reason = "test code")]

/// The real Server in process ([`esync_examples::backend::Backend`]):
/// a vehicle registered and given a certificate the Server signed from a
/// CSR, two firmware versions uploaded, a delta built by the Server's delta
/// worker, a package, the Image repository signed offline, a Client state
/// directory provisioned with the Server's roots (which checks them), and
/// the vehicle's check-ins over mutual TLS: its signed manifest accepted,
/// then the assigned package directed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_provisions_builds_deltas_and_directs_a_package() {
    use esync_api::body::{CheckInRequest, CheckInResponse};
    use esync_client::runtime::{ConfigFile, StateDir};
    use esync_examples::backend::Backend;
    use esync_examples::firmware;
    use esync_proto::id::{EcuSerial, ReleaseCounter, SoftwareVersion, Vin};
    use esync_proto::message::InstalledImage;
    use esync_uptane::manifest::{EcuVersionReport, ReportedImage, VehicleManifest};
    use esync_uptane::{PrivateKey, UnixTime};
    use std::collections::BTreeMap;
    use std::time::Duration;

    let work = tempfile::tempdir().unwrap();
    let srv = Backend::start(&work.path().join("server"), 1)
        .await
        .unwrap();
    let vin = "WVWZZZ1JZXW000001";
    let primary = PrivateKey::from_seed(&[7; 32]);
    let ecu = PrivateKey::from_seed(&[8; 32]);
    srv.register_vehicle(vin, "M1", "eu", &["gw-hw", "ecm-hw"])
        .await
        .unwrap();
    srv.add_ecu(vin, "GW-1", "gw-hw", true, &primary.public_key())
        .await
        .unwrap();
    srv.add_ecu(vin, "ECM-1", "ecm-hw", false, &ecu.public_key())
        .await
        .unwrap();
    let id = srv.issue_identity(vin, None).await.unwrap();

    let v1 = firmware::initial("/powertrain/ecm", "1.0.0", 1, 96 * 1024);
    let v2 = firmware::derive(&v1, "/powertrain/ecm", "2.0.0", 2, true);
    let h1 = srv
        .upload_image("ecm", "1.0.0", "ecm-hw", &v1)
        .await
        .unwrap();
    let h2 = srv
        .upload_image("ecm", "2.0.0", "ecm-hw", &v2)
        .await
        .unwrap();
    // Bad input is refused with the Server's reason: wrong hash.
    let bad = srv.upload_image("ecm", "1.0.0", "ecm-hw", &v2[..100]).await;
    assert!(bad.is_err());
    let job = srv.delta(&h1, &h2, Duration::from_secs(30)).await.unwrap();
    let patch = job["patch_length"].as_u64().unwrap();
    assert!(patch > 0 && patch < v2.len() as u64 / 4, "{job}");

    let model = srv
        .create_package(&serde_json::json!({"id": "ecm-2", "components": [
            {"device": "/powertrain/ecm", "image": h2, "release_counter": 2}]}))
        .await
        .unwrap();
    assert_eq!(model["id"], "ecm-2", "{model}");
    srv.sign_image_targets(&["ecm-2"]).await.unwrap();

    // The Client's state directory: provisioning checks the identity
    // against the fleet CA and both roots.
    let state = StateDir::new(&work.path().join("client"));
    let got = state
        .provision(
            &ConfigFile {
                server_url: srv.device_url.clone(),
            },
            &id.chain_pem(),
            &id.key_pem(),
            &srv.ca_pem,
            &srv.director_root().await.unwrap(),
            &srv.image_root().await.unwrap(),
        )
        .unwrap();
    assert_eq!(got.as_str(), vin);
    let http = state.http().unwrap();

    // The vehicle reports 1.0.0 (ECU-signed, in the primary-signed manifest).
    let serial = EcuSerial::new("ECM-1").unwrap();
    let report = EcuVersionReport {
        ecu_serial: serial.clone(),
        installed_image: ReportedImage::from_installed(
            &InstalledImage {
                version: SoftwareVersion::new("1.0.0").unwrap(),
                release_counter: ReleaseCounter(1),
                length: v1.len() as u64,
                sha256: esync_agent::device::sha256(&v1),
            },
            "installed".into(),
        ),
        release_counter: 1,
        nonce: format!("{:032x}", 42u128),
        attacks_detected: String::new(),
        timestamp: UnixTime(esync_examples::now_ms() as i64 / 1000),
    };
    let mut reports = BTreeMap::new();
    reports.insert(serial.to_string(), report.sign(&ecu).unwrap());
    let manifest = VehicleManifest {
        vin: Vin::new(vin).unwrap(),
        primary_ecu_serial: EcuSerial::new("GW-1").unwrap(),
        ecu_version_reports: reports,
    }
    .sign(&primary)
    .unwrap();
    let t = Duration::from_secs(20);
    let sha = esync_agent::device::sha256(&manifest);
    let req = CheckInRequest {
        manifest_sha256: sha,
    };
    // Unknown to the Server until uploaded; accepted after verification.
    assert_eq!(
        http.check_in(&req, t).await.unwrap(),
        CheckInResponse::ManifestWanted
    );
    http.upload_manifest(&manifest, t).await.unwrap();
    assert_eq!(
        http.check_in(&req, t).await.unwrap(),
        CheckInResponse::UpToDate
    );
    srv.assign("ecm-2", &[vin.to_owned()]).await.unwrap();
    match http.check_in(&req, t).await.unwrap() {
        CheckInResponse::NewDirectorMetadata { timestamp_version } => {
            assert!(timestamp_version >= 1)
        }
        other => panic!("after the assignment: {other:?}"),
    }

    // The real Client session: Director and Image metadata verified in
    // full into the state directory, the package planned against the
    // ECM's inventory (it applies bsdiff+zstd patches), its blob
    // downloaded over mutual TLS and verified.
    use esync_client::core::session::{Session, SessionConfig, SessionStep};
    use esync_client::runtime::session::{drive, SessionHost};
    use esync_proto::message::{
        AgentState, Criticality, DeltaCapability, ImageEncoding, InventoryReport, PatchFormat,
        VerificationLevel,
    };
    let inventory = InventoryReport {
        nonce: [0; 16],
        device: esync_proto::id::DevicePath::new("/powertrain/ecm").unwrap(),
        hardware_id: esync_proto::id::HardwareId::new("ecm-hw").unwrap(),
        serial,
        installed: InstalledImage {
            version: SoftwareVersion::new("1.0.0").unwrap(),
            release_counter: ReleaseCounter(1),
            length: v1.len() as u64,
            sha256: esync_agent::device::sha256(&v1),
        },
        delta: DeltaCapability {
            formats: vec![PatchFormat::BsdiffZstd],
            max_patch_memory: 64 * 1024 * 1024,
        },
        rollback_versions: vec![],
        verification: VerificationLevel::Full,
        criticality: Criticality::Normal,
        state: AgentState::Idle,
    };
    let mut session = Session::open(
        esync_store::trust::DirTrustStore::new(&state.director_dir()),
        esync_store::trust::DirTrustStore::new(&state.image_dir()),
        Vin::new(vin).unwrap(),
        Some(sha),
        SessionConfig::default(),
    )
    .unwrap();
    let host = SessionHost {
        http: &http,
        downloads: state.downloads_dir(),
        request_timeout: t,
        idle_timeout: t,
        started: std::time::Instant::now(),
    };
    let step = session
        .check_in(host.now(), manifest.clone(), vec![inventory])
        .unwrap();
    let ready = match drive(&mut session, &host, step, |_| None).await.unwrap() {
        SessionStep::Ready(r) => r,
        other => panic!("session: {other:?}"),
    };
    assert_eq!(ready.package.id().as_str(), "ecm-2");
    assert_eq!(ready.components.len(), 1);
    let c = &ready.components[0];
    eprintln!("ecm-2 component: {:?}", c.encoding);
    let blob = std::fs::read(esync_client::runtime::vehicle::blob_path(
        &state.downloads_dir(),
        &esync_api::BlobId(c.artifact.sha256),
    ))
    .unwrap();
    assert_eq!(esync_agent::device::sha256(&blob), c.artifact.sha256);
    // The delta was ready before the check-in: the plan takes it.
    match &c.encoding {
        ImageEncoding::Delta { patch_length, .. } => {
            assert_eq!(*patch_length, patch);
            assert_eq!(blob.len() as u64, patch);
        }
        ImageEncoding::Full => panic!("full image although the delta was ready: {c:?}"),
    }
}

/// One vehicle on the real Server: the real Client (`VehicleRuntime` on
/// its embedded broker, the session core over the HTTPS device API) with
/// two Agents on file-backed A/B devices whose certificates and Uptane keys
/// the Server provisioned; the package is installed through the Agents
/// (the ECM by the Server-built delta) and the running slots hold the
/// Server's image bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_one_vehicle_installs_through_its_agents() {
    use esync_api::body::CheckInRequest;
    use esync_client::core::orchestrate::Outcome;
    use esync_client::core::session::{Session, SessionConfig, SessionStep};
    use esync_client::runtime::session::{drive, SessionHost};
    use esync_client::runtime::{ConfigFile, StateDir};
    use esync_examples::backend::Backend;
    use esync_examples::firmware;
    use esync_examples::gateway::Gateway;
    use esync_examples::vehicle::{self, AgentSetup, EcuSpec};
    use esync_proto::id::{DevicePath, EcuSerial, HardwareId, SoftwareVersion, Vin};
    use esync_uptane::PublicKey;
    use std::time::Duration;

    let work = tempfile::tempdir().unwrap();
    let srv = Backend::start(&work.path().join("server"), 1)
        .await
        .unwrap();
    let vin_s = "WVWZZZ1JZXW000002";
    let vin = Vin::new(vin_s).unwrap();
    srv.register_vehicle(vin_s, "M1", "eu", &["gw-hw", "ecm-hw", "bcm-hw"])
        .await
        .unwrap();
    let vid = srv.issue_identity(vin_s, None).await.unwrap();
    let vkey = PublicKey::from_verifying_key(vid.signing_key.verifying_key());
    srv.add_ecu(vin_s, "GW0001", "gw-hw", true, &vkey)
        .await
        .unwrap();
    let ecus = [
        EcuSpec {
            device: DevicePath::new("/powertrain/ecm").unwrap(),
            hardware_id: HardwareId::new("ecm-hw").unwrap(),
            serial: EcuSerial::new("ECM-2").unwrap(),
            stage: 0,
        },
        EcuSpec {
            device: DevicePath::new("/body/bcm").unwrap(),
            hardware_id: HardwareId::new("bcm-hw").unwrap(),
            serial: EcuSerial::new("BCM-2").unwrap(),
            stage: 1,
        },
    ];
    let size = 64 * 1024;
    let mut comps = Vec::new();
    let mut images = Vec::new();
    for (i, e) in ecus.iter().enumerate() {
        let d = e.device.as_str();
        let v1 = firmware::initial(d, "1.0.0", i as u64 + 1, size);
        let v2 = firmware::derive(&v1, d, "2.0.0", i as u64 + 10, true);
        let hw = e.hardware_id.as_str();
        let h1 = srv.upload_image(d, "1.0.0", hw, &v1).await.unwrap();
        let h2 = srv.upload_image(d, "2.0.0", hw, &v2).await.unwrap();
        srv.delta(&h1, &h2, Duration::from_secs(30)).await.unwrap();
        comps.push(
            serde_json::json!({"device": d, "image": h2, "release_counter": 2,
                                      "stage": e.stage}),
        );
        images.push((v1, v2));
    }
    srv.create_package(&serde_json::json!({"id": "fw-2", "components": comps}))
        .await
        .unwrap();
    srv.sign_image_targets(&["fw-2"]).await.unwrap();
    let director_root = srv.director_root().await.unwrap();
    let image_root = srv.image_root().await.unwrap();

    let (broker, endpoint) = vehicle::start_broker(&vid, &srv.anchors, &vin)
        .await
        .unwrap();
    let capacity = vehicle::capacity_for(size + 64 * 1024);
    let mut agents = Vec::new();
    for (i, e) in ecus.iter().enumerate() {
        let id = srv
            .issue_identity(vin_s, Some(e.device.as_str()))
            .await
            .unwrap();
        let key = PublicKey::from_verifying_key(id.signing_key.verifying_key());
        srv.add_ecu(
            vin_s,
            e.serial.as_str(),
            e.hardware_id.as_str(),
            false,
            &key,
        )
        .await
        .unwrap();
        agents.push(
            vehicle::start_agent(
                AgentSetup {
                    ecu: e.clone(),
                    identity: id,
                    image: images[i].0.clone(),
                    version: SoftwareVersion::new("1.0.0").unwrap(),
                    release_counter: 1,
                    safety_precondition: None,
                    // The BCM applies no patches: it gets the full image.
                    deltas: i == 0,
                    fault_version: None,
                },
                &work.path().join(format!("agent-{i}")),
                capacity,
                broker.local_addr(),
                &srv.anchors,
                &vin,
                vid.signing_key.verifying_key(),
                &director_root,
                &image_root,
                &ecus,
            )
            .unwrap(),
        );
    }
    let state = StateDir::new(&work.path().join("client"));
    state
        .provision(
            &ConfigFile {
                server_url: srv.device_url.clone(),
            },
            &vid.chain_pem(),
            &vid.key_pem(),
            &srv.ca_pem,
            &director_root,
            &image_root,
        )
        .unwrap();
    let mut gw = Gateway::start(
        endpoint,
        broker.peer_keys(),
        &vid,
        vin.clone(),
        &work.path().join("gw"),
        vec![],
    )
    .await
    .unwrap();
    let devs: Vec<DevicePath> = ecus.iter().map(|e| e.device.clone()).collect();
    gw.wait_connected(&devs).await.unwrap();
    srv.assign("fw-2", &[vin_s.to_owned()]).await.unwrap();

    let http = state.http().unwrap();
    let t = Duration::from_secs(20);
    let inventory: Vec<_> = gw.inventory(&devs).await.unwrap().into_values().collect();
    let manifest = gw.manifest(&devs).await.unwrap();
    http.upload_manifest(&manifest, t).await.unwrap();
    let sha = esync_agent::device::sha256(&manifest);
    http.check_in(
        &CheckInRequest {
            manifest_sha256: sha,
        },
        t,
    )
    .await
    .unwrap();
    let mut session = Session::open(
        esync_store::trust::DirTrustStore::new(&state.director_dir()),
        esync_store::trust::DirTrustStore::new(&state.image_dir()),
        vin.clone(),
        Some(sha),
        SessionConfig::default(),
    )
    .unwrap();
    let host = SessionHost {
        http: &http,
        downloads: gw.downloads().to_path_buf(),
        request_timeout: t,
        idle_timeout: t,
        started: std::time::Instant::now(),
    };
    let step = session.check_in(host.now(), manifest, inventory).unwrap();
    let ready = match drive(&mut session, &host, step, |_| None).await.unwrap() {
        SessionStep::Ready(r) => r,
        other => panic!("session: {other:?}"),
    };
    let report = gw.install(*ready).await.unwrap();
    assert!(matches!(report.outcome, Outcome::Installed), "{report:?}");
    for (i, a) in agents.iter().enumerate() {
        let slot = vehicle::read_slot(&a.device_dir, capacity).unwrap();
        assert_eq!(
            slot.file_sha256,
            esync_agent::device::sha256(&images[i].1),
            "agent {i}"
        );
    }
    for a in agents {
        a.stop().await.unwrap();
    }
    broker.shutdown();
}
