//! # esync-examples
//!
//! The fleet demo of esync-rs on the real pipeline, in one process and with
//! no external service: `cargo run --release -p esync-examples --bin demo`.
//!
//! - **Server** ([`backend`]): the real esync-server in process (SQLite,
//!   device API over mutual TLS, admin API, Director, Image repository,
//!   delta workers, campaigns).
//! - **Vehicles** ([`vehicle`], [`gateway`]): per vehicle the Client's
//!   embedded broker and 3 to 8 esync-agent runtimes on file-backed A/B
//!   devices; the real Client's `VehicleRuntime` installs through them.
//! - **Fleet** ([`fleet`]): provisioning through the admin API, the
//!   Clients' check-in loops (session core over the HTTPS device API), a
//!   campaign in two waves, one vehicle with an injected self-test failure;
//!   [`fleet::run_fleet`] returns an error on any deviation.

#![forbid(unsafe_code)]

pub mod backend;
pub mod firmware;
pub mod fleet;
pub mod gateway;
pub mod vehicle;

use std::time::{SystemTime, UNIX_EPOCH};

/// The demo failed: what failed, in which part.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Setting up the Server side (CA, repositories, packages).
    #[error("server: {0}")]
    Server(String),
    /// Setting up or running the vehicle (broker, Agents, devices).
    #[error("vehicle: {0}")]
    Vehicle(String),
    /// Uptane verification or reports.
    #[error("uptane: {0}")]
    Uptane(String),
    /// A protocol exchange went wrong.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// An end-state check failed (versions, hashes, counters).
    #[error("check failed: {0}")]
    Check(String),
    /// File-system work.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
