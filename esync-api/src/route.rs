//! The `/v1/` routes: method, path template, body caps and statuses.

use http::{Method, StatusCode};

use crate::error::{ApiError, ErrorCode};
use crate::names::{BlobId, MetadataFileName, ReportId};

/// Version prefix of every route.
pub const API_PREFIX: &str = "/v1";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// One route of the device API.
///
/// The path templates use `{name}` parameters (the syntax of OpenAPI and of
/// axum 0.8), so a Server can register [`Route::template`] directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Route {
    /// `POST /v1/checkin`: "anything for me?" with the SHA-256 of the
    /// vehicle's last signed manifest ([`crate::body::CheckInRequest`] →
    /// [`crate::body::CheckInResponse`]).
    CheckIn,
    /// `POST /v1/manifest`: the full signed vehicle manifest (the
    /// `esync_uptane::manifest::VehicleManifest::sign` bytes), sent only
    /// when it changed or when a check-in answered
    /// [`crate::body::CheckInResponse::ManifestWanted`] →
    /// [`crate::body::ManifestAccepted`].
    Manifest,
    /// `GET /v1/director/{file}`: one Director metadata file of the vehicle
    /// named by the certificate ([`MetadataFileName`]); 404 when it does
    /// not exist (ends a root rotation chain).
    DirectorFile,
    /// `GET /v1/image/{file}`: one Image repository metadata file, the same
    /// for every vehicle (static, cacheable).
    ImageFile,
    /// `GET /v1/blobs/{sha256}`: an image or delta by the SHA-256 of its
    /// bytes, immutable, with HTTP `Range` (200, 206 or 416).
    Blob,
    /// `PUT /v1/reports/{report_id}`: a progress or result report under an
    /// id the vehicle chose ([`crate::body::Report`] →
    /// [`crate::body::ReportStored`]); a retry with the same id and body is
    /// answered 200 and not counted again, the same id with another body 409.
    Report,
}

/// Statuses every route may answer, besides its own.
const COMMON_ERRORS: &[ErrorCode] = &[
    ErrorCode::Forbidden,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Internal,
    ErrorCode::Unavailable,
];

impl Route {
    /// Every route, in document order.
    pub const ALL: &'static [Route] = &[
        Route::CheckIn,
        Route::Manifest,
        Route::DirectorFile,
        Route::ImageFile,
        Route::Blob,
        Route::Report,
    ];

    /// HTTP method.
    pub fn method(self) -> Method {
        match self {
            Route::CheckIn | Route::Manifest => Method::POST,
            Route::DirectorFile | Route::ImageFile | Route::Blob => Method::GET,
            Route::Report => Method::PUT,
        }
    }

    /// Path template, with `{param}` placeholders.
    pub const fn template(self) -> &'static str {
        match self {
            Route::CheckIn => "/v1/checkin",
            Route::Manifest => "/v1/manifest",
            Route::DirectorFile => "/v1/director/{file}",
            Route::ImageFile => "/v1/image/{file}",
            Route::Blob => "/v1/blobs/{sha256}",
            Route::Report => "/v1/reports/{report_id}",
        }
    }

    /// Name of the path parameter, if the template has one.
    pub const fn param(self) -> Option<&'static str> {
        match self {
            Route::CheckIn | Route::Manifest => None,
            Route::DirectorFile | Route::ImageFile => Some("file"),
            Route::Blob => Some("sha256"),
            Route::Report => Some("report_id"),
        }
    }

    /// OpenAPI `operationId`.
    pub const fn operation_id(self) -> &'static str {
        match self {
            Route::CheckIn => "check_in",
            Route::Manifest => "upload_manifest",
            Route::DirectorFile => "get_director_file",
            Route::ImageFile => "get_image_file",
            Route::Blob => "get_blob",
            Route::Report => "put_report",
        }
    }

    /// One-line summary (OpenAPI).
    pub const fn summary(self) -> &'static str {
        match self {
            Route::CheckIn => "Anything for me? (manifest hash only)",
            Route::Manifest => "Upload the signed vehicle manifest",
            Route::DirectorFile => "One Director metadata file of this vehicle",
            Route::ImageFile => "One Image repository metadata file",
            Route::Blob => "An image or delta by SHA-256, with HTTP Range",
            Route::Report => "Store a progress or result report (idempotent)",
        }
    }

    /// Most bytes of request body the Server reads for this route; a longer
    /// body is refused with 413 before it is stored anywhere. 0: the route
    /// takes no body.
    pub const fn max_request_body(self) -> u64 {
        match self {
            Route::CheckIn => KIB,
            Route::Manifest => MIB,
            Route::Report => 64 * KIB,
            Route::DirectorFile | Route::ImageFile | Route::Blob => 0,
        }
    }

    /// Most bytes of a successful response body the Client reads for this
    /// route, or `None` for blobs, whose length is the one the verified
    /// metadata gives (the Client passes it). Metadata fetches are further
    /// capped by `esync_uptane::repo::Need::max_length`.
    pub const fn max_response_body(self) -> Option<u64> {
        match self {
            Route::CheckIn => Some(KIB),
            Route::Manifest => Some(KIB),
            Route::Report => Some(KIB),
            Route::DirectorFile => Some(4 * MIB),
            Route::ImageFile => Some(16 * MIB),
            Route::Blob => None,
        }
    }

    /// Success statuses of this route.
    pub fn success_statuses(self) -> &'static [StatusCode] {
        match self {
            Route::CheckIn | Route::Manifest | Route::DirectorFile | Route::ImageFile => {
                &[StatusCode::OK]
            }
            Route::Blob => &[StatusCode::OK, StatusCode::PARTIAL_CONTENT],
            Route::Report => &[StatusCode::CREATED, StatusCode::OK],
        }
    }

    /// Errors this route may answer, besides the ones every route may
    /// answer (403, 405, 500, 503).
    pub fn errors(self) -> &'static [ErrorCode] {
        match self {
            Route::CheckIn => &[
                ErrorCode::MalformedBody,
                ErrorCode::BodyTooLarge,
                ErrorCode::UnsupportedMediaType,
            ],
            Route::Manifest => &[
                ErrorCode::MalformedBody,
                ErrorCode::BodyTooLarge,
                ErrorCode::UnsupportedMediaType,
                ErrorCode::ManifestRejected,
            ],
            Route::DirectorFile | Route::ImageFile => &[ErrorCode::BadPath, ErrorCode::NotFound],
            Route::Blob => &[
                ErrorCode::BadPath,
                ErrorCode::NotFound,
                ErrorCode::RangeNotSatisfiable,
            ],
            Route::Report => &[
                ErrorCode::BadPath,
                ErrorCode::MalformedBody,
                ErrorCode::BodyTooLarge,
                ErrorCode::UnsupportedMediaType,
                ErrorCode::ReportConflict,
            ],
        }
    }

    /// Every error this route may answer: [`Route::errors`] and the common
    /// ones.
    pub fn all_errors(self) -> impl Iterator<Item = ErrorCode> {
        self.errors().iter().chain(COMMON_ERRORS).copied()
    }

    /// Path of a route without parameter (`CheckIn`, `Manifest`).
    pub fn fixed_path(self) -> Option<&'static str> {
        match self.param() {
            None => Some(self.template()),
            Some(_) => None,
        }
    }

    /// `/v1/director/{file}` for `file`.
    pub fn director_file(file: &MetadataFileName) -> String {
        format!("/v1/director/{file}")
    }

    /// `/v1/image/{file}` for `file`.
    pub fn image_file(file: &MetadataFileName) -> String {
        format!("/v1/image/{file}")
    }

    /// `/v1/blobs/{sha256}` for `blob`.
    pub fn blob(blob: &BlobId) -> String {
        format!("/v1/blobs/{blob}")
    }

    /// `/v1/reports/{report_id}` for `id`.
    pub fn report(id: &ReportId) -> String {
        format!("/v1/reports/{id}")
    }
}

/// A request path resolved to its route and validated parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteMatch {
    /// `POST /v1/checkin`.
    CheckIn,
    /// `POST /v1/manifest`.
    Manifest,
    /// `GET /v1/director/{file}`.
    DirectorFile(MetadataFileName),
    /// `GET /v1/image/{file}`.
    ImageFile(MetadataFileName),
    /// `GET /v1/blobs/{sha256}`.
    Blob(BlobId),
    /// `PUT /v1/reports/{report_id}`.
    Report(ReportId),
}

impl RouteMatch {
    /// The route.
    pub fn route(&self) -> Route {
        match self {
            RouteMatch::CheckIn => Route::CheckIn,
            RouteMatch::Manifest => Route::Manifest,
            RouteMatch::DirectorFile(_) => Route::DirectorFile,
            RouteMatch::ImageFile(_) => Route::ImageFile,
            RouteMatch::Blob(_) => Route::Blob,
            RouteMatch::Report(_) => Route::Report,
        }
    }

    /// The request path of this match (inverse of [`match_route`]).
    pub fn path(&self) -> String {
        match self {
            RouteMatch::CheckIn => Route::CheckIn.template().to_owned(),
            RouteMatch::Manifest => Route::Manifest.template().to_owned(),
            RouteMatch::DirectorFile(f) => Route::director_file(f),
            RouteMatch::ImageFile(f) => Route::image_file(f),
            RouteMatch::Blob(b) => Route::blob(b),
            RouteMatch::Report(r) => Route::report(r),
        }
    }
}

/// Resolves `method` and `path` (no query string) to a route and its
/// validated parameter: for a Server without a router, and for tests.
///
/// Errors: [`ErrorCode::NotFound`] for a path of no route,
/// [`ErrorCode::MethodNotAllowed`] for a known path with another method,
/// [`ErrorCode::BadPath`] for a parameter that fails validation.
pub fn match_route(method: &Method, path: &str) -> Result<RouteMatch, ApiError> {
    let rest = path
        .strip_prefix(API_PREFIX)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such route"))?;
    let (head, param) = match rest.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let (route, param) = match (head, param) {
        ("checkin", None) => (Route::CheckIn, None),
        ("manifest", None) => (Route::Manifest, None),
        ("director", Some(p)) => (Route::DirectorFile, Some(p)),
        ("image", Some(p)) => (Route::ImageFile, Some(p)),
        ("blobs", Some(p)) => (Route::Blob, Some(p)),
        ("reports", Some(p)) => (Route::Report, Some(p)),
        _ => return Err(ApiError::new(ErrorCode::NotFound, "no such route")),
    };
    if *method != route.method() {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} takes {}", route.template(), route.method()),
        ));
    }
    let bad = |e: crate::names::NameError| ApiError::new(ErrorCode::BadPath, e.to_string());
    let p = param.unwrap_or_default();
    Ok(match route {
        Route::CheckIn => RouteMatch::CheckIn,
        Route::Manifest => RouteMatch::Manifest,
        Route::DirectorFile => RouteMatch::DirectorFile(MetadataFileName::new(p).map_err(bad)?),
        Route::ImageFile => RouteMatch::ImageFile(MetadataFileName::new(p).map_err(bad)?),
        Route::Blob => RouteMatch::Blob(BlobId::parse_hex(p).map_err(bad)?),
        Route::Report => RouteMatch::Report(ReportId::new(p).map_err(bad)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_starts_with_the_version_prefix_and_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Route::ALL {
            assert!(r.template().starts_with("/v1/"), "{r:?}");
            assert!(seen.insert((r.method().to_string(), r.template())));
            match r.param() {
                Some(p) => assert!(r.template().ends_with(&format!("{{{p}}}"))),
                None => assert!(!r.template().contains('{')),
            }
        }
    }

    #[test]
    fn paths_built_for_a_route_match_back_to_it() {
        let file = MetadataFileName::new("2.root.json").expect("valid");
        let blob = BlobId::parse_hex(&"ab".repeat(32)).expect("valid");
        let id = ReportId::new("r-0001-abc").expect("valid");
        let matches = [
            RouteMatch::CheckIn,
            RouteMatch::Manifest,
            RouteMatch::DirectorFile(file.clone()),
            RouteMatch::ImageFile(file),
            RouteMatch::Blob(blob),
            RouteMatch::Report(id),
        ];
        assert_eq!(matches.len(), Route::ALL.len());
        for m in matches {
            let route = m.route();
            assert_eq!(match_route(&route.method(), &m.path()), Ok(m.clone()));
        }
    }

    #[test]
    fn unknown_paths_methods_and_bad_params_are_told_apart() {
        let code = |m: Method, p: &str| match_route(&m, p).map_err(|e| e.code);
        assert_eq!(code(Method::GET, "/v2/checkin"), Err(ErrorCode::NotFound));
        assert_eq!(code(Method::GET, "/v1/nothing"), Err(ErrorCode::NotFound));
        assert_eq!(code(Method::GET, "/v1/checkin/x"), Err(ErrorCode::NotFound));
        assert_eq!(
            code(Method::GET, "/v1/checkin"),
            Err(ErrorCode::MethodNotAllowed)
        );
        assert_eq!(
            code(Method::GET, "/v1/director/../x.json"),
            Err(ErrorCode::BadPath)
        );
        assert_eq!(code(Method::GET, "/v1/director/"), Err(ErrorCode::BadPath));
        assert_eq!(code(Method::GET, "/v1/blobs/xyz"), Err(ErrorCode::BadPath));
        assert_eq!(code(Method::PUT, "/v1/reports/a"), Err(ErrorCode::BadPath));
    }

    #[test]
    fn body_taking_routes_have_a_cap_and_others_take_none() {
        for r in Route::ALL {
            let takes_body = r.method() != Method::GET;
            assert_eq!(r.max_request_body() > 0, takes_body, "{r:?}");
            if takes_body {
                assert!(r.errors().contains(&ErrorCode::BodyTooLarge), "{r:?}");
            }
        }
    }
}
