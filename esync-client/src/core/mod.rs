//! The Client's sans-I/O orchestration core.
//!
//! - [`plan`]: the orchestrator's input, a verified and downloaded
//!   [`plan::ReadyPackage`], and the up-front admission check.
//! - [`inventory`]: the vehicle's Agents.

pub mod inventory;
pub mod plan;
