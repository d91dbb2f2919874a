//! rustls configurations for mutual TLS between fleet participants.
//!
//! All configurations use the *ring* provider and TLS 1.3 only. Servers
//! require a client certificate and verify it against the fleet CA with
//! rustls' `WebPkiClientVerifier`; clients verify the server with rustls'
//! `WebPkiServerVerifier` (chain and DNS/IP name), or, for the in-vehicle
//! broker whose certificate names a vehicle instead of a host, with
//! [`VehiclePeerVerifier`] (chain via rustls-webpki, then the esync identity).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use esync_proto::id::Vin;

use crate::error::IdentityError;
use crate::identity::{parse_identity, parse_identity_with_eku, Role};
use crate::issue::IssuedIdentity;
use crate::validate::{verify_with_webpki, TrustAnchors, Usage, MAX_INTERMEDIATES};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert_chain(identity: &IssuedIdentity) -> Vec<CertificateDer<'static>> {
    let mut chain = Vec::with_capacity(identity.chain.len() + 1);
    chain.push(CertificateDer::from(identity.cert_der.clone()));
    chain.extend(identity.chain.iter().cloned().map(CertificateDer::from));
    chain
}

fn private_key(identity: &IssuedIdentity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8_der.clone()))
}

/// A TLS 1.3 server configuration presenting `identity` and requiring every
/// client to present a certificate that chains to `anchors` (rustls'
/// `WebPkiClientVerifier`). Read the client's identity after the handshake
/// with [`peer_identity_from_certs`].
///
/// Any participant of the fleet is accepted here (any role, any vehicle):
/// the caller must check the peer's [`Role`] and VIN after the handshake
/// (e.g. a vehicle's broker accepts only its own VIN's Agents and listeners,
/// the Server only [`Role::Vehicle`]).
pub fn server_tls_config(
    identity: &IssuedIdentity,
    anchors: &TrustAnchors,
) -> Result<Arc<ServerConfig>, IdentityError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(anchors.root_cert_store()),
        Arc::clone(&provider),
    )
    .build()?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain(identity), private_key(identity))?;
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration presenting `identity` and verifying the
/// server against `anchors` and the server name given at connection time
/// (rustls' `WebPkiServerVerifier`).
pub fn client_tls_config(
    identity: &IssuedIdentity,
    anchors: &TrustAnchors,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(anchors.root_cert_store())
        .with_client_auth_cert(cert_chain(identity), private_key(identity))?;
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration for an Agent or listener connecting to its
/// vehicle's broker: the server must present a certificate of the Client of
/// vehicle `vin` (`esync://vehicle/<VIN>`, EKU serverAuth) chaining to
/// `anchors`. The server name passed when connecting is not checked (the
/// broker's certificate names a vehicle, not a host); any valid name such as
/// `vehicle.invalid` will do.
pub fn vehicle_client_tls_config(
    identity: &IssuedIdentity,
    anchors: &TrustAnchors,
    vin: &Vin,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let provider = provider();
    let verifier = Arc::new(VehiclePeerVerifier {
        anchors: anchors.clone(),
        vin: vin.clone(),
        algs: provider.signature_verification_algorithms,
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(cert_chain(identity), private_key(identity))?;
    Ok(Arc::new(config))
}

/// Verifies that a TLS server is the Client of one vehicle: the chain is
/// checked by rustls-webpki (ed25519, validity at the handshake time, EKU
/// serverAuth), then the certificate must name exactly
/// `esync://vehicle/<VIN>`. The TLS server name is not used.
#[derive(Debug)]
pub struct VehiclePeerVerifier {
    anchors: TrustAnchors,
    vin: Vin,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for VehiclePeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if intermediates.len() > MAX_INTERMEDIATES {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        verify_with_webpki(
            end_entity,
            intermediates,
            &self.anchors,
            now.as_secs(),
            Usage::ServerAuth,
        )
        .map_err(to_rustls_error)?;
        let (identity, purposes) = parse_identity_with_eku(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        if !purposes.server_auth {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        match identity.role {
            Role::Vehicle { ref vin } if *vin == self.vin => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Maps a chain or parse error to the rustls certificate error that names it.
fn to_rustls_error(e: IdentityError) -> rustls::Error {
    use rustls::CertificateError as C;
    let kind = match e {
        IdentityError::Chain(webpki::Error::CertExpired { .. }) => C::Expired,
        IdentityError::Chain(webpki::Error::CertNotValidYet { .. }) => C::NotValidYet,
        IdentityError::Chain(webpki::Error::UnknownIssuer) => C::UnknownIssuer,
        IdentityError::Chain(webpki::Error::InvalidSignatureForPublicKey) => C::BadSignature,
        IdentityError::Chain(webpki::Error::RequiredEkuNotFoundContext(_)) => C::InvalidPurpose,
        IdentityError::Chain(webpki::Error::BadDer) | IdentityError::Parse(_) => C::BadEncoding,
        other => C::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(kind)
}

/// After a handshake: reads the identity from the peer's end-entity
/// certificate (the first of `certs`, as rustls' `peer_certificates()`
/// returns them). rustls has already validated the chain; this only parses.
pub fn peer_identity_from_certs(
    certs: &[CertificateDer<'_>],
) -> Result<crate::identity::PeerIdentity, IdentityError> {
    let first = certs.first().ok_or(IdentityError::NoPeerCertificate)?;
    parse_identity(first)
}
