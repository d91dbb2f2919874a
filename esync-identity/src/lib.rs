//! X.509 identities of the esync fleet: issuance with rcgen, parsing with
//! x509-parser, chain validation with rustls-webpki and mutual-TLS
//! configurations for rustls.
//!
//! # Where identities live in certificates
//!
//! Every key is **ed25519**. For vehicle participants the same key pair signs
//! the in-vehicle envelopes, so the key in the certificate's
//! SubjectPublicKeyInfo ([`PeerIdentity::verifying_key`]) is the envelope
//! verifying key.
//!
//! Each vehicle participant's certificate carries **exactly one** URI in its
//! subject alternative names whose scheme is `esync:` (compared without case;
//! other URIs are ignored). Its form, checked byte for byte:
//!
//! | participant | SAN URI | [`Participant`](esync_proto::message::Participant) |
//! | --- | --- | --- |
//! | Client (vehicle gateway) | `esync://vehicle/<VIN>` | `Client` |
//! | Agent | `esync://vehicle/<VIN>/device/<device path without its leading />` | `Device(path)` |
//! | Listener (HMI, policy engine) | `esync://vehicle/<VIN>/listener/<name>` | `Listener(name)` |
//! | Server | no `esync:` URI; DNS (and IP) SANs | none |
//!
//! For example `esync://vehicle/WVWZZZ1JZXW000001/device/powertrain/ecm` is
//! the Agent with device path `/powertrain/ecm` in vehicle
//! `WVWZZZ1JZXW000001`. The VIN, device path and listener name are validated
//! with [`esync_proto::id`] types ([`Vin`](esync_proto::id::Vin),
//! [`DevicePath`](esync_proto::id::DevicePath),
//! [`ListenerName`](esync_proto::id::ListenerName)); no percent-encoding is
//! used or accepted. Two or more `esync:` URIs, or a malformed one, make the
//! certificate unusable. The subject CN repeats the URI for readability but is
//! never read.
//!
//! Extended key usage: vehicle Clients carry `clientAuth` and `serverAuth`
//! (they are TLS clients of the Server and the TLS server of the in-vehicle
//! broker), Agents and listeners `clientAuth`, servers `serverAuth`.
//!
//! # Validation
//!
//! [`validate_chain`] hands chain building and checking to rustls-webpki
//! (ed25519 signatures only, validity at an injected time, EKU), then
//! [`parse_identity`] reads the role. [`check_sender`] then ties an envelope's
//! claimed sender to the certificate. No chain logic is written here.
//!
//! The CA (issuance) and TLS helpers read randomness from the OS; parsing and
//! validation take the time as an argument and do no I/O.

#![forbid(unsafe_code)]

mod error;
mod identity;
mod issue;
mod tls;
mod validate;

#[cfg(test)]
mod tests;

pub use error::IdentityError;
pub use identity::{
    check_sender, parse_esync_uri, parse_identity, PeerIdentity, Role, ESYNC_URI_PREFIX,
    MAX_CERT_DER_LEN, MAX_ESYNC_URI_LEN, MAX_SANS,
};
pub use issue::{FleetCa, IssuedIdentity, Validity};
pub use tls::{
    client_tls_config, peer_identity_from_certs, server_tls_config, vehicle_client_tls_config,
    VehiclePeerVerifier,
};
pub use validate::{validate_chain, TrustAnchors, Usage, MAX_INTERMEDIATES, MAX_TRUST_ANCHORS};
