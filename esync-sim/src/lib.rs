//! # esync-sim
//!
//! The fleet simulator: thousands of lightweight simulated vehicles, each
//! with its own X.509 certificate and 2 to 6 ECUs of several hardware types
//! (each ECU with its own Uptane ed25519 key, derived from a seed), that
//! speak the real device API (`esync_api` routes, through the Client's
//! [`esync_client::http::DeviceHttp`]: mutual TLS, keep-alive) to a real
//! `esync-server`. Operators rehearse campaigns with it; the load benchmark
//! and the two-node tests drive fleets with it.
//!
//! * [`spec`]: what a fleet is ([`FleetSpec`]: count, VIN prefix, model,
//!   region, ECU types with their factory images, seed).
//! * [`provision`](mod@provision): registering the fleet through the admin API with
//!   [`esync_server::admin_client::AdminClient`] (vehicle, ECUs with their
//!   public keys, a certificate from a CSR), concurrently, cached in a
//!   directory for the next run.
//! * [`fleet`]: [`Fleet::spawn`] runs one task per vehicle against one or
//!   more Server URLs (failover on connection errors);
//!   [`FleetHandle::snapshot`] gives live counters, [`FleetHandle::stop`]
//!   the [`FleetReport`] with each vehicle's truth.
//! * [`rehearsal`]: a real Server node in process ([`rehearsal::LocalServer`])
//!   and the operator's steps of a campaign ([`rehearsal::Operator`]).
//!
//! ## What a simulated vehicle does
//!
//! Check in with the SHA-256 of its last signed manifest; on
//! `manifest_wanted`, sign a manifest of what its ECUs run (every ECU
//! report signed by the ECU's key with a fresh random nonce, the manifest by
//! the primary's key) and upload it; on `new_director_metadata`, verify,
//! download, report and upload the new manifest:
//!
//! * **Verified** as a real Client does (Uptane full verification,
//!   `esync_uptane::uptane::FullVerifier`): the Director's and the Image
//!   repository's root rotation, timestamp, snapshot and targets
//!   (signatures, thresholds, versions, expiry, lengths and hashes of the
//!   role files), every Director target for one of its ECUs with the right
//!   hardware id and a release counter not below the installed one, and
//!   matched by the Image repository's entry; the `custom.esync` target
//!   description must match the entry (`TargetDescription::from_custom_json`).
//! * **Downloaded**: for each ECU whose image differs, the delta from its
//!   installed image when the target description lists one, else the full
//!   image, through `GET /v1/blobs/{sha256}`; SHA-256 and length are
//!   checked while streaming.
//! * **Skipped** compared with a real Client: the first roots are fetched
//!   from the Server on first use (`1.root.json` of both repositories,
//!   once per fleet) instead of being pinned at the factory; blobs are not
//!   written to disk and deltas are not applied (a vehicle keeps no image
//!   bytes, only their versions and digests); there are no Agents, no
//!   in-vehicle broker, no consent, preconditions, stages, progress
//!   reports or journal; a simulated vehicle starts every run from its
//!   factory images.
//! * **Outcome**: with probability `failure_rate` (deterministic from the
//!   seed, the VIN and the package) the package is reported `rolled_back`
//!   with one component `failed` (self-test failure) and the others
//!   `rolled_back`, running their old versions; otherwise `installed`. The
//!   report goes to `PUT /v1/reports/{id}` under one random id for all its
//!   retries. Then the new manifest is uploaded: the installed versions
//!   after success, the old ones after the rollback.
//! * **Errors**: transport errors, timeouts and 5xx are retried with
//!   exponential backoff (`FleetConfig::max_attempts`); a connection error
//!   or timeout first moves the vehicle to its next Server URL.

#![forbid(unsafe_code)]

pub mod fleet;
pub mod provision;
pub mod rehearsal;
pub mod spec;
pub mod stats;
pub mod vehicle;

pub use fleet::{Fleet, FleetConfig, FleetHandle, FleetReport};
pub use provision::{provision, provision_with, Provisioned, SimVehicle};
pub use spec::{EcuPlan, EcuType, FleetSpec};
pub use stats::{ErrorKind, FleetSnapshot, Mark, Window};
pub use vehicle::{fails, EcuState, VehicleReport};

/// Errors of the simulator's setup (a running vehicle counts its errors
/// instead, [`FleetSnapshot::errors`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The fleet spec is invalid.
    #[error("fleet spec: {0}")]
    Spec(String),
    /// The fleet configuration is invalid.
    #[error("fleet config: {0}")]
    Config(String),
    /// An admin API request failed.
    #[error("admin API: {0}")]
    Admin(String),
    /// A TLS identity could not be made or loaded.
    #[error("identity: {0}")]
    Identity(String),
    /// The identity cache is unreadable.
    #[error("identity cache: {0}")]
    Cache(String),
    /// Local I/O.
    #[error("I/O: {0}")]
    Io(String),
}
