//! Validated identities and names.
//!
//! Every type here can only hold a valid value: constructors (`new`, `FromStr`,
//! `TryFrom<String>`) check the value and decoding goes through the same checks,
//! so a frame off the wire can never produce an invalid identity.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::IdError;

/// Checks `s` against a length range and a per-byte predicate.
fn check_chars(
    kind: &'static str,
    s: &str,
    min: usize,
    max: usize,
    ok: impl Fn(u8) -> bool,
) -> Result<(), IdError> {
    if s.len() < min || s.len() > max {
        return Err(IdError::Length {
            kind,
            min,
            max,
            got: s.len(),
        });
    }
    if let Some(pos) = s.bytes().position(|b| !ok(b)) {
        return Err(IdError::Character {
            kind,
            position: pos,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&s)?;
                Ok(Self(s))
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
}

string_id!(
    /// Vehicle identification number (ISO 3779): 17 characters, digits and
    /// upper-case letters except `I`, `O` and `Q`. The check digit is not
    /// enforced, since it is mandatory only in some markets.
    Vin,
    "VIN",
    |s| check_chars("VIN", s, 17, 17, |b| {
        (b.is_ascii_digit() || b.is_ascii_uppercase()) && !matches!(b, b'I' | b'O' | b'Q')
    })
);

string_id!(
    /// Hardware identifier of an ECU or endpoint (1 to 64 bytes of
    /// `[A-Za-z0-9._:-]`). Images carry the hardware id they are built for and
    /// are refused by any other hardware.
    HardwareId,
    "hardware id",
    |s| check_chars("hardware id", s, 1, 64, is_token_byte)
);

string_id!(
    /// Serial number of one ECU (1 to 64 bytes of `[A-Za-z0-9._:-]`). In the
    /// Uptane metadata this is the ECU identifier.
    EcuSerial,
    "ECU serial",
    |s| check_chars("ECU serial", s, 1, 64, is_token_byte)
);

string_id!(
    /// Name of a message group (1 to 64 bytes of `[a-z0-9._-]`), e.g.
    /// `update-listeners`.
    GroupName,
    "group name",
    |s| check_chars("group name", s, 1, 64, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
    })
);

string_id!(
    /// Name of a listener such as an HMI or a policy engine (1 to 64 bytes of
    /// `[a-z0-9._-]`).
    ListenerName,
    "listener name",
    |s| check_chars("listener name", s, 1, 64, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
    })
);

/// Maximum length of a device path in bytes.
pub const DEVICE_PATH_MAX: usize = 128;
/// Maximum number of segments in a device path.
pub const DEVICE_PATH_MAX_SEGMENTS: usize = 8;

fn check_device_path(s: &str) -> Result<(), IdError> {
    const KIND: &str = "device path";
    check_chars(KIND, s, 2, DEVICE_PATH_MAX, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'/' | b'_' | b'-' | b'.')
    })?;
    let rest = s.strip_prefix('/').ok_or(IdError::Format {
        kind: KIND,
        reason: "must start with '/'",
    })?;
    let mut count = 0;
    for seg in rest.split('/') {
        count += 1;
        if seg.is_empty() {
            return Err(IdError::Format {
                kind: KIND,
                reason: "empty segment",
            });
        }
        if seg.bytes().all(|b| b == b'.') {
            return Err(IdError::Format {
                kind: KIND,
                reason: "'.' and '..' segments are not allowed",
            });
        }
    }
    if count > DEVICE_PATH_MAX_SEGMENTS {
        return Err(IdError::Format {
            kind: KIND,
            reason: "more than 8 segments",
        });
    }
    Ok(())
}

string_id!(
    /// Path naming an Agent's device in the vehicle, e.g. `/powertrain/ecm`:
    /// `/` followed by 1 to 8 non-empty segments of `[a-z0-9._-]`, no `.` or
    /// `..` segment, at most 128 bytes.
    DevicePath,
    "device path",
    check_device_path
);

impl DevicePath {
    /// Whether `self` is `prefix` or lies below it (segment-wise, so
    /// `/powertrain` covers `/powertrain/ecm` but not `/powertrainx`).
    pub fn starts_with(&self, prefix: &DevicePath) -> bool {
        let p = prefix.as_str();
        let s = self.as_str();
        s == p || (s.starts_with(p) && s.as_bytes().get(p.len()) == Some(&b'/'))
    }

    /// The segments of the path, without the leading `/`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0[1..].split('/')
    }
}

/// Anti-rollback release counter of an image (Uptane `release_counter`).
/// An image whose counter is lower than the installed one is refused.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ReleaseCounter(pub u64);

impl fmt::Display for ReleaseCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Maximum length of a software version string.
pub const VERSION_MAX: usize = 64;

/// A software version: `N(.N)*` with 1 to 6 numeric components, an optional
/// pre-release `-ident(.ident)*` and optional build metadata `+ident(.ident)*`,
/// at most 64 bytes. Identifiers are `[0-9A-Za-z-]+`; numeric components and
/// numeric pre-release identifiers have no leading zeros.
///
/// # Ordering
///
/// Versions order as SemVer 2.0 does, generalised to any number of numeric
/// components:
/// 1. numeric components compare as numbers, left to right; a missing
///    component counts as 0, so `1.2 == 1.2.0` in precedence;
/// 2. a version with a pre-release is lower than the same version without
///    one (`1.0.0-rc.1 < 1.0.0`);
/// 3. pre-release identifiers compare left to right: numeric ones as numbers,
///    others in ASCII order, numeric before alphanumeric, and a shorter list
///    before a longer one with the same prefix;
/// 4. build metadata carries no precedence; to keep `Ord` consistent with
///    `Eq`, versions that are equal in precedence are finally ordered by their
///    exact text (so `1.2 < 1.2.0` and `1.0+a < 1.0+b`). Use
///    [`SoftwareVersion::precedence`] to compare precedence alone.
///
/// Ordering is informative: the anti-rollback decision is made on the
/// [`ReleaseCounter`], which the signed metadata carries.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SoftwareVersion(String);

impl SoftwareVersion {
    /// Parses and validates a version.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        parse_version(&s)?;
        Ok(Self(s))
    }

    /// The version text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares precedence only (rules 1 to 3), ignoring build metadata and
    /// trailing zero components.
    pub fn precedence(&self, other: &Self) -> Ordering {
        // Both were validated at construction.
        let (a, b) = match (parse_version(&self.0), parse_version(&other.0)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return self.0.cmp(&other.0),
        };
        let n = a.numbers.len().max(b.numbers.len());
        for i in 0..n {
            let x = a.numbers.get(i).copied().unwrap_or(0);
            let y = b.numbers.get(i).copied().unwrap_or(0);
            match x.cmp(&y) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (a.pre, b.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(pa), Some(pb)) => {
                let mut ia = pa.split('.');
                let mut ib = pb.split('.');
                loop {
                    match (ia.next(), ib.next()) {
                        (None, None) => return Ordering::Equal,
                        (None, Some(_)) => return Ordering::Less,
                        (Some(_), None) => return Ordering::Greater,
                        (Some(x), Some(y)) => {
                            let o = cmp_pre_ident(x, y);
                            if o != Ordering::Equal {
                                return o;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn cmp_pre_ident(x: &str, y: &str) -> Ordering {
    let xn = x.bytes().all(|b| b.is_ascii_digit());
    let yn = y.bytes().all(|b| b.is_ascii_digit());
    match (xn, yn) {
        // Numeric identifiers have no leading zeros, so length then text is numeric order.
        (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

struct ParsedVersion<'a> {
    numbers: Vec<u64>,
    pre: Option<&'a str>,
}

fn parse_version(s: &str) -> Result<ParsedVersion<'_>, IdError> {
    const KIND: &str = "software version";
    check_chars(KIND, s, 1, VERSION_MAX, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+')
    })?;
    let (main, build) = match s.split_once('+') {
        Some((m, b)) => (m, Some(b)),
        None => (s, None),
    };
    let (core, pre) = match main.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (main, None),
    };
    let bad = |reason| IdError::Format { kind: KIND, reason };
    let mut numbers = Vec::new();
    for part in core.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("numeric components must be non-empty digits"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(bad("numeric components must not have leading zeros"));
        }
        let n: u64 = part
            .parse()
            .map_err(|_| bad("numeric component overflows u64"))?;
        numbers.push(n);
    }
    if numbers.len() > 6 {
        return Err(bad("more than 6 numeric components"));
    }
    let ident_ok =
        |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if let Some(p) = pre {
        for id in p.split('.') {
            if !ident_ok(id) {
                return Err(bad("empty or invalid pre-release identifier"));
            }
            if id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(
                    "numeric pre-release identifiers must not have leading zeros",
                ));
            }
        }
    }
    if let Some(b) = build {
        if !b.split('.').all(ident_ok) {
            return Err(bad("empty or invalid build identifier"));
        }
    }
    Ok(ParsedVersion { numbers, pre })
}

impl PartialOrd for SoftwareVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SoftwareVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.precedence(other).then_with(|| self.0.cmp(&other.0))
    }
}

impl TryFrom<String> for SoftwareVersion {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<SoftwareVersion> for String {
    fn from(v: SoftwareVersion) -> String {
        v.0
    }
}

impl FromStr for SoftwareVersion {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s.to_string())
    }
}

impl fmt::Display for SoftwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SoftwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SoftwareVersion({:?})", self.0)
    }
}

/// A 128-bit identifier chosen by whoever starts an exchange (update,
/// transfer, job, request); replies carry it back.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Id128(pub [u8; 16]);

impl fmt::Debug for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Correlates a reply with its request.
pub type CorrelationId = Id128;
/// Identifies one update of one component (a campaign's target for one Agent).
pub type UpdateId = Id128;
/// Identifies one image transfer.
pub type TransferId = Id128;
/// Identifies one diagnostic or data-gathering job.
pub type JobId = Id128;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Sha256Digest(pub [u8; 32]);

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An ed25519 signature (64 bytes). Encoded as a length-prefixed byte string
/// whose length must be exactly 64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignatureBytes(pub [u8; 64]);

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sig:")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..")
    }
}

impl Serialize for SignatureBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SignatureBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SignatureBytes, E> {
                let arr: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(SignatureBytes(arr))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SignatureBytes, A::Error> {
                let mut arr = [0u8; 64];
                for (i, slot) in arr.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(65, &self));
                }
                Ok(SignatureBytes(arr))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(feature = "arbitrary")]
mod arb {
    use super::*;
    use arbitrary::{Arbitrary, Result, Unstructured};

    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-";
    const TOKEN: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZabcdefxyz0123456789._:-";
    const VIN: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

    fn pick(u: &mut Unstructured<'_>, alphabet: &[u8], min: usize, max: usize) -> Result<String> {
        let len = u.int_in_range(min..=max)?;
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            s.push(*u.choose(alphabet)? as char);
        }
        Ok(s)
    }

    fn fix<T>(r: core::result::Result<T, IdError>) -> Result<T> {
        r.map_err(|_| arbitrary::Error::IncorrectFormat)
    }

    impl<'a> Arbitrary<'a> for SignatureBytes {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let mut b = [0u8; 64];
            u.fill_buffer(&mut b)?;
            Ok(SignatureBytes(b))
        }
    }
    impl<'a> Arbitrary<'a> for Vin {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            fix(Vin::new(pick(u, VIN, 17, 17)?))
        }
    }
    impl<'a> Arbitrary<'a> for HardwareId {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            fix(HardwareId::new(pick(u, TOKEN, 1, 24)?))
        }
    }
    impl<'a> Arbitrary<'a> for EcuSerial {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            fix(EcuSerial::new(pick(u, TOKEN, 1, 24)?))
        }
    }
    impl<'a> Arbitrary<'a> for GroupName {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            fix(GroupName::new(pick(u, LOWER, 1, 24)?))
        }
    }
    impl<'a> Arbitrary<'a> for ListenerName {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            fix(ListenerName::new(pick(u, LOWER, 1, 24)?))
        }
    }
    impl<'a> Arbitrary<'a> for DevicePath {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let n = u.int_in_range(1..=4)?;
            let mut s = String::new();
            for _ in 0..n {
                s.push('/');
                s.push_str(&pick(u, b"abcdefghijklmnopqrstuvwxyz0123456789", 1, 12)?);
            }
            fix(DevicePath::new(s))
        }
    }
    impl<'a> Arbitrary<'a> for SoftwareVersion {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let n = u.int_in_range(1..=4)?;
            let mut s = String::new();
            for i in 0..n {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(&alloc::format!("{}", u.int_in_range(0u32..=999)?));
            }
            if u.ratio(1, 4)? {
                s.push_str(&alloc::format!("-rc.{}", u.int_in_range(1u32..=9)?));
            }
            if u.ratio(1, 8)? {
                s.push_str("+build.7");
            }
            fix(SoftwareVersion::new(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SoftwareVersion {
        SoftwareVersion::new(s).expect("valid version in test")
    }

    #[test]
    fn device_paths() {
        assert!(DevicePath::new("/powertrain/ecm").is_ok());
        for bad in [
            "",
            "/",
            "powertrain",
            "/a//b",
            "/a/",
            "/../x",
            "/a/./b",
            "/A",
            "/a b",
        ] {
            assert!(DevicePath::new(bad).is_err(), "{bad} should be refused");
        }
        assert!(DevicePath::new("/a/b/c/d/e/f/g/h").is_ok());
        assert!(DevicePath::new("/a/b/c/d/e/f/g/h/i").is_err());
        let p = DevicePath::new("/powertrain").expect("valid");
        assert!(DevicePath::new("/powertrain/ecm")
            .expect("valid")
            .starts_with(&p));
        assert!(!DevicePath::new("/powertrainx")
            .expect("valid")
            .starts_with(&p));
    }

    #[test]
    fn vins() {
        assert!(Vin::new("WVWZZZ1JZXW000001").is_ok());
        assert!(Vin::new("WVWZZZ1JZXW00000").is_err());
        assert!(Vin::new("WVWZZZ1JZXW00000I").is_err());
        assert!(Vin::new("wvwzzz1jzxw000001").is_err());
    }

    #[test]
    fn version_order() {
        let ordered = [
            "0.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2",
            "1.10.0",
            "2",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.2").precedence(&v("1.2.0")), Ordering::Equal);
        assert_eq!(v("1.0+a").precedence(&v("1.0+b")), Ordering::Equal);
        assert!(v("1.2") < v("1.2.0"));
        for bad in [
            "",
            "01.2",
            "1..2",
            "1.2-",
            "1.2+",
            "a.b",
            "1.2.3.4.5.6.7",
            "1.0-01",
        ] {
            assert!(
                SoftwareVersion::new(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
