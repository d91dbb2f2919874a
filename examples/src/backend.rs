//! The real `esync-server`, in process: SQLite and the blob store in a
//! directory, the device API over mutual TLS on a loopback port, the
//! Director, the Image repository (its root and targets signed here with
//! offline keys, as an operator would with `esync-server offline`), the
//! delta worker, and the admin API driven through its router with an
//! operator bearer token. The demo talks to it only through the admin API
//! and, as a vehicle, through the device API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use esync_identity::{FleetCa, IssuedIdentity, TrustAnchors, Validity};
use esync_package::package::Package;
use esync_server::admin::{admin_router, create_token, AdminSettings, AdminState, ADMIN_PREFIX};
use esync_server::blob::BlobStore;
use esync_server::deltas::DeltaWorker;
use esync_server::device::{device_router, serve_device, system_clock, DeviceState};
use esync_server::director::{Director, DirectorConfig};
use esync_server::metrics::Metrics;
use esync_server::provision::Provisioner;
use esync_server::repo::offline::{self, RoleSpec};
use esync_server::repo::{ImageRepo, ImageRepoConfig};
use esync_server::store::{AdminRole, RepoKind, SqliteStore, Store};
use esync_server::tls::DeviceTls;
use esync_uptane::{PrivateKey, PublicKey, UnixTime};
use http::{Method, Request};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::DemoError;

/// Largest blob (image or delta) the demo's Server keeps.
pub const MAX_BLOB: u64 = 64 * 1024 * 1024;

fn err(what: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Server(format!("{what}: {e}"))
}

fn now_s() -> i64 {
    system_clock()() / 1000
}

/// The running Server; its tasks stop when it is dropped.
pub struct Backend {
    admin: Router,
    store: Arc<dyn Store>,
    token: String,
    /// The device API, `https://127.0.0.1:PORT`.
    pub device_url: String,
    /// The fleet CA certificate, PEM (what a vehicle is provisioned with).
    pub ca_pem: String,
    /// Trust anchors of the fleet CA.
    pub anchors: TrustAnchors,
    image_root_key: PrivateKey,
    image_targets_key: PrivateKey,
    image_root: Mutex<Option<Vec<u8>>>,
    targets_version: Mutex<u64>,
    tasks: JoinSet<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

impl Backend {
    /// Initialises a Server in `dir` (database `dir/server.db`, blobs
    /// `dir/blobs`) and starts its device listener and `delta_workers`
    /// delta workers.
    pub async fn start(dir: &Path, delta_workers: usize) -> Result<Self, DemoError> {
        std::fs::create_dir_all(dir)?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.join("server.db"))
                .await
                .map_err(|e| err("database", e))?,
        );
        let blobs = BlobStore::open(dir.join("blobs"), MAX_BLOB)
            .await
            .map_err(|e| err("blob store", e))?;
        let now = now_s();
        let ca = FleetCa::new("esync demo fleet CA", Validity::days_from(now - 60, 30))
            .map_err(|e| err("fleet CA", e))?;
        let server = ca
            .issue_server(
                &["localhost".to_owned(), "127.0.0.1".to_owned()],
                Validity::days_from(now - 60, 30),
            )
            .map_err(|e| err("server certificate", e))?;
        let ca_pem = ca.cert_pem();
        let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()]).map_err(|e| err("CA", e))?;
        let mut provisioner = Provisioner::new(ca).map_err(|e| err("provisioner", e))?;
        let crl = provisioner
            .crl_der(now - 60, 3600)
            .map_err(|e| err("CRL", e))?;
        let device_tls = Arc::new(
            DeviceTls::new(server, anchors.clone(), &[crl]).map_err(|e| err("device TLS", e))?,
        );
        let director = Arc::new(Director::new(
            Arc::clone(&store),
            blobs.clone(),
            DirectorConfig::default(),
        ));
        director
            .init(system_clock()())
            .await
            .map_err(|e| err("Director keys", e))?;
        let images = Arc::new(ImageRepo::new(
            Arc::clone(&store),
            ImageRepoConfig::default(),
        ));
        let token = create_token(
            store.as_ref(),
            "demo-operator",
            AdminRole::Operator,
            now * 1000,
        )
        .await
        .map_err(|e| err("operator token", e))?;
        let metrics = Metrics::new();
        let state = AdminState {
            store: Arc::clone(&store),
            blobs: blobs.clone(),
            director: Arc::clone(&director),
            images: Arc::clone(&images),
            provisioner: Arc::new(Mutex::new(provisioner)),
            device_tls: Some(Arc::clone(&device_tls)),
            metrics: metrics.clone(),
            clock: system_clock(),
            settings: AdminSettings::default(),
        };
        let mut tasks = JoinSet::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let device_url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let device = metrics.instrument(
            device_router(DeviceState::new(
                Arc::clone(&store),
                blobs.clone(),
                director,
                images,
            )),
            "device",
        );
        tasks.spawn(async move {
            if let Err(e) = serve_device(listener, device_tls, device, std::future::pending()).await
            {
                eprintln!("demo server: device listener: {e}");
            }
        });
        for i in 0..delta_workers {
            let worker = DeltaWorker::new(
                Arc::clone(&store),
                blobs.clone(),
                format!("demo-{i}"),
                60_000,
            );
            let clock = system_clock();
            tasks.spawn(async move {
                worker.run(|| clock(), Duration::from_millis(100)).await;
            });
        }
        Ok(Self {
            admin: admin_router(state),
            store,
            token,
            device_url,
            ca_pem,
            anchors,
            image_root_key: PrivateKey::generate(),
            image_targets_key: PrivateKey::generate(),
            image_root: Mutex::new(None),
            targets_version: Mutex::new(0),
            tasks,
        })
    }

    /// One admin API request (`path` after `/admin/v1`) with a JSON body or
    /// raw bytes; the JSON answer, or an error naming the status and the
    /// Server's message.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, DemoError> {
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("{ADMIN_PREFIX}{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, Body::from))
            .map_err(|e| err("request", e))?;
        let resp = self
            .admin
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| err("admin API", e))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err("admin API body", e))?
            .to_bytes();
        let v: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| err("admin API answer", e))?
        };
        if status.is_success() {
            Ok(v)
        } else {
            Err(DemoError::Server(format!("{method} {path}: {status}: {v}")))
        }
    }

    /// [`Backend::admin`] with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, DemoError> {
        self.admin(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// [`Backend::admin`] without a body.
    pub async fn get(&self, path: &str) -> Result<Value, DemoError> {
        self.admin(Method::GET, path, None).await
    }

    /// Registers a vehicle with the hardware ids it contains.
    pub async fn register_vehicle(
        &self,
        vin: &str,
        model: &str,
        region: &str,
        hardware_ids: &[&str],
    ) -> Result<(), DemoError> {
        self.post(
            "/vehicles",
            &json!({"vin": vin, "model": model, "region": region, "hardware_ids": hardware_ids}),
        )
        .await?;
        Ok(())
    }

    /// Registers an ECU of `vin` with its Uptane key.
    pub async fn add_ecu(
        &self,
        vin: &str,
        serial: &str,
        hardware_id: &str,
        primary: bool,
        key: &PublicKey,
    ) -> Result<(), DemoError> {
        self.post(
            &format!("/vehicles/{vin}/ecus"),
            &json!({"serial": serial, "hardware_id": hardware_id,
                    "primary": primary, "public_key": raw_ed25519_hex(key)?}),
        )
        .await?;
        Ok(())
    }

    /// A TLS identity for the vehicle's Client (`device` `None`) or one of
    /// its Agents: the key is made here, the Server signs its CSR.
    pub async fn issue_identity(
        &self,
        vin: &str,
        device: Option<&str>,
    ) -> Result<IssuedIdentity, DemoError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| err("key", e))?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.serialize_request(&key))
            .and_then(|r| r.pem())
            .map_err(|e| err("CSR", e))?;
        let issued = self
            .post(
                &format!("/vehicles/{vin}/certificates"),
                &json!({"csr_pem": csr, "device": device}),
            )
            .await?;
        let pem = |f: &str| {
            issued[f]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| err("certificate", format!("no {f}")))
        };
        // The certificate followed by its issuing chain.
        let chain = pem("cert_pem")? + &pem("chain_pem")?;
        IssuedIdentity::from_pem(&chain, &key.serialize_pem()).map_err(|e| err("identity", e))
    }

    /// Uploads an image; returns its SHA-256, hex.
    pub async fn upload_image(
        &self,
        name: &str,
        version: &str,
        hardware_id: &str,
        bytes: &[u8],
    ) -> Result<String, DemoError> {
        let sha = crate::hex(&esync_agent::device::sha256(bytes).0);
        let v = self
            .admin(
                Method::POST,
                &format!(
                    "/images?name={name}&version={version}&hardware_id={hardware_id}&sha256={sha}&length={}",
                    bytes.len()
                ),
                Some(bytes.to_vec()),
            )
            .await?;
        if v["sha256"] != sha {
            return Err(err("image upload", format!("stored {v}")));
        }
        Ok(sha)
    }

    /// Requests a delta job `from` → `to` (SHA-256 hex) and waits until the
    /// delta worker finished it; returns the job as the Server shows it.
    pub async fn delta(&self, from: &str, to: &str, wait: Duration) -> Result<Value, DemoError> {
        self.post("/deltas", &json!({"from": from, "to": to}))
            .await?;
        let until = tokio::time::Instant::now() + wait;
        loop {
            let jobs = self.get(&format!("/deltas?from={from}&to={to}")).await?;
            let job = jobs
                .as_array()
                .and_then(|a| a.first())
                .cloned()
                .unwrap_or(Value::Null);
            match job["state"].as_str() {
                Some("done") => return Ok(job),
                Some("failed") => return Err(err("delta job", job)),
                _ if tokio::time::Instant::now() > until => {
                    return Err(DemoError::Timeout(format!("delta {from} → {to}: {job}")))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Creates a package from the admin API's package request; returns the
    /// package model.
    pub async fn create_package(&self, request: &Value) -> Result<Value, DemoError> {
        self.post("/packages", request).await
    }

    /// Signs (offline keys) and uploads the Image repository's targets over
    /// the packages `ids`; the first call first signs and uploads the root
    /// naming the Server's online snapshot and timestamp keys.
    pub async fn sign_image_targets(&self, ids: &[&str]) -> Result<(), DemoError> {
        let expires = UnixTime(now_s() + 30 * 86_400);
        let mut root = self.image_root.lock().await;
        if root.is_none() {
            let online = self.post("/image-repo/online-keys", &Value::Null).await?;
            let key = |role: &str| -> Result<PublicKey, DemoError> {
                serde_json::from_value(online[role].clone()).map_err(|e| err(role, e))
            };
            let mut roles = RoleSpec::new();
            roles.insert("root".into(), (vec![self.image_root_key.public_key()], 1));
            roles.insert(
                "targets".into(),
                (vec![self.image_targets_key.public_key()], 1),
            );
            roles.insert("snapshot".into(), (vec![key("snapshot")?], 1));
            roles.insert("timestamp".into(), (vec![key("timestamp")?], 1));
            let bytes =
                offline::initial_root(&roles, expires, std::slice::from_ref(&self.image_root_key))
                    .map_err(|e| err("Image root", e))?;
            self.admin(Method::POST, "/image-repo/metadata", Some(bytes.clone()))
                .await?;
            *root = Some(bytes);
        }
        let mut packages = Vec::with_capacity(ids.len());
        for id in ids {
            let v = self.get(&format!("/packages/{id}")).await?;
            let p: Package = serde_json::from_value(v).map_err(|e| err("package model", e))?;
            packages.push(p);
        }
        let mut version = self.targets_version.lock().await;
        *version += 1;
        let targets = offline::sign_targets(
            &packages,
            *version,
            expires,
            std::slice::from_ref(&self.image_targets_key),
        )
        .map_err(|e| err("Image targets", e))?;
        self.admin(Method::POST, "/image-repo/metadata", Some(targets))
            .await?;
        Ok(())
    }

    /// The Image repository's root (version 1) as signed here.
    pub async fn image_root(&self) -> Result<Vec<u8>, DemoError> {
        self.image_root
            .lock()
            .await
            .clone()
            .ok_or_else(|| err("Image root", "not signed yet"))
    }

    /// The Director's first root file, as stored by the Server (what a
    /// vehicle is provisioned with at the factory).
    pub async fn director_root(&self) -> Result<Vec<u8>, DemoError> {
        Ok(self
            .store
            .metadata(RepoKind::Director, "", "1.root.json")
            .await
            .map_err(|e| err("Director root", e))?
            .ok_or_else(|| err("Director root", "none"))?
            .body)
    }

    /// Assigns package `id` to `vins` (the plain per-vehicle assignment).
    pub async fn assign(&self, id: &str, vins: &[String]) -> Result<(), DemoError> {
        self.post("/assignments", &json!({"package": id, "vins": vins}))
            .await?;
        Ok(())
    }

    /// The vehicle as the Server records it.
    pub async fn vehicle(&self, vin: &str) -> Result<Value, DemoError> {
        self.get(&format!("/vehicles/{vin}")).await
    }
}

/// An ed25519 key's raw public half, hex (what `POST .../ecus` takes).
fn raw_ed25519_hex(k: &PublicKey) -> Result<String, DemoError> {
    let v = serde_json::to_value(k).map_err(|e| err("key", e))?;
    v["keyval"]["public"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| err("key", "not ed25519"))
}
