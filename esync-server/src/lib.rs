//! # esync-server
//!
//! The fleet Server: device provisioning, the Image repository and the
//! per-vehicle Director, packages, delta generation and cache, campaigns,
//! status history, data ingestion, REST API, CLI and dashboard.
//!
//! Storage (`store`: one [`store::Store`] interface on SQLite or
//! PostgreSQL), the content-addressed blob store (`blob`), background delta
//! generation (`deltas`) and package validation (`packages`).

#![forbid(unsafe_code)]

pub mod blob;
pub mod deltas;
pub mod error;
pub mod packages;
pub mod store;
