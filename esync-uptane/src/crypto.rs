//! TUF keys (ed25519, ECDSA P-256 / P-384, RSA-PSS), key ids, signatures,
//! thresholds and hashes.
//!
//! Keys are read as python-tuf and securesystemslib write them: ed25519 as
//! 64 hex characters (or PEM), ECDSA and RSA as PEM SubjectPublicKeyInfo in
//! `keyval.public`. Signatures are hex: 64 raw bytes for ed25519, ASN.1 DER
//! for ECDSA (what `cryptography` produces), the raw RSASSA-PSS signature
//! (SHA-256, MGF1-SHA-256, salt of the digest length) for RSA. Curve and RSA
//! arithmetic is ring's; ed25519 is ed25519-dalek's.
//!
//! A verifier may be configured for a subset of the schemes
//! ([`SchemeSet`], in [`crate::repo::Limits::schemes`]; default all): keys
//! of the other schemes are then ignored like keys of an unknown type.
//!
//! ECDSA and RSA are Cargo features (`ecdsa`, `rsa`, both default): a
//! build without them links no ring and treats keys of those schemes like
//! keys of an unknown type (they are left out when decoded, so they never
//! count; see [`Scheme::is_built`]). ed25519 is always built.

use std::collections::{BTreeMap, BTreeSet};
#[cfg(any(feature = "ecdsa", feature = "rsa"))]
use std::sync::Arc;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
#[cfg(any(feature = "ecdsa", feature = "rsa"))]
use ring::rand::SystemRandom;
#[cfg(any(feature = "ecdsa", feature = "rsa"))]
use ring::signature::{self as rsig, KeyPair as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use spki::der::asn1::{BitStringRef, Null};
use spki::der::{Decode, Encode};
use spki::{AlgorithmIdentifier, ObjectIdentifier, SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};

use crate::canonical::{to_canonical, to_canonical_of};
use crate::error::{Error, Result};

/// `keytype` and `scheme` of ed25519 keys.
pub const ED25519: &str = "ed25519";
/// `keytype` of ECDSA keys (python-tuf, securesystemslib >= 0.26).
pub const ECDSA: &str = "ecdsa";
/// `scheme` (and legacy `keytype`) of ECDSA P-256 keys with SHA-256.
pub const ECDSA_P256: &str = "ecdsa-sha2-nistp256";
/// `scheme` (and legacy `keytype`) of ECDSA P-384 keys with SHA-384.
pub const ECDSA_P384: &str = "ecdsa-sha2-nistp384";
/// `keytype` of RSA keys.
pub const RSA: &str = "rsa";
/// `scheme` of RSA keys: RSASSA-PSS with SHA-256.
pub const RSA_PSS_SHA256: &str = "rsassa-pss-sha256";

/// Longest `keyval.public` accepted (an RSA-8192 SPKI PEM is about 1.4 KiB).
pub const MAX_PUBLIC_KEY_LEN: usize = 4096;
/// Longest signature accepted, in bytes (RSA-8192).
pub const MAX_SIGNATURE_LEN: usize = 1024;

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A signature scheme this crate verifies and signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `ed25519` (RFC 8032, strict verification).
    Ed25519,
    /// `ecdsa-sha2-nistp256`: ECDSA over P-256 with SHA-256, DER signatures.
    EcdsaP256Sha256,
    /// `ecdsa-sha2-nistp384`: ECDSA over P-384 with SHA-384, DER signatures.
    EcdsaP384Sha384,
    /// `rsassa-pss-sha256`: RSASSA-PSS, SHA-256, 2048 to 8192-bit moduli.
    RsaPssSha256,
}

impl Scheme {
    /// Every scheme, in a fixed order.
    pub const ALL: [Scheme; 4] = [
        Scheme::Ed25519,
        Scheme::EcdsaP256Sha256,
        Scheme::EcdsaP384Sha384,
        Scheme::RsaPssSha256,
    ];

    /// The `scheme` string of the TUF key object.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ed25519 => ED25519,
            Scheme::EcdsaP256Sha256 => ECDSA_P256,
            Scheme::EcdsaP384Sha384 => ECDSA_P384,
            Scheme::RsaPssSha256 => RSA_PSS_SHA256,
        }
    }

    /// The `keytype` string the signing side writes (as python-tuf does).
    pub fn keytype(self) -> &'static str {
        match self {
            Scheme::Ed25519 => ED25519,
            Scheme::EcdsaP256Sha256 | Scheme::EcdsaP384Sha384 => ECDSA,
            Scheme::RsaPssSha256 => RSA,
        }
    }

    /// The scheme of a (`keytype`, `scheme`) pair, `None` when this crate
    /// does not handle it (such keys are ignored, as TUF requires).
    pub fn from_tuf(keytype: &str, scheme: &str) -> Option<Scheme> {
        match (keytype, scheme) {
            (ED25519, ED25519) => Some(Scheme::Ed25519),
            (ECDSA | ECDSA_P256, ECDSA_P256) => Some(Scheme::EcdsaP256Sha256),
            (ECDSA | ECDSA_P384, ECDSA_P384) => Some(Scheme::EcdsaP384Sha384),
            (RSA, RSA_PSS_SHA256) => Some(Scheme::RsaPssSha256),
            _ => None,
        }
    }

    /// Whether this build verifies and signs with the scheme: ed25519
    /// always, ECDSA with the `ecdsa` feature, RSA-PSS with the `rsa`
    /// feature. Keys of a scheme not built are treated like keys of an
    /// unknown type.
    pub const fn is_built(self) -> bool {
        match self {
            Scheme::Ed25519 => true,
            Scheme::EcdsaP256Sha256 | Scheme::EcdsaP384Sha384 => cfg!(feature = "ecdsa"),
            Scheme::RsaPssSha256 => cfg!(feature = "rsa"),
        }
    }
}

impl core::fmt::Display for Scheme {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Scheme`]s: the key types a verifier is configured for
/// ([`crate::repo::Limits::schemes`]). A key of a scheme outside the set is
/// treated like a key of an unknown type: it never counts toward a
/// threshold and is never used to verify, so its CPU cost is never paid.
/// The default is [`SchemeSet::ALL`]; an ed25519-only verifier is
/// `SchemeSet::only(Scheme::Ed25519)`.
///
/// Written and parsed as a comma-separated list of scheme names
/// (`ed25519,ecdsa-sha2-nistp256`), or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SchemeSet(u8);

const fn scheme_bit(s: Scheme) -> u8 {
    match s {
        Scheme::Ed25519 => 1,
        Scheme::EcdsaP256Sha256 => 1 << 1,
        Scheme::EcdsaP384Sha384 => 1 << 2,
        Scheme::RsaPssSha256 => 1 << 3,
    }
}

impl SchemeSet {
    /// Every scheme of [`Scheme::ALL`].
    pub const ALL: SchemeSet = SchemeSet(
        scheme_bit(Scheme::Ed25519)
            | scheme_bit(Scheme::EcdsaP256Sha256)
            | scheme_bit(Scheme::EcdsaP384Sha384)
            | scheme_bit(Scheme::RsaPssSha256),
    );
    /// No scheme (nothing verifies; configurations refuse it).
    pub const EMPTY: SchemeSet = SchemeSet(0);
    /// The schemes this build verifies ([`Scheme::is_built`]).
    pub const BUILT: SchemeSet = SchemeSet(
        scheme_bit(Scheme::Ed25519)
            | if Scheme::EcdsaP256Sha256.is_built() {
                scheme_bit(Scheme::EcdsaP256Sha256) | scheme_bit(Scheme::EcdsaP384Sha384)
            } else {
                0
            }
            | if Scheme::RsaPssSha256.is_built() {
                scheme_bit(Scheme::RsaPssSha256)
            } else {
                0
            },
    );

    /// The set holding only `scheme`.
    pub const fn only(scheme: Scheme) -> Self {
        SchemeSet(scheme_bit(scheme))
    }

    /// This set with `scheme` added.
    pub const fn with(self, scheme: Scheme) -> Self {
        SchemeSet(self.0 | scheme_bit(scheme))
    }

    /// Whether keys of `scheme` are accepted.
    pub const fn contains(self, scheme: Scheme) -> bool {
        self.0 & scheme_bit(scheme) != 0
    }

    /// Whether the set holds no scheme.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The schemes of the set, in the order of [`Scheme::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Scheme> {
        Scheme::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl Default for SchemeSet {
    fn default() -> Self {
        SchemeSet::ALL
    }
}

impl FromIterator<Scheme> for SchemeSet {
    fn from_iter<I: IntoIterator<Item = Scheme>>(iter: I) -> Self {
        iter.into_iter().fold(SchemeSet::EMPTY, SchemeSet::with)
    }
}

impl core::fmt::Display for SchemeSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

/// A scheme list that does not parse as a [`SchemeSet`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown key scheme {0:?} (known: all, ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, rsassa-pss-sha256)")]
pub struct UnknownScheme(pub String);

impl core::str::FromStr for SchemeSet {
    type Err = UnknownScheme;

    fn from_str(text: &str) -> core::result::Result<Self, UnknownScheme> {
        let mut set = SchemeSet::EMPTY;
        for name in text.split(',').map(str::trim) {
            if name == "all" {
                set = SchemeSet::ALL;
                continue;
            }
            let scheme = Scheme::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| UnknownScheme(name.to_string()))?;
            set = set.with(scheme);
        }
        Ok(set)
    }
}

/// `keyval` of a TUF key: the public part (hex for ed25519, PEM otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVal {
    /// Public key: lower-case hex of the 32 bytes (ed25519) or PEM
    /// SubjectPublicKeyInfo.
    pub public: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Material {
    Ed25519(VerifyingKey),
    /// Uncompressed EC point (ECDSA) or PKCS#1 RSAPublicKey DER (RSA), as
    /// ring's verifiers take them.
    #[cfg(any(feature = "ecdsa", feature = "rsa"))]
    Ring(Vec<u8>),
}

/// A TUF public key (`{"keytype":..,"scheme":..,"keyval":{"public":..}}`).
///
/// Decoding checks that the key type and scheme are one of [`Scheme`] and
/// that the key material parses (an ed25519 point, a SubjectPublicKeyInfo of
/// the right algorithm and curve). The strings are kept verbatim, so the key
/// serializes back to the bytes it came from and [`PublicKey::key_id`] is
/// the id its author computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawKey", into = "RawKey")]
pub struct PublicKey {
    scheme: Scheme,
    keytype: String,
    public: String,
    material: Material,
}

#[derive(Clone, Serialize, Deserialize)]
struct RawKey {
    keytype: String,
    scheme: String,
    keyval: KeyVal,
}

impl TryFrom<RawKey> for PublicKey {
    type Error = Error;
    fn try_from(raw: RawKey) -> Result<Self> {
        let scheme = Scheme::from_tuf(&raw.keytype, &raw.scheme).ok_or_else(|| {
            Error::Key(format!(
                "unsupported key type {:?} / scheme {:?}",
                raw.keytype, raw.scheme
            ))
        })?;
        if !scheme.is_built() {
            return Err(Error::Key(format!(
                "key scheme {scheme} is not built into this verifier"
            )));
        }
        let public = &raw.keyval.public;
        if public.len() > MAX_PUBLIC_KEY_LEN {
            return Err(Error::Key(format!(
                "public key longer than {MAX_PUBLIC_KEY_LEN} bytes"
            )));
        }
        let material = if scheme == Scheme::Ed25519 && !public.starts_with("-----") {
            let bytes = decode_hex_array::<32>(public, "public key")?;
            ed25519_material(&bytes)?
        } else {
            material_from_pem(scheme, public)?
        };
        Ok(PublicKey {
            scheme,
            keytype: raw.keytype,
            public: raw.keyval.public,
            material,
        })
    }
}

fn ed25519_material(bytes: &[u8; 32]) -> Result<Material> {
    VerifyingKey::from_bytes(bytes)
        .map(Material::Ed25519)
        .map_err(|_| Error::Key("public key is not a valid ed25519 point".into()))
}

fn material_from_pem(scheme: Scheme, text: &str) -> Result<Material> {
    let pem = pem::parse(text).map_err(|e| Error::Key(format!("public key PEM: {e}")))?;
    if pem.tag() != "PUBLIC KEY" {
        return Err(Error::Key(format!(
            "public key PEM is a {:?}, expected PUBLIC KEY",
            pem.tag()
        )));
    }
    let spki = SubjectPublicKeyInfoRef::from_der(pem.contents())
        .map_err(|e| Error::Key(format!("public key SubjectPublicKeyInfo: {e}")))?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::Key("public key bit string has unused bits".into()))?;
    let oid = spki.algorithm.oid;
    let params = spki.algorithm.parameters_oid().ok();
    let (want_oid, want_params, len_ok) = match scheme {
        Scheme::Ed25519 => (OID_ED25519, None, key.len() == 32),
        Scheme::EcdsaP256Sha256 => (
            OID_EC_PUBLIC_KEY,
            Some(OID_P256),
            key.len() == 65 && key[0] == 4,
        ),
        Scheme::EcdsaP384Sha384 => (
            OID_EC_PUBLIC_KEY,
            Some(OID_P384),
            key.len() == 97 && key[0] == 4,
        ),
        Scheme::RsaPssSha256 => (OID_RSA, None, !key.is_empty()),
    };
    if oid != want_oid || (want_params.is_some() && params != want_params) {
        return Err(Error::Key(format!(
            "public key algorithm does not match scheme {scheme}"
        )));
    }
    if !len_ok {
        return Err(Error::Key(format!(
            "public key has the wrong length for {scheme}"
        )));
    }
    if scheme == Scheme::Ed25519 {
        let mut b = [0u8; 32];
        b.copy_from_slice(key);
        return ed25519_material(&b);
    }
    #[cfg(any(feature = "ecdsa", feature = "rsa"))]
    return Ok(Material::Ring(key.to_vec()));
    #[cfg(not(any(feature = "ecdsa", feature = "rsa")))]
    Err(Error::Key(format!(
        "key scheme {scheme} is not built into this verifier"
    )))
}

/// PEM SubjectPublicKeyInfo of `key` (an uncompressed point or PKCS#1
/// RSAPublicKey), written as `cryptography` writes it (LF, 64 columns).
#[cfg_attr(
    not(any(feature = "ecdsa", feature = "rsa")),
    allow(dead_code, reason = "only ECDSA and RSA private keys derive their PEM")
)]
fn spki_pem(scheme: Scheme, key: &[u8]) -> Result<String> {
    let bits = BitStringRef::from_bytes(key).map_err(|e| Error::Build(e.to_string()))?;
    let der = match scheme {
        Scheme::EcdsaP256Sha256 | Scheme::EcdsaP384Sha384 => {
            let curve = if scheme == Scheme::EcdsaP256Sha256 {
                OID_P256
            } else {
                OID_P384
            };
            SubjectPublicKeyInfo {
                algorithm: AlgorithmIdentifier {
                    oid: OID_EC_PUBLIC_KEY,
                    parameters: Some(curve),
                },
                subject_public_key: bits,
            }
            .to_der()
        }
        Scheme::RsaPssSha256 => SubjectPublicKeyInfo {
            algorithm: AlgorithmIdentifier {
                oid: OID_RSA,
                parameters: Some(Null),
            },
            subject_public_key: bits,
        }
        .to_der(),
        Scheme::Ed25519 => SubjectPublicKeyInfo::<Null, _> {
            algorithm: AlgorithmIdentifier {
                oid: OID_ED25519,
                parameters: None,
            },
            subject_public_key: bits,
        }
        .to_der(),
    }
    .map_err(|e| Error::Build(e.to_string()))?;
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", der),
        config,
    ))
}

impl From<PublicKey> for RawKey {
    fn from(k: PublicKey) -> RawKey {
        RawKey {
            keytype: k.keytype,
            scheme: k.scheme.as_str().into(),
            keyval: KeyVal { public: k.public },
        }
    }
}

impl PublicKey {
    /// Wraps a dalek verifying key (`ed25519`, hex).
    pub fn from_verifying_key(key: VerifyingKey) -> Self {
        PublicKey {
            scheme: Scheme::Ed25519,
            keytype: ED25519.into(),
            public: hex::encode(key.as_bytes()),
            material: Material::Ed25519(key),
        }
    }

    /// The dalek verifying key, for an ed25519 key.
    pub fn verifying_key(&self) -> Option<&VerifyingKey> {
        match &self.material {
            Material::Ed25519(k) => Some(k),
            #[cfg(any(feature = "ecdsa", feature = "rsa"))]
            Material::Ring(_) => None,
        }
    }

    /// The signature scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The key material: the 32 bytes of an ed25519 key, the uncompressed
    /// point of an ECDSA key, the PKCS#1 RSAPublicKey DER of an RSA key. Two
    /// key objects with the same scheme and material are one key (one vote
    /// towards a threshold).
    pub fn material(&self) -> &[u8] {
        match &self.material {
            Material::Ed25519(k) => k.as_bytes(),
            #[cfg(any(feature = "ecdsa", feature = "rsa"))]
            Material::Ring(b) => b,
        }
    }

    /// TUF key id: lower-case hex SHA-256 of the canonical JSON of the key
    /// object (`keytype`, `scheme`, `keyval`).
    pub fn key_id(&self) -> String {
        // A key object always serializes (strings only).
        let canon = to_canonical_of(&RawKey::from(self.clone())).unwrap_or_default();
        hex::encode(Sha256::digest(canon))
    }

    /// Verifies `sig` over `msg`: ed25519 with `verify_strict` (no malleable
    /// signatures, no small-order keys), ECDSA with a DER signature, RSA-PSS
    /// with a salt of the digest length.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match (&self.material, self.scheme) {
            (Material::Ed25519(k), _) => {
                let Ok(sig) = <[u8; 64]>::try_from(sig) else {
                    return false;
                };
                let sig = ed25519_dalek::Signature::from_bytes(&sig);
                k.verify_strict(msg, &sig).is_ok()
            }
            #[cfg(any(feature = "ecdsa", feature = "rsa"))]
            (Material::Ring(key), scheme) => {
                let alg: &dyn rsig::VerificationAlgorithm = match scheme {
                    #[cfg(feature = "ecdsa")]
                    Scheme::EcdsaP256Sha256 => &rsig::ECDSA_P256_SHA256_ASN1,
                    #[cfg(feature = "ecdsa")]
                    Scheme::EcdsaP384Sha384 => &rsig::ECDSA_P384_SHA384_ASN1,
                    #[cfg(feature = "rsa")]
                    Scheme::RsaPssSha256 => &rsig::RSA_PSS_2048_8192_SHA256,
                    _ => return false,
                };
                rsig::UnparsedPublicKey::new(alg, key)
                    .verify(msg, sig)
                    .is_ok()
            }
        }
    }
}

#[derive(Clone)]
enum Signing {
    Ed25519(Box<SigningKey>),
    #[cfg(feature = "ecdsa")]
    Ecdsa(Arc<rsig::EcdsaKeyPair>),
    #[cfg(feature = "rsa")]
    Rsa(Arc<rsig::RsaKeyPair>),
}

/// A private key of any [`Scheme`] (signing side). Its `Debug` never prints
/// the secret.
///
/// ed25519 and ECDSA keys can be generated here; RSA keys are loaded from
/// PKCS#8 or PKCS#1 (ring does not generate RSA keys), e.g. ones made by
/// `openssl genpkey -algorithm RSA` or kept in a vault.
#[derive(Clone)]
pub struct PrivateKey {
    key: Signing,
    public: PublicKey,
}

impl core::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "PrivateKey({} keyid {})",
            self.public.scheme,
            self.public.key_id()
        )
    }
}

#[cfg(feature = "ecdsa")]
fn ecdsa_alg(scheme: Scheme) -> Option<&'static rsig::EcdsaSigningAlgorithm> {
    match scheme {
        Scheme::EcdsaP256Sha256 => Some(&rsig::ECDSA_P256_SHA256_ASN1_SIGNING),
        Scheme::EcdsaP384Sha384 => Some(&rsig::ECDSA_P384_SHA384_ASN1_SIGNING),
        _ => None,
    }
}

impl PrivateKey {
    /// A fresh ed25519 key from the operating system's random generator.
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// A fresh key of `scheme` from the operating system's random
    /// generator. RSA keys cannot be generated here (see
    /// [`PrivateKey::from_pkcs8_der`]), nor keys of a scheme not built
    /// ([`Scheme::is_built`]).
    pub fn generate_for(scheme: Scheme) -> Result<Self> {
        match scheme {
            Scheme::Ed25519 => Ok(Self::generate()),
            #[cfg(feature = "ecdsa")]
            Scheme::EcdsaP256Sha256 | Scheme::EcdsaP384Sha384 => {
                let alg = ecdsa_alg(scheme).ok_or(Error::State("ECDSA scheme"))?;
                let doc = rsig::EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
                    .map_err(|_| Error::Build("ECDSA key generation failed".into()))?;
                Self::from_pkcs8_der(doc.as_ref())
            }
            Scheme::RsaPssSha256 => Err(Error::Build(
                "RSA keys are not generated here: load one with PrivateKey::from_pkcs8_der".into(),
            )),
            #[cfg(not(feature = "ecdsa"))]
            other => Err(Error::Build(format!(
                "key scheme {other} is not built (feature `ecdsa`)"
            ))),
        }
    }

    fn from_signing_key(key: SigningKey) -> Self {
        let public = PublicKey::from_verifying_key(key.verifying_key());
        PrivateKey {
            key: Signing::Ed25519(Box::new(key)),
            public,
        }
    }

    /// An ed25519 key from its 32-byte seed (deterministic; for tests and
    /// for keys kept in a vault).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_signing_key(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed of an ed25519 key, for storing the key; `None` for
    /// other schemes.
    pub fn to_seed(&self) -> Option<[u8; 32]> {
        match &self.key {
            Signing::Ed25519(k) => Some(k.to_bytes()),
            #[cfg(any(feature = "ecdsa", feature = "rsa"))]
            _ => None,
        }
    }

    /// A key from PKCS#8 DER (ed25519, ECDSA P-256 / P-384 or RSA, told
    /// apart by its algorithm). RSA keys sign with [`Scheme::RsaPssSha256`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        #[cfg(feature = "ecdsa")]
        for scheme in [Scheme::EcdsaP256Sha256, Scheme::EcdsaP384Sha384] {
            let alg = ecdsa_alg(scheme).ok_or(Error::State("ECDSA scheme"))?;
            if let Ok(kp) = rsig::EcdsaKeyPair::from_pkcs8(alg, der, &SystemRandom::new()) {
                let pem = spki_pem(scheme, kp.public_key().as_ref())?;
                return Ok(PrivateKey {
                    public: Self::public_of(scheme, pem)?,
                    key: Signing::Ecdsa(Arc::new(kp)),
                });
            }
        }
        #[cfg(feature = "rsa")]
        if let Ok(kp) = rsig::RsaKeyPair::from_pkcs8(der) {
            return Self::from_rsa(kp);
        }
        if let Ok(k) = SigningKey::from_pkcs8_der(der) {
            return Ok(Self::from_signing_key(k));
        }
        Err(Error::Key(
            "private key is not a PKCS#8 ed25519, ECDSA P-256/P-384 or RSA key (of a scheme built)"
                .into(),
        ))
    }

    /// A key from PEM: `PRIVATE KEY` (PKCS#8, see
    /// [`PrivateKey::from_pkcs8_der`]) or `RSA PRIVATE KEY` (PKCS#1).
    pub fn from_pem(text: &str) -> Result<Self> {
        let pem = pem::parse(text).map_err(|e| Error::Key(format!("private key PEM: {e}")))?;
        match pem.tag() {
            "PRIVATE KEY" => Self::from_pkcs8_der(pem.contents()),
            #[cfg(feature = "rsa")]
            "RSA PRIVATE KEY" => Self::from_rsa(
                rsig::RsaKeyPair::from_der(pem.contents())
                    .map_err(|e| Error::Key(format!("RSA private key: {e}")))?,
            ),
            other => Err(Error::Key(format!(
                "private key PEM is a {other:?}, expected PRIVATE KEY"
            ))),
        }
    }

    #[cfg(feature = "rsa")]
    fn from_rsa(kp: rsig::RsaKeyPair) -> Result<Self> {
        let pem = spki_pem(Scheme::RsaPssSha256, kp.public().as_ref())?;
        Ok(PrivateKey {
            public: Self::public_of(Scheme::RsaPssSha256, pem)?,
            key: Signing::Rsa(Arc::new(kp)),
        })
    }

    #[cfg(any(feature = "ecdsa", feature = "rsa"))]
    fn public_of(scheme: Scheme, pem: String) -> Result<PublicKey> {
        PublicKey::try_from(RawKey {
            keytype: scheme.keytype().into(),
            scheme: scheme.as_str().into(),
            keyval: KeyVal { public: pem },
        })
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The signature scheme.
    pub fn scheme(&self) -> Scheme {
        self.public.scheme
    }

    /// Key id of the public half.
    pub fn key_id(&self) -> String {
        self.public.key_id()
    }

    /// Signs `msg` (the signature bytes as TUF carries them, before hex).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        match &self.key {
            Signing::Ed25519(k) => Ok(k.sign(msg).to_bytes().to_vec()),
            #[cfg(feature = "ecdsa")]
            Signing::Ecdsa(k) => k
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::Build("ECDSA signing failed".into())),
            #[cfg(feature = "rsa")]
            Signing::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&rsig::RSA_PSS_SHA256, &SystemRandom::new(), msg, &mut sig)
                    .map_err(|_| Error::Build("RSA signing failed".into()))?;
                Ok(sig)
            }
        }
    }
}

/// One entry of a `signatures` array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// Key id of the signing key.
    pub keyid: String,
    /// Signature, hex.
    pub sig: String,
}

/// A signed document as it arrives: signatures and the `signed` object kept
/// as a JSON value so that the canonical bytes signed are exactly those
/// received, unknown fields included.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RawSigned {
    /// Signatures over the canonical JSON of `signed`.
    pub signatures: Vec<SignatureEntry>,
    /// The signed object.
    pub signed: Value,
}

impl RawSigned {
    /// Parses `{"signatures": [...], "signed": {...}}`.
    pub fn from_slice(what: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))
    }

    /// Signs the canonical form of `signed` with each key.
    pub fn sign(signed: Value, keys: &[&PrivateKey]) -> Result<Self> {
        let canon = to_canonical(&signed)?;
        let signatures = keys
            .iter()
            .map(|k| {
                Ok(SignatureEntry {
                    keyid: k.key_id(),
                    sig: hex::encode(k.sign(&canon)?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(RawSigned { signatures, signed })
    }

    /// Serialized JSON (pretty, as TUF tools write it).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::Build(e.to_string()))
    }

    /// Checks that at least `threshold` distinct keys among `authorised`
    /// (resolved through `keys`) produced a valid signature over the
    /// canonical JSON of `signed`.
    ///
    /// A `signatures` array naming one keyid twice is malformed and refused
    /// (the TUF specification: the keyid MUST be unique). Distinct keys are
    /// counted across key types by their material, so one key listed under
    /// two key ids counts once; a threshold of 0 is refused. Signatures that
    /// do not decode (bad hex, too long) simply do not count. Keys of a
    /// scheme outside `schemes` are ignored like keys of an unknown type:
    /// they do not count and their signatures are never checked.
    pub fn verify_threshold(
        &self,
        role: &str,
        keys: &BTreeMap<String, PublicKey>,
        authorised: &[String],
        threshold: u64,
        schemes: SchemeSet,
    ) -> Result<()> {
        if threshold == 0 {
            return Err(Error::Field {
                what: role.into(),
                field: "threshold",
                reason: "must be at least 1".into(),
            });
        }
        self.check_unique_keyids(role)?;
        let canon = to_canonical(&self.signed)?;
        let mut seen: BTreeSet<(Scheme, &[u8])> = BTreeSet::new();
        for entry in &self.signatures {
            if !authorised.iter().any(|k| k == &entry.keyid) {
                continue;
            }
            let Some(key) = keys
                .get(&entry.keyid)
                .filter(|k| schemes.contains(k.scheme()))
            else {
                continue;
            };
            let id = (key.scheme(), key.material());
            if seen.contains(&id) {
                continue;
            }
            let Some(sig) = decode_signature(&entry.sig) else {
                continue;
            };
            if key.verify(&canon, &sig) {
                seen.insert(id);
            }
        }
        let valid = seen.len() as u64;
        if valid < threshold {
            return Err(Error::Threshold {
                role: role.into(),
                valid,
                threshold,
            });
        }
        Ok(())
    }

    /// Checks that one of the signatures, whatever keyid it names, is a
    /// valid signature by `key` (version reports and manifests, whose
    /// signer is known from elsewhere). Duplicate keyids are refused as in
    /// [`RawSigned::verify_threshold`].
    pub fn verify_with_key(&self, what: &str, key: &PublicKey) -> Result<()> {
        self.check_unique_keyids(what)?;
        let canon = to_canonical(&self.signed)?;
        let ok = self
            .signatures
            .iter()
            .any(|e| decode_signature(&e.sig).is_some_and(|sig| key.verify(&canon, &sig)));
        if ok {
            Ok(())
        } else {
            Err(Error::Threshold {
                role: what.into(),
                valid: 0,
                threshold: 1,
            })
        }
    }

    fn check_unique_keyids(&self, role: &str) -> Result<()> {
        let mut ids = BTreeSet::new();
        for e in &self.signatures {
            if !ids.insert(e.keyid.as_str()) {
                return Err(Error::Field {
                    what: role.into(),
                    field: "signatures",
                    reason: format!("keyid {} appears more than once", e.keyid),
                });
            }
        }
        Ok(())
    }
}

/// Hex-decodes a signature after bounding its length.
fn decode_signature(s: &str) -> Option<Vec<u8>> {
    if s.len() > 2 * MAX_SIGNATURE_LEN {
        return None;
    }
    hex::decode(s).ok()
}

pub(crate) fn decode_hex_array<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    if s.len() != 2 * N {
        return Err(Error::Key(format!(
            "{what}: expected {} hex characters",
            2 * N
        )));
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| Error::Key(format!("{what}: invalid hex")))?;
    Ok(out)
}

/// Hash algorithms accepted in `hashes` objects.
pub const SUPPORTED_HASHES: [&str; 4] = ["sha224", "sha256", "sha384", "sha512"];

/// Incremental hasher over every supported algorithm listed in a `hashes`
/// object.
#[derive(Clone)]
pub(crate) struct MultiHasher {
    hashers: Vec<(String, HasherKind, Vec<u8>)>,
}

#[derive(Clone)]
enum HasherKind {
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl MultiHasher {
    /// Prepares to check `expected` (algorithm -> hex). Refuses an empty set,
    /// an unsupported algorithm, and invalid hex.
    pub(crate) fn new(what: &str, expected: &BTreeMap<String, String>) -> Result<Self> {
        if expected.is_empty() {
            return Err(Error::UnsupportedHash {
                what: what.into(),
                reason: "no hash declared".into(),
            });
        }
        let mut hashers = Vec::new();
        for (alg, hex_value) in expected {
            let kind = match alg.as_str() {
                "sha224" => HasherKind::Sha224(Sha224::new()),
                "sha256" => HasherKind::Sha256(Sha256::new()),
                "sha384" => HasherKind::Sha384(Sha384::new()),
                "sha512" => HasherKind::Sha512(Sha512::new()),
                other => {
                    return Err(Error::UnsupportedHash {
                        what: what.into(),
                        reason: format!("hash algorithm {other:?} not supported"),
                    })
                }
            };
            let want = hex::decode(hex_value).map_err(|_| Error::UnsupportedHash {
                what: what.into(),
                reason: format!("{alg} value is not hex"),
            })?;
            hashers.push((alg.clone(), kind, want));
        }
        Ok(MultiHasher { hashers })
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        for (_, h, _) in &mut self.hashers {
            match h {
                HasherKind::Sha224(h) => h.update(data),
                HasherKind::Sha256(h) => h.update(data),
                HasherKind::Sha384(h) => h.update(data),
                HasherKind::Sha512(h) => h.update(data),
            }
        }
    }

    pub(crate) fn finish(self, what: &str) -> Result<()> {
        for (alg, h, want) in self.hashers {
            let got: Vec<u8> = match h {
                HasherKind::Sha224(h) => h.finalize().to_vec(),
                HasherKind::Sha256(h) => h.finalize().to_vec(),
                HasherKind::Sha384(h) => h.finalize().to_vec(),
                HasherKind::Sha512(h) => h.finalize().to_vec(),
            };
            if got != want {
                return Err(Error::HashMismatch {
                    what: what.into(),
                    algorithm: alg,
                });
            }
        }
        Ok(())
    }
}

/// sha256 and sha512 of `data`, hex, as a TUF `hashes` object.
pub fn hashes_of(data: &[u8]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("sha256".to_string(), hex::encode(Sha256::digest(data)));
    m.insert("sha512".to_string(), hex::encode(Sha512::digest(data)));
    m
}

/// Checks `data` against a declared length and hashes.
pub(crate) fn check_length_and_hashes(
    what: &str,
    data: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    if let Some(len) = length {
        if data.len() as u64 != len {
            return Err(Error::LengthMismatch {
                what: what.into(),
                expected: len,
                got: data.len() as u64,
            });
        }
    }
    if let Some(h) = hashes {
        let mut hasher = MultiHasher::new(what, h)?;
        hasher.update(data);
        hasher.finish(what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_json_round_trip_and_key_id() {
        let k = PrivateKey::from_seed(&[1; 32]).public_key();
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["keytype"], "ed25519");
        assert_eq!(v["scheme"], "ed25519");
        let back: PublicKey = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, k);
        let expected = hex::encode(Sha256::digest(to_canonical(&v).unwrap()));
        assert_eq!(k.key_id(), expected);
    }

    #[test]
    fn refuses_other_key_types() {
        let v =
            json!({"keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {"public": "00"}});
        assert!(serde_json::from_value::<PublicKey>(v).is_err());
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let a = PrivateKey::from_seed(&[1; 32]);
        let b = PrivateKey::from_seed(&[2; 32]);
        let mut keys = BTreeMap::new();
        keys.insert(a.key_id(), a.public_key());
        keys.insert(b.key_id(), b.public_key());
        // Same key listed under a second id.
        keys.insert("alias".into(), a.public_key());
        let ids = vec![a.key_id(), b.key_id(), "alias".to_string()];
        let mut s = RawSigned::sign(json!({"x": 1}), &[&a]).unwrap();
        let mut alias = s.signatures[0].clone();
        alias.keyid = "alias".into();
        s.signatures.push(alias);
        assert!(matches!(
            s.verify_threshold("r", &keys, &ids, 2, SchemeSet::ALL),
            Err(Error::Threshold { valid: 1, .. })
        ));
        assert!(s
            .verify_threshold("r", &keys, &ids, 1, SchemeSet::ALL)
            .is_ok());
        let s2 = RawSigned::sign(json!({"x": 1}), &[&a, &b]).unwrap();
        assert!(s2
            .verify_threshold("r", &keys, &ids, 2, SchemeSet::ALL)
            .is_ok());
        assert!(s2
            .verify_threshold("r", &keys, &ids, 0, SchemeSet::ALL)
            .is_err());
    }

    #[test]
    fn duplicate_keyid_in_signatures_is_malformed() {
        let a = PrivateKey::from_seed(&[1; 32]);
        let b = PrivateKey::from_seed(&[2; 32]);
        let keys: BTreeMap<_, _> = [(a.key_id(), a.public_key()), (b.key_id(), b.public_key())]
            .into_iter()
            .collect();
        let ids: Vec<String> = keys.keys().cloned().collect();
        let mut s = RawSigned::sign(json!({"x": 1}), &[&a, &b]).unwrap();
        assert!(s
            .verify_threshold("r", &keys, &ids, 2, SchemeSet::ALL)
            .is_ok());
        // The same entry again: the threshold is still met, but the array
        // names a keyid twice.
        s.signatures.push(s.signatures[0].clone());
        let err = s
            .verify_threshold("r", &keys, &ids, 1, SchemeSet::ALL)
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Field {
                    field: "signatures",
                    ..
                }
            ),
            "{err}"
        );
        // An unverifiable second entry under the same keyid too.
        let mut s = RawSigned::sign(json!({"x": 1}), &[&a]).unwrap();
        s.signatures.push(SignatureEntry {
            keyid: a.key_id(),
            sig: "00".into(),
        });
        assert!(s
            .verify_threshold("r", &keys, &ids, 1, SchemeSet::ALL)
            .is_err());
        assert!(s.verify_with_key("r", &a.public_key()).is_err());
    }

    #[cfg(all(feature = "ecdsa", feature = "rsa"))]
    fn every_scheme_key(scheme: Scheme) -> PrivateKey {
        match scheme {
            Scheme::RsaPssSha256 => {
                let text = include_str!("../tests/data/rsa-2048-test-keys.pem");
                let first = pem::parse_many(text).unwrap().remove(0);
                PrivateKey::from_pkcs8_der(first.contents()).unwrap()
            }
            s => PrivateKey::generate_for(s).unwrap(),
        }
    }

    #[cfg(all(feature = "ecdsa", feature = "rsa"))]
    #[test]
    fn each_scheme_signs_verifies_and_round_trips() {
        for scheme in Scheme::ALL {
            let k = every_scheme_key(scheme);
            assert_eq!(k.scheme(), scheme);
            let public = k.public_key();
            let v = serde_json::to_value(&public).unwrap();
            assert_eq!(v["scheme"], scheme.as_str());
            assert_eq!(v["keytype"], scheme.keytype());
            let back: PublicKey = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(back, public);
            assert_eq!(
                public.key_id(),
                hex::encode(Sha256::digest(to_canonical(&v).unwrap()))
            );
            let sig = k.sign(b"message").unwrap();
            assert!(public.verify(b"message", &sig), "{scheme}");
            assert!(!public.verify(b"massage", &sig), "{scheme}");
            let mut bad = sig.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(!public.verify(b"message", &bad), "{scheme}");
            // A key of another scheme does not verify it.
            let other = every_scheme_key(if scheme == Scheme::Ed25519 {
                Scheme::EcdsaP256Sha256
            } else {
                Scheme::Ed25519
            });
            assert!(!other.public_key().verify(b"message", &sig));
        }
        assert!(PrivateKey::generate_for(Scheme::RsaPssSha256).is_err());
    }

    #[cfg(all(feature = "ecdsa", feature = "rsa"))]
    #[test]
    fn threshold_counts_distinct_keys_across_types() {
        let ks: Vec<PrivateKey> = Scheme::ALL.iter().map(|s| every_scheme_key(*s)).collect();
        let keys: BTreeMap<_, _> = ks.iter().map(|k| (k.key_id(), k.public_key())).collect();
        let ids: Vec<String> = keys.keys().cloned().collect();
        let refs: Vec<&PrivateKey> = ks.iter().collect();
        let s = RawSigned::sign(json!({"x": [1, 2]}), &refs).unwrap();
        assert!(s
            .verify_threshold("r", &keys, &ids, 4, SchemeSet::ALL)
            .is_ok());
        assert!(matches!(
            s.verify_threshold("r", &keys, &ids, 5, SchemeSet::ALL),
            Err(Error::Threshold { valid: 4, .. })
        ));
        let two = RawSigned::sign(json!({"x": [1, 2]}), &refs[1..3]).unwrap();
        assert!(two
            .verify_threshold("r", &keys, &ids, 2, SchemeSet::ALL)
            .is_ok());
        assert!(two
            .verify_threshold("r", &keys, &ids, 3, SchemeSet::ALL)
            .is_err());
    }

    #[cfg(all(feature = "ecdsa", feature = "rsa"))]
    #[test]
    fn threshold_counts_only_configured_schemes() {
        let ks: Vec<PrivateKey> = Scheme::ALL.iter().map(|s| every_scheme_key(*s)).collect();
        let keys: BTreeMap<_, _> = ks.iter().map(|k| (k.key_id(), k.public_key())).collect();
        let ids: Vec<String> = keys.keys().cloned().collect();
        let refs: Vec<&PrivateKey> = ks.iter().collect();
        let s = RawSigned::sign(json!({"x": 1}), &refs).unwrap();
        for scheme in Scheme::ALL {
            let only = SchemeSet::only(scheme);
            assert!(s.verify_threshold("r", &keys, &ids, 1, only).is_ok());
            assert!(matches!(
                s.verify_threshold("r", &keys, &ids, 2, only),
                Err(Error::Threshold {
                    valid: 1,
                    threshold: 2,
                    ..
                })
            ));
        }
        let ed_p256 = SchemeSet::only(Scheme::Ed25519).with(Scheme::EcdsaP256Sha256);
        assert!(s.verify_threshold("r", &keys, &ids, 2, ed_p256).is_ok());
        assert!(s.verify_threshold("r", &keys, &ids, 3, ed_p256).is_err());
        assert!(matches!(
            s.verify_threshold("r", &keys, &ids, 1, SchemeSet::EMPTY),
            Err(Error::Threshold { valid: 0, .. })
        ));
    }

    #[test]
    fn scheme_set_parses_and_prints() {
        assert_eq!(SchemeSet::default(), SchemeSet::ALL);
        assert_eq!("all".parse(), Ok(SchemeSet::ALL));
        assert_eq!(
            "ed25519".parse::<SchemeSet>(),
            Ok(SchemeSet::only(Scheme::Ed25519))
        );
        let two: SchemeSet = " ecdsa-sha2-nistp256 , ed25519".parse().unwrap();
        assert_eq!(two.to_string(), "ed25519,ecdsa-sha2-nistp256");
        assert_eq!(two.iter().count(), 2);
        assert!(two.contains(Scheme::EcdsaP256Sha256) && !two.contains(Scheme::RsaPssSha256));
        assert_eq!(SchemeSet::ALL.to_string().parse(), Ok(SchemeSet::ALL));
        assert_eq!(
            Scheme::ALL.into_iter().collect::<SchemeSet>(),
            SchemeSet::ALL
        );
        assert!(SchemeSet::EMPTY.is_empty() && !SchemeSet::ALL.is_empty());
        assert_eq!(
            "ed25519,rsa".parse::<SchemeSet>(),
            Err(UnknownScheme("rsa".into()))
        );
        assert!("".parse::<SchemeSet>().is_err());
    }

    /// Keys and signatures written by securesystemslib 1.6 (python-tuf's
    /// signing library) over the canonical JSON `{"_type":"vector","n":1}`.
    #[cfg(all(feature = "ecdsa", feature = "rsa"))]
    #[test]
    fn securesystemslib_keys_and_signatures_verify() {
        let msg = br#"{"_type":"vector","n":1}"#;
        let text = include_str!("../tests/data/securesystemslib-vectors.jsonl");
        let mut n = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let key: PublicKey = serde_json::from_value(v["key"].clone()).unwrap();
            // Key id as python-tuf computed it.
            assert_eq!(key.key_id(), v["keyid"].as_str().unwrap());
            // Serializes back to the same key object.
            assert_eq!(serde_json::to_value(&key).unwrap(), v["key"]);
            // The PEM we would write for that key is the PEM it wrote.
            assert_eq!(
                spki_pem(key.scheme(), key.material()).unwrap(),
                v["key"]["keyval"]["public"].as_str().unwrap()
            );
            let sig = hex::decode(v["sig"].as_str().unwrap()).unwrap();
            assert!(key.verify(msg, &sig), "{}", v["name"]);
            assert!(!key.verify(br#"{"_type":"vector","n":2}"#, &sig));
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[cfg(all(feature = "ecdsa", feature = "rsa"))]
    #[test]
    fn refuses_mismatched_or_malformed_keys() {
        let p256 = every_scheme_key(Scheme::EcdsaP256Sha256).public_key();
        let pem = serde_json::to_value(&p256).unwrap()["keyval"]["public"].clone();
        // A P-256 key claimed as P-384 or RSA.
        for (kt, sch) in [
            (ECDSA, ECDSA_P384),
            (RSA, RSA_PSS_SHA256),
            (ED25519, ED25519),
        ] {
            let v = json!({"keytype": kt, "scheme": sch, "keyval": {"public": pem}});
            assert!(serde_json::from_value::<PublicKey>(v).is_err(), "{sch}");
        }
        // Legacy keytype spelling is accepted.
        let v = json!({"keytype": ECDSA_P256, "scheme": ECDSA_P256, "keyval": {"public": pem}});
        assert!(serde_json::from_value::<PublicKey>(v).is_ok());
        // Keytype and scheme that do not go together.
        let v = json!({"keytype": RSA, "scheme": ECDSA_P256, "keyval": {"public": pem}});
        assert!(serde_json::from_value::<PublicKey>(v).is_err());
        // Not PEM, wrong PEM label, oversized.
        for public in [
            "not pem".to_string(),
            pem.as_str().unwrap().replace("PUBLIC KEY", "CERTIFICATE"),
            format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                "A".repeat(5000)
            ),
        ] {
            let v = json!({"keytype": ECDSA, "scheme": ECDSA_P256, "keyval": {"public": public}});
            assert!(serde_json::from_value::<PublicKey>(v).is_err());
        }
        // An over-long signature is not decoded.
        assert!(decode_signature(&"00".repeat(MAX_SIGNATURE_LEN + 1)).is_none());
        assert!(decode_signature(&"00".repeat(MAX_SIGNATURE_LEN)).is_some());
    }

    #[cfg(all(feature = "ecdsa", feature = "rsa"))]
    #[test]
    fn private_keys_load_from_pem() {
        let text = include_str!("../tests/data/rsa-2048-test-keys.pem");
        let first = pem::parse_many(text).unwrap().remove(0);
        let k = PrivateKey::from_pem(&pem::encode(&first)).unwrap();
        assert_eq!(k.scheme(), Scheme::RsaPssSha256);
        let ed = PrivateKey::from_seed(&[9; 32]);
        assert_eq!(ed.to_seed(), Some([9; 32]));
        assert_eq!(k.to_seed(), None);
        assert!(PrivateKey::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(PrivateKey::from_pkcs8_der(b"junk").is_err());
    }

    /// Keys of a scheme this build does not verify are left out of a
    /// `keys` object like keys of an unknown type, so they never count
    /// toward a threshold, whatever `SchemeSet` the verifier is given. With
    /// the default features all three securesystemslib keys count.
    #[test]
    fn schemes_not_built_never_count() {
        let msg = json!({"_type": "vector", "n": 1});
        let text = include_str!("../tests/data/securesystemslib-vectors.jsonl");
        // One ed25519 key (always built) beside the three vectors.
        let ed = PrivateKey::from_seed(&[7; 32]);
        let mut keys = serde_json::Map::new();
        keys.insert(ed.key_id(), serde_json::to_value(ed.public_key()).unwrap());
        let mut signatures = vec![SignatureEntry {
            keyid: ed.key_id(),
            sig: hex::encode(ed.sign(&to_canonical(&msg).unwrap()).unwrap()),
        }];
        let mut built = 1;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let id = v["keyid"].as_str().unwrap().to_string();
            let raw: RawKey = serde_json::from_value(v["key"].clone()).unwrap();
            let scheme = Scheme::from_tuf(&raw.keytype, &raw.scheme).unwrap();
            let decoded = PublicKey::try_from(raw);
            if scheme.is_built() {
                assert!(SchemeSet::BUILT.contains(scheme));
                assert!(decoded.is_ok(), "{scheme}");
                built += 1;
            } else {
                assert!(!SchemeSet::BUILT.contains(scheme));
                let e = decoded.unwrap_err().to_string();
                assert!(e.contains("not built"), "{e}");
            }
            keys.insert(id.clone(), v["key"].clone());
            signatures.push(SignatureEntry {
                keyid: id,
                sig: v["sig"].as_str().unwrap().into(),
            });
        }
        let keys = crate::metadata::lenient_keys(Value::Object(keys)).unwrap();
        assert_eq!(keys.len(), built);
        let ids: Vec<String> = signatures.iter().map(|e| e.keyid.clone()).collect();
        let raw = RawSigned {
            signatures,
            signed: msg,
        };
        let built = u64::try_from(built).unwrap();
        raw.verify_threshold("root", &keys, &ids, built, SchemeSet::ALL)
            .unwrap();
        match raw.verify_threshold("root", &keys, &ids, built + 1, SchemeSet::ALL) {
            Err(Error::Threshold { valid, .. }) => assert_eq!(valid, built),
            other => panic!("{other:?}"),
        }
        let all = cfg!(all(feature = "ecdsa", feature = "rsa"));
        assert_eq!(built == 4, all);
        assert_eq!(SchemeSet::BUILT == SchemeSet::ALL, all);
    }

    #[test]
    fn hash_check() {
        let h = hashes_of(b"abc");
        assert!(check_length_and_hashes("x", b"abc", Some(3), Some(&h)).is_ok());
        assert!(check_length_and_hashes("x", b"abd", Some(3), Some(&h)).is_err());
        assert!(check_length_and_hashes("x", b"abcd", Some(3), Some(&h)).is_err());
    }
}
