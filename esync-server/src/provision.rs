//! Provisioning: the fleet CA issues vehicle and Agent certificates from
//! certificate signing requests, revokes them and publishes the CRL that the
//! device listener hands to rustls (`crate::tls`).
//!
//! The CSR contributes **only its public key** (after rcgen has checked the
//! request's self-signature): the subject, SANs, key usages and validity come
//! from the CA, so a vehicle cannot ask for another VIN or a CA certificate.
//! Certificates are built with rcgen; CRLs are signed with rcgen; nothing here
//! checks revocation itself (rustls-webpki does that in the TLS handshake).

use std::collections::BTreeMap;

use rand_core::{OsRng, RngCore};
use rcgen::{
    CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;

use esync_identity::{parse_identity, FleetCa, IdentityError, Role, Validity};
use esync_proto::id::{DevicePath, Vin};

/// Largest CSR accepted (DER bytes); an ed25519 CSR is about 200 bytes.
pub const MAX_CSR_DER_LEN: usize = 8 * 1024;

/// Largest number of revoked certificates kept in one CRL.
pub const MAX_REVOKED: usize = 1_000_000;

/// What can go wrong while provisioning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The CSR is larger than [`MAX_CSR_DER_LEN`].
    #[error("CSR of {len} bytes exceeds the {max}-byte limit")]
    CsrTooLarge {
        /// Length received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CSR could not be parsed or its self-signature is invalid.
    #[error("CSR refused: {0}")]
    Csr(rcgen::Error),
    /// The CSR's key is not ed25519 (the fleet's only certificate key type).
    #[error("CSR key is not ed25519")]
    CsrKeyType,
    /// rcgen could not build or sign a certificate or CRL.
    #[error("certificate or CRL could not be signed: {0}")]
    Sign(rcgen::Error),
    /// An identity error (CA loading, parsing an issued certificate).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A time outside what X.509 can represent.
    #[error("time outside the representable range")]
    Time,
    /// The serial number is not valid hex of 1 to 20 bytes.
    #[error("serial number is not 1 to 20 bytes of hex")]
    Serial,
    /// Too many revoked certificates.
    #[error("revocation list is full ({0} entries)")]
    CrlFull(usize),
}

/// A certificate issued from a CSR (the holder keeps its private key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The issuing chain, from the fleet CA up to and including the root.
    pub chain: Vec<Vec<u8>>,
    /// Who the certificate names.
    pub role: Role,
    /// Serial number, lower-case hex of its DER content bytes (as
    /// `esync_identity::PeerIdentity::serial_hex`).
    pub serial_hex: String,
}

/// The fleet CA with its revocation list.
pub struct Provisioner {
    ca: FleetCa,
    issuer: Issuer<'static, KeyPair>,
    chain: Vec<Vec<u8>>,
    /// serial (DER content bytes) → revocation time (Unix seconds).
    revoked: BTreeMap<Vec<u8>, i64>,
    crl_number: u64,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("ca", &self.ca)
            .field("revoked", &self.revoked.len())
            .field("crl_number", &self.crl_number)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn to_time(t: i64) -> Result<OffsetDateTime, ProvisionError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(|_| ProvisionError::Time)
}

impl Provisioner {
    /// Wraps `ca` (which must hold its key) with an empty revocation list.
    pub fn new(ca: FleetCa) -> Result<Self, ProvisionError> {
        let key = KeyPair::from_pem(&ca.key_pem()).map_err(ProvisionError::Sign)?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca.cert_der()), key)
            .map_err(ProvisionError::Sign)?;
        let mut chain = vec![ca.cert_der()];
        let root = ca.root_der();
        if root != ca.cert_der() {
            // An intermediate: FleetCa::cert_pem lists the parents after it.
            use rustls_pki_types::pem::PemObject;
            chain = CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
                .take(esync_identity::MAX_INTERMEDIATES + 2)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| IdentityError::Pem("CA chain"))?;
        }
        Ok(Self {
            ca,
            issuer,
            chain,
            revoked: BTreeMap::new(),
            crl_number: 0,
        })
    }

    /// The CA.
    pub fn ca(&self) -> &FleetCa {
        &self.ca
    }

    /// Restores revocations (serial hex → revocation time) persisted earlier.
    pub fn restore_revoked(
        &mut self,
        entries: impl IntoIterator<Item = (String, i64)>,
    ) -> Result<(), ProvisionError> {
        for (serial, at) in entries {
            self.revoke(&serial, at)?;
        }
        Ok(())
    }

    /// Revoked serials (hex) with their revocation times.
    pub fn revoked(&self) -> impl Iterator<Item = (String, i64)> + '_ {
        self.revoked.iter().map(|(s, t)| (hex::encode(s), *t))
    }

    /// Issues the certificate of vehicle `vin`'s Client for the key in `csr_der`.
    pub fn issue_vehicle(
        &self,
        csr_der: &[u8],
        vin: &Vin,
        validity: Validity,
    ) -> Result<IssuedCert, ProvisionError> {
        self.issue(
            csr_der,
            Role::Vehicle { vin: vin.clone() },
            &[
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            validity,
        )
    }

    /// Issues the certificate of the Agent at `device` in vehicle `vin`.
    pub fn issue_agent(
        &self,
        csr_der: &[u8],
        vin: &Vin,
        device: &DevicePath,
        validity: Validity,
    ) -> Result<IssuedCert, ProvisionError> {
        self.issue(
            csr_der,
            Role::Agent {
                vin: vin.clone(),
                device: device.clone(),
            },
            &[ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )
    }

    fn issue(
        &self,
        csr_der: &[u8],
        role: Role,
        ekus: &[ExtendedKeyUsagePurpose],
        validity: Validity,
    ) -> Result<IssuedCert, ProvisionError> {
        if csr_der.len() > MAX_CSR_DER_LEN {
            return Err(ProvisionError::CsrTooLarge {
                len: csr_der.len(),
                max: MAX_CSR_DER_LEN,
            });
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(ProvisionError::Csr)?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(ProvisionError::CsrKeyType);
        }
        let uri = role
            .esync_uri()
            .ok_or(IdentityError::WrongRole("a server has no esync URI"))?;
        let mut params = CertificateParams::default();
        params.not_before = to_time(validity.not_before_unix)?;
        params.not_after = to_time(validity.not_after_unix)?;
        params.serial_number = Some(random_serial());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, uri.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            uri.clone().try_into().map_err(ProvisionError::Sign)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus.to_vec();
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(ProvisionError::Sign)?;
        let cert_der = cert.der().to_vec();
        // Parse back with the fleet's own parser: what we hand out must be
        // what every verifier reads.
        let parsed = parse_identity(&cert_der)?;
        Ok(IssuedCert {
            cert_der,
            chain: self.chain.clone(),
            role: parsed.role,
            serial_hex: parsed.serial_hex,
        })
    }

    /// Revokes the certificate with serial `serial_hex` at `now_unix`. A
    /// serial revoked twice keeps its first revocation time. Returns whether
    /// the list changed (the caller then reloads the device listener's CRL).
    pub fn revoke(&mut self, serial_hex: &str, now_unix: i64) -> Result<bool, ProvisionError> {
        if serial_hex.len() > 40 {
            return Err(ProvisionError::Serial);
        }
        let serial = hex::decode(serial_hex).map_err(|_| ProvisionError::Serial)?;
        if serial.is_empty() {
            return Err(ProvisionError::Serial);
        }
        to_time(now_unix)?;
        if self.revoked.contains_key(&serial) {
            return Ok(false);
        }
        if self.revoked.len() >= MAX_REVOKED {
            return Err(ProvisionError::CrlFull(self.revoked.len()));
        }
        self.revoked.insert(serial, now_unix);
        Ok(true)
    }

    /// Whether `serial_hex` is revoked.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        hex::decode(serial_hex).is_ok_and(|s| self.revoked.contains_key(&s))
    }

    /// Signs a new CRL (DER) listing every revoked serial, valid from
    /// `now_unix` for `valid_secs`. Each call increments the CRL number.
    pub fn crl_der(&mut self, now_unix: i64, valid_secs: i64) -> Result<Vec<u8>, ProvisionError> {
        let this_update = to_time(now_unix)?;
        let next_update = to_time(now_unix.saturating_add(valid_secs.max(1)))?;
        let revoked_certs = self
            .revoked
            .iter()
            .map(|(serial, at)| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: to_time(*at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, ProvisionError>>()?;
        self.crl_number = self.crl_number.saturating_add(1);
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(self.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(ProvisionError::Sign)?;
        Ok(crl.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let mut params = CertificateParams::new(vec!["esync://vehicle/WRONGVIN000000000".into()])
            .expect("params");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let der = params.serialize_request(&key).expect("csr").der().to_vec();
        (key, der)
    }

    fn prov() -> Provisioner {
        let ca = FleetCa::new("test fleet", Validity::days_from(1_700_000_000, 365)).expect("ca");
        Provisioner::new(ca).expect("provisioner")
    }

    #[test]
    fn csr_gives_only_its_key() {
        let p = prov();
        let (key, der) = csr();
        let vin = Vin::new("1HGCM82633A004352").expect("vin");
        let issued = p
            .issue_vehicle(&der, &vin, Validity::days_from(1_700_000_000, 30))
            .expect("issued");
        let id = parse_identity(&issued.cert_der).expect("parse");
        assert_eq!(id.role, Role::Vehicle { vin });
        assert_eq!(id.verifying_key.as_bytes().as_slice(), key.public_key_raw());
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.cert_der).expect("parse");
        assert!(
            !cert.is_ca(),
            "a CSR asking for a CA certificate gets an end entity"
        );
    }

    #[test]
    fn intermediate_ca_hands_out_its_chain() {
        let root = FleetCa::new("root", Validity::days_from(1_700_000_000, 365)).expect("root");
        let inter = root
            .issue_intermediate("issuing", Validity::days_from(1_700_000_000, 365))
            .expect("intermediate");
        let p = Provisioner::new(inter).expect("provisioner");
        let (_, der) = csr();
        let vin = Vin::new("1HGCM82633A004352").expect("vin");
        let issued = p
            .issue_vehicle(&der, &vin, Validity::days_from(1_700_000_000, 30))
            .expect("issued");
        assert_eq!(issued.chain.len(), 2);
        let anchors = esync_identity::TrustAnchors::from_ca_ders(&[root.root_der()]).expect("a");
        let id = esync_identity::validate_chain(
            &issued.cert_der,
            &issued.chain,
            &anchors,
            1_700_000_100,
            esync_identity::Usage::ClientAuth,
        )
        .expect("chain validates to the root");
        assert_eq!(id.role, Role::Vehicle { vin });
    }

    #[test]
    fn restored_revocations_are_in_the_next_crl() {
        let mut p = prov();
        assert!(p.revoke("4a0102", 1_700_000_050).expect("revoke"));
        let saved: Vec<_> = p.revoked().collect();
        let ca = FleetCa::from_pem(&p.ca().cert_pem(), &p.ca().key_pem()).expect("reload CA");
        let mut q = Provisioner::new(ca).expect("provisioner");
        assert!(!q.is_revoked("4a0102"));
        q.restore_revoked(saved).expect("restore");
        assert!(q.is_revoked("4a0102"));
        let crl = q.crl_der(1_700_000_100, 3600).expect("crl");
        let (_, parsed) = x509_parser::parse_x509_crl(&crl).expect("crl parses");
        let serials: Vec<Vec<u8>> = parsed
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, vec![vec![0x4a, 0x01, 0x02]]);
    }

    #[test]
    fn tampered_and_oversized_csrs_are_refused() {
        let p = prov();
        let vin = Vin::new("1HGCM82633A004352").expect("vin");
        let (_, mut der) = csr();
        let last = der.len() - 1;
        der[last] ^= 1;
        assert!(matches!(
            p.issue_vehicle(&der, &vin, Validity::days_from(0, 1)),
            Err(ProvisionError::Csr(_))
        ));
        let big = vec![0u8; MAX_CSR_DER_LEN + 1];
        assert!(matches!(
            p.issue_vehicle(&big, &vin, Validity::days_from(0, 1)),
            Err(ProvisionError::CsrTooLarge { .. })
        ));
    }

    #[test]
    fn revoke_is_idempotent_and_bounded_input() {
        let mut p = prov();
        assert!(p.revoke("4a01", 10).expect("revoke"));
        assert!(!p.revoke("4a01", 20).expect("again"));
        assert!(p.is_revoked("4a01"));
        assert_eq!(p.revoked().collect::<Vec<_>>(), vec![("4a01".into(), 10)]);
        assert!(p.revoke("zz", 10).is_err());
        assert!(p.revoke(&"ab".repeat(21), 10).is_err());
        let crl = p.crl_der(100, 3600).expect("crl");
        assert!(!crl.is_empty());
    }
}
