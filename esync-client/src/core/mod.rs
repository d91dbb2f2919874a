//! The Client's sans-I/O orchestration core.
//!
//! - [`plan`]: the orchestrator's input, a verified and downloaded
//!   [`plan::ReadyPackage`], and the up-front admission check.
//! - [`inventory`]: the vehicle's Agents.
//! - [`session`]: the Server-facing session (check-in, full Uptane
//!   verification, planning, consent, downloads) producing the
//!   [`plan::ReadyPackage`].

pub mod inventory;
pub mod plan;
pub mod session;
