//! The device API over HTTPS with mutual TLS: exactly the `esync_api`
//! routes ([`esync_api::Route`]), served by axum.
//!
//! * [`serve_device`] accepts TCP connections, runs the TLS handshake with
//!   the current [`DeviceTls`] configuration (CRLs included, so a revoked or
//!   foreign certificate never reaches HTTP), reads the vehicle's VIN from
//!   the verified peer certificate ([`crate::tls::device_peer`]) and serves
//!   the connection (HTTP/1.1 or HTTP/2) with the router, the peer attached
//!   to every request. No handler reads a VIN from a body or a path.
//! * [`device_router`] maps each [`Route`] to its handler: check-in by
//!   manifest hash, manifest upload (A15 in [`Director::receive_manifest`]),
//!   Director and Image repository files by name, content-addressed blobs
//!   with HTTP Range (200/206/416 with the `esync_api::range` helpers) and
//!   idempotent reports. Bodies are capped at [`Route::max_request_body`]
//!   before they are read; every error is an [`esync_api::ErrorBody`] with
//!   the status of its code.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{on, MethodFilter};
use axum::Router;
use esync_api::body::{CheckInRequest, Report, ReportEvent, ReportStored};
use esync_api::range::{content_range, serve_range, unsatisfied, RangeError};
use esync_api::{ApiError, BlobId, ErrorCode, MetadataFileName, ReportId, Route};
use esync_proto::id::Vin;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::blob::{BlobError, BlobStore};
use crate::director::{Director, DirectorError, ManifestError};
use crate::metrics::Metrics;
use crate::repo::{ImageRepo, RepoError};
use crate::store::{Inserted, Store};
use crate::tls::{device_peer, DeviceTls};

/// Wall-clock source of the device API (milliseconds since the Unix epoch).
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock as a [`WallClock`].
pub fn system_clock() -> NowMs {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// Everything the device handlers use. Cheap to clone.
#[derive(Clone)]
pub struct DeviceState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Images and deltas.
    pub blobs: BlobStore,
    /// The Director.
    pub director: Arc<Director>,
    /// The Image repository.
    pub images: Arc<ImageRepo>,
    /// Wall clock.
    pub clock: NowMs,
    /// Counters (campaign offers and results).
    pub metrics: Metrics,
    /// VINs found registered. Vehicles are never deleted (a vehicle is
    /// shut out by revoking its certificate, at the TLS layer), so a VIN
    /// once found stays registered and this cache is exact; it only spares
    /// every request a database read.
    registered: Arc<Mutex<HashSet<Vin>>>,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState").finish_non_exhaustive()
    }
}

impl DeviceState {
    /// State with the system clock.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: BlobStore,
        director: Arc<Director>,
        images: Arc<ImageRepo>,
    ) -> Self {
        Self {
            store,
            blobs,
            director,
            images,
            clock: system_clock(),
            metrics: Metrics::new(),
            registered: Arc::default(),
        }
    }

    /// The same state counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The same state with another clock (tests).
    pub fn with_clock(mut self, clock: NowMs) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn is_registered(&self, vin: &Vin) -> bool {
        self.registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(vin)
    }

    fn remember_registered(&self, vin: Vin) {
        let mut set = self
            .registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if set.len() >= crate::director::MAX_CACHED_VEHICLES {
            set.clear();
        }
        set.insert(vin);
    }
}

/// Who is on the other end of a device connection, from its verified
/// certificate; attached by [`serve_device`] to every request.
#[derive(Clone, Debug)]
pub struct DevicePeer(pub Result<Vin, String>);

/// An error answer: an [`ApiError`] as a response.
#[derive(Debug)]
pub struct ApiRejection(pub ApiError);

impl ApiRejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ApiError::new(code, message))
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "device API");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl IntoResponse for ApiRejection {
    fn into_response(self) -> axum::response::Response {
        let mut r = (self.0.status(), self.0.to_json()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(esync_api::JSON),
        );
        r
    }
}

impl From<DirectorError> for ApiRejection {
    fn from(e: DirectorError) -> Self {
        Self::internal(e)
    }
}

impl From<RepoError> for ApiRejection {
    fn from(e: RepoError) -> Self {
        Self::internal(e)
    }
}

impl From<crate::store::DbError> for ApiRejection {
    fn from(e: crate::store::DbError) -> Self {
        Self::internal(e)
    }
}

/// The vehicle of the request: from the certificate, and registered.
#[derive(Debug, Clone)]
pub struct RegisteredVin(pub Vin);

impl FromRequestParts<DeviceState> for RegisteredVin {
    type Rejection = ApiRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &DeviceState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<DevicePeer>()
            .ok_or_else(|| ApiRejection::new(ErrorCode::Forbidden, "no client certificate"))?;
        let vin = peer
            .0
            .clone()
            .map_err(|e| ApiRejection::new(ErrorCode::Forbidden, e))?;
        if state.is_registered(&vin) {
            return Ok(RegisteredVin(vin));
        }
        if state.store.vehicle(vin.as_str()).await?.is_none() {
            return Err(ApiRejection::new(
                ErrorCode::Forbidden,
                format!("vehicle {vin} is not registered"),
            ));
        }
        state.remember_registered(vin.clone());
        Ok(RegisteredVin(vin))
    }
}

fn json_response<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<axum::response::Response, ApiRejection> {
    let body = serde_json::to_vec(value).map_err(ApiRejection::internal)?;
    Ok((
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(esync_api::JSON),
        )],
        body,
    )
        .into_response())
}

/// Reads a JSON-typed request body of `route`, refusing it (413) past the
/// route's cap before reading further, and (415) when it is not JSON.
async fn read_body(route: Route, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiRejection> {
    let cap = route.max_request_body();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case(esync_api::JSON) {
        return Err(ApiRejection::new(
            ErrorCode::UnsupportedMediaType,
            format!("{} takes {}", route.template(), esync_api::JSON),
        ));
    }
    let too_large = || {
        ApiRejection::new(
            ErrorCode::BodyTooLarge,
            format!("body over the {cap}-byte cap of {}", route.template()),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > cap {
            return Err(too_large());
        }
    }
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                src = s.source();
            }
            Err(ApiRejection::new(
                ErrorCode::MalformedBody,
                format!("body unreadable: {e}"),
            ))
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiRejection> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiRejection::new(ErrorCode::MalformedBody, e.to_string()))
}

async fn check_in(
    State(st): State<DeviceState>,
    RegisteredVin(vin): RegisteredVin,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::response::Response, ApiRejection> {
    let bytes = read_body(Route::CheckIn, &headers, body).await?;
    let req: CheckInRequest = parse_json(&bytes)?;
    let now = st.now();
    // Campaign offers are made here, from the database (one indexed query
    // when nothing is due). A new offer is an assignment the Director's
    // up-to-date cache does not know: forget it so this check-in serves it.
    // While no campaign offers anywhere (as this node last read it, at most
    // `OFFER_GATE_RECHECK_MS` ago), that query is skipped.
    let offered = if st
        .director
        .offer_gate()
        .open(st.store.as_ref(), now)
        .await?
    {
        crate::campaigns::offer(st.store.as_ref(), vin.as_str(), now).await?
    } else {
        Vec::new()
    };
    if !offered.is_empty() {
        st.metrics.add_campaign_offers(offered.len() as u64);
        st.director.forget(&vin);
    }
    let answer = st
        .director
        .check_in(&vin, &req.manifest_sha256, now)
        .await?;
    json_response(StatusCode::OK, &answer)
}

async fn manifest(
    State(st): State<DeviceState>,
    RegisteredVin(vin): RegisteredVin,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::response::Response, ApiRejection> {
    let bytes = read_body(Route::Manifest, &headers, body).await?;
    match st.director.receive_manifest(&vin, &bytes, st.now()).await {
        Ok(a) => json_response(StatusCode::OK, &a),
        Err(ManifestError::Rejected(why)) => {
            tracing::warn!(%vin, %why, "vehicle manifest dropped");
            Err(ApiRejection::new(ErrorCode::ManifestRejected, why))
        }
        Err(ManifestError::Server(e)) => Err(e.into()),
    }
}

fn file_name(p: &str) -> Result<MetadataFileName, ApiRejection> {
    MetadataFileName::new(p).map_err(|e| ApiRejection::new(ErrorCode::BadPath, e.to_string()))
}

fn metadata_response(body: Option<Vec<u8>>, cache: &'static str) -> axum::response::Response {
    match body {
        Some(b) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(esync_api::JSON),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
            b,
        )
            .into_response(),
        None => ApiRejection::new(ErrorCode::NotFound, "no such metadata file").into_response(),
    }
}

async fn director_file(
    State(st): State<DeviceState>,
    RegisteredVin(vin): RegisteredVin,
    Path(file): Path<String>,
) -> Result<axum::response::Response, ApiRejection> {
    let name = file_name(&file)?;
    let body = st.director.file(&vin, name.as_str(), st.now()).await?;
    Ok(metadata_response(body, esync_api::DIRECTOR_CACHE_CONTROL))
}

async fn image_file(
    State(st): State<DeviceState>,
    RegisteredVin(_): RegisteredVin,
    Path(file): Path<String>,
) -> Result<axum::response::Response, ApiRejection> {
    let name = file_name(&file)?;
    let body = st.images.file(name.as_str()).await?;
    Ok(metadata_response(body, esync_api::IMAGE_CACHE_CONTROL))
}

async fn blob(
    State(st): State<DeviceState>,
    RegisteredVin(_): RegisteredVin,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiRejection> {
    let id = BlobId::parse_hex(&sha)
        .map_err(|e| ApiRejection::new(ErrorCode::BadPath, e.to_string()))?;
    let not_found = || ApiRejection::new(ErrorCode::NotFound, format!("no blob {id}"));
    let length = st
        .blobs
        .len(&id.0 .0)
        .await
        .map_err(ApiRejection::internal)?
        .ok_or_else(not_found)?;
    let range = match serve_range(headers.get(header::RANGE), length) {
        Ok(r) => r,
        Err(RangeError::NotSatisfiable { length }) => {
            let mut r = ApiRejection::new(
                ErrorCode::RangeNotSatisfiable,
                format!("blob {id} has {length} bytes"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::CONTENT_RANGE, unsatisfied(length));
            return Ok(r);
        }
        // A Range the API does not serve (malformed, several ranges): the
        // whole blob, as RFC 9110 allows a server to ignore Range.
        Err(_) => None,
    };
    let (start, end) = match range {
        Some((first, last)) => (first, last + 1),
        None => (0, length),
    };
    let (reader, _) = match st.blobs.open_range(&id.0 .0, start, Some(end)).await {
        Ok(r) => r,
        Err(BlobError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(ApiRejection::internal(e)),
    };
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, esync_api::OCTET_STREAM)
        .header(header::CACHE_CONTROL, esync_api::BLOB_CACHE_CONTROL)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, end - start);
    resp = match range {
        Some((first, last)) => resp.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            content_range(first, last, length).map_err(ApiRejection::internal)?,
        ),
        None => resp.status(StatusCode::OK),
    };
    // 64 KiB reads: TLS records of full size rather than 4 KiB ones.
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024);
    resp.body(Body::from_stream(stream))
        .map_err(ApiRejection::internal)
}

async fn report(
    State(st): State<DeviceState>,
    RegisteredVin(vin): RegisteredVin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::response::Response, ApiRejection> {
    let id =
        ReportId::new(&id).map_err(|e| ApiRejection::new(ErrorCode::BadPath, e.to_string()))?;
    let bytes = read_body(Route::Report, &headers, body).await?;
    let parsed: Report = parse_json(&bytes)?;
    let stored = |duplicate| ReportStored {
        report_id: id.to_string(),
        duplicate,
    };
    let now = st.now();
    // A final result counts in campaigns (once: conditional updates) and
    // blocks a package not installed. Counted for a retry too, so a node
    // that died between storing the report and counting it loses nothing.
    let count = |new_report: bool| {
        let st = st.clone();
        let vin = vin.clone();
        let event = parsed.event.clone();
        async move {
            if let ReportEvent::Result {
                package, outcome, ..
            } = event
            {
                let counted = crate::campaigns::on_result(
                    st.store.as_ref(),
                    vin.as_str(),
                    &package,
                    outcome,
                    new_report,
                    now,
                )
                .await?;
                for c in &counted {
                    st.metrics.record_campaign_result(c.member.as_str());
                }
            }
            Ok::<(), ApiRejection>(())
        }
    };
    match st
        .store
        .insert_report(vin.as_str(), id.as_str(), &bytes, now)
        .await?
    {
        Inserted::New => {
            count(true).await?;
            json_response(StatusCode::CREATED, &stored(false))
        }
        Inserted::Existing => {
            let before = st.store.report(vin.as_str(), id.as_str()).await?;
            if before.as_deref() == Some(bytes.as_slice()) {
                count(false).await?;
                json_response(StatusCode::OK, &stored(true))
            } else {
                Err(ApiRejection::new(
                    ErrorCode::ReportConflict,
                    format!("report {id} was stored with another body"),
                ))
            }
        }
    }
}

async fn not_found() -> ApiRejection {
    ApiRejection::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiRejection {
    ApiRejection::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// The device API's router: one handler per [`Route`], registered at its
/// [`Route::template`] with its [`Route::method`]; anything else is a 404
/// or 405 [`esync_api::ErrorBody`]. Requests must carry a [`DevicePeer`]
/// extension (as [`serve_device`] attaches); without one they are 403.
pub fn device_router(state: DeviceState) -> Router {
    let mut r = Router::new();
    for route in Route::ALL {
        let Ok(filter) = MethodFilter::try_from(route.method()) else {
            continue;
        };
        let handler = match route {
            Route::CheckIn => on(filter, check_in),
            Route::Manifest => on(filter, manifest),
            Route::DirectorFile => on(filter, director_file),
            Route::ImageFile => on(filter, image_file),
            Route::Blob => on(filter, blob),
            Route::Report => on(filter, report),
            // `Route` is non-exhaustive: a route added to the API without a
            // handler here is answered 404 until it has one.
            _ => continue,
        };
        r = r.route(route.template(), handler);
    }
    r.method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1.1 request head may take to arrive.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the device API on `listener` until `shutdown` resolves: each
/// connection's TLS handshake uses `tls`' current configuration (so CRL
/// reloads apply to new connections), the peer certificate names the
/// vehicle ([`DevicePeer`]), and `router` answers its requests.
pub async fn serve_device(
    listener: TcpListener,
    tls: Arc<DeviceTls>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Per-connection errors (e.g. too many open files):
                    // keep serving after a short pause.
                    tracing::warn!(error = %e, "device listener accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Responses go out as soon as written (no Nagle wait for the
        // client's delayed ACK on the last segment of a response).
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.config());
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%addr, error = %e, "device TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%addr, "device TLS handshake timed out");
                    return;
                }
            };
            let peer = DevicePeer(
                device_peer(stream.get_ref().1.peer_certificates()).map_err(|e| e.to_string()),
            );
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                router.clone().oneshot(req.map(Body::new))
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that never finishes its request head is dropped.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%addr, error = %e, "device connection ended");
            }
        });
    }
}
