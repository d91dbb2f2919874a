//! Identities carried in certificates: where they live, how they are read and
//! how an envelope's claimed sender is checked against them.

use core::fmt;
use std::net::IpAddr;

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::VerifyingKey;
use esync_proto::id::{DevicePath, ListenerName, Vin};
use esync_proto::message::Participant;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::IdentityError;

/// Largest certificate accepted, in DER bytes (checked before parsing).
pub const MAX_CERT_DER_LEN: usize = 16 * 1024;
/// Longest `esync:` URI accepted, in bytes.
pub const MAX_ESYNC_URI_LEN: usize = 512;
/// Most subject alternative names looked at in one certificate.
pub const MAX_SANS: usize = 64;

/// The URI prefix every vehicle participant's SAN starts with.
pub const ESYNC_URI_PREFIX: &str = "esync://vehicle/";

/// Who a certificate identifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A vehicle's Client (the vehicle gateway): `esync://vehicle/<VIN>`.
    Vehicle {
        /// The vehicle.
        vin: Vin,
    },
    /// An Agent: `esync://vehicle/<VIN>/device/<path without leading slash>`.
    Agent {
        /// The vehicle the Agent belongs to.
        vin: Vin,
        /// The Agent's device path.
        device: DevicePath,
    },
    /// A listener (HMI, policy engine): `esync://vehicle/<VIN>/listener/<name>`.
    Listener {
        /// The vehicle the listener belongs to.
        vin: Vin,
        /// The listener's name.
        name: ListenerName,
    },
    /// A Server: no esync URI, named by DNS (and IP) SANs.
    Server {
        /// The DNS names, then the IP addresses (as text), the certificate names.
        dns_names: Vec<String>,
    },
}

impl Role {
    /// The SAN URI for a vehicle participant (`None` for a server).
    pub fn esync_uri(&self) -> Option<String> {
        match self {
            Role::Vehicle { vin } => Some(format!("{ESYNC_URI_PREFIX}{vin}")),
            Role::Agent { vin, device } => Some(format!(
                "{ESYNC_URI_PREFIX}{vin}/device/{}",
                device.as_str().trim_start_matches('/')
            )),
            Role::Listener { vin, name } => {
                Some(format!("{ESYNC_URI_PREFIX}{vin}/listener/{name}"))
            }
            Role::Server { .. } => None,
        }
    }

    /// The vehicle this role belongs to (`None` for a server).
    pub fn vin(&self) -> Option<&Vin> {
        match self {
            Role::Vehicle { vin } | Role::Agent { vin, .. } | Role::Listener { vin, .. } => {
                Some(vin)
            }
            Role::Server { .. } => None,
        }
    }

    /// The in-vehicle participant this role speaks as (`None` for a server).
    pub fn participant(&self) -> Option<Participant> {
        match self {
            Role::Vehicle { .. } => Some(Participant::Client),
            Role::Agent { device, .. } => Some(Participant::Device(device.clone())),
            Role::Listener { name, .. } => Some(Participant::Listener(name.clone())),
            Role::Server { .. } => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.esync_uri() {
            Some(uri) => f.write_str(&uri),
            None => f.write_str("server"),
        }
    }
}

/// What a certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Who the certificate identifies.
    pub role: Role,
    /// The certificate's ed25519 key; for vehicle participants it is also the
    /// key that verifies their in-vehicle envelopes.
    pub verifying_key: VerifyingKey,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
    /// The serial number as lower-case hex of its DER content bytes.
    pub serial_hex: String,
}

impl PeerIdentity {
    /// The in-vehicle participant: Vehicle → `Client`, Agent → `Device(path)`,
    /// Listener → `Listener(name)`, Server → `None`.
    pub fn participant(&self) -> Option<Participant> {
        self.role.participant()
    }

    /// The VIN of a vehicle participant (`None` for a server).
    pub fn vin(&self) -> Option<&Vin> {
        self.role.vin()
    }
}

/// Parses the role out of one `esync:` URI.
pub fn parse_esync_uri(uri: &str) -> Result<Role, IdentityError> {
    if uri.len() > MAX_ESYNC_URI_LEN {
        return Err(IdentityError::MalformedUri {
            reason: "longer than 512 bytes",
        });
    }
    let rest = uri
        .strip_prefix(ESYNC_URI_PREFIX)
        .ok_or(IdentityError::MalformedUri {
            reason: "does not start with esync://vehicle/",
        })?;
    let (vin_str, tail) = match rest.split_once('/') {
        Some((v, t)) => (v, Some(t)),
        None => (rest, None),
    };
    let vin = Vin::new(vin_str).map_err(|source| IdentityError::InvalidId {
        what: "VIN",
        source,
    })?;
    let Some(tail) = tail else {
        return Ok(Role::Vehicle { vin });
    };
    if let Some(path) = tail.strip_prefix("device/") {
        let device =
            DevicePath::new(format!("/{path}")).map_err(|source| IdentityError::InvalidId {
                what: "device path",
                source,
            })?;
        Ok(Role::Agent { vin, device })
    } else if let Some(name) = tail.strip_prefix("listener/") {
        let name = ListenerName::new(name).map_err(|source| IdentityError::InvalidId {
            what: "listener name",
            source,
        })?;
        Ok(Role::Listener { vin, name })
    } else {
        Err(IdentityError::MalformedUri {
            reason: "after the VIN only /device/<path> or /listener/<name> may follow",
        })
    }
}

fn is_esync_uri(uri: &str) -> bool {
    uri.get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("esync:"))
}

fn ip_from_san(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Reads the identity from a DER certificate with x509-parser.
///
/// This does **not** check the chain, validity period or signature: use
/// [`validate_chain`](crate::validate_chain) (or a rustls verifier) for that.
/// It refuses certificates that are too large, carry trailing bytes, are CA
/// certificates, do not hold an ed25519 key, carry several `esync:` URIs, or
/// whose single `esync:` URI is malformed. A certificate without any `esync:`
/// URI is a [`Role::Server`] and must carry at least one DNS or IP SAN.
pub fn parse_identity(cert_der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    parse_identity_with_eku(cert_der).map(|(id, _)| id)
}

/// The TLS purposes listed in a certificate's extended key usage extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsPurposes {
    /// `id-kp-clientAuth` listed.
    pub(crate) client_auth: bool,
    /// `id-kp-serverAuth` listed.
    pub(crate) server_auth: bool,
}

/// [`parse_identity`], also returning the EKU purposes (none when the
/// extension is absent).
pub(crate) fn parse_identity_with_eku(
    cert_der: &[u8],
) -> Result<(PeerIdentity, TlsPurposes), IdentityError> {
    if cert_der.len() > MAX_CERT_DER_LEN {
        return Err(IdentityError::CertificateTooLarge {
            len: cert_der.len(),
            max: MAX_CERT_DER_LEN,
        });
    }
    let (rest, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::TrailingData(rest.len()));
    }
    if cert.is_ca() {
        return Err(IdentityError::IsCa);
    }
    let verifying_key = VerifyingKey::from_public_key_der(cert.public_key().raw)
        .map_err(|_| IdentityError::NotEd25519)?;

    let sans = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Parse(format!("subject alternative names: {e}")))?;
    let names: &[GeneralName<'_>] = match &sans {
        Some(ext) => &ext.value.general_names,
        None => &[],
    };
    if names.len() > MAX_SANS {
        return Err(IdentityError::Parse(format!(
            "{} subject alternative names exceed the limit of {MAX_SANS}",
            names.len()
        )));
    }

    let mut esync_uris = names.iter().filter_map(|n| match n {
        GeneralName::URI(u) if is_esync_uri(u) => Some(*u),
        _ => None,
    });
    let role = match (esync_uris.next(), esync_uris.next()) {
        (Some(uri), None) => parse_esync_uri(uri)?,
        (Some(_), Some(_)) => {
            return Err(IdentityError::MultipleEsyncUris(2 + esync_uris.count()));
        }
        (None, _) => {
            let mut dns_names: Vec<String> = names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect();
            dns_names.extend(names.iter().filter_map(|n| match n {
                GeneralName::IPAddress(b) => ip_from_san(b).map(|ip| ip.to_string()),
                _ => None,
            }));
            if dns_names.is_empty() {
                return Err(IdentityError::NoIdentity);
            }
            Role::Server { dns_names }
        }
    };

    let purposes = match cert
        .extended_key_usage()
        .map_err(|e| IdentityError::Parse(format!("extended key usage: {e}")))?
    {
        Some(eku) => TlsPurposes {
            client_auth: eku.value.client_auth,
            server_auth: eku.value.server_auth,
        },
        None => TlsPurposes::default(),
    };

    let validity = cert.validity();
    Ok((
        PeerIdentity {
            role,
            verifying_key,
            not_before_unix: validity.not_before.timestamp(),
            not_after_unix: validity.not_after.timestamp(),
            serial_hex: hex::encode(cert.raw_serial()),
        },
        purposes,
    ))
}

/// Checks that an envelope's claimed sender is the participant the
/// certificate names, and, when `expected_vin` is given, that the certificate
/// belongs to that vehicle.
///
/// A server certificate never matches an in-vehicle sender.
pub fn check_sender(
    identity: &PeerIdentity,
    claimed: &Participant,
    expected_vin: Option<&Vin>,
) -> Result<(), IdentityError> {
    if let Some(expected) = expected_vin {
        match identity.vin() {
            Some(vin) if vin == expected => {}
            other => {
                return Err(IdentityError::VinMismatch {
                    expected: expected.to_string(),
                    certified: other.map_or_else(|| "none".to_owned(), ToString::to_string),
                })
            }
        }
    }
    match identity.participant() {
        Some(ref certified) if certified == claimed => Ok(()),
        certified => Err(IdentityError::SenderMismatch {
            claimed: claimed.to_string(),
            certified: certified.map_or_else(|| "server".to_owned(), |p| p.to_string()),
        }),
    }
}
