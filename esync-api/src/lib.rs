//! The Client↔Server device API of esync-rs, defined once.
//!
//! Both the vehicle Client (`esync-client`) and the Server
//! (`esync-server`) import this crate: the routes ([`Route`]), their
//! request and response bodies ([`body`]), the error body and the status
//! code of every error ([`error`]), the body size caps of every route, the
//! HTTP `Range` helper used for resumable blob downloads ([`range`]), and the
//! OpenAPI document generated from all of it ([`openapi()`]).
//!
//! Properties (see `design/device-api.md`):
//! - **Identity from the certificate.** Every route is served over mutual
//!   TLS; the Server reads the VIN from the vehicle certificate. No request
//!   body and no path names a vehicle.
//! - **Cheap check-ins.** [`body::CheckInRequest`] carries only the SHA-256
//!   of the vehicle's last signed manifest; the answer is small
//!   ([`body::CheckInResponse`]).
//! - **Uptane as files.** Director metadata (per vehicle) and Image
//!   repository metadata (the same for every vehicle) are fetched by file
//!   name ([`MetadataFileName`]), one GET per `esync_uptane::repo::Need`.
//! - **Content-addressed blobs** by SHA-256 with HTTP Range
//!   ([`range::RequestedRange`], [`range::ServedRange`]).
//! - **Idempotent reports** under an id the vehicle chooses ([`ReportId`]).
//!
//! No I/O happens here: this crate has no tokio, no HTTP client and no
//! server; it is types, constants and pure functions.
#![forbid(unsafe_code)]

pub mod body;
pub mod error;
mod names;
mod openapi;
pub mod range;
mod route;

pub use error::{error_chain, ApiError, ErrorBody, ErrorCode};
pub use names::{BlobId, MetadataFileName, NameError, ReportId};
pub use openapi::openapi;
pub use route::{match_route, Route, RouteMatch, API_PREFIX};

/// Media type of every JSON body (requests, responses, errors, metadata).
pub const JSON: &str = "application/json";
/// Media type of blob bodies.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// `Cache-Control` value for content-addressed blobs: they never change.
pub const BLOB_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` value for Director metadata: per vehicle, never shared.
pub const DIRECTOR_CACHE_CONTROL: &str = "private, no-cache";
/// `Cache-Control` value for Image repository metadata: public, revalidated.
pub const IMAGE_CACHE_CONTROL: &str = "public, no-cache";
