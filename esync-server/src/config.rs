//! The `esync-server` configuration file (TOML, written by `esync-server
//! init`, read by `serve`) and the on-disk layout of a Server directory.
//!
//! Relative paths in the file are relative to the file's own directory, so a
//! Server directory can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::{DbError, PgStore, SqliteStore, Store};

/// Largest configuration file read (bytes).
pub const MAX_CONFIG_LEN: u64 = 1024 * 1024;

/// Default cap of an uploaded image or generated patch (4 GiB).
pub const DEFAULT_MAX_BLOB: u64 = 4 * 1024 * 1024 * 1024;

/// File names inside the key directory.
pub mod keys {
    /// Fleet CA certificate (PEM); the trust anchor vehicles and CLI use.
    pub const CA_CERT: &str = "fleet-ca.pem";
    /// Fleet CA private key (PEM).
    pub const CA_KEY: &str = "fleet-ca.key";
    /// Server certificate chain of both listeners (PEM).
    pub const SERVER_CERT: &str = "server.pem";
    /// Server private key (PEM).
    pub const SERVER_KEY: &str = "server.key";
}

/// Reading or checking the configuration failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServerConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_LEN`].
    #[error("{0}: larger than the {MAX_CONFIG_LEN}-byte limit")]
    TooLarge(PathBuf),
    /// The file is not valid TOML for [`ServerConfig`].
    #[error("{path}: {source}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// The Server's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Device API listener (mutual TLS).
    pub device_listen: SocketAddr,
    /// Admin API listener (server-only TLS, bearer tokens).
    pub admin_listen: SocketAddr,
    /// Prometheus `/metrics` listener (plain HTTP; keep it on loopback or a
    /// monitoring network). Absent: no metrics listener.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `sqlite://<path>` (embedded default) or `postgres://...`.
    pub database_url: String,
    /// Blob directory (images and patches).
    pub blob_dir: PathBuf,
    /// Key directory (fleet CA, Server certificate; see [`keys`]).
    pub key_dir: PathBuf,
    /// Names (DNS or IP) the Server certificate was issued for.
    pub server_names: Vec<String>,
    /// Cap of an uploaded image or generated patch, bytes.
    #[serde(default = "default_max_blob")]
    pub max_blob_bytes: u64,
    /// Validity of issued vehicle and Agent certificates, days.
    #[serde(default = "default_cert_days")]
    pub cert_validity_days: u32,
    /// Validity of each signed CRL, seconds; it is re-signed every third of
    /// this.
    #[serde(default = "default_crl_secs")]
    pub crl_validity_secs: i64,
    /// Number of delta worker tasks in this process.
    #[serde(default = "default_workers")]
    pub delta_workers: u32,
    /// Lease of a claimed delta job, seconds (a worker that dies frees it
    /// after this).
    #[serde(default = "default_lease")]
    pub delta_lease_secs: i64,
}

fn default_max_blob() -> u64 {
    DEFAULT_MAX_BLOB
}
fn default_cert_days() -> u32 {
    365
}
fn default_crl_secs() -> i64 {
    24 * 3600
}
fn default_workers() -> u32 {
    1
}
fn default_lease() -> i64 {
    600
}

impl ServerConfig {
    /// The configuration `init` writes for a Server directory `dir` (paths
    /// relative to it), listening on the given addresses.
    pub fn for_dir(device: SocketAddr, admin: SocketAddr, metrics: Option<SocketAddr>) -> Self {
        Self {
            device_listen: device,
            admin_listen: admin,
            metrics_listen: metrics,
            database_url: "sqlite://esync.db".to_owned(),
            blob_dir: PathBuf::from("blobs"),
            key_dir: PathBuf::from("keys"),
            server_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            max_blob_bytes: DEFAULT_MAX_BLOB,
            cert_validity_days: default_cert_days(),
            crl_validity_secs: default_crl_secs(),
            delta_workers: default_workers(),
            delta_lease_secs: default_lease(),
        }
    }

    /// Reads `path` and resolves relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self, ServerConfigError> {
        use std::io::Read as _;
        let io = |source| ServerConfigError::Io {
            path: path.to_owned(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        f.take(MAX_CONFIG_LEN + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_CONFIG_LEN {
            return Err(ServerConfigError::TooLarge(path.to_owned()));
        }
        let mut c: Self = toml::from_str(&text).map_err(|source| ServerConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        c.check()?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.blob_dir = base.join(&c.blob_dir);
        c.key_dir = base.join(&c.key_dir);
        if let Some(rest) = c.database_url.strip_prefix("sqlite://") {
            let p = Path::new(rest);
            if p.is_relative() {
                c.database_url = format!("sqlite://{}", base.join(p).display());
            }
        }
        Ok(c)
    }

    /// Writes the configuration as TOML to `path` (refusing to overwrite).
    pub fn write_new(&self, path: &Path) -> Result<(), ServerConfigError> {
        use std::io::Write as _;
        let text = toml::to_string_pretty(self).map_err(|e| ServerConfigError::Invalid {
            field: "config",
            reason: e.to_string(),
        })?;
        let io = |source| ServerConfigError::Io {
            path: path.to_owned(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    fn check(&self) -> Result<(), ServerConfigError> {
        let invalid = |field, reason: &str| ServerConfigError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if !(self.database_url.starts_with("sqlite://")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.server_names.is_empty() {
            return Err(invalid("server_names", "at least one name"));
        }
        if self.max_blob_bytes == 0 {
            return Err(invalid("max_blob_bytes", "must be positive"));
        }
        if self.crl_validity_secs < 60 {
            return Err(invalid("crl_validity_secs", "at least 60"));
        }
        if self.delta_lease_secs < 1 {
            return Err(invalid("delta_lease_secs", "at least 1"));
        }
        if self.delta_workers > 64 {
            return Err(invalid("delta_workers", "at most 64"));
        }
        Ok(())
    }
}

/// Opens (migrating) the database named by `url`: `sqlite://<path>` (the
/// file is created if missing) or `postgres://...`.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, DbError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Err(DbError::Invalid {
            what: "database_url",
            reason: "must start with sqlite:// or postgres://".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("server.toml");
        let c = ServerConfig::for_dir(
            "127.0.0.1:8443".parse().expect("addr"),
            "127.0.0.1:9443".parse().expect("addr"),
            None,
        );
        c.write_new(&path).expect("write");
        assert!(c.write_new(&path).is_err(), "never overwrites");
        let l = ServerConfig::load(&path).expect("load");
        assert_eq!(l.blob_dir, dir.path().join("blobs"));
        assert_eq!(
            l.database_url,
            format!("sqlite://{}", dir.path().join("esync.db").display())
        );
        assert_eq!(l.admin_listen, c.admin_listen);
    }

    #[test]
    fn unknown_fields_and_bad_urls_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("server.toml");
        let c = ServerConfig::for_dir(
            "127.0.0.1:8443".parse().expect("addr"),
            "127.0.0.1:9443".parse().expect("addr"),
            None,
        );
        let mut text = toml::to_string(&c).expect("toml");
        text.push_str("surprise = 1\n");
        std::fs::write(&path, &text).expect("write");
        assert!(matches!(
            ServerConfig::load(&path),
            Err(ServerConfigError::Parse { .. })
        ));
        let mut bad = c.clone();
        bad.database_url = "mysql://x".into();
        std::fs::write(&path, toml::to_string(&bad).expect("toml")).expect("write");
        assert!(matches!(
            ServerConfig::load(&path),
            Err(ServerConfigError::Invalid { .. })
        ));
    }
}
