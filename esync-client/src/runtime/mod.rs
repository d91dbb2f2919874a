//! The Client's tokio side: the state directory ([`state`]) and the drivers
//! that run sans-I/O cores over the device API's HTTPS client
//! ([`metadata`]: `esync_uptane::repo::Repository` refreshes over
//! [`crate::http::DeviceHttp`]).
//!
//! Not here yet: the loop over the Client orchestrator core (inventory,
//! consent, downloads and installs through the embedded broker); that core
//! is being written in `core/` and this runtime will drive it the way
//! `esync-agent`'s runtime drives the Agent endpoint.

pub mod metadata;
pub mod state;

pub use metadata::{check_in, refresh, CheckInOutcome, RefreshOutcome, RuntimeError};
pub use state::{ClientConfig, StateDir, StateError};
