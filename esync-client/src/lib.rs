//! # esync-client
//!
//! The vehicle's Client. For now this crate holds the **in-vehicle broker**
//! the Client embeds ([`broker`]): Agents and listeners connect to it over
//! TCP with mutual TLS, and the Client itself talks to it in-process through
//! an `esync_transport::ChannelTransport`.
//!
//! [`http`] is the Client's HTTPS side of the device API (`esync_api`):
//! mutual TLS with the vehicle certificate, capped bodies, timeouts and
//! resumable, hash-checked blob downloads.
//!
//! The Client orchestrator (the update campaign state machine driving
//! inventory, consent, transfer, install and confirm over this broker) comes
//! later; it is not part of this crate yet.

#![forbid(unsafe_code)]

pub mod broker;
pub mod core;
pub mod http;
pub mod runtime;
