//! One Server node, as `esync-server init` makes its directory and
//! `esync-server serve` runs it: [`init`] creates a Server directory (fleet
//! CA, Server certificate, configuration, database, Director keys, the
//! first operator token); [`Node::start`] opens the database and blob
//! store of a configuration and runs the admin listener (server-only TLS),
//! the device listener (mutual TLS), the metrics listener, the delta
//! workers and the periodic Image timestamp and CRL refreshes.
//!
//! The binary and in-process users (the fleet simulator's tests) run the
//! same code, so a Server stood up in a test is the one operators run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinSet;

use esync_identity::{FleetCa, IssuedIdentity, TrustAnchors, Validity};

use crate::admin::{
    admin_router, create_token, serve_tls, system_clock, AdminSettings, AdminState,
};
use crate::blob::BlobStore;
use crate::config::{keys, open_store, ServerConfig};
use crate::deltas::{DeltaOutcome, DeltaWorker};
use crate::device::{device_router, serve_device, DeviceState};
use crate::director::{Director, DirectorConfig};
use crate::metrics::{metrics_router, Metrics};
use crate::provision::Provisioner;
use crate::repo::{ImageRepo, ImageRepoConfig};
use crate::store::AdminRole;
use crate::tls::{admin_tls_config, DeviceTls};

/// Errors of [`init`] and [`Node::start`] (I/O, configuration, database,
/// certificates), as text with their cause.
pub type NodeError = Box<dyn std::error::Error + Send + Sync>;

/// Name of the configuration file in a Server directory.
pub const CONFIG_FILE: &str = "server.toml";

/// What [`init`] makes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The directory to create (must not exist or be empty).
    pub dir: PathBuf,
    /// Device API listener.
    pub device_listen: SocketAddr,
    /// Admin API listener.
    pub admin_listen: SocketAddr,
    /// Prometheus listener (plain HTTP), if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Names the Server certificate is issued for.
    pub server_names: Vec<String>,
    /// Database URL (default: SQLite in the directory).
    pub database_url: Option<String>,
    /// Fleet CA validity, days.
    pub ca_days: u32,
}

/// A Server directory [`init`] made.
#[derive(Clone, Debug)]
pub struct Initialised {
    /// Its configuration file.
    pub config_path: PathBuf,
    /// The fleet CA certificate file (PEM).
    pub ca_cert: PathBuf,
    /// The first operator token (shown once).
    pub token: String,
    /// The Director root version.
    pub root_version: u64,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Writes a new secret file (mode 0600 on Unix); refuses to overwrite.
pub fn write_secret(path: &Path, text: &str) -> Result<(), NodeError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates a Server directory: fleet CA, Server certificate,
/// configuration, database, Director keys and the first operator token.
pub async fn init(a: &InitOptions) -> Result<Initialised, NodeError> {
    if a.dir.exists() && std::fs::read_dir(&a.dir)?.next().is_some() {
        return Err(format!("{}: exists and is not empty", a.dir.display()).into());
    }
    std::fs::create_dir_all(&a.dir)?;
    let mut config = ServerConfig::for_dir(a.device_listen, a.admin_listen, a.metrics_listen);
    config.server_names.clone_from(&a.server_names);
    if let Some(url) = &a.database_url {
        config.database_url.clone_from(url);
    }
    let config_path = a.dir.join(CONFIG_FILE);
    config.write_new(&config_path)?;
    // Resolved paths.
    let config = ServerConfig::load(&config_path)?;
    std::fs::create_dir_all(&config.key_dir)?;
    std::fs::create_dir_all(&config.blob_dir)?;
    let now = now_unix();
    let ca = FleetCa::new("esync fleet CA", Validity::days_from(now - 60, a.ca_days))?;
    let server = ca.issue_server(
        &config.server_names,
        Validity::days_from(now - 60, a.ca_days.min(825)),
    )?;
    let ca_cert = config.key_dir.join(keys::CA_CERT);
    std::fs::write(&ca_cert, ca.cert_pem())?;
    write_secret(&config.key_dir.join(keys::CA_KEY), &ca.key_pem())?;
    std::fs::write(config.key_dir.join(keys::SERVER_CERT), server.chain_pem())?;
    write_secret(&config.key_dir.join(keys::SERVER_KEY), &server.key_pem())?;
    let store = open_store(&config.database_url).await?;
    let blobs = BlobStore::open(&config.blob_dir, config.max_blob_bytes).await?;
    let director = Director::new(Arc::clone(&store), blobs, DirectorConfig::default());
    let root_version = director.init(now.saturating_mul(1000)).await?;
    let token = create_token(
        store.as_ref(),
        "init-operator",
        AdminRole::Operator,
        now.saturating_mul(1000),
    )
    .await?;
    Ok(Initialised {
        config_path,
        ca_cert,
        token,
        root_version,
    })
}

/// A running Server node; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct Node {
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The device listener's address.
    pub device_addr: SocketAddr,
    /// The metrics listener's address, if any.
    pub metrics_addr: Option<SocketAddr>,
    tasks: JoinSet<Result<(), String>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

impl Node {
    /// Opens the database and blob store of `config`, loads the keys of its
    /// key directory and starts every listener and background task.
    pub async fn start(config: &ServerConfig) -> Result<Self, NodeError> {
        let store = open_store(&config.database_url).await?;
        let blobs = BlobStore::open(&config.blob_dir, config.max_blob_bytes).await?;
        let read = |name: &str| -> Result<String, NodeError> {
            let p = config.key_dir.join(name);
            Ok(std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?)
        };
        let ca = FleetCa::from_pem(&read(keys::CA_CERT)?, &read(keys::CA_KEY)?)?;
        let anchors = TrustAnchors::from_ca_ders(&[ca.root_der()])?;
        let identity =
            IssuedIdentity::from_pem(&read(keys::SERVER_CERT)?, &read(keys::SERVER_KEY)?)?;
        let mut provisioner = Provisioner::new(ca)?;
        let first_crl = provisioner.crl_der(now_unix() - 60, config.crl_validity_secs)?;
        let device_tls = Arc::new(DeviceTls::new(identity.clone(), anchors, &[first_crl])?);
        let metrics = Metrics::new();
        let director = Arc::new(Director::new(
            Arc::clone(&store),
            blobs.clone(),
            DirectorConfig::default(),
        ));
        // Idempotent: a directory made by `init` already has the Director's keys.
        director.init(system_clock()()).await?;
        let images = Arc::new(ImageRepo::new(
            Arc::clone(&store),
            ImageRepoConfig::default(),
        ));
        let state = AdminState {
            store: Arc::clone(&store),
            blobs: blobs.clone(),
            director: Arc::clone(&director),
            images: Arc::clone(&images),
            provisioner: Arc::new(Mutex::new(provisioner)),
            device_tls: Some(Arc::clone(&device_tls)),
            metrics: metrics.clone(),
            clock: system_clock(),
            settings: AdminSettings {
                cert_validity_days: config.cert_validity_days,
                crl_validity_secs: config.crl_validity_secs,
                ..AdminSettings::default()
            },
        };
        // The persisted revocations into the first CRL the device listener uses.
        state.refresh_crl().await?;

        let mut tasks = JoinSet::new();

        let admin_listener = tokio::net::TcpListener::bind(config.admin_listen).await?;
        let admin_addr = admin_listener.local_addr()?;
        let admin_tls = admin_tls_config(&identity)?;
        let router = admin_router(state.clone());
        tasks.spawn(async move {
            serve_tls(admin_listener, admin_tls, router)
                .await
                .map_err(|e| format!("admin listener: {e}"))
        });

        let device_listener = tokio::net::TcpListener::bind(config.device_listen).await?;
        let device_addr = device_listener.local_addr()?;
        let device = metrics.instrument(
            device_router(
                DeviceState::new(
                    Arc::clone(&store),
                    blobs.clone(),
                    Arc::clone(&director),
                    Arc::clone(&images),
                )
                .with_metrics(metrics.clone()),
            ),
            "device",
        );
        let dtls = Arc::clone(&device_tls);
        tasks.spawn(async move {
            serve_device(device_listener, dtls, device, std::future::pending())
                .await
                .map_err(|e| format!("device listener: {e}"))
        });

        let mut metrics_addr = None;
        if let Some(addr) = config.metrics_listen {
            let l = tokio::net::TcpListener::bind(addr).await?;
            metrics_addr = Some(l.local_addr()?);
            let r = metrics_router(metrics.clone());
            tasks.spawn(async move {
                axum::serve(l, r)
                    .await
                    .map_err(|e| format!("metrics listener: {e}"))
            });
        }

        for i in 0..config.delta_workers {
            let worker = DeltaWorker::new(
                Arc::clone(&store),
                blobs.clone(),
                format!("{}-{i}", std::process::id()),
                config.delta_lease_secs.saturating_mul(1000),
            );
            let m = metrics.clone();
            let clock = system_clock();
            tasks.spawn(async move {
                loop {
                    match worker.run_once(clock()).await {
                        Ok(DeltaOutcome::Idle) => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Ok(o) => {
                            let outcome = match &o {
                                DeltaOutcome::Done { elapsed, .. } => {
                                    m.observe_delta_generation(*elapsed);
                                    "done"
                                }
                                DeltaOutcome::Failed { .. } => "failed",
                                _ => "lost",
                            };
                            m.record_delta(outcome);
                            tracing::info!(worker = worker.name(), outcome = ?o, "delta job");
                        }
                        Err(e) => {
                            m.record_delta("error");
                            tracing::warn!(worker = worker.name(), error = %e, "delta worker");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
        }

        let repo = Arc::clone(&images);
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if let Err(e) = repo.refresh_timestamp(system_clock()()).await {
                    tracing::error!(error = %e, "Image repository timestamp refresh failed");
                }
            }
        });

        let crl_state = state.clone();
        let every = Duration::from_secs(
            u64::try_from(config.crl_validity_secs / 3)
                .unwrap_or(60)
                .max(20),
        );
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = crl_state.refresh_crl().await {
                    tracing::error!(error = %e, "CRL refresh failed");
                }
            }
        });
        Ok(Node {
            admin_addr,
            device_addr,
            metrics_addr,
            tasks,
        })
    }

    /// `https://` URL of the admin listener (loopback when it listens on
    /// every address).
    pub fn admin_url(&self) -> String {
        https_url(self.admin_addr)
    }

    /// `https://` URL of the device listener (loopback when it listens on
    /// every address).
    pub fn device_url(&self) -> String {
        https_url(self.device_addr)
    }

    /// Runs until a task fails (listener error) or ends.
    pub async fn wait(&mut self) -> Result<(), NodeError> {
        match self.tasks.join_next().await {
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(e)) => Err(format!("task: {e}").into()),
            _ => Ok(()),
        }
    }
}

fn https_url(mut a: SocketAddr) -> String {
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("https://{a}")
}
