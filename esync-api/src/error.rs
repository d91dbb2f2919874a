//! The error body every route answers with, and the status of each error.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most bytes of an error body a Client reads.
pub const MAX_ERROR_BODY: u64 = 4096;
/// Longest `message` a Server sends (longer messages are cut).
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// What was wrong, machine-readable. Each code has one HTTP status
/// ([`ErrorCode::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: a path parameter failed validation.
    BadPath,
    /// 400: the body is not the JSON this route takes.
    MalformedBody,
    /// 403: the certificate is valid but not allowed here (not a vehicle,
    /// unknown or decommissioned vehicle).
    Forbidden,
    /// 404: no such route, file or blob.
    NotFound,
    /// 405: the route takes another method.
    MethodNotAllowed,
    /// 409: a report with this id was stored with another body.
    ReportConflict,
    /// 413: the body is longer than the route's cap.
    BodyTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 416: the `Range` asks for bytes the blob does not have.
    RangeNotSatisfiable,
    /// 422: the signed manifest failed verification (signature, nonce
    /// reuse, unknown ECU, other vehicle).
    ManifestRejected,
    /// 500: the Server failed.
    Internal,
    /// 503: the Server cannot answer now; retry later.
    Unavailable,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadPath,
        ErrorCode::MalformedBody,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ReportConflict,
        ErrorCode::BodyTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::ManifestRejected,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
    ];

    /// The HTTP status this error is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadPath | ErrorCode::MalformedBody => StatusCode::BAD_REQUEST,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::ReportConflict => StatusCode::CONFLICT,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::ManifestRejected => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the same request may succeed later (5xx): the Client retries
    /// these with backoff; 4xx are not retried unchanged.
    pub fn retryable(self) -> bool {
        self.status().is_server_error()
    }

    /// The snake_case name used in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadPath => "bad_path",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ReportConflict => "report_conflict",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::ManifestRejected => "manifest_rejected",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// The JSON body of every error answer: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong.
    pub code: ErrorCode,
    /// Detail for humans and logs (at most [`MAX_ERROR_MESSAGE`] bytes).
    pub message: String,
}

/// An API error: a code (hence a status) and a message. The Server turns it
/// into a response with [`ApiError::status`] and [`ApiError::body`]; the
/// Client gets it back from [`ApiError::from_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?} ({status}): {message}", status = code.status())]
pub struct ApiError {
    /// What was wrong.
    pub code: ErrorCode,
    /// Detail.
    pub message: String,
}

impl ApiError {
    /// An error with `code`; `message` is cut to [`MAX_ERROR_MESSAGE`]
    /// bytes (on a character boundary).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        ApiError { code, message }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The body to send.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
        }
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of an enum and a string always serialises.
        serde_json::to_vec(&self.body()).expect("ErrorBody serialises")
    }

    /// Reads an error answer: `status` and at most [`MAX_ERROR_BODY`] bytes
    /// of `body`. A body that is not an [`ErrorBody`], or whose code does
    /// not carry `status`, gives `None` (the caller reports the bare
    /// status).
    pub fn from_response(status: StatusCode, body: &[u8]) -> Option<Self> {
        if body.len() as u64 > MAX_ERROR_BODY {
            return None;
        }
        let b: ErrorBody = serde_json::from_slice(body).ok()?;
        (b.code.status() == status).then(|| ApiError::new(b.code, b.message))
    }
}

/// An error and its chain of sources as one line (`outer: inner: root`):
/// how the API's HTTP clients (the Client's device client, the Server's
/// admin client) report a transport failure, whose useful part is often
/// only in a source (the TLS or connection error under hyper's).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_names_every_source_in_order() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let e = Layer(
            "request failed",
            Some(Box::new(Layer(
                "tls",
                Some(Box::new(Layer("refused", None))),
            ))),
        );
        assert_eq!(error_chain(&e), "request failed: tls: refused");
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }

    #[test]
    fn codes_serialise_as_their_names_and_round_trip() {
        for &c in ErrorCode::ALL {
            let e = ApiError::new(c, "why");
            let json = e.to_json();
            let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
            assert_eq!(v["code"], c.as_str());
            assert_eq!(v["message"], "why");
            assert_eq!(ApiError::from_response(c.status(), &json), Some(e));
            assert!(c.status().is_client_error() || c.status().is_server_error());
        }
    }

    #[test]
    fn a_body_whose_code_disagrees_with_the_status_is_not_trusted() {
        let json = ApiError::new(ErrorCode::NotFound, "x").to_json();
        assert_eq!(ApiError::from_response(StatusCode::CONFLICT, &json), None);
        assert_eq!(
            ApiError::from_response(StatusCode::NOT_FOUND, b"<html>"),
            None
        );
        let big = vec![b' '; MAX_ERROR_BODY as usize + 1];
        assert_eq!(ApiError::from_response(StatusCode::NOT_FOUND, &big), None);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let e = ApiError::new(ErrorCode::Internal, "é".repeat(MAX_ERROR_MESSAGE));
        assert!(e.message.len() <= MAX_ERROR_MESSAGE);
        assert!(e.message.len() >= MAX_ERROR_MESSAGE - 1);
    }
}
