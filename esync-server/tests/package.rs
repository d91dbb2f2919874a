//! Packages built from uploaded images; bad requests refused with typed errors.

mod store_support;

use esync_package::package::PackageError;
use esync_proto::message::PatchFormat;
use esync_server::blob::{BlobStore, Expect};
use esync_server::deltas::{request_delta, DeltaWorker};
use esync_server::packages::{
    build_package, create_package, load_package, ComponentRequest, PackageBuildError,
    PackageRequest, DEFAULT_CHUNK_SIZE,
};
use esync_server::store::{Image, Store};

struct Fixture {
    store: std::sync::Arc<dyn Store>,
    blobs: BlobStore,
    ecm_old: String,
    ecm: String,
    tcu: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn upload(f: &Fixture, name: &str, version: &str, hw: &str, bytes: &[u8]) -> String {
    let info = f
        .blobs
        .put_bytes(Expect::default(), bytes)
        .await
        .expect("put");
    f.store
        .insert_image(
            &Image {
                name: name.into(),
                version: version.into(),
                sha256: info.sha256,
                length: info.length,
                hardware_id: hw.into(),
            },
            1,
        )
        .await
        .expect("image");
    hex::encode(info.sha256)
}

async fn fixture() -> Fixture {
    let (store, sdir) = store_support::sqlite().await;
    let bdir = tempfile::tempdir().expect("dir");
    let blobs = BlobStore::open(bdir.path(), 1 << 24).await.expect("blobs");
    let mut f = Fixture {
        store,
        blobs,
        ecm_old: String::new(),
        ecm: String::new(),
        tcu: String::new(),
        _dirs: (sdir, bdir),
    };
    let old: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    let mut new = old.clone();
    new[500..900].fill(3);
    f.ecm_old = upload(&f, "ecm-fw", "1.0.0", "hw-ecm", &old).await;
    f.ecm = upload(&f, "ecm-fw", "2.0.0", "hw-ecm", &new).await;
    f.tcu = upload(&f, "tcu-fw", "5.1.0", "hw-tcu", b"tcu image bytes").await;
    f
}

fn comp(device: &str, image: &str, deps: &[&str], stage: u16) -> ComponentRequest {
    ComponentRequest {
        device: device.into(),
        image: image.into(),
        release_counter: 2,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        stage,
        precondition: None,
        consent_required: false,
        rollback: None,
        retry_limit: None,
        delta_from: vec![],
    }
}

fn req(components: Vec<ComponentRequest>) -> PackageRequest {
    PackageRequest {
        id: "pkg-1".into(),
        download: Default::default(),
        components,
    }
}

#[tokio::test]
async fn valid_multi_component_package_with_generated_delta() {
    let f = fixture().await;
    // Generate the ECM delta first.
    let mut from = [0u8; 32];
    hex::decode_to_slice(&f.ecm_old, &mut from).expect("hex");
    let mut to = [0u8; 32];
    hex::decode_to_slice(&f.ecm, &mut to).expect("hex");
    request_delta(f.store.as_ref(), &from, &to, PatchFormat::BsdiffZstd, 1)
        .await
        .expect("request");
    DeltaWorker::new(f.store.clone(), f.blobs.clone(), "w", 60_000)
        .drain(|| 10)
        .await
        .expect("drain");

    let mut ecm = comp("/powertrain/ecm", &f.ecm, &[], 0);
    ecm.precondition = Some("speed == 0 && gear == \"P\"".into());
    ecm.delta_from = vec![f.ecm_old.clone()];
    let tcu = comp("/telematics/tcu", &f.tcu, &["/powertrain/ecm"], 1);
    let r = req(vec![ecm, tcu]);
    let pkg = create_package(f.store.as_ref(), &f.blobs, &r, 5)
        .await
        .expect("valid package");
    let c = &pkg.components()[0];
    assert_eq!(c.version.as_str(), "2.0.0");
    assert_eq!(c.hardware_id.as_str(), "hw-ecm");
    assert_eq!(hex::encode(c.image.sha256.0), f.ecm);
    assert_eq!(c.deltas.len(), 1);
    assert_eq!(c.deltas[0].format, PatchFormat::BsdiffZstd);
    assert_eq!(c.deltas[0].from_version.as_str(), "1.0.0");
    assert!(c.policy.precondition.is_some());
    // Stored as the model's JSON and read back identical.
    let back = load_package(f.store.as_ref(), "pkg-1")
        .await
        .expect("load")
        .expect("present");
    assert_eq!(back, pkg);
    // The same id again is refused.
    let e = create_package(f.store.as_ref(), &f.blobs, &r, 6).await;
    assert!(matches!(e, Err(PackageBuildError::Exists(_))), "{e:?}");
}

#[tokio::test]
async fn bad_packages_are_refused_with_typed_errors() {
    let f = fixture().await;
    let build = |r: PackageRequest| {
        let store = f.store.clone();
        let blobs = f.blobs.clone();
        async move { build_package(store.as_ref(), &blobs, &r, DEFAULT_CHUNK_SIZE).await }
    };
    // Dependency cycle.
    let e = build(req(vec![
        comp("/a", &f.ecm, &["/b"], 0),
        comp("/b", &f.tcu, &["/a"], 0),
    ]))
    .await;
    assert!(
        matches!(e, Err(PackageBuildError::Invalid(PackageError::Cycle(_)))),
        "{e:?}"
    );
    // Dependency on a component not in the package.
    let e = build(req(vec![comp("/a", &f.ecm, &["/zzz"], 1)])).await;
    assert!(
        matches!(
            e,
            Err(PackageBuildError::Invalid(
                PackageError::UnknownDependency { .. }
            ))
        ),
        "{e:?}"
    );
    // Unknown image.
    let e = build(req(vec![comp("/a", &hex::encode([0xee; 32]), &[], 0)])).await;
    assert!(
        matches!(e, Err(PackageBuildError::UnknownImage { .. })),
        "{e:?}"
    );
    // Malformed image digest.
    let e = build(req(vec![comp("/a", "xyz", &[], 0)])).await;
    assert!(
        matches!(e, Err(PackageBuildError::Malformed { .. })),
        "{e:?}"
    );
    // Malformed precondition.
    let mut c = comp("/a", &f.ecm, &[], 0);
    c.precondition = Some("speed == == 0".into());
    let e = build(req(vec![c])).await;
    assert!(
        matches!(e, Err(PackageBuildError::BadPrecondition { .. })),
        "{e:?}"
    );
    // Bad package id and empty package.
    let mut r = req(vec![comp("/a", &f.ecm, &[], 0)]);
    r.id = "Bad Id!".into();
    let e = build(r).await;
    assert!(
        matches!(
            e,
            Err(PackageBuildError::Invalid(PackageError::BadPackageId))
        ),
        "{e:?}"
    );
    let e = build(req(vec![])).await;
    assert!(
        matches!(e, Err(PackageBuildError::Invalid(PackageError::Empty))),
        "{e:?}"
    );
    // Unknown delta source.
    let mut c = comp("/a", &f.ecm, &[], 0);
    c.delta_from = vec![hex::encode([0xdd; 32])];
    let e = build(req(vec![c])).await;
    assert!(
        matches!(e, Err(PackageBuildError::UnknownImage { .. })),
        "{e:?}"
    );
    // All of these are the client's fault.
    assert!(e.expect_err("error").is_client_error());
    // Nothing was stored.
    assert!(f.store.package("pkg-1").await.expect("get").is_none());
}
