//! A Server to rehearse on and the operator's side of a campaign, shared by
//! the simulator's tests and anyone who wants a fleet rehearsal in one
//! process.
//!
//! * [`LocalServer`]: a real `esync-server` node in process, made exactly
//!   as `esync-server init` and `serve` make it ([`esync_server::node`]):
//!   a Server directory (SQLite by default, or any database URL), the admin
//!   listener over HTTPS and the device listener over mutual TLS on
//!   loopback ports, the delta workers.
//! * [`Operator`]: what an operator does through the admin API
//!   ([`AdminClient`]) before and during a campaign: upload images, build a
//!   package, sign the Image repository with offline keys (as `esync-server
//!   offline` does), create, start and follow a campaign.

use std::path::{Path, PathBuf};
use std::time::Duration;

use esync_package::package::Package;
use esync_server::admin_client::AdminClient;
use esync_server::campaigns::{CampaignView, MemberView, MembersPage};
use esync_server::config::ServerConfig;
use esync_server::node::{self, InitOptions, Node};
use esync_server::repo::offline::{self, RoleSpec};
use esync_uptane::{PrivateKey, PublicKey, UnixTime};
use http::Method;
use serde_json::{json, Value};

use crate::SimError;

fn admin_err(what: &str) -> impl Fn(esync_server::admin_client::AdminClientError) -> SimError + '_ {
    move |e| SimError::Admin(format!("{what}: {e}"))
}

/// A Server node running in this process.
#[derive(Debug)]
pub struct LocalServer {
    /// The node (its tasks stop when it is dropped).
    pub node: Node,
    /// The admin API client with the first operator token.
    pub admin: AdminClient,
    /// The fleet CA (PEM).
    pub ca_pem: String,
    /// The Server directory.
    pub dir: PathBuf,
}

impl LocalServer {
    /// Initialises a Server directory `dir` (must not exist or be empty)
    /// with loopback listeners on free ports and `database_url` (default:
    /// SQLite in the directory), and starts the node.
    pub async fn start(dir: &Path, database_url: Option<String>) -> Result<Self, SimError> {
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let init = node::init(&InitOptions {
            dir: dir.to_owned(),
            device_listen: any,
            admin_listen: any,
            metrics_listen: None,
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            database_url,
            ca_days: 30,
        })
        .await
        .map_err(|e| SimError::Config(format!("init {}: {e}", dir.display())))?;
        let config =
            ServerConfig::load(&init.config_path).map_err(|e| SimError::Config(e.to_string()))?;
        Self::serve(&config, init.ca_cert.as_path(), &init.token, dir).await
    }

    /// Starts a node on an existing Server directory's `config` (for a
    /// second node on the same database: other listen addresses, same key
    /// directory), with `token`.
    pub async fn serve(
        config: &ServerConfig,
        ca_cert: &Path,
        token: &str,
        dir: &Path,
    ) -> Result<Self, SimError> {
        let node = Node::start(config)
            .await
            .map_err(|e| SimError::Config(format!("serve: {e}")))?;
        let ca_pem = std::fs::read_to_string(ca_cert)
            .map_err(|e| SimError::Io(format!("{}: {e}", ca_cert.display())))?;
        let admin = AdminClient::new(&node.admin_url(), &ca_pem, token)
            .map_err(|e| SimError::Config(e.to_string()))?;
        Ok(Self {
            node,
            admin,
            ca_pem,
            dir: dir.to_owned(),
        })
    }

    /// The device API URL.
    pub fn device_url(&self) -> String {
        self.node.device_url()
    }
}

/// The operator's side of a campaign, through the admin API.
#[derive(Debug)]
pub struct Operator {
    admin: AdminClient,
    image_root_key: PrivateKey,
    image_targets_key: PrivateKey,
    root_uploaded: bool,
    targets_version: u64,
}

impl Operator {
    /// An operator on `admin` with fresh offline Image repository keys.
    pub fn new(admin: AdminClient) -> Self {
        Self {
            admin,
            image_root_key: PrivateKey::generate(),
            image_targets_key: PrivateKey::generate(),
            root_uploaded: false,
            targets_version: 0,
        }
    }

    /// The admin API client.
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// Uploads an image; its SHA-256 (hex).
    pub async fn upload_image(
        &self,
        name: &str,
        version: &str,
        hardware_id: &str,
        bytes: &[u8],
    ) -> Result<String, SimError> {
        let v = self
            .admin
            .upload_image_bytes(name, version, hardware_id, bytes.to_vec())
            .await
            .map_err(admin_err("upload image"))?;
        v["sha256"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SimError::Admin(format!("upload image: answer {v}")))
    }

    /// Builds a package from a `PackageRequest` (JSON); the package model.
    pub async fn create_package(&self, request: &Value) -> Result<Value, SimError> {
        self.admin
            .json(Method::POST, "/packages", Some(request.clone()))
            .await
            .map_err(admin_err("create package"))
    }

    /// Signs (offline keys) and uploads the Image repository's targets over
    /// packages `ids`; the first call first signs and uploads the root
    /// naming the Server's online snapshot and timestamp keys.
    pub async fn sign_image_targets(&mut self, ids: &[&str]) -> Result<(), SimError> {
        let expires = UnixTime(
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            )
            .unwrap_or(0)
                + 30 * 86_400,
        );
        if !self.root_uploaded {
            let online = self
                .admin
                .json(Method::POST, "/image-repo/online-keys", None)
                .await
                .map_err(admin_err("online keys"))?;
            let key = |role: &str| -> Result<PublicKey, SimError> {
                serde_json::from_value(online[role].clone())
                    .map_err(|e| SimError::Admin(format!("online {role} key: {e}")))
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
                    .map_err(|e| SimError::Admin(format!("Image root: {e}")))?;
            self.admin
                .raw_json(Method::POST, "/image-repo/metadata", bytes)
                .await
                .map_err(admin_err("upload Image root"))?;
            self.root_uploaded = true;
        }
        let mut packages = Vec::with_capacity(ids.len());
        for id in ids {
            let v = self
                .admin
                .json(Method::GET, &format!("/packages/{id}"), None)
                .await
                .map_err(admin_err("get package"))?;
            let p: Package = serde_json::from_value(v)
                .map_err(|e| SimError::Admin(format!("package {id}: {e}")))?;
            packages.push(p);
        }
        self.targets_version += 1;
        let targets = offline::sign_targets(
            &packages,
            self.targets_version,
            expires,
            std::slice::from_ref(&self.image_targets_key),
        )
        .map_err(|e| SimError::Admin(format!("Image targets: {e}")))?;
        self.admin
            .raw_json(Method::POST, "/image-repo/metadata", targets)
            .await
            .map_err(admin_err("upload Image targets"))?;
        Ok(())
    }

    /// Creates a campaign from a `CampaignSpec` (JSON) and starts it; its id.
    pub async fn start_campaign(&self, spec: &Value) -> Result<i64, SimError> {
        let c = self
            .admin
            .json(Method::POST, "/campaigns", Some(spec.clone()))
            .await
            .map_err(admin_err("create campaign"))?;
        let id = c["id"]
            .as_i64()
            .ok_or_else(|| SimError::Admin(format!("create campaign: answer {c}")))?;
        self.admin
            .json(Method::POST, &format!("/campaigns/{id}/start"), None)
            .await
            .map_err(admin_err("start campaign"))?;
        Ok(id)
    }

    /// The campaign as the Server shows it.
    pub async fn campaign(&self, id: i64) -> Result<CampaignView, SimError> {
        let v = self
            .admin
            .json(Method::GET, &format!("/campaigns/{id}"), None)
            .await
            .map_err(admin_err("get campaign"))?;
        serde_json::from_value(v).map_err(|e| SimError::Admin(format!("campaign {id}: {e}")))
    }

    /// Every member of the campaign with its state and history.
    pub async fn members(&self, id: i64) -> Result<Vec<MemberView>, SimError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = after
                .as_ref()
                .map_or_else(String::new, |a| format!("&after={a}"));
            let v = self
                .admin
                .json(
                    Method::GET,
                    &format!("/campaigns/{id}/vehicles?limit=1000{q}"),
                    None,
                )
                .await
                .map_err(admin_err("campaign vehicles"))?;
            let page: MembersPage = serde_json::from_value(v)
                .map_err(|e| SimError::Admin(format!("campaign {id} vehicles: {e}")))?;
            out.extend(page.vehicles);
            match page.next_after {
                Some(a) => after = Some(a),
                None => return Ok(out),
            }
        }
    }

    /// Polls the campaign until its state is one of `states` or `timeout`
    /// passes (then the last view, in the error).
    pub async fn wait_for(
        &self,
        id: i64,
        states: &[&str],
        timeout: Duration,
    ) -> Result<CampaignView, SimError> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let c = self.campaign(id).await?;
            if states.contains(&c.state.as_str()) {
                return Ok(c);
            }
            if tokio::time::Instant::now() >= until {
                return Err(SimError::Admin(format!(
                    "campaign {id} still {} after {timeout:?}: {}",
                    c.state,
                    json!(c.waves)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
