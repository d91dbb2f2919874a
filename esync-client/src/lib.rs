//! # esync-client
//!
//! The vehicle's Client. For now this crate holds the **in-vehicle broker**
//! the Client embeds ([`broker`]): Agents and listeners connect to it over
//! TCP with mutual TLS, and the Client itself talks to it in-process through
//! an `esync_transport::ChannelTransport`.
//!
//! [`core`] is the Client's sans-I/O orchestration core: inventory of the
//! Agents, a verified and downloaded package driven through every Agent of
//! it in install stages (Agents of a stage in parallel, retries per
//! component), atomically (commit or roll back every component), with the
//! campaign journaled through `esync_store` so that a restart resumes or
//! completes it. The Server side (check-in, Uptane verification,
//! downloads, consent) and a tokio runtime around the core are not part
//! of it.

#![forbid(unsafe_code)]

pub mod broker;
pub mod core;
