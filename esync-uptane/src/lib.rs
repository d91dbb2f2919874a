//! # esync-uptane
//!
//! Update metadata security for esync-rs, following Uptane (IEEE-ISTO 6100
//! 2.1.0) over TUF 1.0 metadata:
//!
//! - [`canonical`]: OLPC canonical JSON, the bytes that are signed;
//! - [`crypto`]: TUF keys (ed25519, ECDSA P-256 / P-384, RSA-PSS) as
//!   python-tuf writes them, key ids, thresholds, hashes;
//! - [`metadata`]: root, targets (with delegations), snapshot, timestamp;
//! - [`repo`]: the sans-I/O verifier of one repository (TUF client workflow),
//!   with size caps on every fetch and state kept in a [`store::TrustStore`];
//! - [`uptane`]: Director and Image repositories, full verification (Client)
//!   and partial verification (Agents);
//! - [`target`]: streaming image verification (length cap, hashes);
//! - [`manifest`]: signed ECU version reports and vehicle manifests;
//! - [`builder`]: the signing side (keys, metadata, rotation, publishing).
//!
//! The crate is **sans-I/O**: it never opens a socket or a file, never reads
//! a clock, never spawns a thread. The current time is passed in as
//! [`time::UnixTime`]; files come in through [`repo::Repository::provide`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builder;
pub mod canonical;
pub mod crypto;
pub mod error;
pub mod manifest;
pub mod metadata;
pub mod repo;
pub mod store;
pub mod target;
pub mod time;
pub mod uptane;

pub use crypto::{PrivateKey, PublicKey};
pub use error::{Error, Result};
pub use repo::{Limits, Need, RepoProgress, Repository, Response};
pub use store::{MemoryStore, TrustStore};
pub use time::UnixTime;
