//! The error type of this crate.

use esync_proto::error::IdError;
use thiserror::Error;

/// Everything that can go wrong while issuing, parsing or validating an identity.
///
/// Messages name what failed; they never contain key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate is larger than [`MAX_CERT_DER_LEN`](crate::MAX_CERT_DER_LEN).
    #[error("certificate of {len} bytes exceeds the {max}-byte limit")]
    CertificateTooLarge {
        /// Length received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More intermediate certificates than [`MAX_INTERMEDIATES`](crate::MAX_INTERMEDIATES).
    #[error("{count} intermediate certificates exceed the limit of {max}")]
    TooManyIntermediates {
        /// Number received.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More trust anchors than [`MAX_TRUST_ANCHORS`](crate::MAX_TRUST_ANCHORS).
    #[error("{count} trust anchors exceed the limit of {max}")]
    TooManyTrustAnchors {
        /// Number received.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The certificate DER could not be parsed.
    #[error("certificate could not be parsed: {0}")]
    Parse(String),
    /// Bytes follow the certificate's DER encoding.
    #[error("certificate has {0} trailing bytes after its DER encoding")]
    TrailingData(usize),
    /// The end-entity certificate is a CA certificate.
    #[error("certificate is a CA certificate, not an end-entity identity")]
    IsCa,
    /// The certificate's key is not an ed25519 key.
    #[error("certificate key is not a valid ed25519 public key")]
    NotEd25519,
    /// The certificate names neither an esync participant nor a server.
    #[error("certificate carries no esync URI SAN and no DNS or IP SAN")]
    NoIdentity,
    /// More than one `esync:` URI in the subject alternative names.
    #[error("certificate carries {0} esync URI SANs, exactly one is allowed")]
    MultipleEsyncUris(usize),
    /// An `esync:` URI that does not follow the documented forms.
    #[error("malformed esync URI SAN: {reason}")]
    MalformedUri {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A VIN, device path or listener name in the URI is invalid.
    #[error("invalid {what} in esync URI SAN: {source}")]
    InvalidId {
        /// Which identifier.
        what: &'static str,
        /// The validation error.
        source: IdError,
    },
    /// Chain validation (rustls-webpki) refused the certificate.
    #[error("certificate chain refused: {0}")]
    Chain(webpki::Error),
    /// The end entity's extended key usage does not list the required purpose.
    #[error("certificate extended key usage does not allow {0:?}")]
    UsageNotAllowed(crate::Usage),
    /// A trust anchor could not be used.
    #[error("invalid trust anchor certificate: {0}")]
    TrustAnchor(webpki::Error),
    /// No trust anchor was given.
    #[error("no trust anchor given")]
    NoTrustAnchor,
    /// The sender claimed in an envelope is not the one the certificate names.
    #[error("claimed sender {claimed} is not the certified participant {certified}")]
    SenderMismatch {
        /// The claimed sender.
        claimed: String,
        /// What the certificate names (`server` for a server certificate).
        certified: String,
    },
    /// The certificate's VIN is not the expected one.
    #[error("certificate VIN {certified} is not the expected VIN {expected}")]
    VinMismatch {
        /// The expected VIN.
        expected: String,
        /// The VIN in the certificate (`none` for a server certificate).
        certified: String,
    },
    /// The certificate's role is not the one required here.
    #[error("certificate role not accepted here: {0}")]
    WrongRole(&'static str),
    /// A validity period that ends before it starts or is out of range.
    #[error("invalid validity period: {0}")]
    Validity(&'static str),
    /// Certificate generation failed (rcgen).
    #[error("certificate issuance failed: {0}")]
    Issue(#[from] rcgen::Error),
    /// A key could not be decoded or does not match its certificate.
    #[error("key error: {0}")]
    Key(&'static str),
    /// PEM input could not be decoded.
    #[error("PEM decoding failed: {0}")]
    Pem(&'static str),
    /// Building a rustls configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls' client certificate verifier could not be built.
    #[error("TLS client verifier could not be built: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
}
