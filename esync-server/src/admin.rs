//! The admin API: JSON over HTTPS (server-only TLS from
//! [`crate::tls::admin_tls_config`], on its own listener), for operators and
//! their tools (the `esync-server` CLI).
//!
//! * **Authentication**: `Authorization: Bearer <token>`; the Server keeps
//!   only the SHA-256 of each token ([`Store::admin_token_role`]). No or an
//!   unknown/revoked token is 401.
//! * **Roles**: a viewer may read (`GET`), never change: every other method
//!   needs an operator token (403 otherwise). The rule is enforced once, by
//!   method, before any handler or body is read.
//! * **Errors**: every refusal is an [`AdminErrorBody`] `{code, message}`
//!   with one status per [`AdminErrorCode`]; bad input never leaves anything
//!   half-stored (JSON bodies are capped and parsed before anything is
//!   written; an image upload is streamed into a temporary blob that is kept
//!   only when its length and SHA-256 match).
//! * **OpenAPI**: [`AdminDoc`] (utoipa) is generated from the handlers and
//!   served at `GET /admin/v1/openapi.json`; the device API's document
//!   (`esync_api::openapi()`) at `GET /admin/v1/device-openapi.json`.
//! * **Uptane**: offline-signed Image repository metadata is uploaded here
//!   (verified by [`ImageRepo::upload`]), the Server's online Image keys
//!   created and Director keys rotated ([`Director::rotate_keys`]). (No
//!   route shows a vehicle's plan: `Director::plan` queues delta jobs, and a
//!   viewer's GET must change nothing.)
//!
//! The admin error body is not `esync_api::ErrorBody`: that one is the
//! device API's, whose codes are the device routes' (no 401, no generic
//! conflict). The shape (`code`, `message`) is the same.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use rustls::ServerConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use esync_identity::Validity;
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, SoftwareVersion, Vin};
use esync_proto::message::PatchFormat;

use crate::blob::{BlobError, BlobStore, Expect};
use crate::campaigns::{
    self, Action, Approval, CampaignError, CampaignSpec, CampaignView, Created, DryRun,
    HistoryView, InstalledVersion, MaintenanceWindow, MemberView, MembersPage, Target, WaveSpec,
    WaveView,
};
use crate::deltas::{format_name, parse_format, request_delta};
use crate::device::HANDSHAKE_TIMEOUT;
use crate::director::{Director, DirectorError};
use crate::metrics::Metrics;
use crate::packages::{create_package, load_package, PackageBuildError, PackageRequest};
use crate::provision::{ProvisionError, Provisioner};
use crate::repo::{ImageRepo, RepoError};
use crate::store::{
    AdminRole, Certificate, DbError, DeltaJob, Digest, Ecu, Image, Inserted, Store, VehicleRecord,
};
use crate::tls::DeviceTls;

/// Prefix of every admin route.
pub const ADMIN_PREFIX: &str = "/admin/v1";
/// Default cap of a JSON request body.
pub const DEFAULT_MAX_JSON_BODY: usize = 1024 * 1024;
/// Default cap of an uploaded Image repository metadata file.
pub const DEFAULT_MAX_METADATA_BODY: usize = 16 * 1024 * 1024;
/// Most VINs in one assignment request.
pub const MAX_ASSIGN_VINS: usize = 10_000;
/// Most vehicles listed in one page.
pub const MAX_PAGE: u32 = 1000;
/// Longest bearer token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 256;
/// Prefix of the admin tokens this Server mints.
pub const TOKEN_PREFIX: &str = "esat_";
/// Longest free-text field (model, region, token name, reason), bytes.
pub const MAX_TEXT: usize = 128;
/// Longest ECU public key accepted (bytes).
pub const MAX_PUBLIC_KEY: usize = 1024;

/// Wall time in milliseconds since the Unix epoch (the device API's clock type).
pub use crate::device::{system_clock, NowMs as Clock};

// ---------------------------------------------------------------- errors

/// What was wrong with an admin request, machine-readable. One status each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdminErrorCode {
    /// 400: a path, query or body value is malformed, or the body is not
    /// the JSON this route takes, or an upload was cut short.
    BadRequest,
    /// 401: no bearer token, or an unknown or revoked one.
    Unauthorized,
    /// 403: the token's role may not do this (a viewer changing something).
    Forbidden,
    /// 404: no such route or entity.
    NotFound,
    /// 405: the route takes another method.
    MethodNotAllowed,
    /// 409: the entity exists with other content.
    Conflict,
    /// 413: the body is over the route's cap.
    BodyTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: well-formed but refused (hash or length mismatch, invalid
    /// package, unknown image, bad CSR).
    Rejected,
    /// 500: the Server failed.
    Internal,
}

impl AdminErrorCode {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The JSON body of every admin error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminErrorBody {
    /// What was wrong.
    pub code: AdminErrorCode,
    /// Detail for humans (never a secret).
    pub message: String,
}

/// An admin API error (a code and a message); answers as an [`AdminErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct AdminError {
    /// What was wrong.
    pub code: AdminErrorCode,
    /// Detail.
    pub message: String,
}

impl AdminError {
    /// An error with `code` and `message`.
    pub fn new(code: AdminErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > esync_api::error::MAX_ERROR_MESSAGE {
            let mut cut = esync_api::error::MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Self { code, message }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(AdminErrorCode::BadRequest, message)
    }

    fn not_found(what: &str, key: impl std::fmt::Display) -> Self {
        Self::new(AdminErrorCode::NotFound, format!("{what} not found: {key}"))
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "admin API internal error");
        Self::new(
            AdminErrorCode::Internal,
            "internal error (see the Server log)",
        )
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        (
            status,
            Json(AdminErrorBody {
                code: self.code,
                message: self.message,
            }),
        )
            .into_response()
    }
}

impl From<DbError> for AdminError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound { entity, key } => Self::not_found(entity, key),
            DbError::Conflict { entity, key } => Self::new(
                AdminErrorCode::Conflict,
                format!("{entity} already exists with other content: {key}"),
            ),
            DbError::Invalid { what, reason } => Self::bad(format!("invalid {what}: {reason}")),
            other => Self::internal(other),
        }
    }
}

impl From<PackageBuildError> for AdminError {
    fn from(e: PackageBuildError) -> Self {
        match e {
            PackageBuildError::Exists(_) => Self::new(AdminErrorCode::Conflict, e.to_string()),
            PackageBuildError::Db(d) => d.into(),
            PackageBuildError::Blob(b) => Self::internal(b),
            other if other.is_client_error() => {
                Self::new(AdminErrorCode::Rejected, other.to_string())
            }
            other => Self::internal(other),
        }
    }
}

impl From<DirectorError> for AdminError {
    fn from(e: DirectorError) -> Self {
        match e {
            DirectorError::UnknownRole(_) => Self::bad(e.to_string()),
            DirectorError::NotInitialised => Self::new(AdminErrorCode::Conflict, e.to_string()),
            DirectorError::Db(d) => d.into(),
            other => Self::internal(other),
        }
    }
}

impl From<RepoError> for AdminError {
    fn from(e: RepoError) -> Self {
        if e.is_client_error() {
            Self::new(AdminErrorCode::Rejected, e.to_string())
        } else {
            Self::internal(e)
        }
    }
}

impl From<ProvisionError> for AdminError {
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::CsrTooLarge { .. } => {
                Self::new(AdminErrorCode::BodyTooLarge, e.to_string())
            }
            ProvisionError::Csr(_) | ProvisionError::CsrKeyType => {
                Self::new(AdminErrorCode::Rejected, e.to_string())
            }
            ProvisionError::Serial => Self::bad(e.to_string()),
            other => Self::internal(other),
        }
    }
}

/// A JSON body (capped by the router's `DefaultBodyLimit`) whose refusals
/// are [`AdminError`]s.
#[derive(Debug)]
pub struct AdminJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AdminJson<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(AdminError::new(
                AdminErrorCode::UnsupportedMediaType,
                "the body must be application/json",
            )),
            Err(JsonRejection::BytesRejection(r))
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(AdminError::new(
                    AdminErrorCode::BodyTooLarge,
                    "the JSON body is over the limit",
                ))
            }
            Err(r) => Err(AdminError::bad(format!(
                "malformed body: {}",
                r.body_text()
            ))),
        }
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, AdminError> {
    q.map(|Query(v)| v)
        .map_err(|e| AdminError::bad(format!("query: {}", e.body_text())))
}

fn digest_hex(field: &str, s: &str) -> Result<Digest, AdminError> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(s, &mut d)
        .map_err(|_| AdminError::bad(format!("{field}: not 64 hex digits")))?;
    Ok(d)
}

fn text(field: &str, s: &str) -> Result<(), AdminError> {
    if s.len() > MAX_TEXT || s.chars().any(char::is_control) {
        return Err(AdminError::bad(format!(
            "{field}: at most {MAX_TEXT} bytes, no control characters"
        )));
    }
    Ok(())
}

fn vin(s: &str) -> Result<Vin, AdminError> {
    Vin::new(s.to_owned()).map_err(|e| AdminError::bad(format!("vin: {e}")))
}

// ---------------------------------------------------------------- state

/// Settings of the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Validity of issued vehicle and Agent certificates, days.
    pub cert_validity_days: u32,
    /// Validity of each signed CRL, seconds (re-signed by
    /// [`AdminState::refresh_crl`] before it runs out).
    pub crl_validity_secs: i64,
    /// Cap of a JSON request body, bytes.
    pub max_json_body: usize,
    /// Cap of an uploaded Image repository metadata file, bytes.
    pub max_metadata_body: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            cert_validity_days: 365,
            crl_validity_secs: 24 * 3600,
            max_json_body: DEFAULT_MAX_JSON_BODY,
            max_metadata_body: DEFAULT_MAX_METADATA_BODY,
        }
    }
}

/// Everything the admin handlers use.
#[derive(Clone)]
pub struct AdminState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Image and patch bytes (its size cap caps uploads).
    pub blobs: BlobStore,
    /// The fleet CA and its revocation list.
    pub provisioner: Arc<Mutex<Provisioner>>,
    /// The device listener whose CRLs a revocation reloads (none in tests
    /// that run the admin API alone).
    pub device_tls: Option<Arc<DeviceTls>>,
    /// The Director (its keys are rotated here).
    pub director: Arc<Director>,
    /// The Image repository (offline-signed metadata is uploaded here).
    pub images: Arc<ImageRepo>,
    /// Counters.
    pub metrics: Metrics,
    /// Wall time.
    pub clock: Clock,
    /// Settings.
    pub settings: AdminSettings,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("store", &self.store)
            .field("blobs", &self.blobs)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Loads the persisted revocations into the provisioner, signs a fresh
    /// CRL and hands it to the device listener (if any). Call at start and
    /// periodically (well within `crl_validity_secs`): the device listener
    /// refuses every client once its CRL has expired.
    pub async fn refresh_crl(&self) -> Result<Vec<u8>, AdminError> {
        let now_ms = self.now_ms();
        let revoked = self.store.revocations(now_ms).await?;
        let mut prov = self.provisioner.lock().await;
        prov.restore_revoked(revoked.into_iter().map(|r| (r.serial, r.revoked_ms / 1000)))?;
        let crl = prov.crl_der(now_ms / 1000 - 60, self.settings.crl_validity_secs)?;
        drop(prov);
        if let Some(tls) = &self.device_tls {
            tls.reload_crls(std::slice::from_ref(&crl))
                .map_err(AdminError::internal)?;
        }
        Ok(crl)
    }
}

/// The caller's role, as authenticated (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller(pub AdminRole);

/// The SHA-256 under which a token is stored.
pub fn token_digest(token: &str) -> Digest {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (`esat_` + 64 hex digits).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("{TOKEN_PREFIX}{}", hex::encode(b))
}

/// Stores a new token called `name` with `role`; returns the secret (shown
/// once: only its hash is kept).
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    role: AdminRole,
    now_ms: i64,
) -> Result<String, AdminError> {
    if name.is_empty() {
        return Err(AdminError::bad("name: empty"));
    }
    text("name", name)?;
    let token = new_token();
    store
        .insert_admin_token(name, &token_digest(&token), role, now_ms)
        .await?;
    Ok(token)
}

async fn authenticate(State(st): State<AdminState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN) else {
        return AdminError::new(AdminErrorCode::Unauthorized, "a bearer token is required")
            .into_response();
    };
    let role = match st.store.admin_token_role(&token_digest(token)).await {
        Ok(Some(role)) => role,
        Ok(None) => {
            return AdminError::new(AdminErrorCode::Unauthorized, "unknown or revoked token")
                .into_response()
        }
        Err(e) => return AdminError::internal(e).into_response(),
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads && role != AdminRole::Operator {
        return AdminError::new(
            AdminErrorCode::Forbidden,
            format!("a {} token may only read", role.as_str()),
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller(role));
    next.run(req).await
}

// ---------------------------------------------------------------- bodies

/// A vehicle to register (or update, by VIN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VehicleBody {
    /// Vehicle identification number (17 characters).
    pub vin: String,
    /// Model name.
    pub model: String,
    /// Region (campaign targeting).
    pub region: String,
    /// Hardware ids present in the vehicle.
    #[serde(default)]
    pub hardware_ids: Vec<String>,
}

/// An ECU to register in a vehicle (or update, by serial).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EcuBody {
    /// ECU serial (unique in the fleet).
    pub serial: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Whether this is the vehicle's primary ECU.
    #[serde(default)]
    pub primary: bool,
    /// Its public key as provisioned, hex.
    pub public_key: String,
}

/// An ECU as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EcuView {
    /// Serial.
    pub serial: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Primary or not.
    pub primary: bool,
    /// Public key, hex.
    pub public_key: String,
}

/// A vehicle with its ECUs and assigned packages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VehicleView {
    /// VIN.
    pub vin: String,
    /// Model.
    pub model: String,
    /// Region.
    pub region: String,
    /// Hardware ids.
    pub hardware_ids: Vec<String>,
    /// ECUs, by serial (empty in lists).
    pub ecus: Vec<EcuView>,
    /// Assigned package ids not rollback-blocked, oldest first (empty in lists).
    pub assignments: Vec<String>,
    /// What each ECU runs, from the last verified manifest (empty in lists).
    #[serde(default)]
    pub installed: Vec<InstalledView>,
}

/// What one ECU runs, from the vehicle's last verified manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstalledView {
    /// ECU serial.
    pub ecu: String,
    /// Hardware id.
    pub hardware_id: String,
    /// Image SHA-256, hex.
    pub sha256: String,
    /// The Image repository's version of that image (`""` if unknown).
    pub version: String,
}

impl VehicleView {
    fn of(v: VehicleRecord) -> Self {
        Self {
            vin: v.vin,
            model: v.model,
            region: v.region,
            hardware_ids: v.hardware_ids,
            ecus: Vec::new(),
            assignments: Vec::new(),
            installed: Vec::new(),
        }
    }
}

/// Paging of `GET /admin/v1/vehicles`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// List VINs after this one (exclusive).
    pub after: Option<String>,
    /// At most this many (default and maximum 1000).
    pub limit: Option<u32>,
}

/// A certificate signing request for a vehicle's Client or one of its Agents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CsrBody {
    /// The PKCS#10 request, PEM (`CERTIFICATE REQUEST`); only its ed25519
    /// public key is used.
    pub csr_pem: String,
    /// For an Agent: its device path (`/powertrain/ecm`); absent for the
    /// vehicle's Client.
    #[serde(default)]
    pub device: Option<String>,
}

/// An issued certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssuedView {
    /// Serial number, hex.
    pub serial: String,
    /// Who it names (`esync://vehicle/<VIN>[/device/<path>]`).
    pub subject: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The issuing chain up to the root, PEM.
    pub chain_pem: String,
    /// End of validity, ms since the epoch.
    pub not_after_ms: i64,
}

/// A stored certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateView {
    /// Serial number, hex.
    pub serial: String,
    /// Subject.
    pub subject: String,
    /// Issue time, ms.
    pub issued_ms: i64,
    /// End of validity, ms.
    pub not_after_ms: i64,
    /// Revocation time, ms, if revoked.
    pub revoked_ms: Option<i64>,
    /// Revocation reason.
    pub revocation_reason: Option<String>,
}

/// Why a certificate is revoked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Free text.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What an image upload must be (query of `POST /admin/v1/images`).
#[derive(Clone, Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImageQuery {
    /// Image name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Hardware id it is built for.
    pub hardware_id: String,
    /// SHA-256 of the bytes, hex: the upload is kept only if it matches.
    pub sha256: String,
    /// Length in bytes: if given, the upload is kept only if it matches.
    pub length: Option<u64>,
}

/// An uploaded image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Hardware id.
    pub hardware_id: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Length.
    pub length: u64,
}

impl ImageView {
    fn of(i: Image) -> Self {
        Self {
            name: i.name,
            version: i.version,
            hardware_id: i.hardware_id,
            sha256: hex::encode(i.sha256),
            length: i.length,
        }
    }
}

/// Assign a package to vehicles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// Package id.
    pub package: String,
    /// Vehicles (at most 10 000; duplicates are assigned once).
    pub vins: Vec<String>,
}

/// One vehicle's assignment outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Assigned {
    /// VIN.
    pub vin: String,
    /// `false` if the package was already assigned to it.
    pub new: bool,
}

/// Outcome of an assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AssignView {
    /// Package id.
    pub package: String,
    /// Per vehicle, in request order.
    pub assigned: Vec<Assigned>,
}

/// Which delta jobs (query of `GET /admin/v1/deltas`).
#[derive(Clone, Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeltaQuery {
    /// Source image SHA-256, hex.
    pub from: String,
    /// Target image SHA-256, hex.
    pub to: String,
}

/// Request a delta job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeltaBody {
    /// Source image SHA-256, hex.
    pub from: String,
    /// Target image SHA-256, hex.
    pub to: String,
    /// Patch format (`BsdiffZstd`, `BsdiffXz`, `Bsdiff40`; default `BsdiffZstd`).
    #[serde(default)]
    pub format: Option<String>,
}

/// A delta job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeltaJobView {
    /// Job id.
    pub id: i64,
    /// Source SHA-256, hex.
    pub from: String,
    /// Target SHA-256, hex.
    pub to: String,
    /// Patch format.
    pub format: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Times claimed.
    pub attempts: i64,
    /// Patch SHA-256, hex (done).
    pub patch_sha256: Option<String>,
    /// Patch length (done).
    pub patch_length: Option<u64>,
    /// Why it failed (failed).
    pub error: Option<String>,
}

impl DeltaJobView {
    fn of(j: DeltaJob) -> Self {
        Self {
            id: j.id,
            from: hex::encode(j.from_sha256),
            to: hex::encode(j.to_sha256),
            format: j.format,
            state: j.state.as_str().to_owned(),
            attempts: j.attempts,
            patch_sha256: j.result_sha256.map(hex::encode),
            patch_length: j.result_length,
            error: j.error,
        }
    }
}

/// A token to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Unique name (who or what holds it).
    pub name: String,
    /// `operator` or `viewer`.
    pub role: String,
}

/// A created token: the secret is shown only here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// The bearer secret (the Server keeps only its SHA-256).
    pub token: String,
}

// ---------------------------------------------------------------- handlers

/// Lists vehicles by VIN.
#[utoipa::path(get, path = "/admin/v1/vehicles", params(PageQuery),
    responses((status = 200, body = Vec<VehicleView>), (status = 400, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn list_vehicles(
    State(st): State<AdminState>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Vec<VehicleView>>, AdminError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let vs = st.store.vehicles(q.after.as_deref(), limit).await?;
    Ok(Json(vs.into_iter().map(VehicleView::of).collect()))
}

/// Registers a vehicle (or updates it, by VIN).
#[utoipa::path(post, path = "/admin/v1/vehicles", request_body = VehicleBody,
    responses((status = 200, body = VehicleView), (status = 400, body = AdminErrorBody),
        (status = 403, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn register_vehicle(
    State(st): State<AdminState>,
    AdminJson(b): AdminJson<VehicleBody>,
) -> Result<Json<VehicleView>, AdminError> {
    let v = vin(&b.vin)?;
    text("model", &b.model)?;
    text("region", &b.region)?;
    if b.hardware_ids.len() > 256 {
        return Err(AdminError::bad("hardware_ids: at most 256"));
    }
    for h in &b.hardware_ids {
        HardwareId::new(h.clone()).map_err(|e| AdminError::bad(format!("hardware_ids: {e}")))?;
    }
    let vehicle = VehicleRecord {
        vin: v.as_str().to_owned(),
        model: b.model,
        region: b.region,
        hardware_ids: b.hardware_ids,
    };
    st.store.upsert_vehicle(&vehicle, st.now_ms()).await?;
    Ok(Json(VehicleView::of(vehicle)))
}

/// A vehicle with its ECUs and assignments.
#[utoipa::path(get, path = "/admin/v1/vehicles/{vin}", params(("vin" = String, Path)),
    responses((status = 200, body = VehicleView), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn get_vehicle(
    State(st): State<AdminState>,
    Path(v): Path<String>,
) -> Result<Json<VehicleView>, AdminError> {
    let v = vin(&v)?;
    let vehicle = st
        .store
        .vehicle(v.as_str())
        .await?
        .ok_or_else(|| AdminError::not_found("vehicle", v.as_str()))?;
    let mut view = VehicleView::of(vehicle);
    view.ecus = st
        .store
        .ecus(v.as_str())
        .await?
        .into_iter()
        .map(|e| EcuView {
            serial: e.serial,
            hardware_id: e.hardware_id,
            primary: e.primary,
            public_key: hex::encode(e.public_key),
        })
        .collect();
    view.assignments = st.store.assignments(v.as_str()).await?;
    view.installed = st
        .store
        .installed(v.as_str())
        .await?
        .into_iter()
        .map(|i| InstalledView {
            ecu: i.ecu_serial,
            hardware_id: i.hardware_id,
            sha256: hex::encode(i.sha256),
            version: i.version,
        })
        .collect();
    Ok(Json(view))
}

/// Registers an ECU of a vehicle (or updates it, by serial).
#[utoipa::path(post, path = "/admin/v1/vehicles/{vin}/ecus", params(("vin" = String, Path)),
    request_body = EcuBody,
    responses((status = 200, body = EcuView), (status = 404, body = AdminErrorBody),
        (status = 409, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn register_ecu(
    State(st): State<AdminState>,
    Path(v): Path<String>,
    AdminJson(b): AdminJson<EcuBody>,
) -> Result<Json<EcuView>, AdminError> {
    let v = vin(&v)?;
    EcuSerial::new(b.serial.clone()).map_err(|e| AdminError::bad(format!("serial: {e}")))?;
    HardwareId::new(b.hardware_id.clone())
        .map_err(|e| AdminError::bad(format!("hardware_id: {e}")))?;
    if b.public_key.len() > 2 * MAX_PUBLIC_KEY {
        return Err(AdminError::bad("public_key: too long"));
    }
    let key = hex::decode(&b.public_key).map_err(|_| AdminError::bad("public_key: not hex"))?;
    if key.is_empty() {
        return Err(AdminError::bad("public_key: empty"));
    }
    let ecu = Ecu {
        serial: b.serial,
        vin: v.as_str().to_owned(),
        hardware_id: b.hardware_id,
        primary: b.primary,
        public_key: key,
    };
    st.store.upsert_ecu(&ecu).await?;
    Ok(Json(EcuView {
        serial: ecu.serial,
        hardware_id: ecu.hardware_id,
        primary: ecu.primary,
        public_key: hex::encode(ecu.public_key),
    }))
}

fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Signs a CSR into the certificate of the vehicle's Client, or of one of
/// its Agents (`device`). The vehicle must be registered.
#[utoipa::path(post, path = "/admin/v1/vehicles/{vin}/certificates", params(("vin" = String, Path)),
    request_body = CsrBody,
    responses((status = 201, body = IssuedView), (status = 404, body = AdminErrorBody),
        (status = 422, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn issue_certificate(
    State(st): State<AdminState>,
    Path(v): Path<String>,
    AdminJson(b): AdminJson<CsrBody>,
) -> Result<(StatusCode, Json<IssuedView>), AdminError> {
    use rustls_pki_types::pem::PemObject;
    let v = vin(&v)?;
    if st.store.vehicle(v.as_str()).await?.is_none() {
        return Err(AdminError::not_found("vehicle", v.as_str()));
    }
    let csr = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(b.csr_pem.as_bytes())
        .map_err(|_| AdminError::bad("csr_pem: not a PEM CERTIFICATE REQUEST"))?;
    let now_ms = st.now_ms();
    // A minute of margin for vehicles whose clocks lag.
    let validity = Validity::days_from(now_ms / 1000 - 60, st.settings.cert_validity_days);
    let prov = st.provisioner.lock().await;
    let issued = match &b.device {
        None => prov.issue_vehicle(csr.as_ref(), &v, validity)?,
        Some(d) => {
            let device =
                DevicePath::new(d.clone()).map_err(|e| AdminError::bad(format!("device: {e}")))?;
            prov.issue_agent(csr.as_ref(), &v, &device, validity)?
        }
    };
    drop(prov);
    let not_after_ms = validity.not_after_unix.saturating_mul(1000);
    let subject = issued.role.to_string();
    st.store
        .insert_certificate(&Certificate {
            serial: issued.serial_hex.clone(),
            subject: subject.clone(),
            der: issued.cert_der.clone(),
            issued_ms: now_ms,
            not_after_ms,
            revoked_ms: None,
            revocation_reason: None,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedView {
            serial: issued.serial_hex,
            subject,
            cert_pem: pem_of(&issued.cert_der),
            chain_pem: issued.chain.iter().map(|c| pem_of(c)).collect(),
            not_after_ms,
        }),
    ))
}

fn serial_hex(s: &str) -> Result<String, AdminError> {
    let s = s.to_ascii_lowercase();
    if s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError::bad("serial: 1 to 40 hex digits"));
    }
    Ok(s)
}

/// A certificate by serial.
#[utoipa::path(get, path = "/admin/v1/certificates/{serial}", params(("serial" = String, Path)),
    responses((status = 200, body = CertificateView), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn get_certificate(
    State(st): State<AdminState>,
    Path(serial): Path<String>,
) -> Result<Json<CertificateView>, AdminError> {
    let serial = serial_hex(&serial)?;
    let c = st
        .store
        .certificate(&serial)
        .await?
        .ok_or_else(|| AdminError::not_found("certificate", &serial))?;
    Ok(Json(CertificateView {
        serial: c.serial,
        subject: c.subject,
        issued_ms: c.issued_ms,
        not_after_ms: c.not_after_ms,
        revoked_ms: c.revoked_ms,
        revocation_reason: c.revocation_reason,
    }))
}

/// Revokes a certificate: persisted, then a new CRL is signed and the
/// device listener reloads it (connections accepted afterwards refuse the
/// certificate). Revoking twice keeps the first time.
#[utoipa::path(post, path = "/admin/v1/certificates/{serial}/revoke",
    params(("serial" = String, Path)), request_body = RevokeBody,
    responses((status = 200, body = CertificateView), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn revoke_certificate(
    State(st): State<AdminState>,
    Path(serial): Path<String>,
    AdminJson(b): AdminJson<RevokeBody>,
) -> Result<Json<CertificateView>, AdminError> {
    let serial = serial_hex(&serial)?;
    if let Some(r) = &b.reason {
        text("reason", r)?;
    }
    let now_ms = st.now_ms();
    st.store
        .revoke_certificate(&serial, b.reason.as_deref(), now_ms)
        .await?;
    st.refresh_crl().await?;
    get_certificate(State(st), Path(serial)).await
}

/// Streams an image upload into the blob store (hashed while received,
/// capped at the blob store's limit) and records it. Kept only if the
/// SHA-256 (and length, if given) match; a truncated, oversized or
/// mismatching upload leaves nothing stored.
#[utoipa::path(post, path = "/admin/v1/images", params(ImageQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ImageView, description = "Stored"),
        (status = 200, body = ImageView, description = "Already stored, identical"),
        (status = 400, body = AdminErrorBody), (status = 409, body = AdminErrorBody),
        (status = 413, body = AdminErrorBody), (status = 422, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn upload_image(
    State(st): State<AdminState>,
    q: Result<Query<ImageQuery>, QueryRejection>,
    req: Request,
) -> Result<(StatusCode, Json<ImageView>), AdminError> {
    let q = query(q)?;
    text("name", &q.name)?;
    if q.name.is_empty() {
        return Err(AdminError::bad("name: empty"));
    }
    SoftwareVersion::new(q.version.clone())
        .map_err(|e| AdminError::bad(format!("version: {e}")))?;
    HardwareId::new(q.hardware_id.clone())
        .map_err(|e| AdminError::bad(format!("hardware_id: {e}")))?;
    let sha256 = digest_hex("sha256", &q.sha256)?;
    if let Some(len) = q.length {
        if len > st.blobs.max_len() {
            return Err(AdminError::new(
                AdminErrorCode::BodyTooLarge,
                format!("image over the {}-byte limit", st.blobs.max_len()),
            ));
        }
    }
    // Refuse a name/version/hardware id taken by other bytes before reading.
    if let Some(other) = st
        .store
        .image_by_name(&q.name, &q.version, &q.hardware_id)
        .await?
    {
        if other.sha256 != sha256 {
            return Err(AdminError::new(
                AdminErrorCode::Conflict,
                format!(
                    "image {} {} for {} exists with another digest",
                    q.name, q.version, q.hardware_id
                ),
            ));
        }
    }
    let existed = st
        .blobs
        .contains(&sha256)
        .await
        .map_err(AdminError::internal)?;
    let mut w = st
        .blobs
        .writer(Expect {
            sha256: Some(sha256),
            length: q.length,
        })
        .await
        .map_err(AdminError::internal)?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AdminError::bad(format!("upload cut short: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        st.metrics.add_upload_bytes(chunk.len() as u64);
        w.write(&chunk).await.map_err(blob_error)?;
    }
    let info = w.finish().await.map_err(blob_error)?;
    let image = Image {
        name: q.name,
        version: q.version,
        sha256: info.sha256,
        length: info.length,
        hardware_id: q.hardware_id,
    };
    match st.store.insert_image(&image, st.now_ms()).await {
        Ok(Inserted::New) => Ok((StatusCode::CREATED, Json(ImageView::of(image)))),
        Ok(Inserted::Existing) => Ok((StatusCode::OK, Json(ImageView::of(image)))),
        Err(e) => {
            // The bytes were only for this record: keep nothing, unless an
            // image with this digest was recorded meanwhile (by another
            // upload of the same bytes).
            if !existed && matches!(st.store.image(&info.sha256).await, Ok(None)) {
                let _ = tokio::fs::remove_file(st.blobs.path(&info.sha256)).await;
            }
            Err(e.into())
        }
    }
}

fn blob_error(e: BlobError) -> AdminError {
    match e {
        BlobError::TooLarge { .. } => AdminError::new(AdminErrorCode::BodyTooLarge, e.to_string()),
        BlobError::DigestMismatch { .. } | BlobError::LengthMismatch { .. } => {
            AdminError::new(AdminErrorCode::Rejected, e.to_string())
        }
        other => AdminError::internal(other),
    }
}

/// An image by SHA-256.
#[utoipa::path(get, path = "/admin/v1/images/{sha256}", params(("sha256" = String, Path)),
    responses((status = 200, body = ImageView), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn get_image(
    State(st): State<AdminState>,
    Path(d): Path<String>,
) -> Result<Json<ImageView>, AdminError> {
    let d = digest_hex("sha256", &d)?;
    let i = st
        .store
        .image(&d)
        .await?
        .ok_or_else(|| AdminError::not_found("image", hex::encode(d)))?;
    Ok(Json(ImageView::of(i)))
}

/// Builds a package from uploaded images (dependencies, stages, policies,
/// preconditions in the shared precondition language) and stores it.
/// Answers the validated package model.
#[utoipa::path(post, path = "/admin/v1/packages",
    request_body(content = Object, description = "esync_server::packages::PackageRequest"),
    responses((status = 201, body = Object, description = "The package model"),
        (status = 400, body = AdminErrorBody), (status = 409, body = AdminErrorBody),
        (status = 422, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn create_package_route(
    State(st): State<AdminState>,
    AdminJson(req): AdminJson<PackageRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), AdminError> {
    let pkg = create_package(st.store.as_ref(), &st.blobs, &req, st.now_ms()).await?;
    let v = serde_json::to_value(&pkg).map_err(AdminError::internal)?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// A stored package model.
#[utoipa::path(get, path = "/admin/v1/packages/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Object, description = "The package model"),
        (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn get_package(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    if id.len() > 64 {
        return Err(AdminError::bad("id: at most 64 bytes"));
    }
    let pkg = load_package(st.store.as_ref(), &id)
        .await?
        .ok_or_else(|| AdminError::not_found("package", &id))?;
    Ok(Json(
        serde_json::to_value(&pkg).map_err(AdminError::internal)?,
    ))
}

/// Assigns a package to one or more vehicles. Every vehicle and the package
/// are checked before any assignment is written.
#[utoipa::path(post, path = "/admin/v1/assignments", request_body = AssignBody,
    responses((status = 200, body = AssignView), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn assign(
    State(st): State<AdminState>,
    AdminJson(b): AdminJson<AssignBody>,
) -> Result<Json<AssignView>, AdminError> {
    if b.vins.is_empty() || b.vins.len() > MAX_ASSIGN_VINS {
        return Err(AdminError::bad(format!(
            "vins: 1 to {MAX_ASSIGN_VINS} entries"
        )));
    }
    if st.store.package(&b.package).await?.is_none() {
        return Err(AdminError::not_found("package", &b.package));
    }
    let mut seen = BTreeSet::new();
    let mut vins = Vec::with_capacity(b.vins.len());
    for v in &b.vins {
        let v = vin(v)?;
        if seen.insert(v.as_str().to_owned()) {
            if st.store.vehicle(v.as_str()).await?.is_none() {
                return Err(AdminError::not_found("vehicle", v.as_str()));
            }
            vins.push(v);
        }
    }
    let now_ms = st.now_ms();
    let mut assigned = Vec::with_capacity(vins.len());
    for v in vins {
        let r = st.store.assign(&b.package, v.as_str(), now_ms).await?;
        // Its next check-in must see the assignment, not a cached "up to date".
        st.director.forget(&v);
        assigned.push(Assigned {
            vin: v.as_str().to_owned(),
            new: r == Inserted::New,
        });
    }
    Ok(Json(AssignView {
        package: b.package,
        assigned,
    }))
}

/// Removes an assignment.
#[utoipa::path(delete, path = "/admin/v1/assignments/{package}/{vin}",
    params(("package" = String, Path), ("vin" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn unassign(
    State(st): State<AdminState>,
    Path((package, v)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    let v = vin(&v)?;
    if st.store.unassign(&package, v.as_str()).await? {
        st.director.forget(&v);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::not_found(
            "assignment",
            format!("{package} to {}", v.as_str()),
        ))
    }
}

const FORMATS: [PatchFormat; 3] = [
    PatchFormat::BsdiffZstd,
    PatchFormat::BsdiffXz,
    PatchFormat::Bsdiff40,
];

/// The delta jobs (one per patch format) from one image to another.
#[utoipa::path(get, path = "/admin/v1/deltas", params(DeltaQuery),
    responses((status = 200, body = Vec<DeltaJobView>), (status = 400, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn list_deltas(
    State(st): State<AdminState>,
    q: Result<Query<DeltaQuery>, QueryRejection>,
) -> Result<Json<Vec<DeltaJobView>>, AdminError> {
    let q = query(q)?;
    let from = digest_hex("from", &q.from)?;
    let to = digest_hex("to", &q.to)?;
    let mut out = Vec::new();
    for f in FORMATS {
        if let Some(j) = st.store.delta_job(&from, &to, format_name(f)).await? {
            out.push(DeltaJobView::of(j));
        }
    }
    Ok(Json(out))
}

/// Queues a delta job between two uploaded images (once per pair and
/// format; an existing job is answered unchanged).
#[utoipa::path(post, path = "/admin/v1/deltas", request_body = DeltaBody,
    responses((status = 202, body = DeltaJobView, description = "Queued"),
        (status = 200, body = DeltaJobView, description = "Already known"),
        (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn request_delta_route(
    State(st): State<AdminState>,
    AdminJson(b): AdminJson<DeltaBody>,
) -> Result<(StatusCode, Json<DeltaJobView>), AdminError> {
    let from = digest_hex("from", &b.from)?;
    let to = digest_hex("to", &b.to)?;
    let format = match b.format.as_deref() {
        None => PatchFormat::BsdiffZstd,
        Some(f) => parse_format(f).ok_or_else(|| AdminError::bad(format!("format: {f:?}")))?,
    };
    for (what, d) in [("from", &from), ("to", &to)] {
        if st.store.image(d).await?.is_none() {
            return Err(AdminError::not_found(what, hex::encode(d)));
        }
    }
    let (job, ins) = request_delta(st.store.as_ref(), &from, &to, format, st.now_ms()).await?;
    let status = match ins {
        Inserted::New => StatusCode::ACCEPTED,
        Inserted::Existing => StatusCode::OK,
    };
    Ok((status, Json(DeltaJobView::of(job))))
}

/// Creates an admin token (operator only); the secret is in the answer only.
#[utoipa::path(post, path = "/admin/v1/tokens", request_body = TokenBody,
    responses((status = 201, body = TokenView), (status = 409, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn create_token_route(
    State(st): State<AdminState>,
    AdminJson(b): AdminJson<TokenBody>,
) -> Result<(StatusCode, Json<TokenView>), AdminError> {
    let role =
        AdminRole::parse(&b.role).map_err(|_| AdminError::bad("role: operator or viewer"))?;
    let token = create_token(st.store.as_ref(), &b.name, role, st.now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            name: b.name,
            role: role.as_str().to_owned(),
            token,
        }),
    ))
}

/// Revokes an admin token by name (operator only).
#[utoipa::path(delete, path = "/admin/v1/tokens/{name}", params(("name" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn revoke_token(
    State(st): State<AdminState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AdminError> {
    text("name", &name)?;
    if st.store.revoke_admin_token(&name, st.now_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::not_found("live token", &name))
    }
}

/// What an accepted metadata upload stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadedView {
    /// Role of the file (`root`, `targets`, `snapshot`, `timestamp`, or a
    /// delegated role).
    pub role: String,
    /// Its version.
    pub version: u64,
    /// Snapshot and timestamp versions the Server re-signed with its online
    /// keys, if it holds them.
    pub online_resigned: Option<[u64; 2]>,
}

/// Uploads one offline-signed Image repository metadata file (signed TUF
/// JSON, as the offline tools write it). It is verified against the current
/// root (a new root: against the previous root and itself), versions never
/// go backwards; refused files are 422 and change nothing.
#[utoipa::path(post, path = "/admin/v1/image-repo/metadata",
    request_body(content = Object, content_type = "application/json",
        description = "A signed TUF metadata file"),
    responses((status = 201, body = UploadedView), (status = 413, body = AdminErrorBody),
        (status = 422, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn upload_metadata(
    State(st): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<UploadedView>), AdminError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::new(AdminErrorCode::BodyTooLarge, "metadata over the limit")
        } else {
            AdminError::bad(format!("body: {}", r.body_text()))
        }
    })?;
    let up = st.images.upload(&body, st.now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(UploadedView {
            role: up.role,
            version: up.version,
            online_resigned: up.online_resigned.map(|(a, b)| [a, b]),
        }),
    ))
}

/// Public keys of the Server's new online Image repository keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OnlineKeysView {
    /// The snapshot key (TUF key JSON).
    #[schema(value_type = Object)]
    pub snapshot: serde_json::Value,
    /// The timestamp key (TUF key JSON).
    #[schema(value_type = Object)]
    pub timestamp: serde_json::Value,
}

/// Creates (replacing) the Server's online snapshot and timestamp keys of
/// the Image repository; answers their public keys, to be named in the next
/// offline-signed root (the Server signs with them only once it does).
#[utoipa::path(post, path = "/admin/v1/image-repo/online-keys",
    responses((status = 201, body = OnlineKeysView)),
    security(("bearer" = [])))]
async fn create_online_keys(
    State(st): State<AdminState>,
) -> Result<(StatusCode, Json<OnlineKeysView>), AdminError> {
    let k = st.images.create_online_keys(st.now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        Json(OnlineKeysView {
            snapshot: serde_json::to_value(&k.snapshot).map_err(AdminError::internal)?,
            timestamp: serde_json::to_value(&k.timestamp).map_err(AdminError::internal)?,
        }),
    ))
}

/// The Director's current root (signed `root.json` content).
#[utoipa::path(get, path = "/admin/v1/director/root",
    responses((status = 200, body = Object, description = "The root role"),
        (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn director_root(
    State(st): State<AdminState>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let root = st
        .director
        .current_root()
        .await?
        .ok_or_else(|| AdminError::not_found("Director root", "root.json"))?;
    Ok(Json(
        serde_json::to_value(&root).map_err(AdminError::internal)?,
    ))
}

/// A Director key rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotatedView {
    /// The rotated role.
    pub role: String,
    /// Version of the new root naming the new key.
    pub root_version: u64,
}

/// Replaces the Director's key of a top-level role (`root`, `targets`,
/// `snapshot`, `timestamp`) with a fresh one and signs the next root (by
/// the old root keys, and the new one for `root`).
#[utoipa::path(post, path = "/admin/v1/director/keys/{role}/rotate",
    params(("role" = String, Path)),
    responses((status = 200, body = RotatedView), (status = 400, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn rotate_director_key(
    State(st): State<AdminState>,
    Path(role): Path<String>,
) -> Result<Json<RotatedView>, AdminError> {
    let root_version = st.director.rotate_keys(&role, st.now_ms()).await?;
    Ok(Json(RotatedView { role, root_version }))
}

/// This document (the admin API's OpenAPI).
#[utoipa::path(get, path = "/admin/v1/openapi.json",
    responses((status = 200, body = Object, description = "OpenAPI 3.1 document")))]
async fn admin_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(AdminDoc::openapi())
}

/// The device API's OpenAPI document (`esync_api::openapi()`).
#[utoipa::path(get, path = "/admin/v1/device-openapi.json",
    responses((status = 200, body = Object, description = "OpenAPI 3.1 document")))]
async fn device_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(esync_api::openapi())
}

async fn not_found() -> AdminError {
    AdminError::new(AdminErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> AdminError {
    AdminError::new(
        AdminErrorCode::MethodNotAllowed,
        "this route takes another method",
    )
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

// ---------------------------------------------------------------- campaigns

impl From<CampaignError> for AdminError {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Invalid(m) => Self::bad(m),
            CampaignError::NotFound(m) => {
                Self::new(AdminErrorCode::NotFound, format!("{m} not found"))
            }
            CampaignError::Conflict(m) => Self::new(AdminErrorCode::Conflict, m),
            CampaignError::Db(e) => e.into(),
        }
    }
}

fn campaign_id(s: &str) -> Result<i64, AdminError> {
    s.parse::<i64>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| AdminError::bad(format!("campaign id: {s:?} is not a positive integer")))
}

/// Most campaigns listed.
pub const MAX_CAMPAIGNS_LISTED: u32 = 100;

/// Creates a campaign (state `draft`; its members are taken at start).
#[utoipa::path(post, path = "/admin/v1/campaigns", request_body = CampaignSpec,
    responses((status = 201, body = Created), (status = 400, body = AdminErrorBody),
        (status = 403, body = AdminErrorBody), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn create_campaign(
    State(st): State<AdminState>,
    AdminJson(spec): AdminJson<CampaignSpec>,
) -> Result<(StatusCode, Json<Created>), AdminError> {
    let c = campaigns::create(st.store.as_ref(), &spec, st.now_ms()).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// Counts the vehicles a campaign would target now and its wave sizes; stores nothing.
#[utoipa::path(post, path = "/admin/v1/campaigns/dry-run", request_body = CampaignSpec,
    responses((status = 200, body = DryRun), (status = 400, body = AdminErrorBody),
        (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn dry_run_campaign(
    State(st): State<AdminState>,
    AdminJson(spec): AdminJson<CampaignSpec>,
) -> Result<Json<DryRun>, AdminError> {
    Ok(Json(campaigns::dry_run(st.store.as_ref(), &spec).await?))
}

/// Lists campaigns, newest first (at most 100).
#[utoipa::path(get, path = "/admin/v1/campaigns",
    responses((status = 200, body = Vec<CampaignView>)),
    security(("bearer" = [])))]
async fn list_campaigns(
    State(st): State<AdminState>,
) -> Result<Json<Vec<CampaignView>>, AdminError> {
    let mut out = Vec::new();
    for rec in st.store.campaigns(MAX_CAMPAIGNS_LISTED).await? {
        out.push(campaigns::view_of(st.store.as_ref(), rec).await?);
    }
    Ok(Json(out))
}

/// A campaign: state, reason, current wave, per-wave counts, history.
#[utoipa::path(get, path = "/admin/v1/campaigns/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn get_campaign(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, AdminError> {
    Ok(Json(
        campaigns::view(st.store.as_ref(), campaign_id(&id)?).await?,
    ))
}

/// A page of a campaign's vehicles (by VIN) with their state and history.
#[utoipa::path(get, path = "/admin/v1/campaigns/{id}/vehicles",
    params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = MembersPage), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn campaign_vehicles(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<MembersPage>, AdminError> {
    let id = campaign_id(&id)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    Ok(Json(
        campaigns::members(st.store.as_ref(), id, q.after.as_deref(), limit).await?,
    ))
}

async fn campaign_action(
    st: &AdminState,
    id: &str,
    action: Action,
) -> Result<Json<CampaignView>, AdminError> {
    let id = campaign_id(id)?;
    campaigns::act(st.store.as_ref(), id, action, st.now_ms()).await?;
    st.director.offer_gate().changed();
    Ok(Json(campaigns::view(st.store.as_ref(), id).await?))
}

/// Starts a draft campaign: the matching vehicles now are its members, wave 1 opens.
#[utoipa::path(post, path = "/admin/v1/campaigns/{id}/start", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = AdminErrorBody),
        (status = 409, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn start_campaign(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, AdminError> {
    campaign_action(&st, &id, Action::Start).await
}

/// Pauses a campaign: no new offers, on any node, from now.
#[utoipa::path(post, path = "/admin/v1/campaigns/{id}/pause", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = AdminErrorBody),
        (status = 409, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn pause_campaign(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, AdminError> {
    campaign_action(&st, &id, Action::Pause).await
}

/// Resumes a paused campaign.
#[utoipa::path(post, path = "/admin/v1/campaigns/{id}/resume", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = AdminErrorBody),
        (status = 409, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn resume_campaign(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, AdminError> {
    campaign_action(&st, &id, Action::Resume).await
}

/// Aborts a campaign: no further offers; pending vehicles are marked aborted
/// (offered ones finish or roll back on their own).
#[utoipa::path(post, path = "/admin/v1/campaigns/{id}/abort", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = AdminErrorBody),
        (status = 409, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn abort_campaign(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, AdminError> {
    campaign_action(&st, &id, Action::Abort).await
}

/// Opens the next wave of a campaign waiting for approval.
#[utoipa::path(post, path = "/admin/v1/campaigns/{id}/approve", params(("id" = i64, Path)),
    responses((status = 200, body = CampaignView), (status = 404, body = AdminErrorBody),
        (status = 409, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn approve_campaign(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, AdminError> {
    campaign_action(&st, &id, Action::Approve).await
}

/// Filter of the rollback block list.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BlocksQuery {
    /// Only this vehicle's blocks.
    pub vin: Option<String>,
    /// Only this package's blocks.
    pub package: Option<String>,
}

/// A package blocked for a vehicle that did not install it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockView {
    /// VIN.
    pub vin: String,
    /// Package.
    pub package: String,
    /// The reported outcome (`rolled_back`, `failed`, `refused`).
    pub outcome: String,
    /// When (Unix ms).
    pub created_ms: i64,
}

/// A cleared block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClearedView {
    /// Always true (a missing block is 404).
    pub cleared: bool,
}

/// Lists rollback blocks (at most 1000), by VIN and package.
#[utoipa::path(get, path = "/admin/v1/rollback-blocks", params(BlocksQuery),
    responses((status = 200, body = Vec<BlockView>), (status = 400, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn list_blocks(
    State(st): State<AdminState>,
    q: Result<Query<BlocksQuery>, QueryRejection>,
) -> Result<Json<Vec<BlockView>>, AdminError> {
    let q = query(q)?;
    let bs = st
        .store
        .rollback_blocks(q.vin.as_deref(), q.package.as_deref(), MAX_PAGE)
        .await?;
    Ok(Json(
        bs.into_iter()
            .map(|b| BlockView {
                vin: b.vin,
                package: b.package_id,
                outcome: b.outcome,
                created_ms: b.created_ms,
            })
            .collect(),
    ))
}

/// Clears a rollback block (the operator's "offer again"): the package is
/// directed to the vehicle again if still assigned.
#[utoipa::path(delete, path = "/admin/v1/rollback-blocks/{vin}/{package}",
    params(("vin" = String, Path), ("package" = String, Path)),
    responses((status = 200, body = ClearedView), (status = 404, body = AdminErrorBody)),
    security(("bearer" = [])))]
async fn clear_block(
    State(st): State<AdminState>,
    Path((v, package)): Path<(String, String)>,
) -> Result<Json<ClearedView>, AdminError> {
    let v = vin(&v)?;
    if st
        .store
        .clear_rollback_block(v.as_str(), &package, st.now_ms())
        .await?
    {
        st.director.forget(&v);
        Ok(Json(ClearedView { cleared: true }))
    } else {
        Err(AdminError::not_found(
            "rollback block",
            format!("{package} for {}", v.as_str()),
        ))
    }
}

/// The admin API's OpenAPI document, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "esync-server admin API", description = "Operators' API: vehicles, provisioning, images, packages, assignments, delta jobs, tokens. Bearer token; viewers may only GET."),
    paths(list_vehicles, register_vehicle, get_vehicle, register_ecu, issue_certificate,
        get_certificate, revoke_certificate, upload_image, get_image, create_package_route,
        get_package, assign, unassign, list_deltas, request_delta_route, create_token_route,
        revoke_token, upload_metadata, create_online_keys, director_root, rotate_director_key,
        create_campaign, dry_run_campaign, list_campaigns, get_campaign, campaign_vehicles,
        start_campaign, pause_campaign, resume_campaign, abort_campaign, approve_campaign,
        list_blocks, clear_block, admin_openapi, device_openapi),
    components(schemas(AdminErrorBody, AdminErrorCode, VehicleBody, VehicleView, EcuBody, EcuView,
        CsrBody, IssuedView, CertificateView, RevokeBody, ImageView, AssignBody, AssignView,
        Assigned, DeltaBody, DeltaJobView, TokenBody, TokenView, UploadedView, OnlineKeysView,
        RotatedView, InstalledView, CampaignSpec, Target, InstalledVersion, WaveSpec, Approval,
        MaintenanceWindow, Created, DryRun, CampaignView, WaveView, HistoryView, MemberView,
        MembersPage, BlockView, ClearedView)),
    modifiers(&BearerAuth)
)]
pub struct AdminDoc;

/// The admin API's routes (paths under [`ADMIN_PREFIX`]), authenticated,
/// with JSON bodies capped at `settings.max_json_body` and request counting
/// in `state.metrics` (listener `admin`).
pub fn admin_router(state: AdminState) -> Router {
    let p = |s: &str| format!("{ADMIN_PREFIX}{s}");
    let protected = Router::new()
        .route(&p("/vehicles"), get(list_vehicles).post(register_vehicle))
        .route(&p("/vehicles/{vin}"), get(get_vehicle))
        .route(&p("/vehicles/{vin}/ecus"), post(register_ecu))
        .route(&p("/vehicles/{vin}/certificates"), post(issue_certificate))
        .route(&p("/certificates/{serial}"), get(get_certificate))
        .route(
            &p("/certificates/{serial}/revoke"),
            post(revoke_certificate),
        )
        .route(&p("/images"), post(upload_image))
        .route(&p("/images/{sha256}"), get(get_image))
        .route(&p("/packages"), post(create_package_route))
        .route(&p("/packages/{id}"), get(get_package))
        .route(&p("/assignments"), post(assign))
        .route(&p("/assignments/{package}/{vin}"), delete(unassign))
        .route(&p("/deltas"), get(list_deltas).post(request_delta_route))
        .route(&p("/campaigns"), get(list_campaigns).post(create_campaign))
        .route(&p("/campaigns/dry-run"), post(dry_run_campaign))
        .route(&p("/campaigns/{id}"), get(get_campaign))
        .route(&p("/campaigns/{id}/vehicles"), get(campaign_vehicles))
        .route(&p("/campaigns/{id}/start"), post(start_campaign))
        .route(&p("/campaigns/{id}/pause"), post(pause_campaign))
        .route(&p("/campaigns/{id}/resume"), post(resume_campaign))
        .route(&p("/campaigns/{id}/abort"), post(abort_campaign))
        .route(&p("/campaigns/{id}/approve"), post(approve_campaign))
        .route(&p("/rollback-blocks"), get(list_blocks))
        .route(&p("/rollback-blocks/{vin}/{package}"), delete(clear_block))
        .route(&p("/tokens"), post(create_token_route))
        .route(&p("/tokens/{name}"), delete(revoke_token))
        .route(
            &p("/image-repo/metadata"),
            post(upload_metadata).layer(DefaultBodyLimit::max(state.settings.max_metadata_body)),
        )
        .route(&p("/image-repo/online-keys"), post(create_online_keys))
        .route(&p("/director/root"), get(director_root))
        .route(
            &p("/director/keys/{role}/rotate"),
            post(rotate_director_key),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    let public = Router::new()
        .route(&p("/openapi.json"), get(admin_openapi))
        .route(&p("/device-openapi.json"), get(device_openapi));
    let metrics = state.metrics.clone();
    let limit = state.settings.max_json_body;
    let router = protected
        .merge(public)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit));
    let router = metrics.instrument(router, "admin");
    let m = metrics.clone();
    router
        .fallback(move |req: Request| {
            let m = m.clone();
            async move {
                m.record_request(
                    "admin",
                    req.method().as_str(),
                    crate::metrics::UNMATCHED,
                    StatusCode::NOT_FOUND.as_u16(),
                );
                not_found().await
            }
        })
        .with_state(state)
}

/// Serves `router` over TLS (`tls`, e.g. [`crate::tls::admin_tls_config`])
/// on `listener`, HTTP/1.1 and HTTP/2, until the task is dropped. Accept
/// errors are logged and retried; a failed handshake drops that connection.
/// (The device listener is [`crate::device::serve_device`]: it also reads
/// the peer certificate and follows CRL reloads.)
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
) -> io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper_util::service::TowerToHyperService::new(router);
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await
            {
                tracing::debug!(%peer, error = %e, "connection");
            }
        });
    }
}
