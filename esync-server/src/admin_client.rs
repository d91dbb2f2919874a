//! An HTTPS client of the admin API ([`crate::admin`]): TLS 1.3 to the
//! admin listener verified against the fleet CA, a bearer token on every
//! request, JSON answers capped at [`MAX_ANSWER`] bytes, and an error that
//! names the status and the Server's error code and message.
//!
//! One mechanism for every program that administers a running Server: the
//! `esync-server` CLI's admin subcommands and the fleet simulator
//! (`esync-sim provision`) both use it. Connections are kept alive and
//! reused, and the client is cheap to clone, so concurrent requests share
//! one pool.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use esync_identity::TrustAnchors;

use crate::admin::ADMIN_PREFIX;

/// Largest admin API answer read (bytes).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// A request body of the admin client (a streamed upload or bytes).
pub type AdminBody = BoxBody<Bytes, std::io::Error>;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// The URL, CA, token or request could not be used.
    #[error("admin client: {0}")]
    Config(String),
    /// Connecting, TLS or HTTP failed (no answer).
    #[error("admin API transport: {0}")]
    Transport(String),
    /// The Server answered an error status.
    #[error("{status} {code}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The error body's `code` (`?` when absent).
        code: String,
        /// The error body's `message`.
        message: String,
    },
    /// The answer is not JSON or is too long.
    #[error("admin API answer: {0}")]
    Malformed(String),
}

impl AdminClientError {
    /// Whether trying again may succeed (no answer, or a 5xx).
    pub fn retryable(&self) -> bool {
        match self {
            AdminClientError::Transport(_) => true,
            AdminClientError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    /// The HTTP status, when the Server answered an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            AdminClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// HTTPS client of the admin API. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    http: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        AdminBody,
    >,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn full(bytes: impl Into<Bytes>) -> AdminBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

impl AdminClient {
    /// A client of the admin listener at `server_url` (`https://host:port`,
    /// no path), whose certificate chains to `ca_pem` (the fleet CA, PEM),
    /// sending `token` as the bearer token.
    pub fn new(server_url: &str, ca_pem: &str, token: &str) -> Result<Self, AdminClientError> {
        let cfg = |e: &dyn std::fmt::Display| AdminClientError::Config(e.to_string());
        if !server_url.starts_with("https://") {
            return Err(AdminClientError::Config(format!(
                "admin URL {server_url:?} is not https://host:port"
            )));
        }
        if token.is_empty() {
            return Err(AdminClientError::Config("empty bearer token".into()));
        }
        let anchors = TrustAnchors::from_pem(ca_pem).map_err(|e| cfg(&e))?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| cfg(&e))?
        .with_root_certificates(anchors.root_cert_store())
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Self {
            base: format!("{}{ADMIN_PREFIX}", server_url.trim_end_matches('/')),
            token: token.to_owned(),
            http,
        })
    }

    /// The admin API base (`https://host:port/admin/v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn builder(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
    }

    /// Sends `req` (already carrying the token, see [`AdminClient::request`])
    /// and reads the JSON answer (`Value::Null` when empty).
    pub async fn send(
        &self,
        req: Request<AdminBody>,
    ) -> Result<(StatusCode, Value), AdminClientError> {
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| AdminClientError::Transport(esync_api::error_chain(&e)))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| AdminClientError::Malformed(format!("reading the answer: {e}")))?
            .to_bytes();
        let v = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) if !status.is_success() => Value::Null,
                Err(e) => {
                    return Err(AdminClientError::Malformed(format!(
                        "answer is not JSON: {e}"
                    )))
                }
            }
        };
        if !status.is_success() {
            return Err(AdminClientError::Status {
                status,
                code: v["code"].as_str().unwrap_or("?").to_owned(),
                message: v["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok((status, v))
    }

    /// A request to `path` (after `/admin/v1`) with the token and `body`
    /// of `content_type`.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: AdminBody,
    ) -> Result<Request<AdminBody>, AdminClientError> {
        self.builder(method, path)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| AdminClientError::Config(e.to_string()))
    }

    /// Sends JSON `bytes` as they are (signed metadata must not be
    /// re-serialised).
    pub async fn raw_json(
        &self,
        method: Method,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, AdminClientError> {
        let req = self.request(method, path, "application/json", full(bytes))?;
        Ok(self.send(req).await?.1)
    }

    /// One JSON request (`body` serialised when given) and its answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, AdminClientError> {
        let req = match body {
            Some(v) => {
                let bytes =
                    serde_json::to_vec(&v).map_err(|e| AdminClientError::Config(e.to_string()))?;
                self.request(method, path, "application/json", full(bytes))?
            }
            None => self
                .builder(method, path)
                .body(full(Bytes::new()))
                .map_err(|e| AdminClientError::Config(e.to_string()))?,
        };
        Ok(self.send(req).await?.1)
    }

    /// `POST /images`: uploads an image of `length` bytes whose SHA-256 is
    /// `sha256_hex`, streamed from `body` (the Server checks both).
    pub async fn upload_image(
        &self,
        name: &str,
        version: &str,
        hardware_id: &str,
        sha256_hex: &str,
        length: u64,
        body: AdminBody,
    ) -> Result<Value, AdminClientError> {
        let q = format!(
            "name={}&version={}&hardware_id={}&sha256={sha256_hex}&length={length}",
            enc(name),
            enc(version),
            enc(hardware_id)
        );
        let req = self
            .builder(Method::POST, &format!("/images?{q}"))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(http::header::CONTENT_LENGTH, length)
            .body(body)
            .map_err(|e| AdminClientError::Config(e.to_string()))?;
        Ok(self.send(req).await?.1)
    }

    /// [`AdminClient::upload_image`] of bytes in memory.
    pub async fn upload_image_bytes(
        &self,
        name: &str,
        version: &str,
        hardware_id: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, AdminClientError> {
        use sha2::Digest as _;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        let len = bytes.len() as u64;
        self.upload_image(name, version, hardware_id, &sha, len, full(bytes))
            .await
    }
}

/// Percent-encodes a query or path value (everything but unreserved
/// characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(enc("a b/c~d.e_f-g"), "a%20b%2Fc~d.e_f-g");
        assert_eq!(enc("ü"), "%C3%BC");
    }

    #[test]
    fn bad_urls_and_empty_tokens_are_refused_before_any_request() {
        let ca = esync_identity::FleetCa::new(
            "ca",
            esync_identity::Validity::days_from(1_700_000_000, 1),
        )
        .expect("ca");
        let pem = ca.cert_pem();
        assert!(matches!(
            AdminClient::new("http://127.0.0.1:1", &pem, "t"),
            Err(AdminClientError::Config(_))
        ));
        assert!(matches!(
            AdminClient::new("https://127.0.0.1:1", &pem, ""),
            Err(AdminClientError::Config(_))
        ));
        assert!(matches!(
            AdminClient::new("https://127.0.0.1:1", "not a pem", "t"),
            Err(AdminClientError::Config(_))
        ));
        let c = AdminClient::new("https://127.0.0.1:1/", &pem, "t").expect("client");
        assert_eq!(c.base(), "https://127.0.0.1:1/admin/v1");
    }
}
