//! # esync-client
//!
//! The vehicle's Client. It holds the **in-vehicle broker** the Client
//! embeds ([`broker`]): Agents and listeners connect to it over
//! TCP with mutual TLS, and the Client itself talks to it in-process through
//! an `esync_transport::ChannelTransport`.
//!
//! [`core`] is the Client's sans-I/O core: inventory of the Agents, a
//! verified and downloaded package driven through every Agent of it in
//! install stages (Agents of a stage in parallel, retries per component),
//! atomically (commit or roll back every component), with the campaign
//! journaled through `esync_store` so that a restart resumes or completes
//! it; and [`core::session`], the Server-facing side (check-in, Uptane
//! verification, download planning and resumable downloads, consent).
//!
//! [`http`] is the Client's HTTPS side of the device API (`esync_api`):
//! mutual TLS with the vehicle certificate, capped bodies, timeouts and
//! resumable, hash-checked blob downloads; [`runtime`] holds the state
//! directory, the drivers of the session over it, and the tokio loop over
//! the orchestration core ([`runtime::vehicle`]: Agents through the broker,
//! the campaign journal on a file, install consent through the HMI).
//!
//! Features: `runtime` (default) builds [`broker`], [`http`], [`runtime`]
//! and the binary (tokio, rustls, hyper); without it only [`core`] builds.

#![forbid(unsafe_code)]

#[cfg(feature = "runtime")]
pub mod broker;
pub mod core;
#[cfg(feature = "runtime")]
pub mod http;
#[cfg(feature = "runtime")]
pub mod runtime;
