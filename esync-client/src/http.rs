//! The Client's HTTPS side of the device API ([`esync_api`]): mutual TLS
//! with the vehicle certificate, keep-alive, a cap on every response body,
//! a timeout on every request, and resumable blob downloads.
//!
//! [`DeviceHttp`] is I/O glue only: what to fetch and when is decided by the
//! sans-I/O Client core; the deadlines it returns become the `timeout`
//! arguments here.
//!
//! Blob downloads ([`DeviceHttp::download_blob`]) stream into
//! `DEST.partial`, hashing while they write. When a download is cut, the
//! bytes already in the partial file are kept; the next call hashes them
//! from disk (no network) and asks for the rest with `Range: bytes=N-`.
//! At the end the SHA-256 and length must equal the blob's address and the
//! length from the verified metadata; then the file is fsynced and renamed
//! atomically to `DEST` (and the directory fsynced). A mismatch removes the
//! partial file. A download that receives nothing for `idle_timeout` is
//! abandoned (slow retrieval, Uptane A12); the partial bytes stay for the
//! next attempt.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use esync_api::body::{CheckInRequest, CheckInResponse, ManifestAccepted, Report, ReportStored};
use esync_api::range::{self, RangeError};
use esync_api::{ApiError, BlobId, MetadataFileName, ReportId, Route, JSON};
use esync_uptane::repo::Need;
use http::header::{ACCEPT, CONTENT_TYPE, RANGE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

/// Errors of the HTTP side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The base URL is not `https://host[:port]`.
    #[error("bad server URL {0:?}")]
    BadUrl(String),
    /// Connecting, TLS or HTTP failed (includes a refused client
    /// certificate and a connection dropped mid-body).
    #[error("transport: {0}")]
    Transport(String),
    /// No answer (or no next body chunk) in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// The Server answered an error.
    #[error("server answered {status}: {detail}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The error body, when it was a valid one.
        api: Option<ApiError>,
        /// Human-readable detail.
        detail: String,
    },
    /// The body is longer than allowed.
    #[error("{what}: body longer than {limit} bytes")]
    TooLarge {
        /// What was read.
        what: &'static str,
        /// Cap.
        limit: u64,
    },
    /// The body is not the JSON expected.
    #[error("{what}: malformed body: {reason}")]
    Malformed {
        /// What was read.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Range or Content-Range problem.
    #[error("range: {0}")]
    Range(#[from] RangeError),
    /// The downloaded blob does not hash to its address.
    #[error("blob {blob}: SHA-256 mismatch")]
    HashMismatch {
        /// The blob.
        blob: BlobId,
    },
    /// The downloaded blob is longer or shorter than expected.
    #[error("blob {blob}: length {got}, expected {expected}")]
    LengthMismatch {
        /// The blob.
        blob: BlobId,
        /// Received.
        got: u64,
        /// From the verified metadata.
        expected: u64,
    },
    /// Local file I/O.
    #[error("file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

impl HttpError {
    /// Whether trying again later may succeed (transport problems,
    /// timeouts, 5xx); the core applies its retry policy and backoff.
    pub fn retryable(&self) -> bool {
        match self {
            HttpError::Transport(_) | HttpError::Timeout { .. } => true,
            HttpError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// Which repository a metadata file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repo {
    /// The Director (per vehicle, `/v1/director/`).
    Director,
    /// The Image repository (same for all, `/v1/image/`).
    Image,
}

/// Limits of one blob download.
#[derive(Debug, Clone, Copy)]
pub struct DownloadLimits {
    /// Most time to wait for the answer's head, and then for each next
    /// chunk of body (slow-retrieval guard).
    pub idle_timeout: Duration,
    /// Most time for the whole call, if any (from the core's deadline).
    pub total_timeout: Option<Duration>,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            idle_timeout: Duration::from_secs(30),
            total_timeout: None,
        }
    }
}

/// What a finished blob download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The final file.
    pub path: PathBuf,
    /// Bytes already on disk before this call (not fetched again).
    pub resumed_from: u64,
    /// Bytes received over the network by this call.
    pub fetched: u64,
}

/// HTTPS client of the device API.
#[derive(Clone)]
pub struct DeviceHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
}

impl std::fmt::Debug for DeviceHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHttp")
            .field("base", &self.base)
            .finish()
    }
}

/// The partial file of a download to `dest`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

impl DeviceHttp {
    /// A client of the Server at `base_url` (`https://host[:port]`, no
    /// path), presenting and verifying with `tls` (for example
    /// `esync_identity::tls::client_tls_config` with the vehicle identity
    /// and the fleet CA). Connections are kept alive and reused.
    pub fn new(base_url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Self, HttpError> {
        let uri: Uri = base_url
            .parse()
            .map_err(|_| HttpError::BadUrl(base_url.to_owned()))?;
        let path_ok = matches!(uri.path(), "" | "/");
        if uri.scheme_str() != Some("https") || uri.host().is_none() || !path_ok {
            return Err(HttpError::BadUrl(base_url.to_owned()));
        }
        let mut tls = (*tls).clone();
        // The connector sets ALPN itself (and refuses a preset list).
        tls.alpn_protocols.clear();
        let mut tcp = HttpConnector::new();
        // Requests leave at once (no Nagle wait); the TLS layer decides
        // the scheme (`https_only`).
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(DeviceHttp {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(ACCEPT, HeaderValue::from_static(JSON));
        if body.is_some() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static(JSON));
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| HttpError::BadUrl(e.to_string()))
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        what: &'static str,
        timeout: Duration,
    ) -> Result<hyper::Response<Incoming>, HttpError> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(HttpError::Timeout {
                what,
                after: timeout,
            }),
            Ok(Err(e)) => Err(HttpError::Transport(esync_api::error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// One JSON round trip on `route`: status must be one of the route's
    /// successes; the body is read up to the route's cap.
    async fn json_call<T: serde::de::DeserializeOwned>(
        &self,
        route: Route,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, T), HttpError> {
        let what = route.operation_id();
        if let Some(b) = &body {
            if b.len() as u64 > route.max_request_body() {
                return Err(HttpError::TooLarge {
                    what,
                    limit: route.max_request_body(),
                });
            }
        }
        let req = self.request(route.method(), path, body)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let resp = self.send(req, what, timeout).await?;
        let status = resp.status();
        if !route.success_statuses().contains(&status) {
            return Err(error_answer(resp, deadline).await);
        }
        let cap = route.max_response_body().unwrap_or(0);
        let bytes = read_capped(resp.into_body(), cap, what, deadline).await?;
        let value = serde_json::from_slice(&bytes).map_err(|e| HttpError::Malformed {
            what,
            reason: e.to_string(),
        })?;
        Ok((status, value))
    }

    /// `POST /v1/checkin`.
    pub async fn check_in(
        &self,
        req: &CheckInRequest,
        timeout: Duration,
    ) -> Result<CheckInResponse, HttpError> {
        let body = to_json(req)?;
        let path = Route::CheckIn.template();
        Ok(self
            .json_call(Route::CheckIn, path, Some(body), timeout)
            .await?
            .1)
    }

    /// `POST /v1/checkin` with an already encoded
    /// [`CheckInRequest`] body (as the sans-I/O session makes it).
    pub async fn check_in_raw(
        &self,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<CheckInResponse, HttpError> {
        let path = Route::CheckIn.template();
        Ok(self
            .json_call(Route::CheckIn, path, Some(body), timeout)
            .await?
            .1)
    }

    /// `POST /v1/manifest` with the signed manifest bytes
    /// (`esync_uptane::manifest::VehicleManifest::sign`).
    pub async fn upload_manifest(
        &self,
        signed_manifest: &[u8],
        timeout: Duration,
    ) -> Result<ManifestAccepted, HttpError> {
        let path = Route::Manifest.template();
        let body = Some(signed_manifest.to_vec());
        Ok(self
            .json_call(Route::Manifest, path, body, timeout)
            .await?
            .1)
    }

    /// `PUT /v1/reports/{id}`; a retry of the same report answers
    /// `duplicate: true`.
    pub async fn put_report(
        &self,
        id: &ReportId,
        report: &Report,
        timeout: Duration,
    ) -> Result<ReportStored, HttpError> {
        let body = to_json(report)?;
        let path = Route::report(id);
        Ok(self
            .json_call(Route::Report, &path, Some(body), timeout)
            .await?
            .1)
    }

    /// `GET` one metadata file, at most `max_length` bytes (and the
    /// route's cap). `Ok(None)`: 404 (for `N.root.json`, the end of the
    /// rotation chain).
    pub async fn metadata_file(
        &self,
        repo: Repo,
        file: &MetadataFileName,
        max_length: u64,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, HttpError> {
        let (route, path) = match repo {
            Repo::Director => (Route::DirectorFile, Route::director_file(file)),
            Repo::Image => (Route::ImageFile, Route::image_file(file)),
        };
        let what = route.operation_id();
        let req = self.request(Method::GET, &path, None)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let resp = self.send(req, what, timeout).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                // Read the small error body so the connection is reusable.
                let _ = read_capped(
                    resp.into_body(),
                    esync_api::error::MAX_ERROR_BODY,
                    what,
                    deadline,
                )
                .await;
                return Ok(None);
            }
            _ => return Err(error_answer(resp, deadline).await),
        }
        let cap = max_length.min(route.max_response_body().unwrap_or(max_length));
        read_capped(resp.into_body(), cap, what, deadline)
            .await
            .map(Some)
    }

    /// The file an `esync_uptane::repo::Need` asks for, from `repo`: one
    /// GET of `need.path()` capped at `need.max_length()`.
    pub async fn fetch_need(
        &self,
        repo: Repo,
        need: &Need,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, HttpError> {
        let file = MetadataFileName::new(&need.path()).map_err(|e| HttpError::Malformed {
            what: "metadata file name",
            reason: e.to_string(),
        })?;
        self.metadata_file(repo, &file, need.max_length(), timeout)
            .await
    }

    /// Downloads blob `blob` of `length` bytes (from the verified
    /// metadata) into `dest`, resuming from `DEST.partial` if present.
    /// See the module documentation.
    pub async fn download_blob(
        &self,
        blob: &BlobId,
        length: u64,
        dest: &Path,
        limits: DownloadLimits,
    ) -> Result<Downloaded, HttpError> {
        match limits.total_timeout {
            None => self.download_inner(blob, length, dest, limits).await,
            Some(t) => tokio::time::timeout(t, self.download_inner(blob, length, dest, limits))
                .await
                .unwrap_or(Err(HttpError::Timeout {
                    what: "blob download",
                    after: t,
                })),
        }
    }

    async fn download_inner(
        &self,
        blob: &BlobId,
        length: u64,
        dest: &Path,
        limits: DownloadLimits,
    ) -> Result<Downloaded, HttpError> {
        let part = partial_path(dest);
        let io_err = |source| HttpError::Io {
            path: part.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(false)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(io_err)?;
        let mut have = file.metadata().map_err(io_err)?.len();
        if have > length {
            file.set_len(0).map_err(io_err)?;
            have = 0;
        }
        // Re-hash the bytes kept from an earlier attempt (local read only).
        let mut hasher = Sha256::new();
        if have > 0 {
            hash_prefix(&mut file, have, &mut hasher).map_err(io_err)?;
        }
        let resumed_from = have;
        let mut fetched = 0u64;
        if have < length {
            let path = Route::blob(blob);
            let mut req = self.request(Method::GET, &path, None)?;
            req.headers_mut().remove(ACCEPT);
            if have > 0 {
                req.headers_mut().insert(RANGE, range::resume_from(have));
            }
            let resp = self.send(req, "blob", limits.idle_timeout).await?;
            let deadline = tokio::time::Instant::now() + limits.idle_timeout;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if have > 0 => {
                    range::check_partial(
                        resp.headers().get(http::header::CONTENT_RANGE),
                        have,
                        Some(length),
                    )?;
                }
                StatusCode::OK => {
                    if have > 0 {
                        // The server ignored the range: start over.
                        file.set_len(0).map_err(io_err)?;
                        hasher = Sha256::new();
                        have = 0;
                    }
                }
                _ => return Err(error_answer(resp, deadline).await),
            }
            file.seek(SeekFrom::Start(have)).map_err(io_err)?;
            let mut body = resp.into_body();
            loop {
                let frame = match tokio::time::timeout(limits.idle_timeout, body.frame()).await {
                    Err(_) => {
                        file.sync_data().map_err(io_err)?;
                        return Err(HttpError::Timeout {
                            what: "blob body",
                            after: limits.idle_timeout,
                        });
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        file.sync_data().map_err(io_err)?;
                        return Err(HttpError::Transport(esync_api::error_chain(&e)));
                    }
                    Ok(Some(Ok(f))) => f,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if have + data.len() as u64 > length {
                    drop(file);
                    let _ = std::fs::remove_file(&part);
                    return Err(HttpError::LengthMismatch {
                        blob: *blob,
                        got: have + data.len() as u64,
                        expected: length,
                    });
                }
                file.write_all(&data).map_err(io_err)?;
                hasher.update(&data);
                have += data.len() as u64;
                fetched += data.len() as u64;
            }
        }
        if have != length {
            file.sync_data().map_err(io_err)?;
            return Err(HttpError::LengthMismatch {
                blob: *blob,
                got: have,
                expected: length,
            });
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if digest != blob.digest().0 {
            drop(file);
            let _ = std::fs::remove_file(&part);
            return Err(HttpError::HashMismatch { blob: *blob });
        }
        file.sync_all().map_err(io_err)?;
        drop(file);
        std::fs::rename(&part, dest).map_err(|source| HttpError::Io {
            path: dest.to_owned(),
            source,
        })?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            esync_store::file::sync_dir(dir).map_err(|source| HttpError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        Ok(Downloaded {
            path: dest.to_owned(),
            resumed_from,
            fetched,
        })
    }
}

/// A running blob response: chunks as they arrive (for a host that lets the
/// sans-I/O session count and hash them, `core::session`).
#[derive(Debug)]
pub struct BlobStream {
    body: Incoming,
    idle_timeout: Duration,
}

impl BlobStream {
    /// The next chunk, `Ok(None)` at the end; nothing for `idle_timeout`
    /// is a [`HttpError::Timeout`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            match tokio::time::timeout(self.idle_timeout, self.body.frame()).await {
                Err(_) => {
                    return Err(HttpError::Timeout {
                        what: "blob body",
                        after: self.idle_timeout,
                    })
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(HttpError::Transport(esync_api::error_chain(&e))),
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

impl DeviceHttp {
    /// `GET /v1/blobs/{sha256}` from `range_start` (no `Range` header when
    /// 0): a 206 must answer exactly from `range_start`; a 200 to a range
    /// request is refused (the caller's offsets would be wrong).
    pub async fn open_blob(
        &self,
        blob: &BlobId,
        range_start: u64,
        idle_timeout: Duration,
    ) -> Result<BlobStream, HttpError> {
        let mut req = self.request(Method::GET, &Route::blob(blob), None)?;
        req.headers_mut().remove(ACCEPT);
        if range_start > 0 {
            req.headers_mut()
                .insert(RANGE, range::resume_from(range_start));
        }
        let resp = self.send(req, "blob", idle_timeout).await?;
        let deadline = tokio::time::Instant::now() + idle_timeout;
        match resp.status() {
            StatusCode::OK if range_start == 0 => {}
            StatusCode::PARTIAL_CONTENT if range_start > 0 => {
                range::check_partial(
                    resp.headers().get(http::header::CONTENT_RANGE),
                    range_start,
                    None,
                )?;
            }
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                return Err(HttpError::Range(RangeError::Mismatch {
                    start: range_start,
                    got: resp.status().to_string(),
                    length: None,
                }))
            }
            _ => return Err(error_answer(resp, deadline).await),
        }
        Ok(BlobStream {
            body: resp.into_body(),
            idle_timeout,
        })
    }
}

fn hash_prefix(file: &mut std::fs::File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "partial file shrank",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, HttpError> {
    serde_json::to_vec(v).map_err(|e| HttpError::Malformed {
        what: "request body",
        reason: e.to_string(),
    })
}

/// Reads at most `cap` bytes of `body`, refusing longer bodies without
/// reading past the cap, by `deadline`.
async fn read_capped(
    mut body: Incoming,
    cap: u64,
    what: &'static str,
    deadline: tokio::time::Instant,
) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(HttpError::Timeout {
                    what,
                    after: Duration::ZERO,
                })
            }
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => return Err(HttpError::Transport(esync_api::error_chain(&e))),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > cap {
                return Err(HttpError::TooLarge { what, limit: cap });
            }
            out.extend_from_slice(&data);
        }
    }
}

async fn error_answer(
    resp: hyper::Response<Incoming>,
    deadline: tokio::time::Instant,
) -> HttpError {
    let status = resp.status();
    let body = read_capped(
        resp.into_body(),
        esync_api::error::MAX_ERROR_BODY,
        "error body",
        deadline,
    )
    .await
    .unwrap_or_default();
    let api = ApiError::from_response(status, &body);
    let detail = match &api {
        Some(a) => format!("{}: {}", a.code.as_str(), a.message),
        None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    HttpError::Status {
        status,
        api,
        detail,
    }
}
