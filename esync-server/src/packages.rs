//! Building and validating a multi-component package from uploaded images.
//!
//! An operator describes a package by naming images already uploaded (by
//! digest) and, per component, its device, dependencies, stage and policy;
//! the precondition is text in the `esync_proto::precondition` language.
//! [`build_package`] resolves the images in the [`Store`], describes their
//! artifacts (length, digest, chunk list) from the bytes in the
//! [`BlobStore`], attaches the patches already generated (delta jobs in
//! state done) and validates the whole with the `esync_package` model
//! (dependency cycles, unknown components, stage order, ...). Every refusal
//! is a typed [`PackageBuildError`]; all but `Db` and `Blob` are the
//! client's fault (4xx).

use esync_package::package::{
    Artifact, Component, ComponentPolicy, Delta, DownloadPolicy, Package, PackageError, PackageId,
    PackageSpec, RollbackBehaviour,
};
use esync_proto::id::{DevicePath, HardwareId, ReleaseCounter, Sha256Digest, SoftwareVersion};
use esync_proto::message::PatchFormat;
use esync_proto::precondition::{Precondition, PreconditionError};
use esync_proto::IdError;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::blob::{BlobError, BlobStore};
use crate::deltas::format_name;
use crate::store::{DbError, DeltaState, Digest, PackageRecord, Store};

/// Default transfer chunk size of the package artifacts.
pub const DEFAULT_CHUNK_SIZE: u32 = esync_package::chunk::DEFAULT_CHUNK_SIZE;

/// A package as an operator requests it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRequest {
    /// Package id (`[a-z0-9._-]`, 1 to 64 bytes).
    pub id: String,
    /// Download policy.
    #[serde(default)]
    pub download: DownloadPolicy,
    /// Components.
    pub components: Vec<ComponentRequest>,
}

/// One component of a [`PackageRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRequest {
    /// Target device path.
    pub device: String,
    /// SHA-256 (hex) of the uploaded image to install.
    pub image: String,
    /// Anti-rollback counter.
    pub release_counter: u64,
    /// Devices whose component installs first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Install stage.
    #[serde(default)]
    pub stage: u16,
    /// Precondition expression, if any.
    #[serde(default)]
    pub precondition: Option<String>,
    /// Whether the user must consent.
    #[serde(default)]
    pub consent_required: bool,
    /// Rollback behaviour (default: switch slot).
    #[serde(default)]
    pub rollback: Option<RollbackBehaviour>,
    /// Retry limit (default 3).
    #[serde(default)]
    pub retry_limit: Option<u8>,
    /// SHA-256 (hex) of older uploaded images to offer patches from: every
    /// finished delta job from one of them to this image is attached.
    #[serde(default)]
    pub delta_from: Vec<String>,
}

/// Building a package was refused or failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PackageBuildError {
    /// An id, path, version or digest is malformed.
    #[error("{field}: {reason}")]
    Malformed {
        /// Which field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The image is not uploaded.
    #[error("{device}: unknown image {image}")]
    UnknownImage {
        /// Component.
        device: String,
        /// The digest asked for (hex).
        image: String,
    },
    /// The image's bytes are not in the blob store.
    #[error("{device}: image {image} is registered but its bytes are missing")]
    MissingBlob {
        /// Component.
        device: String,
        /// The digest (hex).
        image: String,
    },
    /// The precondition does not parse.
    #[error("{device}: precondition: {source}")]
    BadPrecondition {
        /// Component.
        device: String,
        /// Parser error.
        source: PreconditionError,
    },
    /// The package model refused it (dependency cycle, unknown component,
    /// stage order, duplicate device, policy, ...).
    #[error(transparent)]
    Invalid(#[from] PackageError),
    /// A package with this id exists.
    #[error("package {0} already exists")]
    Exists(String),
    /// The database failed.
    #[error(transparent)]
    Db(DbError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(BlobError),
}

impl PackageBuildError {
    /// Whether the request (not the Server) is at fault: a 4xx.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Db(_) | Self::Blob(_))
    }
}

fn malformed(field: impl Into<String>, e: impl std::fmt::Display) -> PackageBuildError {
    PackageBuildError::Malformed {
        field: field.into(),
        reason: e.to_string(),
    }
}

fn parse_digest(field: &str, s: &str) -> Result<Digest, PackageBuildError> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(s, &mut d).map_err(|e| malformed(field, e))?;
    Ok(d)
}

fn id<T>(field: &str, r: Result<T, IdError>) -> Result<T, PackageBuildError> {
    r.map_err(|e| malformed(field, e))
}

const FORMATS: [PatchFormat; 3] = [
    PatchFormat::BsdiffZstd,
    PatchFormat::BsdiffXz,
    PatchFormat::Bsdiff40,
];

async fn artifact(
    blobs: &BlobStore,
    device: &str,
    d: &Digest,
    chunk_size: u32,
) -> Result<Artifact, PackageBuildError> {
    let bytes = match blobs.read(d).await {
        Ok(b) => b,
        Err(BlobError::NotFound(_)) => {
            return Err(PackageBuildError::MissingBlob {
                device: device.to_owned(),
                image: hex::encode(d),
            })
        }
        Err(e) => return Err(PackageBuildError::Blob(e)),
    };
    Ok(Artifact::describe(&bytes, chunk_size)?)
}

/// Resolves and validates `req` into a package model (nothing stored).
pub async fn build_package(
    store: &dyn Store,
    blobs: &BlobStore,
    req: &PackageRequest,
    chunk_size: u32,
) -> Result<Package, PackageBuildError> {
    let pkg_id = PackageId::new(req.id.clone())?;
    let mut components = Vec::with_capacity(
        req.components
            .len()
            .min(esync_package::package::MAX_COMPONENTS),
    );
    if req.components.len() > esync_package::package::MAX_COMPONENTS {
        return Err(PackageError::TooMany("components").into());
    }
    for c in &req.components {
        let device = id("device", DevicePath::new(c.device.clone()))?;
        let depends_on = c
            .depends_on
            .iter()
            .map(|d| id("depends_on", DevicePath::new(d.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let precondition = c
            .precondition
            .as_deref()
            .map(Precondition::parse)
            .transpose()
            .map_err(|source| PackageBuildError::BadPrecondition {
                device: c.device.clone(),
                source,
            })?;
        let digest = parse_digest("image", &c.image)?;
        let img = store
            .image(&digest)
            .await
            .map_err(PackageBuildError::Db)?
            .ok_or_else(|| PackageBuildError::UnknownImage {
                device: c.device.clone(),
                image: c.image.clone(),
            })?;
        let image = artifact(blobs, &c.device, &digest, chunk_size).await?;
        let mut deltas = Vec::new();
        for from in &c.delta_from {
            let from_d = parse_digest("delta_from", from)?;
            let src = store
                .image(&from_d)
                .await
                .map_err(PackageBuildError::Db)?
                .ok_or_else(|| PackageBuildError::UnknownImage {
                    device: c.device.clone(),
                    image: from.clone(),
                })?;
            for f in FORMATS {
                let job = store
                    .delta_job(&from_d, &digest, format_name(f))
                    .await
                    .map_err(PackageBuildError::Db)?;
                let Some(job) = job.filter(|j| j.state == DeltaState::Done) else {
                    continue;
                };
                let Some(patch) = job.result_sha256 else {
                    continue;
                };
                deltas.push(Delta {
                    format: f,
                    from_version: id("delta_from", SoftwareVersion::new(src.version.clone()))?,
                    source_length: src.length,
                    source_sha256: Sha256Digest(from_d),
                    patch: artifact(blobs, &c.device, &patch, chunk_size).await?,
                });
            }
        }
        let defaults = ComponentPolicy::default();
        components.push(Component {
            device,
            hardware_id: id("hardware_id", HardwareId::new(img.hardware_id.clone()))?,
            version: id("version", SoftwareVersion::new(img.version.clone()))?,
            release_counter: ReleaseCounter(c.release_counter),
            image,
            deltas,
            depends_on,
            stage: c.stage,
            policy: ComponentPolicy {
                precondition,
                consent_required: c.consent_required,
                rollback: c.rollback.unwrap_or(defaults.rollback),
                retry_limit: c.retry_limit.unwrap_or(defaults.retry_limit),
            },
        });
    }
    Ok(Package::new(PackageSpec {
        id: pkg_id,
        download: req.download.clone(),
        components,
    })?)
}

/// Builds, validates and stores `req` (as the model's JSON).
pub async fn create_package(
    store: &dyn Store,
    blobs: &BlobStore,
    req: &PackageRequest,
    now_ms: i64,
) -> Result<Package, PackageBuildError> {
    let pkg = build_package(store, blobs, req, DEFAULT_CHUNK_SIZE).await?;
    let model_json = serde_json::to_string(&pkg).map_err(PackageError::Json)?;
    let rec = PackageRecord {
        id: req.id.clone(),
        model_json,
        created_ms: now_ms,
    };
    match store.insert_package(&rec).await {
        Ok(()) => Ok(pkg),
        Err(DbError::Conflict { .. }) => Err(PackageBuildError::Exists(req.id.clone())),
        Err(e) => Err(PackageBuildError::Db(e)),
    }
}

/// Loads a stored package model.
pub async fn load_package(
    store: &dyn Store,
    id: &str,
) -> Result<Option<Package>, PackageBuildError> {
    let Some(rec) = store.package(id).await.map_err(PackageBuildError::Db)? else {
        return Ok(None);
    };
    let pkg: Package = serde_json::from_str(&rec.model_json).map_err(|e| {
        PackageBuildError::Db(DbError::Corrupt {
            column: "packages.model_json",
            reason: e.to_string(),
        })
    })?;
    Ok(Some(pkg))
}
