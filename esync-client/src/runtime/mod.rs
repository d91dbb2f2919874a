//! The Client's tokio side: the state directory ([`state`]) and the drivers
//! that run sans-I/O cores over the device API's HTTPS client
//! ([`metadata`]: `esync_uptane::repo::Repository` refreshes over
//! [`crate::http::DeviceHttp`]).
//!
//! [`session`] drives the Server-facing sans-I/O session
//! (`core::session::Session`: check-in, full Uptane verification, blob
//! downloads) over the same client.
//!
//! Not here yet: the loop over the orchestrator (`core::Client`: Agents
//! through the embedded broker, the campaign journal on `FileJournal`),
//! and the report outbox.

pub mod metadata;
pub mod session;
pub mod state;

pub use metadata::{check_in, refresh, CheckInOutcome, RefreshOutcome, RuntimeError};
pub use state::{ClientConfig, StateDir, StateError};
