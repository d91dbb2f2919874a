//! Issuing fleet certificates with rcgen.

use core::fmt;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use esync_proto::id::{DevicePath, ListenerName, Vin};
use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::error::IdentityError;
use crate::identity::{Role, MAX_CERT_DER_LEN};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// A certificate's validity period, in Unix seconds (both ends inclusive, as
/// in X.509).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// First second the certificate is valid.
    pub not_before_unix: i64,
    /// Last second the certificate is valid.
    pub not_after_unix: i64,
}

impl Validity {
    /// A validity period; refuses one that ends before it starts.
    pub fn new(not_before_unix: i64, not_after_unix: i64) -> Result<Self, IdentityError> {
        let v = Self {
            not_before_unix,
            not_after_unix,
        };
        v.check()?;
        Ok(v)
    }

    /// Valid from `now_unix` for `days` days. The start is exactly `now_unix`:
    /// subtract a margin yourself if the verifying clocks may lag.
    pub fn days_from(now_unix: i64, days: u32) -> Self {
        Self {
            not_before_unix: now_unix,
            not_after_unix: now_unix.saturating_add(i64::from(days).saturating_mul(DAY)),
        }
    }

    /// Whether `t_unix` lies inside the period.
    pub fn contains(&self, t_unix: i64) -> bool {
        self.not_before_unix <= t_unix && t_unix <= self.not_after_unix
    }

    fn check(&self) -> Result<(), IdentityError> {
        if self.not_after_unix < self.not_before_unix {
            return Err(IdentityError::Validity("not_after is before not_before"));
        }
        Ok(())
    }

    fn to_rcgen(self) -> Result<(OffsetDateTime, OffsetDateTime), IdentityError> {
        self.check()?;
        let conv = |t: i64| {
            OffsetDateTime::from_unix_timestamp(t)
                .map_err(|_| IdentityError::Validity("time outside the representable range"))
        };
        Ok((conv(self.not_before_unix)?, conv(self.not_after_unix)?))
    }
}

/// A certificate with its freshly generated ed25519 key.
///
/// The key is secret: `key_pkcs8_der`, `key_pem()` and `signing_key` must be
/// stored only where the holder's secrets live. `Debug` does not print it.
#[derive(Clone)]
pub struct IssuedIdentity {
    /// The end-entity certificate, DER.
    pub cert_der: Vec<u8>,
    /// The issuing CA certificates, DER, from the direct issuer up to **and
    /// including** the fleet root (so `[root]` when the fleet root issued it
    /// directly). This is what a TLS peer sends after its own certificate.
    pub chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 v2 DER (secret).
    pub key_pkcs8_der: Vec<u8>,
    /// The same key as an ed25519-dalek signing key; it signs in-vehicle
    /// envelopes and its verifying key is the certificate's public key.
    pub signing_key: SigningKey,
}

impl IssuedIdentity {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// The certificate followed by its issuing chain, PEM.
    pub fn chain_pem(&self) -> String {
        let mut out = self.cert_pem();
        for c in &self.chain {
            out.push_str(&pem_encode("CERTIFICATE", c));
        }
        out
    }

    /// The private key, PKCS#8 PEM (`PRIVATE KEY`). Secret.
    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.key_pkcs8_der)
    }

    /// Loads an identity from PEM: `cert_chain_pem` holds the certificate
    /// then its issuers (as written by [`chain_pem`](Self::chain_pem)),
    /// `key_pem` the PKCS#8 key. Refuses a key that is not the certificate's.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let mut certs = read_cert_pems(cert_chain_pem)?.into_iter();
        let cert_der = certs
            .next()
            .ok_or(IdentityError::Pem("no certificate in the chain PEM"))?;
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| IdentityError::Pem("private key"))?;
        let key_pkcs8_der = key.secret_pkcs8_der().to_vec();
        let signing_key = SigningKey::from_pkcs8_der(&key_pkcs8_der)
            .map_err(|_| IdentityError::Key("not an ed25519 PKCS#8 key"))?;
        let cert_key = crate::identity::parse_identity(&cert_der)?.verifying_key;
        if cert_key != signing_key.verifying_key() {
            return Err(IdentityError::Key("key does not match the certificate"));
        }
        Ok(Self {
            cert_der,
            chain: certs.collect(),
            key_pkcs8_der,
            signing_key,
        })
    }
}

impl fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("cert_der_len", &self.cert_der.len())
            .field("chain_len", &self.chain.len())
            .field("verifying_key", &self.signing_key.verifying_key())
            .finish_non_exhaustive()
    }
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Reads every `CERTIFICATE` block of a PEM text (at most 16).
fn read_cert_pems(text: &str) -> Result<Vec<Vec<u8>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .take(17)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| IdentityError::Pem("certificate"))?;
    if certs.len() > 16 {
        return Err(IdentityError::Pem("more than 16 certificates"));
    }
    if let Some(big) = certs.iter().find(|c| c.len() > MAX_CERT_DER_LEN) {
        return Err(IdentityError::CertificateTooLarge {
            len: big.len(),
            max: MAX_CERT_DER_LEN,
        });
    }
    Ok(certs)
}

/// A random positive 16-byte serial number.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    // Positive, and no leading zero byte, so the DER INTEGER keeps 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn new_ed25519_key() -> Result<(KeyPair, SigningKey), IdentityError> {
    let kp = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let sk = SigningKey::from_pkcs8_der(kp.serialized_der())
        .map_err(|_| IdentityError::Key("generated key is not ed25519 PKCS#8"))?;
    if sk.verifying_key().as_bytes().as_slice() != kp.public_key_raw() {
        return Err(IdentityError::Key("generated key pair is inconsistent"));
    }
    Ok((kp, sk))
}

/// The fleet's certificate authority: issues the certificates of vehicles,
/// Agents, listeners and servers.
///
/// Holds the CA's private key: [`key_pem`](Self::key_pem) is secret and must
/// only be persisted where the Server keeps its offline secrets.
pub struct FleetCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    /// This CA's issuers up to the root (empty for a root).
    parents: Vec<Vec<u8>>,
}

impl fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetCa")
            .field("cert_der_len", &self.cert_der.len())
            .field("parents", &self.parents.len())
            .finish_non_exhaustive()
    }
}

fn ca_params(
    common_name: &str,
    validity: Validity,
    path_len: BasicConstraints,
) -> Result<CertificateParams, IdentityError> {
    let (nb, na) = validity.to_rcgen()?;
    let mut params = CertificateParams::default();
    params.not_before = nb;
    params.not_after = na;
    params.serial_number = Some(random_serial());
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(path_len);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl FleetCa {
    /// A new self-signed ed25519 root CA.
    pub fn new(common_name: &str, validity: Validity) -> Result<Self, IdentityError> {
        let params = ca_params(common_name, validity, BasicConstraints::Unconstrained)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            parents: Vec::new(),
        })
    }

    /// Loads a CA from PEM: `cert_pem` holds the CA certificate, optionally
    /// followed by its own issuers up to the root (for an intermediate CA);
    /// `key_pem` its PKCS#8 key. Refuses a key that is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let mut certs = read_cert_pems(cert_pem)?.into_iter();
        let cert_der = certs
            .next()
            .ok_or(IdentityError::Pem("no CA certificate"))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| IdentityError::Key("CA key PEM could not be decoded"))?;
        if key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(IdentityError::Key("CA key is not ed25519"));
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| IdentityError::Parse(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(IdentityError::Key("certificate is not a CA certificate"));
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(IdentityError::Key("key does not match the CA certificate"));
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), key)?;
        Ok(Self {
            issuer,
            cert_der,
            parents: certs.collect(),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    /// The CA certificate, PEM, followed by its issuers for an intermediate
    /// (the form [`from_pem`](Self::from_pem) reads).
    pub fn cert_pem(&self) -> String {
        let mut out = pem_encode("CERTIFICATE", &self.cert_der);
        for c in &self.parents {
            out.push_str(&pem_encode("CERTIFICATE", c));
        }
        out
    }

    /// The CA's private key, PKCS#8 PEM. **Secret**: persist it only where
    /// the fleet's offline secrets are kept.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The root of this CA's chain (itself for a root CA), DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.parents.last().unwrap_or(&self.cert_der).clone()
    }

    /// Issues an intermediate CA (path length 0: it may only issue end entities).
    pub fn issue_intermediate(
        &self,
        common_name: &str,
        validity: Validity,
    ) -> Result<FleetCa, IdentityError> {
        let mut params = ca_params(common_name, validity, BasicConstraints::Constrained(0))?;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut parents = Vec::with_capacity(self.parents.len() + 1);
        parents.push(self.cert_der.clone());
        parents.extend(self.parents.iter().cloned());
        Ok(FleetCa {
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            parents,
        })
    }

    /// Issues the certificate of a vehicle's Client (`esync://vehicle/<VIN>`).
    ///
    /// It is good for TLS client authentication (to the Server) and server
    /// authentication (the in-vehicle broker Agents connect to).
    pub fn issue_vehicle(
        &self,
        vin: &Vin,
        validity: Validity,
    ) -> Result<IssuedIdentity, IdentityError> {
        let role = Role::Vehicle { vin: vin.clone() };
        self.issue_participant(
            &role,
            &[
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            validity,
        )
    }

    /// Issues an Agent's certificate
    /// (`esync://vehicle/<VIN>/device/<path without leading slash>`), good
    /// for TLS client authentication.
    pub fn issue_agent(
        &self,
        vin: &Vin,
        device: &DevicePath,
        validity: Validity,
    ) -> Result<IssuedIdentity, IdentityError> {
        let role = Role::Agent {
            vin: vin.clone(),
            device: device.clone(),
        };
        self.issue_participant(&role, &[ExtendedKeyUsagePurpose::ClientAuth], validity)
    }

    /// Issues a listener's certificate (`esync://vehicle/<VIN>/listener/<name>`),
    /// good for TLS client authentication.
    pub fn issue_listener(
        &self,
        vin: &Vin,
        name: &ListenerName,
        validity: Validity,
    ) -> Result<IssuedIdentity, IdentityError> {
        let role = Role::Listener {
            vin: vin.clone(),
            name: name.clone(),
        };
        self.issue_participant(&role, &[ExtendedKeyUsagePurpose::ClientAuth], validity)
    }

    /// Issues a Server certificate for `dns_names` (an entry that parses as
    /// an IP address, e.g. `127.0.0.1`, becomes an IP SAN; `localhost` is an
    /// ordinary DNS name), good for TLS server authentication.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        validity: Validity,
    ) -> Result<IssuedIdentity, IdentityError> {
        if dns_names.is_empty() {
            return Err(IdentityError::NoIdentity);
        }
        let params = CertificateParams::new(dns_names.to_vec())?;
        let cn = dns_names.first().map_or("esync server", String::as_str);
        self.issue_with(params, cn, &[ExtendedKeyUsagePurpose::ServerAuth], validity)
    }

    fn issue_participant(
        &self,
        role: &Role,
        ekus: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Result<IssuedIdentity, IdentityError> {
        let uri = role
            .esync_uri()
            .ok_or(IdentityError::WrongRole("a server has no esync URI"))?;
        self.issue_with_sans(vec![uri.clone()], &uri, ekus, validity)
    }

    /// Issues an end-entity certificate whose SANs are the given URIs, as is
    /// (no checking: tests use it to make malformed certificates).
    pub(crate) fn issue_with_sans(
        &self,
        uris: Vec<String>,
        common_name: &str,
        ekus: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Result<IssuedIdentity, IdentityError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .into_iter()
            .map(|u| Ok(SanType::URI(u.try_into()?)))
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        self.issue_with(params, common_name, ekus, validity)
    }

    pub(crate) fn issue_with(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        ekus: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Result<IssuedIdentity, IdentityError> {
        let (nb, na) = validity.to_rcgen()?;
        params.not_before = nb;
        params.not_after = na;
        params.serial_number = Some(random_serial());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus.to_vec();
        params.use_authority_key_identifier_extension = true;
        let (key, signing_key) = new_ed25519_key()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = Vec::with_capacity(self.parents.len() + 1);
        chain.push(self.cert_der.clone());
        chain.extend(self.parents.iter().cloned());
        Ok(IssuedIdentity {
            cert_der: cert.der().to_vec(),
            chain,
            key_pkcs8_der: key.serialize_der(),
            signing_key,
        })
    }
}
