//! One storage test suite, run unchanged on SQLite and on PostgreSQL.

mod store_support;

use std::sync::Arc;

use esync_server::campaigns::{Approval, CampaignSpec, Target, WaveSpec};
use esync_server::store::{
    AdminRole, CampaignState, Certificate, DbError, DeltaState, Ecu, EcuInstalledRecord, Image,
    Inserted, ManifestRecord, MemberState, MetadataRecord, PackageRecord, RepoKind,
    SigningKeyRecord, Store, VehicleRecord,
};

fn vehicle(vin: &str) -> VehicleRecord {
    VehicleRecord {
        vin: vin.into(),
        model: "M1".into(),
        region: "eu".into(),
        hardware_ids: vec!["hw-ecm".into(), "hw-tcu".into()],
    }
}

async fn suite(s: Arc<dyn Store>) {
    // Vehicles: upsert replaces, listing pages by VIN.
    s.upsert_vehicle(&vehicle("VIN2"), 1).await.expect("v2");
    s.upsert_vehicle(&vehicle("VIN1"), 1).await.expect("v1");
    let mut v1 = vehicle("VIN1");
    v1.region = "us".into();
    s.upsert_vehicle(&v1, 2).await.expect("v1 again");
    assert_eq!(s.vehicle("VIN1").await.expect("get"), Some(v1.clone()));
    assert_eq!(s.vehicle("nope").await.expect("get"), None);
    let all = s.vehicles(None, 10).await.expect("list");
    assert_eq!(
        all.iter().map(|v| v.vin.as_str()).collect::<Vec<_>>(),
        ["VIN1", "VIN2"]
    );
    let page = s.vehicles(Some("VIN1"), 10).await.expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].vin, "VIN2");

    // ECUs: one primary per vehicle, unknown vehicle refused.
    let ecm = Ecu {
        serial: "ecm-1".into(),
        vin: "VIN1".into(),
        hardware_id: "hw-ecm".into(),
        primary: true,
        public_key: vec![1; 32],
    };
    s.upsert_ecu(&ecm).await.expect("ecm");
    let mut tcu = ecm.clone();
    tcu.serial = "tcu-1".into();
    let r = s.upsert_ecu(&tcu).await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    tcu.primary = false;
    s.upsert_ecu(&tcu).await.expect("secondary");
    let mut orphan = tcu.clone();
    orphan.serial = "x".into();
    orphan.vin = "NOVIN".into();
    let r = s.upsert_ecu(&orphan).await;
    assert!(matches!(r, Err(DbError::NotFound { .. })), "{r:?}");
    let ecus = s.ecus("VIN1").await.expect("ecus");
    assert_eq!(ecus, vec![ecm.clone(), tcu.clone()]);

    // Certificates and revocations.
    let cert = |serial: &str, not_after_ms| Certificate {
        serial: serial.into(),
        subject: "VIN1".into(),
        der: vec![0x30, 0x00],
        issued_ms: 10,
        not_after_ms,
        revoked_ms: None,
        revocation_reason: None,
    };
    s.insert_certificate(&cert("01", 1_000)).await.expect("c1");
    s.insert_certificate(&cert("02", 50)).await.expect("c2");
    s.insert_certificate(&cert("03", 1_000)).await.expect("c3");
    let r = s.insert_certificate(&cert("01", 1_000)).await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    assert_eq!(
        s.revoke_certificate("01", Some("key compromise"), 20)
            .await
            .expect("revoke"),
        Inserted::New
    );
    assert_eq!(
        s.revoke_certificate("01", None, 30).await.expect("again"),
        Inserted::Existing
    );
    s.revoke_certificate("02", None, 25)
        .await
        .expect("revoke 2");
    let r = s.revoke_certificate("99", None, 30).await;
    assert!(matches!(r, Err(DbError::NotFound { .. })), "{r:?}");
    // At 100 the second certificate has expired and leaves the CRL.
    let crl = s.revocations(100).await.expect("crl");
    assert_eq!(crl.len(), 1);
    assert_eq!(crl[0].serial, "01");
    assert_eq!(crl[0].revoked_ms, 20);
    assert_eq!(crl[0].reason.as_deref(), Some("key compromise"));
    assert_eq!(s.revocations(40).await.expect("crl").len(), 2);
    let c = s.certificate("01").await.expect("get").expect("present");
    assert_eq!(c.revoked_ms, Some(20));

    // Images: idempotent by digest, conflicting fields refused.
    let img = Image {
        name: "ecm-fw".into(),
        version: "2.0.0".into(),
        sha256: [7; 32],
        length: 4096,
        hardware_id: "hw-ecm".into(),
    };
    assert_eq!(s.insert_image(&img, 1).await.expect("img"), Inserted::New);
    assert_eq!(
        s.insert_image(&img, 2).await.expect("img"),
        Inserted::Existing
    );
    let mut other = img.clone();
    other.length = 1;
    let r = s.insert_image(&other, 3).await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    let mut same_name = img.clone();
    same_name.sha256 = [8; 32];
    let r = s.insert_image(&same_name, 3).await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    assert_eq!(s.image(&[7; 32]).await.expect("get"), Some(img.clone()));
    assert_eq!(
        s.image_by_name("ecm-fw", "2.0.0", "hw-ecm")
            .await
            .expect("by name"),
        Some(img.clone())
    );
    assert_eq!(s.image(&[9; 32]).await.expect("get"), None);

    // Packages and assignments.
    let p = PackageRecord {
        id: "pkg-1".into(),
        model_json: "{\"id\":\"pkg-1\"}".into(),
        created_ms: 5,
    };
    s.insert_package(&p).await.expect("pkg");
    let r = s.insert_package(&p).await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    assert_eq!(s.package("pkg-1").await.expect("get"), Some(p));
    assert_eq!(
        s.assign("pkg-1", "VIN1", 6).await.expect("a"),
        Inserted::New
    );
    assert_eq!(
        s.assign("pkg-1", "VIN1", 7).await.expect("a"),
        Inserted::Existing
    );
    let r = s.assign("pkg-none", "VIN1", 7).await;
    assert!(matches!(r, Err(DbError::NotFound { .. })), "{r:?}");
    let r = s.assign("pkg-1", "NOVIN", 7).await;
    assert!(matches!(r, Err(DbError::NotFound { .. })), "{r:?}");
    assert_eq!(s.assignments("VIN1").await.expect("list"), vec!["pkg-1"]);
    assert!(s.unassign("pkg-1", "VIN1").await.expect("un"));
    assert!(!s.unassign("pkg-1", "VIN1").await.expect("un"));
    assert!(s.assignments("VIN1").await.expect("list").is_empty());

    // Manifests (last one kept) and nonces (replay detected).
    let m = |hash: u8, at| ManifestRecord {
        vin: "VIN1".into(),
        hash: vec![hash; 32],
        body: vec![hash, 1, 2],
        received_ms: at,
    };
    s.put_manifest(&m(1, 10), &[]).await.expect("m1");
    s.put_manifest(&m(2, 11), &[]).await.expect("m2");
    assert_eq!(s.manifest("VIN1").await.expect("get"), Some(m(2, 11)));
    assert_eq!(s.manifest("VIN2").await.expect("get"), None);
    assert_eq!(
        s.use_nonce("VIN1", b"n1", 10).await.expect("n"),
        Inserted::New
    );
    assert_eq!(
        s.use_nonce("VIN1", b"n1", 11).await.expect("n"),
        Inserted::Existing
    );
    assert_eq!(
        s.use_nonce("VIN2", b"n1", 11).await.expect("n"),
        Inserted::New
    );
    assert_eq!(s.prune_nonces(11).await.expect("prune"), 1);
    assert_eq!(
        s.use_nonce("VIN1", b"n1", 12).await.expect("n"),
        Inserted::New
    );

    // Director versions count per (vehicle, role).
    assert_eq!(s.director_version("VIN1", "targets").await.expect("v"), 0);
    assert_eq!(
        s.next_director_versions("VIN1", &["targets"])
            .await
            .expect("v")[0],
        1
    );
    assert_eq!(
        s.next_director_versions("VIN1", &["targets"])
            .await
            .expect("v")[0],
        2
    );
    assert_eq!(
        s.next_director_versions("VIN1", &["snapshot"])
            .await
            .expect("v")[0],
        1
    );
    assert_eq!(
        s.next_director_versions("VIN2", &["targets"])
            .await
            .expect("v")[0],
        1
    );
    assert_eq!(s.director_version("VIN1", "targets").await.expect("v"), 2);
    // Several roles in one transaction, in the order asked.
    assert_eq!(
        s.next_director_versions("VIN1", &["snapshot", "timestamp", "targets"])
            .await
            .expect("v"),
        vec![2, 1, 3]
    );

    // Delta jobs: once per (from, to, format); claim, finish, lease.
    let (j, ins) = s
        .enqueue_delta(&[1; 32], &[2; 32], "bsdiff-zstd", 1)
        .await
        .expect("enqueue");
    assert_eq!(ins, Inserted::New);
    assert_eq!(j.state, DeltaState::Queued);
    let (j2, ins) = s
        .enqueue_delta(&[1; 32], &[2; 32], "bsdiff-zstd", 2)
        .await
        .expect("enqueue");
    assert_eq!((j2.id, ins), (j.id, Inserted::Existing));
    let c = s
        .claim_delta("w1", 100, 1_000)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!((c.id, c.state, c.attempts), (j.id, DeltaState::Running, 1));
    assert_eq!(c.claimed_by.as_deref(), Some("w1"));
    // Nothing else to claim while the lease runs.
    assert_eq!(s.claim_delta("w2", 500, 1_000).await.expect("claim"), None);
    // After the lease the job is taken over; the old worker's result is refused.
    let c2 = s
        .claim_delta("w2", 1_200, 1_000)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!((c2.id, c2.attempts), (j.id, 2));
    assert!(!s
        .finish_delta(j.id, "w1", &[3; 32], 10)
        .await
        .expect("finish"));
    assert!(s
        .finish_delta(j.id, "w2", &[3; 32], 10)
        .await
        .expect("finish"));
    let done = s
        .delta_job(&[1; 32], &[2; 32], "bsdiff-zstd")
        .await
        .expect("get")
        .expect("job");
    assert_eq!(done.state, DeltaState::Done);
    assert_eq!(done.result_sha256, Some([3; 32]));
    assert_eq!(done.result_length, Some(10));
    assert_eq!(s.claim_delta("w3", 10_000, 1).await.expect("claim"), None);
    let (f, _) = s
        .enqueue_delta(&[1; 32], &[2; 32], "bsdiff-xz", 3)
        .await
        .expect("enqueue");
    assert_ne!(f.id, j.id);
    let c = s
        .claim_delta("w1", 100, 1_000)
        .await
        .expect("claim")
        .expect("job");
    assert!(s.fail_delta(c.id, "w1", "boom").await.expect("fail"));
    let failed = s
        .delta_job(&[1; 32], &[2; 32], "bsdiff-xz")
        .await
        .expect("get")
        .expect("job");
    assert_eq!(failed.state, DeltaState::Failed);
    assert_eq!(failed.error.as_deref(), Some("boom"));

    // Reports are idempotent by (vehicle, report id).
    assert_eq!(
        s.insert_report("VIN1", "r1", b"first", 1).await.expect("r"),
        Inserted::New
    );
    assert_eq!(
        s.insert_report("VIN1", "r1", b"second", 2)
            .await
            .expect("r"),
        Inserted::Existing
    );
    assert_eq!(
        s.insert_report("VIN2", "r1", b"other", 2).await.expect("r"),
        Inserted::New
    );
    assert_eq!(
        s.reports("VIN1").await.expect("list"),
        vec![("r1".to_string(), b"first".to_vec(), 1)]
    );

    // Admin tokens by hash, with role, revocable.
    s.insert_admin_token("alice", &[4; 32], AdminRole::Operator, 1)
        .await
        .expect("t");
    s.insert_admin_token("bob", &[5; 32], AdminRole::Viewer, 1)
        .await
        .expect("t");
    let r = s
        .insert_admin_token("alice", &[6; 32], AdminRole::Viewer, 1)
        .await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    assert_eq!(
        s.admin_token_role(&[4; 32]).await.expect("role"),
        Some(AdminRole::Operator)
    );
    assert_eq!(
        s.admin_token_role(&[5; 32]).await.expect("role"),
        Some(AdminRole::Viewer)
    );
    assert_eq!(s.admin_token_role(&[6; 32]).await.expect("role"), None);
    assert!(s.revoke_admin_token("alice", 2).await.expect("revoke"));
    assert!(!s.revoke_admin_token("alice", 3).await.expect("revoke"));
    assert_eq!(s.admin_token_role(&[4; 32]).await.expect("role"), None);
}

/// Repository metadata files never go backwards; signing keys are replaced
/// in one transaction with the files that name them.
async fn repositories(s: Arc<dyn Store>) {
    let file = |repo, scope: &str, name: &str, version, body: &[u8]| MetadataRecord {
        repo,
        scope: scope.into(),
        name: name.into(),
        version,
        body: body.to_vec(),
        created_ms: 5,
    };
    let d = RepoKind::Director;
    assert!(s
        .put_metadata(&file(d, "VIN1", "targets.json", 2, b"v2"))
        .await
        .expect("put"));
    // Same or lower version: refused, the stored file stays.
    assert!(!s
        .put_metadata(&file(d, "VIN1", "targets.json", 2, b"v2'"))
        .await
        .expect("put"));
    assert!(!s
        .put_metadata(&file(d, "VIN1", "targets.json", 1, b"v1"))
        .await
        .expect("put"));
    assert!(s
        .put_metadata(&file(d, "VIN1", "targets.json", 3, b"v3"))
        .await
        .expect("put"));
    // Several files in one transaction, each under the version rule.
    assert_eq!(
        s.put_metadata_all(&[
            file(d, "VIN1", "targets.json", 3, b"v3'"),
            file(d, "VIN1", "snapshot.json", 1, b"s1"),
        ])
        .await
        .expect("put all"),
        vec![false, true]
    );
    assert_eq!(
        s.metadata(d, "VIN1", "snapshot.json")
            .await
            .expect("get")
            .map(|m| m.body),
        Some(b"s1".to_vec())
    );
    let got = s
        .metadata(d, "VIN1", "targets.json")
        .await
        .expect("get")
        .expect("some");
    assert_eq!((got.version, got.body.as_slice()), (3, &b"v3"[..]));
    // Scopes and repositories are separate.
    assert_eq!(
        s.metadata(d, "VIN2", "targets.json").await.expect("get"),
        None
    );
    assert_eq!(
        s.metadata(RepoKind::Image, "VIN1", "targets.json")
            .await
            .expect("get"),
        None
    );
    assert_eq!(s.metadata(d, "", "targets.json").await.expect("get"), None);

    let key = |id: &str| SigningKeyRecord {
        repo: d,
        role: "timestamp".into(),
        key_id: id.into(),
        secret: vec![7; 32],
        created_ms: 1,
    };
    s.replace_signing_keys(
        d,
        "timestamp",
        &[key("k1")],
        &[file(d, "", "1.root.json", 1, b"r1")],
        1,
    )
    .await
    .expect("first keys");
    let live = s.signing_keys(d, "timestamp").await.expect("keys");
    assert_eq!(live, vec![key("k1")]);
    // A rotation whose root file is not newer is rolled back whole.
    let r = s
        .replace_signing_keys(
            d,
            "timestamp",
            &[key("k2")],
            &[file(d, "", "1.root.json", 1, b"r1'")],
            2,
        )
        .await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    assert_eq!(
        s.signing_keys(d, "timestamp").await.expect("keys"),
        vec![key("k1")]
    );
    s.replace_signing_keys(
        d,
        "timestamp",
        &[key("k2")],
        &[file(d, "", "2.root.json", 2, b"r2")],
        3,
    )
    .await
    .expect("rotate");
    assert_eq!(
        s.signing_keys(d, "timestamp").await.expect("keys"),
        vec![key("k2")]
    );
    assert!(s.signing_keys(d, "targets").await.expect("keys").is_empty());
    assert!(s
        .signing_keys(RepoKind::Image, "timestamp")
        .await
        .expect("keys")
        .is_empty());

    // A report is read back by id.
    s.upsert_vehicle(&vehicle("VINREP"), 1).await.expect("v");
    s.insert_report("VINREP", "rep-00001", b"{}", 1)
        .await
        .expect("report");
    assert_eq!(
        s.report("VINREP", "rep-00001").await.expect("get"),
        Some(b"{}".to_vec())
    );
    assert_eq!(s.report("VINREP", "rep-00002").await.expect("get"), None);
}

/// Several tasks bump the same Director version concurrently: every value
/// is handed out once (the database, not the process, serialises).
async fn concurrent_versions(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.push(
                    s.next_director_versions("VINC", &["targets"])
                        .await
                        .expect("v")[0],
                );
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=80).collect::<Vec<u64>>());
}

fn spec(package: &str, failure_count: Option<u64>) -> String {
    serde_json::to_string(&CampaignSpec {
        name: "c".into(),
        package: package.into(),
        target: Target::default(),
        waves: vec![WaveSpec::Count(4), WaveSpec::Count(4)],
        success_threshold_percent: 50,
        failure_threshold_percent: None,
        failure_threshold_count: failure_count,
        approval: Approval::Auto,
        maintenance_window: None,
        reoffer_rolled_back: false,
    })
    .expect("spec")
}

/// Campaign storage: membership, offers claimed once under concurrency,
/// results counted once, thresholds, abort, rollback blocks, installed
/// versions.
async fn campaigns(s: Arc<dyn Store>) {
    let vins: Vec<String> = (0..8).map(|i| format!("CVIN{i}")).collect();
    for v in &vins {
        s.upsert_vehicle(&vehicle(v), 1).await.expect("vehicle");
    }
    let r = s.insert_campaign("c", "no-such-pkg", "{}", 0, 1).await;
    assert!(matches!(r, Err(DbError::NotFound { .. })), "{r:?}");
    s.insert_package(&PackageRecord {
        id: "cpkg".into(),
        model_json: "{}".into(),
        created_ms: 1,
    })
    .await
    .expect("package");
    let id = s
        .insert_campaign("c", "cpkg", &spec("cpkg", Some(2)), 8, 10)
        .await
        .expect("campaign");
    let c = s.campaign(id).await.expect("get").expect("some");
    assert_eq!(
        (c.state, c.current_wave, c.matched),
        (CampaignState::Draft, 0, 8)
    );
    assert!(s.due_offers("CVIN0").await.expect("due").is_empty());
    let members: Vec<(String, u32)> = vins
        .iter()
        .enumerate()
        .map(|(i, v)| (v.clone(), if i < 4 { 1 } else { 2 }))
        .collect();
    assert!(!s.offering_campaign_exists().await.expect("offering"));
    assert!(s.start_campaign(id, &members, 2, 20).await.expect("start"));
    assert!(s.offering_campaign_exists().await.expect("offering"));
    assert!(!s.start_campaign(id, &members, 2, 21).await.expect("again"));
    let c = s.campaign(id).await.expect("get").expect("some");
    assert_eq!(
        (c.state, c.current_wave, c.wave_count),
        (CampaignState::Running, 1, 2)
    );

    // Wave 2 is not open: nothing due for CVIN4.
    assert!(s.due_offers("CVIN4").await.expect("due").is_empty());
    let due = s.due_offers("CVIN0").await.expect("due");
    assert_eq!(due.len(), 1);
    assert!(!due[0].blocked);

    // Concurrent claims of one member: exactly one wins, one assignment.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_offer(id, "CVIN0", "cpkg", false, 30)
                .await
                .expect("claim")
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("join"));
    }
    assert_eq!(won, 1);
    assert_eq!(s.assignments("CVIN0").await.expect("a"), ["cpkg"]);
    assert!(s.due_offers("CVIN0").await.expect("due").is_empty());
    for v in &vins[1..4] {
        assert!(s
            .claim_offer(id, v, "cpkg", false, 31)
            .await
            .expect("claim"));
    }

    // A result counted once, however many times (and nodes) it arrives.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.record_result("CVIN0", "cpkg", MemberState::RolledBack, "rolled_back", 40)
                .await
                .expect("result")
                .len()
        }));
    }
    let mut counted = 0;
    for t in tasks {
        counted += t.await.expect("join");
    }
    assert_eq!(counted, 1);
    let w = s.wave_counts(id).await.expect("counts");
    assert_eq!((w[0].rolled_back, w[0].offered, w[1].pending), (1, 3, 4));
    // Rolled back: blocked, so the Director no longer directs it.
    assert!(s.assignments("CVIN0").await.expect("a").is_empty());
    let blocks = s.rollback_blocks(Some("CVIN0"), None, 10).await.expect("b");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].outcome, "rolled_back");
    assert_eq!(
        s.rollback_blocks(None, Some("cpkg"), 10)
            .await
            .expect("b")
            .len(),
        1
    );

    // Second failure reaches the count threshold: paused by itself.
    let r = s
        .record_result("CVIN1", "cpkg", MemberState::Failed, "failed", 41)
        .await
        .expect("result");
    assert_eq!(r[0].campaign, CampaignState::Paused);
    let c = s.campaign(id).await.expect("get").expect("some");
    assert_eq!(c.state, CampaignState::Paused);
    assert!(c.reason.expect("reason").contains("failure threshold"));
    let r = s
        .claim_offer(id, "CVIN4", "cpkg", false, 42)
        .await
        .expect("claim");
    assert!(!r, "a paused campaign offers nothing");

    // Resume; two successes reach 50 % of wave 1: wave 2 opens.
    assert!(!s
        .transition_campaign(
            id,
            &[CampaignState::Draft],
            CampaignState::Running,
            None,
            false,
            43
        )
        .await
        .expect("wrong state"));
    assert!(s
        .transition_campaign(
            id,
            &[CampaignState::Paused],
            CampaignState::Running,
            None,
            false,
            44
        )
        .await
        .expect("resume"));
    s.record_result("CVIN2", "cpkg", MemberState::Succeeded, "installed", 45)
        .await
        .expect("ok");
    s.record_result("CVIN3", "cpkg", MemberState::Succeeded, "installed", 46)
        .await
        .expect("ok");
    let c = s.campaign(id).await.expect("get").expect("some");
    assert_eq!((c.state, c.current_wave), (CampaignState::Running, 2));
    assert_eq!(s.due_offers("CVIN4").await.expect("due").len(), 1);
    assert!(s
        .claim_offer(id, "CVIN4", "cpkg", false, 47)
        .await
        .expect("claim"));

    // Abort: pending members aborted, no further claim.
    assert!(s
        .transition_campaign(
            id,
            &[CampaignState::Running, CampaignState::Paused],
            CampaignState::Aborted,
            Some("stop"),
            false,
            48
        )
        .await
        .expect("abort"));
    let w = s.wave_counts(id).await.expect("counts");
    assert_eq!((w[1].aborted, w[1].offered), (3, 1));
    assert!(!s.offering_campaign_exists().await.expect("offering"));
    assert!(!s
        .claim_offer(id, "CVIN5", "cpkg", false, 49)
        .await
        .expect("claim"));
    assert!(s.due_offers("CVIN5").await.expect("due").is_empty());
    // The offered vehicle's result still counts; the campaign stays aborted.
    let r = s
        .record_result("CVIN4", "cpkg", MemberState::Succeeded, "installed", 50)
        .await
        .expect("ok");
    assert_eq!(r[0].campaign, CampaignState::Aborted);

    // History and members.
    let page = s.campaign_members(id, None, 3).await.expect("members");
    assert_eq!(page.len(), 3);
    assert_eq!(page[0].state, MemberState::RolledBack);
    let h = s
        .campaign_history(id, Some(("", "CVIN0")))
        .await
        .expect("history");
    let events: Vec<&str> = h.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["offered", "rolled_back"]);
    let own = s.campaign_history(id, None).await.expect("own");
    let own: Vec<&str> = own.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        own,
        [
            "created",
            "started",
            "paused",
            "running",
            "wave_opened",
            "aborted"
        ]
    );

    // Clearing the block: directed again; a cleared block is gone.
    assert!(s
        .clear_rollback_block("CVIN0", "cpkg", 60)
        .await
        .expect("clear"));
    assert!(!s
        .clear_rollback_block("CVIN0", "cpkg", 61)
        .await
        .expect("clear"));
    assert_eq!(s.assignments("CVIN0").await.expect("a"), ["cpkg"]);
    s.block_package("CVIN7", "cpkg", "refused", 62)
        .await
        .expect("block");
    s.block_package("CVIN7", "cpkg", "failed", 63)
        .await
        .expect("again");
    let b = s.rollback_blocks(Some("CVIN7"), None, 10).await.expect("b");
    assert_eq!(b[0].outcome, "refused");

    // Installed versions: stored with the manifest, replaced whole, read
    // by VIN and by range.
    let img = |serial: &str, v: &str| EcuInstalledRecord {
        ecu_serial: serial.into(),
        hardware_id: "hw-ecm".into(),
        sha256: [7; 32],
        version: v.into(),
    };
    let man = |vin: &str, hash: u8| ManifestRecord {
        vin: vin.into(),
        hash: vec![hash; 32],
        body: vec![hash],
        received_ms: 70,
    };
    s.put_manifest(&man("CVIN1", 1), &[img("e1", "1.0"), img("e2", "1.0")])
        .await
        .expect("put");
    s.put_manifest(&man("CVIN1", 2), &[img("e1", "2.0")])
        .await
        .expect("put");
    s.put_manifest(&man("CVIN2", 1), &[img("e9", "1.0")])
        .await
        .expect("put");
    // One transaction: when the installed images cannot be written (here
    // an ECU twice), the manifest is not replaced either.
    let r = s
        .put_manifest(&man("CVIN1", 3), &[img("e1", "3.0"), img("e1", "3.0")])
        .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        s.manifest("CVIN1").await.expect("get").map(|m| m.hash),
        Some(vec![2; 32])
    );
    assert_eq!(
        s.installed("CVIN1").await.expect("get"),
        vec![img("e1", "2.0")]
    );
    let r = s.installed_range("CVIN0", "CVIN2").await.expect("range");
    assert_eq!(
        r.iter()
            .map(|(v, i)| (v.as_str(), i.ecu_serial.as_str()))
            .collect::<Vec<_>>(),
        [("CVIN1", "e1"), ("CVIN2", "e9")]
    );
}

/// Bulk import: several batches in one transaction; a conflict anywhere
/// (here in the last batch) writes nothing.
async fn fleet_import(s: Arc<dyn Store>) {
    let n = esync_server::store::IMPORT_BATCH * 2 + 7;
    let fleet: Vec<VehicleRecord> = (0..n).map(|i| vehicle(&format!("FLEET{i:07}"))).collect();
    let ecus: Vec<Ecu> = fleet
        .iter()
        .map(|v| Ecu {
            serial: format!("P-{}", v.vin),
            vin: v.vin.clone(),
            hardware_id: "hw-gw".into(),
            primary: true,
            public_key: v.vin.as_bytes().to_vec(),
        })
        .collect();
    // A repeated ECU serial in the last batch: refused, nothing written.
    let mut bad = ecus.clone();
    bad.push(ecus[3].clone());
    let r = s.import_fleet(&fleet, &bad, 5).await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
    assert_eq!(s.vehicle("FLEET0000000").await.expect("get"), None);
    // An ECU of an unknown vehicle: refused.
    let mut orphan = ecus[0].clone();
    orphan.serial = "ORPHAN".into();
    orphan.vin = "NOSUCHVIN".into();
    let r = s.import_fleet(&[], &[orphan], 5).await;
    assert!(matches!(r, Err(DbError::NotFound { .. })), "{r:?}");

    assert_eq!(
        s.import_fleet(&fleet, &ecus, 5).await.expect("import"),
        n as u64
    );
    assert_eq!(
        s.vehicle(&fleet[n - 1].vin).await.expect("get"),
        Some(fleet[n - 1].clone())
    );
    assert_eq!(
        s.ecus(&fleet[1500].vin).await.expect("ecus"),
        vec![ecus[1500].clone()]
    );
    let all = s.vehicles(Some("FLEET"), u32::MAX).await.expect("list");
    assert_eq!(all.iter().filter(|v| v.vin.starts_with("FLEET")).count(), n);
    // Importing a stored VIN again is a conflict, not an update.
    let r = s.import_fleet(&fleet[..1], &[], 6).await;
    assert!(matches!(r, Err(DbError::Conflict { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_sqlite() {
    let (s, _dir) = store_support::sqlite().await;
    suite(s.clone()).await;
    repositories(s.clone()).await;
    campaigns(s.clone()).await;
    concurrent_versions(s.clone()).await;
    fleet_import(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_on_postgres() {
    let Some((s, schema)) = store_support::postgres("store").await else {
        return;
    };
    suite(s.clone()).await;
    repositories(s.clone()).await;
    campaigns(s.clone()).await;
    concurrent_versions(s.clone()).await;
    fleet_import(s).await;
    schema.drop_schema().await;
}

#[tokio::test]
async fn sqlite_reopens_with_data_and_migrations_applied_once() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.db");
    {
        let s = esync_server::store::SqliteStore::open(&path)
            .await
            .expect("open");
        s.upsert_vehicle(&vehicle("VINR"), 1).await.expect("v");
    }
    let s = esync_server::store::SqliteStore::open(&path)
        .await
        .expect("reopen");
    assert_eq!(s.vehicle("VINR").await.expect("get"), Some(vehicle("VINR")));
}
