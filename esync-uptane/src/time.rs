//! Injected time: [`UnixTime`] and RFC 3339 (`expires`) conversion.
//!
//! The crate never reads a clock; callers pass the current time in.

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Seconds since 1970-01-01T00:00:00Z (UTC, no leap seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (RFC 3339 in UTC, as TUF
    /// writes `expires`). A fraction is accepted and truncated; offsets other
    /// than `Z` are refused.
    pub fn parse_rfc3339(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Field {
            what: "timestamp".into(),
            field: "expires",
            reason: format!("{s:?}: {reason}"),
        };
        let b = s.as_bytes();
        if b.len() < 20 || b.len() > 40 {
            return Err(bad("length"));
        }
        let num = |r: core::ops::Range<usize>| -> Result<i64> {
            let part = &b[r];
            if part.iter().all(u8::is_ascii_digit) {
                Ok(part.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
            } else {
                Err(bad("digits expected"))
            }
        };
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return Err(bad("separators"));
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let rest = &b[19..];
        let rest = match rest.first() {
            Some(b'.') => {
                let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return Err(bad("empty fraction"));
                }
                &rest[1 + digits..]
            }
            _ => rest,
        };
        if rest != b"Z" {
            return Err(bad("must end in Z"));
        }
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return Err(bad("out of range"));
        }
        let days = days_from_civil(year, month, day);
        Ok(UnixTime(
            days * 86_400 + hour * 3600 + min * 60 + sec.min(59),
        ))
    }

    /// Formats as `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        )
    }

    /// `self + seconds`, saturating.
    pub fn plus_seconds(self, seconds: i64) -> Self {
        UnixTime(self.0.saturating_add(seconds))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for UnixTime {
    fn serialize<S: Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for UnixTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UnixTime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2030-12-31T23:59:59Z",
            "2024-02-29T12:00:00Z",
        ] {
            assert_eq!(UnixTime::parse_rfc3339(s).unwrap().to_rfc3339(), s);
        }
        assert_eq!(
            UnixTime::parse_rfc3339("2001-09-09T01:46:40Z").unwrap(),
            UnixTime(1_000_000_000)
        );
        assert_eq!(
            UnixTime::parse_rfc3339("2001-09-09T01:46:40.123Z").unwrap(),
            UnixTime(1_000_000_000)
        );
    }

    #[test]
    fn refuses_bad() {
        for s in [
            "2023-02-29T00:00:00Z",
            "2023-01-01 00:00:00Z",
            "2023-01-01T00:00:00+01:00",
            "2023-13-01T00:00:00Z",
            "2023-01-01T00:00:00",
            "2023-01-01T00:00:00.Z",
        ] {
            assert!(UnixTime::parse_rfc3339(s).is_err(), "{s}");
        }
    }
}
