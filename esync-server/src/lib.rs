//! # esync-server
//!
//! The fleet Server: device provisioning, the Image repository and the
//! per-vehicle Director, packages, delta generation and cache, campaigns,
//! status history, data ingestion, REST API, CLI and dashboard.
//!
//! Built so far: [`provision`] (the fleet CA issues vehicle and Agent
//! certificates from CSRs, revokes them and signs the CRL) and [`tls`] (the
//! device listener's mutual-TLS configuration with CRL revocation through
//! rustls, reloadable; the admin listener's server-only TLS; the vehicle's
//! VIN read from its certificate).

#![forbid(unsafe_code)]

pub mod provision;
pub mod tls;
