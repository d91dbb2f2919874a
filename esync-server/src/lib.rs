//! # esync-server
//!
//! The fleet Server: device provisioning, the Image repository and the
//! per-vehicle Director, packages, delta generation and cache, campaigns,
//! status history, data ingestion, REST API, CLI and dashboard.
//!
//! **Not built yet.** This crate is reserved for the Server issue; it
//! contains no code. The pieces it will stand on exist today: the signing
//! side of Uptane metadata (`esync_uptane::builder`), Server-side manifest
//! verification (`esync_uptane::manifest`), fleet certificate issuance
//! (`esync_identity::FleetCa`) and package and delta generation
//! (`esync_package`, feature `generate`).

#![forbid(unsafe_code)]
