//! Registering a simulated fleet on a Server through its admin API
//! ([`esync_server::admin_client::AdminClient`], the CLI's client): per
//! vehicle `POST /vehicles`, one `POST /vehicles/{vin}/ecus` per ECU (its
//! Uptane public key), and `POST /vehicles/{vin}/certificates` with a CSR
//! whose key never leaves the simulator. Requests run concurrently.
//!
//! Identities are cached in `<cache_dir>/<vin prefix>.fleet.json`: a later
//! run reuses a cached vehicle when its ECUs are still what the spec derives
//! and the Server still knows the VIN with those ECUs and keys (one `GET
//! /vehicles/{vin}` each); anything else is registered again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use esync_identity::IssuedIdentity;
use esync_proto::id::Vin;
use esync_server::admin::VehicleView;
use esync_server::admin_client::{AdminClient, AdminClientError};
use futures::stream::{self, StreamExt as _};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::spec::{EcuPlan, FleetSpec};
use crate::SimError;

/// One provisioned simulated vehicle: what the Server registered and the
/// TLS identity it issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimVehicle {
    /// VIN.
    pub vin: Vin,
    /// Model.
    pub model: String,
    /// Region.
    pub region: String,
    /// ECUs, the primary first.
    pub ecus: Vec<EcuPlan>,
    /// Certificate and issuing chain (PEM), as the Server signed them.
    pub cert_chain_pem: String,
    /// The TLS private key (PKCS#8 PEM).
    pub tls_key_pem: String,
}

impl SimVehicle {
    /// Its TLS identity.
    pub fn identity(&self) -> Result<IssuedIdentity, SimError> {
        IssuedIdentity::from_pem(&self.cert_chain_pem, &self.tls_key_pem)
            .map_err(|e| SimError::Identity(format!("{}: {e}", self.vin)))
    }

    /// The primary ECU.
    pub fn primary(&self) -> &EcuPlan {
        // `FleetSpec::ecus` always puts the primary first.
        &self.ecus[0]
    }
}

/// What [`provision`] did.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// Every vehicle of the spec, in index order.
    pub vehicles: Vec<SimVehicle>,
    /// How many were registered now.
    pub registered: usize,
    /// How many were reused from the cache (the Server knew them).
    pub reused: usize,
    /// The cache file, if a cache directory was given.
    pub cache_file: Option<PathBuf>,
}

/// Admin requests in flight at once by default.
pub const DEFAULT_CONCURRENCY: usize = 32;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    vehicles: Vec<SimVehicle>,
}

fn cache_path(dir: &Path, spec: &FleetSpec) -> PathBuf {
    let prefix = if spec.vin_prefix.is_empty() {
        "fleet"
    } else {
        spec.vin_prefix.as_str()
    };
    dir.join(format!("{prefix}.fleet.json"))
}

/// Reads cached identities (none when the file does not exist).
fn read_cache(path: &Path) -> Result<BTreeMap<Vin, SimVehicle>, SimError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(SimError::Io(format!("{}: {e}", path.display()))),
    };
    let f: CacheFile = serde_json::from_slice(&bytes)
        .map_err(|e| SimError::Cache(format!("{}: {e}", path.display())))?;
    Ok(f.vehicles.into_iter().map(|v| (v.vin.clone(), v)).collect())
}

fn write_cache(path: &Path, vehicles: &[SimVehicle]) -> Result<(), SimError> {
    let io = |e: std::io::Error| SimError::Io(format!("{}: {e}", path.display()));
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let body = serde_json::to_vec(&CacheFile {
        vehicles: vehicles.to_vec(),
    })
    .map_err(|e| SimError::Cache(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// An ed25519 public key's raw half, hex (what `POST …/ecus` takes).
fn raw_public_hex(e: &EcuPlan) -> Result<String, SimError> {
    let v =
        serde_json::to_value(e.key().public_key()).map_err(|x| SimError::Spec(x.to_string()))?;
    v["keyval"]["public"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| SimError::Spec("ECU key is not ed25519".into()))
}

/// An admin request, retried (up to 5 attempts, backoff from 100 ms) while
/// its error is retryable (no answer, 5xx).
async fn retried<T, F, Fut>(mut f: F) -> Result<T, AdminClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AdminClientError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() && attempt < 5 => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn admin_err(what: &str, e: &AdminClientError) -> SimError {
    SimError::Admin(format!("{what}: {e}"))
}

/// Whether the Server knows `v` as cached: the VIN, and every ECU with its
/// hardware id, primary flag and key.
async fn server_knows(admin: &AdminClient, v: &SimVehicle) -> Result<bool, SimError> {
    let path = format!("/vehicles/{}", v.vin);
    let got = retried(|| admin.json(Method::GET, &path, None)).await;
    let view = match got {
        Ok(j) => serde_json::from_value::<VehicleView>(j)
            .map_err(|e| SimError::Admin(format!("vehicle {}: {e}", v.vin)))?,
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(false),
        Err(e) => return Err(admin_err("GET vehicle", &e)),
    };
    for e in &v.ecus {
        let key = raw_public_hex(e)?;
        let found = view.ecus.iter().any(|s| {
            s.serial == e.serial.as_str()
                && s.hardware_id == e.hardware_id.as_str()
                && s.primary == e.primary
                && s.public_key == key
        });
        if !found {
            return Ok(false);
        }
    }
    Ok(view.ecus.len() == v.ecus.len())
}

/// Registers vehicle `vin` of `spec` with `ecus`; returns it with the
/// certificate the Server issued.
async fn register(
    admin: &AdminClient,
    spec: &FleetSpec,
    vin: Vin,
    ecus: Vec<EcuPlan>,
) -> Result<SimVehicle, SimError> {
    let hardware_ids: Vec<&str> = ecus.iter().map(|e| e.hardware_id.as_str()).collect();
    let body = json!({"vin": vin.as_str(), "model": spec.model, "region": spec.region,
        "hardware_ids": hardware_ids});
    retried(|| admin.json(Method::POST, "/vehicles", Some(body.clone())))
        .await
        .map_err(|e| admin_err("register vehicle", &e))?;
    let ecu_path = format!("/vehicles/{vin}/ecus");
    for e in &ecus {
        let body = json!({"serial": e.serial.as_str(), "hardware_id": e.hardware_id.as_str(),
            "primary": e.primary, "public_key": raw_public_hex(e)?});
        retried(|| admin.json(Method::POST, &ecu_path, Some(body.clone())))
            .await
            .map_err(|e| admin_err("register ECU", &e))?;
    }
    // The TLS key stays here; the Server signs its CSR.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| SimError::Identity(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| SimError::Identity(e.to_string()))?;
    let cert_path = format!("/vehicles/{vin}/certificates");
    let issued = retried(|| {
        admin.json(
            Method::POST,
            &cert_path,
            Some(json!({"csr_pem": csr, "device": null})),
        )
    })
    .await
    .map_err(|e| admin_err("issue certificate", &e))?;
    let pem = |f: &str| {
        issued[f]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SimError::Admin(format!("certificate of {vin}: no {f}")))
    };
    let cert_chain_pem = pem("cert_pem")? + &pem("chain_pem")?;
    let v = SimVehicle {
        vin,
        model: spec.model.clone(),
        region: spec.region.clone(),
        ecus,
        cert_chain_pem,
        tls_key_pem: key.serialize_pem(),
    };
    v.identity()?;
    Ok(v)
}

/// Provisions every vehicle of `spec` on the Server behind `admin`
/// ([`DEFAULT_CONCURRENCY`] requests at once), reusing the identities cached
/// in `cache_dir` that the Server still knows, and writes the cache.
pub async fn provision(
    admin: &AdminClient,
    spec: &FleetSpec,
    cache_dir: Option<&Path>,
) -> Result<Vec<SimVehicle>, SimError> {
    Ok(provision_with(admin, spec, cache_dir, DEFAULT_CONCURRENCY)
        .await?
        .vehicles)
}

/// [`provision`] with `concurrency` admin requests at once, telling how
/// many vehicles were registered and reused.
pub async fn provision_with(
    admin: &AdminClient,
    spec: &FleetSpec,
    cache_dir: Option<&Path>,
    concurrency: usize,
) -> Result<Provisioned, SimError> {
    spec.validate()?;
    let cache_file = cache_dir.map(|d| cache_path(d, spec));
    let cached = match &cache_file {
        Some(p) => read_cache(p)?,
        None => BTreeMap::new(),
    };
    let mut plans = Vec::with_capacity(spec.count);
    for i in 0..spec.count {
        let vin = spec.vin(i)?;
        let ecus = spec.ecus(&vin)?;
        let hit = cached
            .get(&vin)
            .filter(|c| c.ecus == ecus && c.model == spec.model && c.region == spec.region)
            .cloned();
        plans.push((vin, ecus, hit));
    }
    let results: Vec<Result<(SimVehicle, bool), SimError>> = stream::iter(plans)
        .map(|(vin, ecus, hit)| async move {
            if let Some(c) = hit {
                if c.identity().is_ok() && server_knows(admin, &c).await? {
                    return Ok((c, true));
                }
            }
            register(admin, spec, vin, ecus).await.map(|v| (v, false))
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut vehicles = Vec::with_capacity(results.len());
    let mut reused = 0;
    for r in results {
        let (v, was_cached) = r?;
        reused += usize::from(was_cached);
        vehicles.push(v);
    }
    if let Some(p) = &cache_file {
        write_cache(p, &vehicles)?;
    }
    Ok(Provisioned {
        registered: vehicles.len() - reused,
        reused,
        vehicles,
        cache_file,
    })
}
