//! The Client's state directory:
//!
//! ```text
//! DIR/config.json             server URL
//! DIR/identity/vehicle.pem    vehicle certificate chain (PEM)
//! DIR/identity/vehicle.key    its PKCS#8 key (PEM)
//! DIR/identity/fleet-ca.pem   fleet CA (trust anchors, PEM)
//! DIR/trust/director/         Director trust store (esync_store DirTrustStore)
//! DIR/trust/image/            Image repository trust store
//! DIR/downloads/              blobs (DEST.partial while downloading)
//! DIR/manifest.json           last signed vehicle manifest, if any
//! ```
//!
//! Provisioning is offline: the fleet CA issues the vehicle certificate
//! (`esync_identity::FleetCa::issue_vehicle`) and the factory writes it
//! here with the pinned Director and Image root metadata.

use std::path::{Path, PathBuf};

use esync_identity::{client_tls_config, parse_identity, IssuedIdentity, Role, TrustAnchors};
use esync_proto::id::Vin;
use esync_store::file::{atomic_write, read_bounded};
use esync_store::trust::DirTrustStore;
use esync_uptane::{Limits, MemoryStore, Repository, TrustStore};
use serde::{Deserialize, Serialize};

use crate::http::{DeviceHttp, HttpError};

/// Most bytes of any PEM or config file read from the state directory.
pub const MAX_STATE_FILE: u64 = 1024 * 1024;

/// Errors of the state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is missing.
    #[error("{0}: missing (not provisioned?)")]
    Missing(PathBuf),
    /// A file does not parse.
    #[error("{path}: {reason}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate is not a vehicle's.
    #[error("the certificate names {0}, not a vehicle")]
    NotAVehicle(String),
    /// The trust store failed.
    #[error("trust store: {0}")]
    Trust(String),
    /// The HTTP client could not be built.
    #[error("http: {0}")]
    Http(#[from] HttpError),
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// The Server's device API, `https://host[:port]`.
    pub server_url: String,
}

/// The state directory of one Client.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

fn invalid(path: &Path, reason: impl ToString) -> StateError {
    StateError::Invalid {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

impl StateDir {
    /// The directory at `root` (nothing is read yet).
    pub fn new(root: &Path) -> Self {
        StateDir {
            root: root.to_owned(),
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn identity_dir(&self) -> PathBuf {
        self.root.join("identity")
    }

    /// The Director trust store directory.
    pub fn director_dir(&self) -> PathBuf {
        self.root.join("trust").join("director")
    }

    /// The Image repository trust store directory.
    pub fn image_dir(&self) -> PathBuf {
        self.root.join("trust").join("image")
    }

    /// Where blobs are downloaded.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// The last signed vehicle manifest.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    fn write(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        atomic_write(dir, name, bytes).map_err(|source| StateError::Io {
            path: dir.join(name),
            source,
        })
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, StateError> {
        match read_bounded(path, MAX_STATE_FILE) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(StateError::Missing(path.to_owned())),
            Err(source) => Err(StateError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn read_text(&self, path: &Path) -> Result<String, StateError> {
        String::from_utf8(self.read(path)?).map_err(|e| invalid(path, e))
    }

    /// Provisions the directory: checks that the chain and key are a
    /// vehicle identity under `ca_pem`, that both root files are
    /// self-consistent Uptane roots, then writes everything. Returns the
    /// VIN.
    pub fn provision(
        &self,
        config: &ConfigFile,
        cert_chain_pem: &str,
        key_pem: &str,
        ca_pem: &str,
        director_root: &[u8],
        image_root: &[u8],
    ) -> Result<Vin, StateError> {
        let id_dir = self.identity_dir();
        let identity = IssuedIdentity::from_pem(cert_chain_pem, key_pem)
            .map_err(|e| invalid(&id_dir.join("vehicle.pem"), e))?;
        let anchors =
            TrustAnchors::from_pem(ca_pem).map_err(|e| invalid(&id_dir.join("fleet-ca.pem"), e))?;
        let vin = vehicle_vin(&identity)?;
        // The chain must verify under the fleet CA now (a TLS config alone
        // would not check it).
        esync_identity::validate_chain(
            &identity.cert_der,
            &identity.chain,
            &anchors,
            now_unix(),
            esync_identity::Usage::ClientAuth,
        )
        .map_err(|e| invalid(&id_dir.join("vehicle.pem"), e))?;
        for (name, root) in [("director", director_root), ("image", image_root)] {
            Repository::open(MemoryStore::new(root.to_vec()), Limits::default())
                .map_err(|e| invalid(&self.root.join("trust").join(name), e))?;
        }
        DeviceHttp::new(
            &config.server_url,
            client_tls_config(&identity, &anchors)
                .map_err(|e| invalid(&id_dir.join("vehicle.pem"), e))?,
        )?;
        self.write(&id_dir, "vehicle.pem", cert_chain_pem.as_bytes())?;
        self.write(&id_dir, "vehicle.key", key_pem.as_bytes())?;
        self.write(&id_dir, "fleet-ca.pem", ca_pem.as_bytes())?;
        for (dir, root) in [
            (self.director_dir(), director_root),
            (self.image_dir(), image_root),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| StateError::Io {
                path: dir.clone(),
                source,
            })?;
            DirTrustStore::new(&dir)
                .store_role("root", root)
                .map_err(|e| StateError::Trust(e.to_string()))?;
        }
        std::fs::create_dir_all(self.downloads_dir()).map_err(|source| StateError::Io {
            path: self.downloads_dir(),
            source,
        })?;
        let cfg = serde_json::to_vec_pretty(config).map_err(|e| invalid(&self.root, e))?;
        self.write(&self.root, "config.json", &cfg)?;
        Ok(vin)
    }

    /// `config.json`.
    pub fn config(&self) -> Result<ConfigFile, StateError> {
        let path = self.root.join("config.json");
        serde_json::from_slice(&self.read(&path)?).map_err(|e| invalid(&path, e))
    }

    /// The vehicle identity and the fleet trust anchors.
    pub fn identity(&self) -> Result<(IssuedIdentity, TrustAnchors), StateError> {
        let d = self.identity_dir();
        let chain = self.read_text(&d.join("vehicle.pem"))?;
        let key = self.read_text(&d.join("vehicle.key"))?;
        let ca = self.read_text(&d.join("fleet-ca.pem"))?;
        let id = IssuedIdentity::from_pem(&chain, &key).map_err(|e| invalid(&d, e))?;
        let anchors = TrustAnchors::from_pem(&ca).map_err(|e| invalid(&d, e))?;
        Ok((id, anchors))
    }

    /// The HTTPS client, with the vehicle identity.
    pub fn http(&self) -> Result<DeviceHttp, StateError> {
        let cfg = self.config()?;
        let (id, anchors) = self.identity()?;
        let tls = client_tls_config(&id, &anchors).map_err(|e| invalid(&self.identity_dir(), e))?;
        Ok(DeviceHttp::new(&cfg.server_url, tls)?)
    }

    /// The Director repository client over its trust store.
    pub fn director(&self) -> Result<Repository<DirTrustStore>, StateError> {
        open_repo(&self.director_dir())
    }

    /// The Image repository client over its trust store.
    pub fn image(&self) -> Result<Repository<DirTrustStore>, StateError> {
        open_repo(&self.image_dir())
    }

    /// The last signed manifest, if one was written.
    pub fn manifest(&self) -> Result<Option<Vec<u8>>, StateError> {
        match self.read(&self.manifest_path()) {
            Ok(b) => Ok(Some(b)),
            Err(StateError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn open_repo(dir: &Path) -> Result<Repository<DirTrustStore>, StateError> {
    Repository::open(DirTrustStore::new(dir), Limits::default())
        .map_err(|e| StateError::Trust(format!("{}: {e}", dir.display())))
}

fn vehicle_vin(identity: &IssuedIdentity) -> Result<Vin, StateError> {
    let peer =
        parse_identity(&identity.cert_der).map_err(|e| StateError::NotAVehicle(e.to_string()))?;
    match peer.role {
        Role::Vehicle { vin } => Ok(vin),
        other => Err(StateError::NotAVehicle(format!("{other:?}"))),
    }
}

/// The VIN of a loaded identity.
pub fn vin_of(identity: &IssuedIdentity) -> Result<Vin, StateError> {
    vehicle_vin(identity)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
