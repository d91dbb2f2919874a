//! The Client's tokio side: the state directory ([`state`]) and the drivers
//! that run sans-I/O cores over the device API's HTTPS client
//! ([`metadata`]: `esync_uptane::repo::Repository` refreshes over
//! [`crate::http::DeviceHttp`]).
//!
//! [`session`] drives the Server-facing sans-I/O session
//! (`core::session::Session`: check-in, full Uptane verification, blob
//! downloads) over the same client.
//!
//! [`vehicle`] is the loop over the orchestrator (`core::Client`): Agents
//! through the embedded broker, the campaign journal, blobs from the
//! download directory, the install gate with HMI consent, and the final
//! reports handed to the session's report outbox.

pub mod metadata;
pub mod session;
pub mod state;
pub mod vehicle;

pub use metadata::{check_in, refresh, CheckInOutcome, ClientRuntimeError, RefreshOutcome};
pub use state::{ConfigFile, StateDir, StateError};
