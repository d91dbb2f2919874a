//! # esync-agent
//!
//! The Agent side of the esync-rs update lifecycle, for ECU firmware and
//! other updatable endpoints:
//!
//! - [`Agent`]: a **sans-I/O state machine** (no sockets, files, clocks or
//!   threads). Input: verified messages from the Client
//!   ([`esync_proto::envelope::Verified`]), the current time, and a
//!   [`Context`] of host traits called synchronously (device, journal store,
//!   metadata verifier, patch applier, consent policy). Output: messages to
//!   send, whether more work is pending, and the next deadline.
//! - [`endpoint::Endpoint`]: the Agent behind envelope verification and
//!   signing, still synchronous and sans-I/O: signed frame bytes in, signed
//!   frames (with the outbox ids of final reports) and the next deadline
//!   out. The tokio runtime, a C ABI and test harnesses drive this.
//! - [`device::Device`]: what the host implements (running image and
//!   positioned reads of it, staging, inactive-slot writes, activate,
//!   self-test, commit, roll back, backups, vehicle signals), with an A/B
//!   file-backed reference (`device::file::FileDevice`, feature
//!   `file-device`) and an in-memory one ([`device::mem::MemDevice`]);
//!   `fault` (feature `fault`) injects failures and power cuts.
//! - [`journal`]: the crash-safe journal (atomic replace through a
//!   [`journal::JournalStore`]).
//! - [`config::AgentConfig::install_precondition`] and
//!   [`policy::PreconditionConsent`]: conditions over the vehicle signals the
//!   Agent evaluates itself (safety-critical Agents refuse to install when
//!   the precondition does not hold), in the one precondition language of
//!   every side, [`esync_proto::precondition`].
//! - `runtime` (feature `runtime`): a tokio loop connecting the Agent to a
//!   frame transport.
//!
//! ## Lifecycle
//!
//! | Client sends | Agent does | Agent answers |
//! | --- | --- | --- |
//! | `InventoryQuery` | reads the device | `InventoryReport` or `DoNotDisturb` |
//! | `VersionReportRequest` | signs an Uptane ECU version report (nonce, attack indicator) | `VersionReport` |
//! | `UpdateMetadata` | verifies it itself (Uptane partial/full) | errors later in `PrepareResult` |
//! | `DownloadOffer` | checks it against the verified target, asks the policy | `DownloadDecision` |
//! | `TransferStart`/`TransferChunk` | verifies each chunk, stages it, resumes at the first unverified chunk | `TransferAck`, `Progress` |
//! | `Prepare` | hashes the staged image, checks a delta's source, reconstructs it into staging over bounded polls | `PrepareResult` READY/FAILED (from the poll that finishes) (a re-sent one is answered without rework) |
//! | `InstallStart` | local precondition, pre-install, write inactive slot, verify, activate, self-test | `Progress`, `InstallResult` |
//! | `Confirm` | commits | `Confirmed` |
//! | `Rollback` | previous slot, backup list, or version | `RollbackResult` |
//!
//! Failed attempts roll back automatically and are reported retryable until
//! `max_install_attempts`, then terminal.
//!
//! ## Features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `delta` | yes | [`delta::PackageApplier`]: esync-package's bsdiff-family applier |
//! | `uptane` | yes | [`uptane`]: Uptane partial and full verification, signed version reports |
//! | `runtime` | yes | [`runtime`]: tokio loop over esync-transport; the `esync-agent` binary (with `file-device`) |
//! | `file-device` | no | `device::file::FileDevice`: the A/B file-backed reference device |
//! | `fault` | no | `fault`: fault and power-cut injection (tests) |
//! | `testing` | no | `testing`: test doubles that verify nothing (tests, benchmarks) |
//!
//! Firmware builds take `default-features = false` and plug in their own
//! traits; the core, the devices and the journal need none of the features
//! (nor does the precondition evaluator, which is in `esync-proto`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod config;
#[cfg(feature = "delta-zstd")]
pub mod delta;
pub mod device;
pub mod endpoint;
pub mod error;
#[cfg(feature = "fault")]
pub mod fault;
pub mod fsutil;
pub mod journal;
pub mod patch;
pub mod policy;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod seal;
pub mod state;
pub mod target;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "uptane")]
pub mod uptane;

pub use agent::{Agent, Context, Ignored, Now, Outgoing, Output, VersionReporter};
pub use config::AgentConfig;
pub use error::AgentError;
