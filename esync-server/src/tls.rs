//! rustls server configurations of the Server's two listeners.
//!
//! * The **device listener** requires mutual TLS: the vehicle presents a
//!   certificate chaining to the fleet CA, checked by rustls'
//!   `WebPkiClientVerifier` *with the fleet CRLs* (revocation is rustls-webpki's,
//!   none of ours). When a certificate is revoked the caller signs a new CRL
//!   ([`crate::provision::Provisioner::crl_der`]) and calls
//!   [`DeviceTls::reload_crls`]; connections accepted afterwards use it.
//! * The **admin listener** is TLS server-only (operators authenticate with
//!   bearer tokens in HTTP).
//!
//! The vehicle's identity (VIN, role) comes from the peer certificate through
//! `esync_identity`, never from a request body: [`device_peer`].

use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use esync_identity::{peer_identity_from_certs, IdentityError, IssuedIdentity, Role, TrustAnchors};
use esync_proto::id::Vin;

/// Largest CRL accepted when loading (DER bytes).
pub const MAX_CRL_DER_LEN: usize = 64 * 1024 * 1024;

/// What can go wrong while building a TLS configuration or reading a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the configuration (certificate, key, CRL).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. a CRL that
    /// does not parse).
    #[error("client verifier refused: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A CRL is larger than [`MAX_CRL_DER_LEN`].
    #[error("CRL of {0} bytes exceeds the limit")]
    CrlTooLarge(usize),
    /// The peer certificate does not parse as a fleet identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The peer is a fleet participant but not a vehicle's Client.
    #[error("peer {0} is not a vehicle Client")]
    NotAVehicle(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain_of(identity: &IssuedIdentity) -> Vec<CertificateDer<'static>> {
    let mut chain = vec![CertificateDer::from(identity.cert_der.clone())];
    chain.extend(identity.chain.iter().cloned().map(CertificateDer::from));
    chain
}

fn key_of(identity: &IssuedIdentity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(identity.key_pkcs8_der.clone().into())
}

/// The device listener's configuration, rebuilt when the CRLs change.
#[derive(Debug)]
pub struct DeviceTls {
    identity: IssuedIdentity,
    anchors: TrustAnchors,
    current: RwLock<Arc<ServerConfig>>,
}

fn device_config(
    identity: &IssuedIdentity,
    anchors: &TrustAnchors,
    crls: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, TlsError> {
    for c in crls {
        if c.len() > MAX_CRL_DER_LEN {
            return Err(TlsError::CrlTooLarge(c.len()));
        }
    }
    let provider = provider();
    let crls = crls
        .iter()
        .map(|c| CertificateRevocationListDer::from(c.clone()))
        .collect::<Vec<_>>();
    // Every certificate of the chain must have a CRL from its issuer (rustls'
    // default: unknown revocation status is an error) and expired CRLs are
    // refused, so a Server that stopped refreshing its CRL fails closed.
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(anchors.root_cert_store()),
        Arc::clone(&provider),
    )
    .with_crls(crls)
    .enforce_revocation_expiration()
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain_of(identity), key_of(identity))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl DeviceTls {
    /// A device listener presenting `identity` (a Server certificate),
    /// accepting client certificates chaining to `anchors` and not revoked by
    /// `crls` (DER, one per issuing CA).
    pub fn new(
        identity: IssuedIdentity,
        anchors: TrustAnchors,
        crls: &[Vec<u8>],
    ) -> Result<Self, TlsError> {
        let config = device_config(&identity, &anchors, crls)?;
        Ok(Self {
            identity,
            anchors,
            current: RwLock::new(config),
        })
    }

    /// Replaces the CRLs; new connections use them. On error the previous
    /// configuration stays in force.
    pub fn reload_crls(&self, crls: &[Vec<u8>]) -> Result<(), TlsError> {
        let config = device_config(&self.identity, &self.anchors, crls)?;
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = config;
        Ok(())
    }

    /// The configuration for the next accepted connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The admin listener's configuration: TLS 1.3 server-only.
pub fn admin_tls_config(identity: &IssuedIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain_of(identity), key_of(identity))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The vehicle a device connection speaks for, from its verified peer
/// certificate (rustls' `peer_certificates()`): only a vehicle's Client
/// (`esync://vehicle/<VIN>`) is accepted on the device listener.
pub fn device_peer(peer_certs: Option<&[CertificateDer<'_>]>) -> Result<Vin, TlsError> {
    let certs = peer_certs.ok_or(IdentityError::NoPeerCertificate)?;
    let id = peer_identity_from_certs(certs)?;
    match id.role {
        Role::Vehicle { vin } => Ok(vin),
        other => Err(TlsError::NotAVehicle(other.to_string())),
    }
}
