//! Live counters of a running fleet, shared by every vehicle task without
//! locks on the hot path (atomics), and the check-in latency histogram.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two (precision about 1/32 = 3 %).
const SUB: u64 = 32;
/// Values below this are counted exactly (microseconds).
const LINEAR: u64 = 2 * SUB;
/// Powers of two above `LINEAR` covered (up to 2^40 µs, about 12 days).
const OCTAVES: u64 = 40 - 6;
const BUCKETS: usize = (LINEAR + OCTAVES * SUB) as usize;

/// A latency histogram in microseconds: exact below 64 µs, then 32
/// buckets per power of two; mergeable and lock-free.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let e = 63 - u64::from(us.leading_zeros()); // floor(log2), >= 6
    let sub = (us >> (e - 5)) & (SUB - 1);
    let idx = LINEAR + (e - 6) * SUB + sub;
    (idx as usize).min(BUCKETS - 1)
}

/// Upper bound (µs) of bucket `i`.
fn bucket_high(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let e = (i - LINEAR) / SUB + 6;
    let sub = (i - LINEAR) % SUB;
    ((SUB + sub + 1) << (e - 5)) - 1
}

impl Histogram {
    /// Counts one observation.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The `q`-quantile (0..=1) in milliseconds (bucket upper bound, at
    /// most the largest observation); 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let max = self.max.load(Ordering::Relaxed);
        quantile_of(&self.counts(), q).map_or(0.0, |us| us.min(max) as f64 / 1000.0)
    }

    /// The count of every bucket (for [`quantile_of`]).
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// The largest observation, ms.
    pub fn max_ms(&self) -> f64 {
        self.max.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// The `q`-quantile (µs, a bucket's upper bound) of bucket counts `counts`
/// ([`Histogram::counts`], or the difference of two); `None` when empty.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_high(i));
        }
    }
    None
}

/// The counters at one moment, to measure a window from
/// ([`crate::FleetHandle::mark`], [`crate::FleetHandle::since`]).
#[derive(Clone, Debug)]
pub struct Mark {
    at: std::time::Instant,
    check_ins: u64,
    errors: u64,
    latency: Vec<u64>,
}

/// Check-ins, latency and errors between a [`Mark`] and now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds.
    pub secs: f64,
    /// Check-ins answered.
    pub check_ins: u64,
    /// Check-ins per second.
    pub check_ins_per_s: f64,
    /// Median check-in latency (ms).
    pub latency_p50_ms: f64,
    /// 99th percentile check-in latency (ms).
    pub latency_p99_ms: f64,
    /// Errors.
    pub errors: u64,
    /// Errors per request made (check-ins and errors).
    pub error_rate: f64,
}

impl Window {
    /// One line.
    pub fn line(&self) -> String {
        format!(
            "{:.1} s: {} check-ins ({:.1}/s)  p50 {:.2} ms  p99 {:.2} ms  errors {} ({:.4} %)",
            self.secs,
            self.check_ins,
            self.check_ins_per_s,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.errors,
            self.error_rate * 100.0
        )
    }
}

/// Kinds of errors a simulated vehicle meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Connecting, TLS or HTTP failed (refused, reset, closed).
    Transport,
    /// No answer in time.
    Timeout,
    /// The Server answered 5xx.
    Server,
    /// The Server answered 4xx (a manifest rejected, a report conflict…).
    Refused,
    /// Metadata did not verify (signature, threshold, expiry, mismatch).
    Verify,
    /// A blob did not have its SHA-256 or length.
    Blob,
    /// Anything else (a malformed answer, a local failure).
    Other,
}

impl ErrorKind {
    /// Every kind, in order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Transport,
        ErrorKind::Timeout,
        ErrorKind::Server,
        ErrorKind::Refused,
        ErrorKind::Verify,
        ErrorKind::Blob,
        ErrorKind::Other,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Transport => "transport",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Server => "server",
            ErrorKind::Refused => "refused",
            ErrorKind::Verify => "verify",
            ErrorKind::Blob => "blob",
            ErrorKind::Other => "other",
        }
    }
}

/// The shared live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub check_ins: AtomicU64,
    pub up_to_date: AtomicU64,
    pub new_metadata: AtomicU64,
    pub manifest_wanted: AtomicU64,
    pub manifests: AtomicU64,
    pub reports: AtomicU64,
    pub installed: AtomicU64,
    pub rolled_back: AtomicU64,
    pub bytes: AtomicU64,
    pub failovers: AtomicU64,
    errors: [AtomicU64; 7],
    offers: Mutex<BTreeMap<String, u64>>,
    pub latency: Histogram,
}

impl Counters {
    pub fn error(&self, k: ErrorKind) {
        self.errors[k as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn offered(&self, package: &str) {
        let mut m = self
            .offers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(package.to_owned()).or_default() += 1;
    }

    fn errors_total(&self) -> u64 {
        self.errors.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    pub fn mark(&self) -> Mark {
        Mark {
            at: std::time::Instant::now(),
            check_ins: self.check_ins.load(Ordering::Relaxed),
            errors: self.errors_total(),
            latency: self.latency.counts(),
        }
    }

    pub fn since(&self, m: &Mark) -> Window {
        let now = self.mark();
        let secs = now.at.duration_since(m.at).as_secs_f64();
        let diff: Vec<u64> = now
            .latency
            .iter()
            .zip(&m.latency)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let q = |p| quantile_of(&diff, p).map_or(0.0, |us| us as f64 / 1000.0);
        let check_ins = now.check_ins - m.check_ins;
        let errors = now.errors - m.errors;
        Window {
            secs,
            check_ins,
            check_ins_per_s: if secs > 0.0 {
                check_ins as f64 / secs
            } else {
                0.0
            },
            latency_p50_ms: q(0.5),
            latency_p99_ms: q(0.99),
            errors,
            error_rate: if check_ins + errors == 0 {
                0.0
            } else {
                errors as f64 / (check_ins + errors) as f64
            },
        }
    }

    pub fn snapshot(&self, elapsed: Duration, running: usize) -> FleetSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let errors: BTreeMap<ErrorKind, u64> = ErrorKind::ALL
            .iter()
            .map(|k| (*k, l(&self.errors[*k as usize])))
            .filter(|(_, n)| *n > 0)
            .collect();
        FleetSnapshot {
            elapsed_s: elapsed.as_secs_f64(),
            vehicles_running: running,
            check_ins: l(&self.check_ins),
            up_to_date: l(&self.up_to_date),
            new_metadata: l(&self.new_metadata),
            manifest_wanted: l(&self.manifest_wanted),
            manifests_uploaded: l(&self.manifests),
            reports: l(&self.reports),
            installed: l(&self.installed),
            rolled_back: l(&self.rolled_back),
            bytes_downloaded: l(&self.bytes),
            failovers: l(&self.failovers),
            errors_total: errors.values().sum(),
            errors,
            offers: self
                .offers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            latency_p50_ms: self.latency.quantile_ms(0.50),
            latency_p99_ms: self.latency.quantile_ms(0.99),
            latency_max_ms: self.latency.max_ms(),
        }
    }
}

/// The fleet's counters at one moment ([`crate::FleetHandle::snapshot`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    /// Seconds since the fleet started.
    pub elapsed_s: f64,
    /// Vehicle tasks still running.
    pub vehicles_running: usize,
    /// Check-ins answered (any answer).
    pub check_ins: u64,
    /// … answered "up to date".
    pub up_to_date: u64,
    /// … answered "new Director metadata".
    pub new_metadata: u64,
    /// … answered "manifest wanted".
    pub manifest_wanted: u64,
    /// Signed manifests accepted.
    pub manifests_uploaded: u64,
    /// Result reports stored.
    pub reports: u64,
    /// Packages installed (reported `installed`).
    pub installed: u64,
    /// Packages rolled back (reported `rolled_back`).
    pub rolled_back: u64,
    /// Blob bytes downloaded and verified.
    pub bytes_downloaded: u64,
    /// Switches to the next Server URL after a connection error.
    pub failovers: u64,
    /// Errors, all kinds.
    pub errors_total: u64,
    /// Errors by kind (kinds with none left out).
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Offers taken, by package (one per vehicle and distinct offer).
    pub offers: BTreeMap<String, u64>,
    /// Median check-in latency (ms).
    pub latency_p50_ms: f64,
    /// 99th percentile check-in latency (ms).
    pub latency_p99_ms: f64,
    /// Largest check-in latency (ms).
    pub latency_max_ms: f64,
}

impl FleetSnapshot {
    /// Check-ins per second over the whole run.
    pub fn check_ins_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.check_ins as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Errors per request made (check-ins and the errors themselves).
    pub fn error_rate(&self) -> f64 {
        let n = self.check_ins + self.errors_total;
        if n == 0 {
            0.0
        } else {
            self.errors_total as f64 / n as f64
        }
    }

    /// One progress line.
    pub fn line(&self) -> String {
        format!(
            "{:>7.1}s  {} vehicles  {} check-ins ({:.0}/s)  p50 {:.2} ms  p99 {:.2} ms  manifests {}  errors {}  offers {}  installed {}  rolled back {}",
            self.elapsed_s,
            self.vehicles_running,
            self.check_ins,
            self.check_ins_per_s(),
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.manifests_uploaded,
            self.errors_total,
            self.offers.values().sum::<u64>(),
            self.installed,
            self.rolled_back,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_precision() {
        let h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((p50 - 5.0).abs() / 5.0 < 0.04, "{p50}");
        assert!((p99 - 9.9).abs() / 9.9 < 0.04, "{p99}");
        assert_eq!(h.max_ms(), 10.0);
        assert_eq!(h.count(), 10_000);
        assert_eq!(Histogram::default().quantile_ms(0.99), 0.0);
        // A window: only what was recorded after the first counts.
        let before = h.counts();
        for _ in 0..100 {
            h.record(Duration::from_millis(50));
        }
        let diff: Vec<u64> = h.counts().iter().zip(&before).map(|(a, b)| a - b).collect();
        let p50 = quantile_of(&diff, 0.5).expect("some") as f64 / 1000.0;
        assert!((p50 - 50.0).abs() / 50.0 < 0.04, "{p50}");
    }

    #[test]
    fn buckets_are_monotonic_and_bounds_contain_their_values() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            65_535,
            1 << 30,
            u64::MAX / 2,
        ] {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
            if b < BUCKETS - 1 {
                assert!(bucket_high(b) >= us, "{us}");
            }
        }
    }
}
