//! Chain validation with rustls-webpki.

use core::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::error::IdentityError;
use crate::identity::{parse_identity_with_eku, PeerIdentity, TlsPurposes, MAX_CERT_DER_LEN};

/// Most intermediate certificates accepted in one chain.
pub const MAX_INTERMEDIATES: usize = 8;
/// Most trust anchors accepted in one [`TrustAnchors`].
pub const MAX_TRUST_ANCHORS: usize = 64;

/// Signature algorithms accepted on certificates: the fleet PKI is ed25519 only.
pub(crate) static FLEET_SIG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] =
    &[webpki::ring::ED25519];

/// What the end-entity certificate must be good for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS client authentication (vehicle participants). The extended key
    /// usage extension must be present and list `clientAuth`.
    ClientAuth,
    /// TLS server authentication (servers, and the vehicle's broker). The
    /// extended key usage extension must be present and list `serverAuth`.
    ServerAuth,
}

impl Usage {
    /// webpki checks the EKU of every certificate in the path, so it is
    /// given "required if present" (CA certificates carry no EKU); the end
    /// entity's EKU is then required to be present by [`validate_chain`].
    fn key_usage(self) -> KeyUsage {
        match self {
            Usage::ClientAuth => KeyUsage::client_auth(),
            Usage::ServerAuth => KeyUsage::server_auth(),
        }
    }

    fn allowed_by(self, purposes: TlsPurposes) -> bool {
        match self {
            Usage::ClientAuth => purposes.client_auth,
            Usage::ServerAuth => purposes.server_auth,
        }
    }
}

/// The fleet CA certificates trusted as chain roots.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    ders: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustAnchors {
    /// Trusts the given CA certificates (DER). At least one is required.
    pub fn from_ca_ders(cas: &[Vec<u8>]) -> Result<Self, IdentityError> {
        if cas.is_empty() {
            return Err(IdentityError::NoTrustAnchor);
        }
        if cas.len() > MAX_TRUST_ANCHORS {
            return Err(IdentityError::TooManyTrustAnchors {
                count: cas.len(),
                max: MAX_TRUST_ANCHORS,
            });
        }
        let mut ders = Vec::with_capacity(cas.len());
        let mut anchors = Vec::with_capacity(cas.len());
        for der in cas {
            if der.len() > MAX_CERT_DER_LEN {
                return Err(IdentityError::CertificateTooLarge {
                    len: der.len(),
                    max: MAX_CERT_DER_LEN,
                });
            }
            let der = CertificateDer::from(der.clone());
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(IdentityError::TrustAnchor)?
                .to_owned();
            anchors.push(anchor);
            ders.push(der);
        }
        Ok(Self { ders, anchors })
    }

    /// Trusts every certificate in a PEM text (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
            .take(MAX_TRUST_ANCHORS + 1)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| IdentityError::Pem("trust anchor certificates"))?;
        Self::from_ca_ders(&ders)
    }

    /// The trusted CA certificates, DER.
    pub fn ca_ders(&self) -> &[CertificateDer<'static>] {
        &self.ders
    }

    /// The webpki trust anchors.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// A rustls root store holding these anchors.
    pub fn root_cert_store(&self) -> rustls::RootCertStore {
        rustls::RootCertStore {
            roots: self.anchors.clone(),
        }
    }
}

/// Validates a certificate chain with rustls-webpki, then reads the identity.
///
/// webpki checks the signature chain from `end_entity_der` through
/// `intermediates` (in any order; a copy of the root among them is harmless)
/// to one of `anchors`, every certificate's validity at `now_unix` (Unix
/// seconds), basic constraints, name constraints and that the end entity's
/// extended key usage allows `usage` (the end entity must carry the EKU
/// extension; a certificate without it is refused). Only ed25519 signatures are accepted.
/// No revocation check is made. Then [`parse_identity`](crate::parse_identity) reads the role; the
/// caller decides which roles it accepts.
pub fn validate_chain(
    end_entity_der: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &TrustAnchors,
    now_unix: u64,
    usage: Usage,
) -> Result<PeerIdentity, IdentityError> {
    if end_entity_der.len() > MAX_CERT_DER_LEN {
        return Err(IdentityError::CertificateTooLarge {
            len: end_entity_der.len(),
            max: MAX_CERT_DER_LEN,
        });
    }
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(IdentityError::TooManyIntermediates {
            count: intermediates.len(),
            max: MAX_INTERMEDIATES,
        });
    }
    if let Some(big) = intermediates.iter().find(|c| c.len() > MAX_CERT_DER_LEN) {
        return Err(IdentityError::CertificateTooLarge {
            len: big.len(),
            max: MAX_CERT_DER_LEN,
        });
    }
    let ee_der = CertificateDer::from(end_entity_der);
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verify_with_webpki(&ee_der, &inter, anchors, now_unix, usage)?;
    let (identity, purposes) = parse_identity_with_eku(end_entity_der)?;
    if !usage.allowed_by(purposes) {
        return Err(IdentityError::UsageNotAllowed(usage));
    }
    Ok(identity)
}

/// The webpki call shared by [`validate_chain`] and the TLS verifiers.
pub(crate) fn verify_with_webpki(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &TrustAnchors,
    now_unix: u64,
    usage: Usage,
) -> Result<(), IdentityError> {
    let ee = EndEntityCert::try_from(end_entity).map_err(IdentityError::Chain)?;
    ee.verify_for_usage(
        FLEET_SIG_ALGS,
        &anchors.anchors,
        intermediates,
        UnixTime::since_unix_epoch(Duration::from_secs(now_unix)),
        usage.key_usage(),
        None,
        None,
    )
    .map_err(IdentityError::Chain)?;
    Ok(())
}
