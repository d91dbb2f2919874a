//! An admin API on a fresh SQLite store and blob directory, driven in
//! process through `tower::ServiceExt::oneshot` (the router is the one the
//! Server mounts; TLS is exercised by the end-to-end test).

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Mutex;
use tower::ServiceExt;

use esync_identity::{FleetCa, Validity};
use esync_server::admin::{admin_router, create_token, AdminSettings, AdminState, Clock};
use esync_server::blob::BlobStore;
use esync_server::director::{Director, DirectorConfig};
use esync_server::metrics::Metrics;
use esync_server::provision::Provisioner;
use esync_server::repo::{ImageRepo, ImageRepoConfig};
use esync_server::store::{AdminRole, SqliteStore, Store};

/// Largest blob of the fixture's blob store.
pub const BLOB_CAP: u64 = 256 * 1024;
/// JSON cap of the fixture.
pub const JSON_CAP: usize = 16 * 1024;

pub struct Admin {
    pub router: Router,
    pub state: AdminState,
    pub operator: String,
    pub viewer: String,
    pub blob_dir: tempfile::TempDir,
    _db_dir: tempfile::TempDir,
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub async fn admin() -> Admin {
    let db_dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(db_dir.path().join("server.db"))
            .await
            .expect("sqlite"),
    );
    admin_on(store, db_dir).await
}

/// The admin API over `store` (`db_dir` is kept alive with it).
pub async fn admin_on(store: Arc<dyn Store>, db_dir: tempfile::TempDir) -> Admin {
    let blob_dir = tempfile::tempdir().expect("dir");
    let blobs = BlobStore::open(blob_dir.path(), BLOB_CAP)
        .await
        .expect("blobs");
    let ca = FleetCa::new("fleet", Validity::days_from(now_s() - 60, 365)).expect("ca");
    let prov = Provisioner::new(ca).expect("provisioner");
    let clock: Clock = Arc::new(|| now_s() * 1000);
    let operator = create_token(store.as_ref(), "op", AdminRole::Operator, 1)
        .await
        .expect("operator token");
    let viewer = create_token(store.as_ref(), "view", AdminRole::Viewer, 1)
        .await
        .expect("viewer token");
    let director = Arc::new(Director::new(
        Arc::clone(&store),
        blobs.clone(),
        DirectorConfig::default(),
    ));
    director.init(now_s() * 1000).await.expect("director init");
    let images = Arc::new(ImageRepo::new(
        Arc::clone(&store),
        ImageRepoConfig::default(),
    ));
    let state = AdminState {
        store,
        blobs,
        director,
        images,
        provisioner: Arc::new(Mutex::new(prov)),
        device_tls: None,
        metrics: Metrics::new(),
        clock,
        settings: AdminSettings {
            max_json_body: JSON_CAP,
            ..AdminSettings::default()
        },
    };
    Admin {
        router: admin_router(state.clone()),
        state,
        operator,
        viewer,
        blob_dir,
        _db_dir: db_dir,
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub json: serde_json::Value,
    pub raw: Vec<u8>,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
}

impl Admin {
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let raw = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let json = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
        Answer { status, json, raw }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        json: Option<serde_json::Value>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = match json {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).expect("json"))
            }
            None => Body::empty(),
        };
        self.send(b.body(body).expect("request")).await
    }

    pub async fn op(&self, method: Method, path: &str, json: Option<serde_json::Value>) -> Answer {
        self.call(method, path, Some(&self.operator.clone()), json)
            .await
    }

    pub async fn upload(&self, token: &str, query: &str, body: Body) -> Answer {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/admin/v1/images?{query}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .expect("request");
        self.send(req).await
    }

    /// Uploads `bytes` as image `name` `version` for `hw`; returns its hex digest.
    pub async fn upload_ok(&self, name: &str, version: &str, hw: &str, bytes: &[u8]) -> String {
        use sha2::Digest as _;
        let d = hex::encode(sha2::Sha256::digest(bytes));
        let a = self
            .upload(
                &self.operator.clone(),
                &format!("name={name}&version={version}&hardware_id={hw}&sha256={d}"),
                Body::from(bytes.to_vec()),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.json);
        d
    }

    /// Files in the blob store outside its `tmp` directory, and inside it.
    pub fn blob_files(&self) -> (usize, usize) {
        let mut kept = 0;
        let mut tmp = 0;
        for e in walk(self.blob_dir.path()) {
            if e.starts_with(self.blob_dir.path().join("tmp")) {
                tmp += 1;
            } else {
                kept += 1;
            }
        }
        (kept, tmp)
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub const VIN: &str = "1HGCM82633A004352";
pub const VIN2: &str = "1HGCM82633A004353";

/// Fills `{param}` placeholders of a documented path with values that
/// parse (the entity need not exist).
pub fn fill(path: &str) -> String {
    path.replace("{vin}", VIN)
        .replace("{serial}", "4a0102")
        .replace("{sha256}", &"ab".repeat(32))
        .replace("{id}", "pkg-1")
        .replace("{package}", "pkg-1")
        .replace("{name}", "someone")
        .replace("{role}", "timestamp")
        .replace("{file}", "root.json")
        .replace("{report_id}", "0123456789abcdef")
}
