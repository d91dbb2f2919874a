//! Wall time, injected.
//!
//! Transports and the embedded broker stamp what they sign themselves
//! (presence markers over MQTT, the broker's `Presence` envelopes) with the
//! time of a [`WallClock`] they are given in their configuration, never by
//! reading the system clock in their own code paths. The configurations
//! default to [`WallClock::system`], the one place here that reads the
//! system clock; a host with its own time source (a GNSS-disciplined clock,
//! a vehicle network time) or a test passes its own.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall time in milliseconds since the Unix epoch.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl WallClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        WallClock(Arc::new(now_ms))
    }

    /// The system's real-time clock (0 if it reads before the epoch).
    pub fn system() -> Self {
        WallClock::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        })
    }

    /// The current time, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl core::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("WallClock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_reads_its_source() {
        assert_eq!(WallClock::new(|| 42).now_ms(), 42);
        // The system clock is past 2020-01-01.
        assert!(WallClock::system().now_ms() > 1_577_836_800_000);
    }
}
