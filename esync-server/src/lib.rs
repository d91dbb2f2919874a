//! # esync-server
//!
//! The fleet Server: device provisioning, the Image repository and the
//! per-vehicle Director, packages, delta generation and cache, campaigns,
//! status history, data ingestion, REST API, CLI and dashboard.
//!
//! Built so far: storage ([`store`]: one [`store::Store`] interface on
//! SQLite or PostgreSQL), the content-addressed blob store ([`blob`]),
//! background delta generation ([`deltas`]), package validation
//! ([`packages`]), [`provision`] (the fleet CA issues vehicle and Agent
//! certificates from CSRs, revokes them and signs the CRL) and [`tls`] (the
//! device listener's mutual-TLS configuration with CRL revocation through
//! rustls, reloadable; the admin listener's server-only TLS; the vehicle's
//! VIN read from its certificate), the Uptane repositories ([`repo`]: the
//! Image repository with offline root and targets keys, uploads verified;
//! [`director`]: online keys, per-vehicle targets on demand, A15 manifest
//! checks; both on [`meta`]) and the device API ([`device`]: axum over
//! mutual TLS, the `esync_api` routes), the admin API ([`admin`]: bearer
//! tokens with operator and viewer roles, OpenAPI from the handlers; its
//! HTTPS client [`admin_client`], used by the CLI and the fleet simulator),
//! Prometheus [`metrics`], the TOML [`config`], [`campaigns`] (waves,
//! thresholds, pause/abort/approval, maintenance windows, offers at
//! check-in, rollback blocks; all state in the database) and the
//! `esync-server` binary (`init`, `serve` — both in [`node`], so a Server
//! stood up in process runs the same code — admin and campaign subcommands).
//! Not built yet: status history beyond campaigns, data ingestion, the
//! dashboard.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_client;
pub mod blob;
pub mod campaigns;
pub mod config;
pub mod deltas;
pub mod device;
pub mod director;
pub mod error;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod packages;
pub mod provision;
pub mod repo;
pub mod store;
pub mod tls;
