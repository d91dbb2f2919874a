//! The host's callbacks ([`esync_agent_callbacks`]) and the adapters that
//! turn them into the Agent's host traits: [`esync_agent::device::Device`],
//! [`esync_agent::journal::JournalStore`],
//! [`esync_uptane::store::TrustStore`] and
//! [`esync_agent::policy::ConsentPolicy`].
//!
//! Every callback takes the host's `userdata` first and returns an
//! [`esync_host_status`]; the adapters map a status to the trait's error
//! (`ESYNC_HOST_POWER_LOSS` to a power loss, which halts the Agent).
//! Callbacks are called synchronously, on the thread that called the
//! entry point, and must not call back into the same handle.

use std::ffi::c_void;

use esync_agent::device::{Device, DeviceError, SelfTest};
use esync_agent::journal::{JournalStore, StoreError, MAX_JOURNAL_BYTES};
use esync_agent::policy::ConsentPolicy;
use esync_agent::target::DirectedTarget;
use esync_proto::id::{ReleaseCounter, Sha256Digest, SoftwareVersion};
use esync_proto::message::{
    Decision, DownloadOffer, ImageEncoding, InstalledImage, Signal, SignalValue,
};
use esync_uptane::store::{StoredState, TrustStore, TrustStoreError};
use esync_uptane::UnixTime;

use crate::{esync_result, guard, slice};

/// What a host callback returns (`int32_t`; one of the `ESYNC_HOST_*`
/// values). Any other value counts as `ESYNC_HOST_FAILED`.
pub type esync_host_status = i32;
/// The operation succeeded.
pub const ESYNC_HOST_OK: esync_host_status = 0;
/// The operation failed (I/O or flash error); it may succeed later.
pub const ESYNC_HOST_FAILED: esync_host_status = 1;
/// The request is not valid for the device's state (no valid image in the
/// inactive slot, unknown backup, offset out of range).
pub const ESYNC_HOST_REFUSED: esync_host_status = 2;
/// The staging area or the slot is too small.
pub const ESYNC_HOST_NO_SPACE: esync_host_status = 3;
/// Power was lost during the operation: the Agent halts at once and must be
/// recreated (recovered from its journal) after the restart.
pub const ESYNC_HOST_POWER_LOSS: esync_host_status = 4;
/// The buffer the Agent passed is too small (`journal_load` only: set
/// `*len` to the size needed and the Agent calls again).
pub const ESYNC_HOST_BUFFER_TOO_SMALL: esync_host_status = 5;

/// Longest software version text, in bytes.
pub const ESYNC_VERSION_MAX: usize = 64;
/// Longest signal name, in bytes.
pub const ESYNC_SIGNAL_NAME_MAX: usize = 32;
/// Longest text signal value, in bytes.
pub const ESYNC_SIGNAL_TEXT_MAX: usize = 64;
/// Most signals the `signals` callback may return.
pub const ESYNC_MAX_SIGNALS: usize = 32;
/// Most backups the `backups` callback may return.
pub const ESYNC_MAX_BACKUPS: usize = 8;
/// Longest self-test failure reason or consent denial reason, in bytes.
pub const ESYNC_REASON_MAX: usize = 128;
/// Largest trust-store role the `trust_load` callback may hand in, in bytes.
pub const ESYNC_MAX_ROLE_BYTES: usize = 1 << 20;
/// Most roles the `trust_load` callback may hand in.
pub const ESYNC_MAX_ROLES: usize = 64;

/// Log levels passed to the `log` callback.
pub type esync_log_level = u32;
/// An error (the Agent halted, a callback failed).
pub const ESYNC_LOG_ERROR: esync_log_level = 1;
/// A warning (a refused frame).
pub const ESYNC_LOG_WARN: esync_log_level = 2;
/// Information (an ignored message).
pub const ESYNC_LOG_INFO: esync_log_level = 3;

/// Signal value kinds (`esync_signal::kind`).
pub type esync_signal_kind = u32;
/// `bool_value` holds the value.
pub const ESYNC_SIGNAL_BOOL: esync_signal_kind = 0;
/// `int_value` holds the value.
pub const ESYNC_SIGNAL_INT: esync_signal_kind = 1;
/// `float_value` holds the value.
pub const ESYNC_SIGNAL_FLOAT: esync_signal_kind = 2;
/// `text`/`text_len` hold the value (UTF-8).
pub const ESYNC_SIGNAL_TEXT: esync_signal_kind = 3;

/// Consent decisions (`esync_decision::kind`).
pub type esync_decision_kind = u32;
/// Go ahead.
pub const ESYNC_DECISION_CONSENT: esync_decision_kind = 0;
/// Refuse, with `reason`.
pub const ESYNC_DECISION_DENY: esync_decision_kind = 1;
/// Ask again at `postpone_until_ms` (wall time).
pub const ESYNC_DECISION_POSTPONE: esync_decision_kind = 2;

/// An installed image's description.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_image {
    /// Software version (UTF-8, not NUL-terminated), `version_len` bytes.
    pub version: [u8; ESYNC_VERSION_MAX],
    /// Length of `version`.
    pub version_len: usize,
    /// Release counter (anti-rollback).
    pub release_counter: u64,
    /// Image length in bytes.
    pub length: u64,
    /// SHA-256 of the image.
    pub sha256: [u8; 32],
}

impl esync_image {
    fn zeroed() -> Self {
        esync_image {
            version: [0; ESYNC_VERSION_MAX],
            version_len: 0,
            release_counter: 0,
            length: 0,
            sha256: [0; 32],
        }
    }

    fn from_image(i: &InstalledImage) -> Self {
        let mut out = esync_image::zeroed();
        let v = i.version.as_str().as_bytes();
        // A SoftwareVersion is at most VERSION_MAX (= ESYNC_VERSION_MAX) bytes.
        let n = v.len().min(ESYNC_VERSION_MAX);
        out.version[..n].copy_from_slice(&v[..n]);
        out.version_len = n;
        out.release_counter = i.release_counter.0;
        out.length = i.length;
        out.sha256 = i.sha256.0;
        out
    }

    fn to_image(self, op: &'static str) -> Result<InstalledImage, DeviceError> {
        let v = self
            .version
            .get(..self.version_len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| SoftwareVersion::new(s).ok())
            .ok_or_else(|| DeviceError::Failed {
                op,
                reason: "the host returned an invalid software version".into(),
            })?;
        Ok(InstalledImage {
            version: v,
            release_counter: ReleaseCounter(self.release_counter),
            length: self.length,
            sha256: Sha256Digest(self.sha256),
        })
    }
}

/// A vehicle signal (speed, gear, battery...).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_signal {
    /// Name (UTF-8), `name_len` bytes.
    pub name: [u8; ESYNC_SIGNAL_NAME_MAX],
    /// Length of `name`.
    pub name_len: usize,
    /// Which value field holds the value (`ESYNC_SIGNAL_*`).
    pub kind: esync_signal_kind,
    /// For `ESYNC_SIGNAL_BOOL`.
    pub bool_value: bool,
    /// For `ESYNC_SIGNAL_INT`.
    pub int_value: i64,
    /// For `ESYNC_SIGNAL_FLOAT`.
    pub float_value: f64,
    /// For `ESYNC_SIGNAL_TEXT` (UTF-8), `text_len` bytes.
    pub text: [u8; ESYNC_SIGNAL_TEXT_MAX],
    /// Length of `text`.
    pub text_len: usize,
}

impl esync_signal {
    fn zeroed() -> Self {
        esync_signal {
            name: [0; ESYNC_SIGNAL_NAME_MAX],
            name_len: 0,
            kind: ESYNC_SIGNAL_BOOL,
            bool_value: false,
            int_value: 0,
            float_value: 0.0,
            text: [0; ESYNC_SIGNAL_TEXT_MAX],
            text_len: 0,
        }
    }

    pub(crate) fn to_signal(self) -> Option<Signal> {
        let name = std::str::from_utf8(self.name.get(..self.name_len)?).ok()?;
        let value = match self.kind {
            ESYNC_SIGNAL_BOOL => SignalValue::Bool(self.bool_value),
            ESYNC_SIGNAL_INT => SignalValue::Int(self.int_value),
            ESYNC_SIGNAL_FLOAT => SignalValue::Float(self.float_value),
            ESYNC_SIGNAL_TEXT => SignalValue::Text(
                std::str::from_utf8(self.text.get(..self.text_len)?)
                    .ok()?
                    .to_string(),
            ),
            _ => return None,
        };
        Some(Signal {
            name: name.to_string(),
            value,
        })
    }
}

/// A download offer, for the `consent` callback. Pointers are valid only
/// during the call.
#[repr(C)]
pub struct esync_offer {
    /// The update's id.
    pub update_id: [u8; 16],
    /// Target name (UTF-8), `target_name_len` bytes.
    pub target_name: *const u8,
    /// Length of `target_name`.
    pub target_name_len: usize,
    /// Offered version (UTF-8), `version_len` bytes.
    pub version: *const u8,
    /// Length of `version`.
    pub version_len: usize,
    /// Release counter of the offered image.
    pub release_counter: u64,
    /// Length of the image.
    pub image_length: u64,
    /// Bytes that will be downloaded (the patch's length for a delta).
    pub download_length: u64,
    /// Whether a delta is offered.
    pub is_delta: bool,
}

/// The `consent` callback's answer.
#[repr(C)]
pub struct esync_decision {
    /// `ESYNC_DECISION_*`.
    pub kind: esync_decision_kind,
    /// For `ESYNC_DECISION_POSTPONE`: wall time (ms since the Unix epoch).
    pub postpone_until_ms: u64,
    /// For `ESYNC_DECISION_DENY` (UTF-8), `reason_len` bytes.
    pub reason: [u8; ESYNC_REASON_MAX],
    /// Length of `reason`.
    pub reason_len: usize,
}

/// What the `trust_load` callback fills, through
/// [`esync_trust_loader_add_role`] and [`esync_trust_loader_set_time`].
/// Valid only during that callback.
pub struct esync_trust_loader {
    state: StoredState,
    error: Option<String>,
}

/// Host callbacks. `userdata` is passed first to each. Required callbacks
/// must be non-NULL (creation fails with `ESYNC_RESULT_INVALID_CONFIG`
/// otherwise); `signals`, `consent` and `log` may be NULL.
///
/// Device callbacks map `esync_agent::device::Device` one to one; see its
/// contract (every mutating operation must be safe to repeat after a power
/// loss; `slot_begin` invalidates the slot before anything is written;
/// `slot_finish` records the image only after its data is synced;
/// `activate` boots the inactive slot on trial; `commit` makes it
/// permanent).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_agent_callbacks {
    /// The host's context, passed first to every callback; never
    /// dereferenced by the library.
    pub userdata: *mut c_void,

    /// Writes the running image's description to `*out`.
    pub running: Option<unsafe extern "C" fn(*mut c_void, *mut esync_image) -> esync_host_status>,
    /// Reads the running image at `offset` into `buf` (`len` bytes at most);
    /// writes the bytes read to `*read` (0 at the end).
    pub read_running: Option<
        unsafe extern "C" fn(*mut c_void, u64, *mut u8, usize, *mut usize) -> esync_host_status,
    >,
    /// Capacity of the staging area in bytes.
    pub staging_capacity: Option<unsafe extern "C" fn(*mut c_void) -> u64>,
    /// Empties the staging area and sizes it for `len` bytes.
    pub staging_reset: Option<unsafe extern "C" fn(*mut c_void, u64) -> esync_host_status>,
    /// Writes `len` bytes at `offset` of the staging area (durable on return).
    pub staging_write:
        Option<unsafe extern "C" fn(*mut c_void, u64, *const u8, usize) -> esync_host_status>,
    /// Reads the staging area (like `read_running`).
    pub staging_read: Option<
        unsafe extern "C" fn(*mut c_void, u64, *mut u8, usize, *mut usize) -> esync_host_status,
    >,
    /// Pre-install steps (stop the function, unlock flash).
    pub pre_install: Option<unsafe extern "C" fn(*mut c_void) -> esync_host_status>,
    /// Durably invalidates the inactive slot and prepares it for `len` bytes.
    pub slot_begin: Option<unsafe extern "C" fn(*mut c_void, u64) -> esync_host_status>,
    /// Writes the inactive slot.
    pub slot_write:
        Option<unsafe extern "C" fn(*mut c_void, u64, *const u8, usize) -> esync_host_status>,
    /// Reads the inactive slot (like `read_running`).
    pub slot_read: Option<
        unsafe extern "C" fn(*mut c_void, u64, *mut u8, usize, *mut usize) -> esync_host_status,
    >,
    /// Syncs the inactive slot and durably records that it holds `*image`.
    pub slot_finish:
        Option<unsafe extern "C" fn(*mut c_void, *const esync_image) -> esync_host_status>,
    /// The inactive slot's image: `*present = false` if it holds no complete
    /// image, else `*present = true` and `*out` written.
    pub inactive:
        Option<unsafe extern "C" fn(*mut c_void, *mut esync_image, *mut bool) -> esync_host_status>,
    /// Boots the inactive slot on trial; returns once it runs.
    pub activate: Option<unsafe extern "C" fn(*mut c_void) -> esync_host_status>,
    /// Self-tests the running image: `*passed`, and on failure a reason in
    /// `reason` (`reason_cap` bytes at most) with its length in
    /// `*reason_len`.
    pub self_test: Option<
        unsafe extern "C" fn(
            *mut c_void,
            *mut bool,
            *mut u8,
            usize,
            *mut usize,
        ) -> esync_host_status,
    >,
    /// Makes the running trial image permanent (idempotent).
    pub commit: Option<unsafe extern "C" fn(*mut c_void) -> esync_host_status>,
    /// Whether the running image is on trial.
    pub on_trial: Option<unsafe extern "C" fn(*mut c_void, *mut bool) -> esync_host_status>,
    /// Switches back to the other slot, if it holds a complete image.
    pub rollback_previous: Option<unsafe extern "C" fn(*mut c_void) -> esync_host_status>,
    /// Backups, most recent first: at most `cap` written to `out`, their
    /// number to `*count`.
    pub backups: Option<
        unsafe extern "C" fn(*mut c_void, *mut esync_image, usize, *mut usize) -> esync_host_status,
    >,
    /// Restores the backup of this version (UTF-8, `len` bytes) into the
    /// inactive slot and boots it (committed).
    pub restore_backup:
        Option<unsafe extern "C" fn(*mut c_void, *const u8, usize) -> esync_host_status>,
    /// Vehicle signals: at most `cap` written to `out`, their number to
    /// `*count`. May be NULL (no signals: a precondition is then not met).
    pub signals: Option<
        unsafe extern "C" fn(
            *mut c_void,
            *mut esync_signal,
            usize,
            *mut usize,
        ) -> esync_host_status,
    >,

    /// Loads the journal record into `buf` (`cap` bytes): `*present =
    /// false` if none was ever stored; else its length in `*len`. If `cap`
    /// is too small, set `*len` to the length and return
    /// `ESYNC_HOST_BUFFER_TOO_SMALL`.
    pub journal_load: Option<
        unsafe extern "C" fn(
            *mut c_void,
            *mut u8,
            usize,
            *mut usize,
            *mut bool,
        ) -> esync_host_status,
    >,
    /// Replaces the journal record atomically (old or new after a power
    /// loss, never a mix); durable on return.
    pub journal_store:
        Option<unsafe extern "C" fn(*mut c_void, *const u8, usize) -> esync_host_status>,

    /// Loads the Uptane trust store: calls `esync_trust_loader_add_role`
    /// for each stored role and `esync_trust_loader_set_time` for the
    /// stored time floor. Nothing stored: add nothing (the pinned root is
    /// then stored). Unreadable or corrupt: return `ESYNC_HOST_FAILED`.
    pub trust_load:
        Option<unsafe extern "C" fn(*mut c_void, *mut esync_trust_loader) -> esync_host_status>,
    /// Durably stores a verified role's bytes (name UTF-8).
    pub trust_store_role: Option<
        unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> esync_host_status,
    >,
    /// Forgets a role.
    pub trust_remove_role:
        Option<unsafe extern "C" fn(*mut c_void, *const u8, usize) -> esync_host_status>,
    /// Durably stores the time floor (seconds since the Unix epoch).
    pub trust_store_time: Option<unsafe extern "C" fn(*mut c_void, i64) -> esync_host_status>,

    /// Decides on a verified download offer. May be NULL: every offer that
    /// matches verified metadata is consented to.
    pub consent: Option<
        unsafe extern "C" fn(
            *mut c_void,
            *const esync_offer,
            u64,
            *mut esync_decision,
        ) -> esync_host_status,
    >,
    /// Receives a log line (UTF-8, `len` bytes, valid during the call). May
    /// be NULL.
    pub log: Option<unsafe extern "C" fn(*mut c_void, esync_log_level, *const u8, usize)>,
}

/// Adds a stored role to the trust store being loaded (`name` and `bytes`
/// are copied). A role named `root` is the trust anchor. A role refused
/// here (NULL, not UTF-8, empty name, over `ESYNC_MAX_ROLE_BYTES`, more
/// than `ESYNC_MAX_ROLES`) makes the whole load fail
/// (`ESYNC_RESULT_TRUST_STORE` from `esync_agent_new`).
///
/// Ownership: `loader` is the library's, valid only during the
/// `trust_load` callback it was passed to. Thread safety: call only from
/// that callback.
///
/// # Safety
///
/// `name` and `bytes` must be valid for reads of `name_len` and
/// `bytes_len` bytes; `loader` must be the pointer the callback received.
#[no_mangle]
pub unsafe extern "C" fn esync_trust_loader_add_role(
    loader: *mut esync_trust_loader,
    name: *const u8,
    name_len: usize,
    bytes: *const u8,
    bytes_len: usize,
) -> esync_result {
    guard(|| {
        // SAFETY: the caller passes the loader of the running callback.
        let Some(l) = (unsafe { loader.as_mut() }) else {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        };
        // A role the loader refuses fails the whole load (even if the host
        // ignores this result): a trust store is never opened without a
        // floor it holds.
        // SAFETY: the caller guarantees the lengths.
        let (name, bytes) = match (unsafe { slice(name, name_len) }, unsafe {
            slice(bytes, bytes_len)
        }) {
            (Some(n), Some(b)) => (n, b),
            _ => {
                l.error = Some("trust store role: NULL pointer with a length".into());
                return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
            }
        };
        let Ok(name) = std::str::from_utf8(name) else {
            l.error = Some("trust store role: name is not UTF-8".into());
            return esync_result::ESYNC_RESULT_INVALID_ARGUMENT;
        };
        if name.is_empty() || bytes_len > ESYNC_MAX_ROLE_BYTES {
            l.error = Some(format!(
                "trust store role {name:?}: empty name or over {ESYNC_MAX_ROLE_BYTES} bytes"
            ));
            return esync_result::ESYNC_RESULT_INVALID_ARGUMENT;
        }
        if name == "root" {
            l.state.root = bytes.to_vec();
        } else {
            if l.state.roles.len() >= ESYNC_MAX_ROLES && !l.state.roles.contains_key(name) {
                l.error = Some(format!("trust store: more than {ESYNC_MAX_ROLES} roles"));
                return esync_result::ESYNC_RESULT_INVALID_ARGUMENT;
            }
            l.state.roles.insert(name.to_string(), bytes.to_vec());
        }
        esync_result::ESYNC_RESULT_OK
    })
}

/// Sets the stored time floor (seconds since the Unix epoch) of the trust
/// store being loaded. Same ownership and threading as
/// [`esync_trust_loader_add_role`].
///
/// # Safety
///
/// `loader` must be the pointer the `trust_load` callback received.
#[no_mangle]
pub unsafe extern "C" fn esync_trust_loader_set_time(
    loader: *mut esync_trust_loader,
    unix_seconds: i64,
) -> esync_result {
    guard(|| {
        // SAFETY: the caller passes the loader of the running callback.
        let Some(l) = (unsafe { loader.as_mut() }) else {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        };
        l.state.last_time = Some(UnixTime(unix_seconds));
        esync_result::ESYNC_RESULT_OK
    })
}

/// The callbacks, checked complete, as the adapters use them.
#[derive(Clone, Copy)]
pub(crate) struct Callbacks {
    raw: *const esync_agent_callbacks,
    ud: *mut c_void,
}

// SAFETY (for the adapters below): `Callbacks` is built only from a
// complete `esync_agent_callbacks` copied into the handle (`Box`), so `raw`
// stays valid for the handle's life; the function pointers are the host's,
// called with its `userdata` under the contract of each callback.

macro_rules! cb {
    ($self:expr, $name:ident) => {
        // SAFETY: `raw` points at the handle's own copy of the callbacks.
        unsafe { (*$self.raw).$name }
    };
}

fn status(op: &'static str, s: esync_host_status) -> Result<(), DeviceError> {
    match s {
        ESYNC_HOST_OK => Ok(()),
        ESYNC_HOST_POWER_LOSS => Err(DeviceError::PowerLoss(op)),
        ESYNC_HOST_REFUSED => Err(DeviceError::Refused {
            op,
            reason: "refused by the host".into(),
        }),
        ESYNC_HOST_NO_SPACE => Err(DeviceError::NoSpace {
            what: op,
            capacity: 0,
            needed: 0,
        }),
        other => Err(DeviceError::Failed {
            op,
            reason: format!("host callback returned {other}"),
        }),
    }
}

fn missing(op: &'static str) -> DeviceError {
    DeviceError::Failed {
        op,
        reason: "callback missing".into(),
    }
}

impl Callbacks {
    /// The names of the required callbacks that are NULL.
    pub(crate) fn missing_required(c: &esync_agent_callbacks) -> Vec<&'static str> {
        let mut m = Vec::new();
        macro_rules! req {
            ($($n:ident),*) => { $( if c.$n.is_none() { m.push(stringify!($n)); } )* };
        }
        req!(
            running,
            read_running,
            staging_capacity,
            staging_reset,
            staging_write,
            staging_read,
            pre_install,
            slot_begin,
            slot_write,
            slot_read,
            slot_finish,
            inactive,
            activate,
            self_test,
            commit,
            on_trial,
            rollback_previous,
            backups,
            restore_backup,
            journal_load,
            journal_store
        );
        m.extend(esync_trust_callbacks::of_agent(c).missing());
        m
    }

    /// # Safety
    ///
    /// `raw` must point at a complete `esync_agent_callbacks` that outlives
    /// every use of the returned value.
    pub(crate) unsafe fn new(raw: *const esync_agent_callbacks) -> Callbacks {
        // SAFETY: the caller guarantees `raw` is valid.
        let ud = unsafe { (*raw).userdata };
        Callbacks { raw, ud }
    }

    /// Passes a log line to the host's `log` callback, if any.
    pub(crate) fn log(&self, level: esync_log_level, msg: &str) {
        log_to(cb!(self, log), self.ud, level, msg);
    }

    fn read_with(
        &self,
        op: &'static str,
        f: Option<
            unsafe extern "C" fn(*mut c_void, u64, *mut u8, usize, *mut usize) -> esync_host_status,
        >,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, DeviceError> {
        let f = f.ok_or_else(|| missing(op))?;
        let mut n = 0usize;
        // SAFETY: host callback; `buf` is valid for `buf.len()` bytes and
        // `n` for a write during the call.
        status(op, unsafe {
            f(self.ud, offset, buf.as_mut_ptr(), buf.len(), &mut n)
        })?;
        if n > buf.len() {
            return Err(DeviceError::Failed {
                op,
                reason: format!(
                    "host reported {n} bytes read into a {}-byte buffer",
                    buf.len()
                ),
            });
        }
        Ok(n)
    }

    fn unit(
        &self,
        op: &'static str,
        f: Option<unsafe extern "C" fn(*mut c_void) -> esync_host_status>,
    ) -> Result<(), DeviceError> {
        let f = f.ok_or_else(|| missing(op))?;
        // SAFETY: host callback.
        status(op, unsafe { f(self.ud) })
    }

    fn with_len(
        &self,
        op: &'static str,
        f: Option<unsafe extern "C" fn(*mut c_void, u64) -> esync_host_status>,
        len: u64,
    ) -> Result<(), DeviceError> {
        let f = f.ok_or_else(|| missing(op))?;
        // SAFETY: host callback.
        status(op, unsafe { f(self.ud, len) })
    }

    fn write_with(
        &self,
        op: &'static str,
        f: Option<unsafe extern "C" fn(*mut c_void, u64, *const u8, usize) -> esync_host_status>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        let f = f.ok_or_else(|| missing(op))?;
        // SAFETY: host callback; `data` is valid for the call.
        status(op, unsafe { f(self.ud, offset, data.as_ptr(), data.len()) })
    }

    fn images(
        &self,
        op: &'static str,
        out: &mut [esync_image],
    ) -> Result<Vec<InstalledImage>, DeviceError> {
        let f = cb!(self, backups).ok_or_else(|| missing(op))?;
        let mut n = 0usize;
        // SAFETY: host callback; `out` is valid for `out.len()` images.
        status(op, unsafe {
            f(self.ud, out.as_mut_ptr(), out.len(), &mut n)
        })?;
        out.get(..n)
            .ok_or_else(|| DeviceError::Failed {
                op,
                reason: format!("host reported {n} entries for a buffer of {}", out.len()),
            })?
            .iter()
            .map(|i| i.to_image(op))
            .collect()
    }
}

/// The host's device, through its callbacks.
pub(crate) struct CallbackDevice(pub(crate) Callbacks);

impl Device for CallbackDevice {
    fn running(&self) -> Result<InstalledImage, DeviceError> {
        let f = cb!(self.0, running).ok_or_else(|| missing("running"))?;
        let mut out = esync_image::zeroed();
        // SAFETY: host callback; `out` is valid for a write.
        status("running", unsafe { f(self.0.ud, &mut out) })?;
        out.to_image("running")
    }

    fn read_running(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        self.0
            .read_with("read_running", cb!(self.0, read_running), offset, buf)
    }

    fn staging_capacity(&self) -> u64 {
        match cb!(self.0, staging_capacity) {
            // SAFETY: host callback.
            Some(f) => unsafe { f(self.0.ud) },
            None => 0,
        }
    }

    fn staging_reset(&mut self, len: u64) -> Result<(), DeviceError> {
        self.0
            .with_len("staging_reset", cb!(self.0, staging_reset), len)
    }

    fn staging_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.0
            .write_with("staging_write", cb!(self.0, staging_write), offset, data)
    }

    fn staging_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        self.0
            .read_with("staging_read", cb!(self.0, staging_read), offset, buf)
    }

    fn pre_install(&mut self) -> Result<(), DeviceError> {
        self.0.unit("pre_install", cb!(self.0, pre_install))
    }

    fn slot_begin(&mut self, len: u64) -> Result<(), DeviceError> {
        self.0.with_len("slot_begin", cb!(self.0, slot_begin), len)
    }

    fn slot_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.0
            .write_with("slot_write", cb!(self.0, slot_write), offset, data)
    }

    fn slot_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, DeviceError> {
        self.0
            .read_with("slot_read", cb!(self.0, slot_read), offset, buf)
    }

    fn slot_finish(&mut self, image: &InstalledImage) -> Result<(), DeviceError> {
        let f = cb!(self.0, slot_finish).ok_or_else(|| missing("slot_finish"))?;
        let img = esync_image::from_image(image);
        // SAFETY: host callback; `img` is valid during the call.
        status("slot_finish", unsafe { f(self.0.ud, &img) })
    }

    fn inactive(&self) -> Result<Option<InstalledImage>, DeviceError> {
        let f = cb!(self.0, inactive).ok_or_else(|| missing("inactive"))?;
        let mut out = esync_image::zeroed();
        let mut present = false;
        // SAFETY: host callback; both outputs are valid for writes.
        status("inactive", unsafe { f(self.0.ud, &mut out, &mut present) })?;
        if present {
            out.to_image("inactive").map(Some)
        } else {
            Ok(None)
        }
    }

    fn activate(&mut self) -> Result<(), DeviceError> {
        self.0.unit("activate", cb!(self.0, activate))
    }

    fn self_test(&mut self) -> Result<SelfTest, DeviceError> {
        let f = cb!(self.0, self_test).ok_or_else(|| missing("self_test"))?;
        let mut passed = false;
        let mut reason = [0u8; ESYNC_REASON_MAX];
        let mut len = 0usize;
        // SAFETY: host callback; outputs valid for writes, `reason` for
        // ESYNC_REASON_MAX bytes.
        status("self_test", unsafe {
            f(
                self.0.ud,
                &mut passed,
                reason.as_mut_ptr(),
                reason.len(),
                &mut len,
            )
        })?;
        if passed {
            return Ok(SelfTest::Passed);
        }
        let text = reason
            .get(..len)
            .map(String::from_utf8_lossy)
            .map_or_else(|| "self-test failed".to_string(), |s| s.into_owned());
        Ok(SelfTest::Failed(text))
    }

    fn commit(&mut self) -> Result<(), DeviceError> {
        self.0.unit("commit", cb!(self.0, commit))
    }

    fn on_trial(&self) -> Result<bool, DeviceError> {
        let f = cb!(self.0, on_trial).ok_or_else(|| missing("on_trial"))?;
        let mut t = false;
        // SAFETY: host callback; `t` valid for a write.
        status("on_trial", unsafe { f(self.0.ud, &mut t) })?;
        Ok(t)
    }

    fn rollback_previous(&mut self) -> Result<(), DeviceError> {
        self.0
            .unit("rollback_previous", cb!(self.0, rollback_previous))
    }

    fn backups(&self) -> Result<Vec<InstalledImage>, DeviceError> {
        let mut out = [esync_image::zeroed(); ESYNC_MAX_BACKUPS];
        self.0.images("backups", &mut out)
    }

    fn restore_backup(&mut self, version: &SoftwareVersion) -> Result<(), DeviceError> {
        let f = cb!(self.0, restore_backup).ok_or_else(|| missing("restore_backup"))?;
        let v = version.as_str();
        // SAFETY: host callback; `v` valid during the call.
        status("restore_backup", unsafe {
            f(self.0.ud, v.as_ptr(), v.len())
        })
    }

    fn signals(&self) -> Result<Vec<Signal>, DeviceError> {
        let Some(f) = cb!(self.0, signals) else {
            return Ok(Vec::new());
        };
        let mut out = [esync_signal::zeroed(); ESYNC_MAX_SIGNALS];
        let mut n = 0usize;
        // SAFETY: host callback; `out` valid for ESYNC_MAX_SIGNALS entries.
        status("signals", unsafe {
            f(self.0.ud, out.as_mut_ptr(), out.len(), &mut n)
        })?;
        let got = out.get(..n).ok_or_else(|| DeviceError::Failed {
            op: "signals",
            reason: format!("host reported {n} signals, at most {ESYNC_MAX_SIGNALS}"),
        })?;
        // A malformed signal is left out: the precondition over it is then
        // "not met", as for a missing signal.
        Ok(got
            .iter()
            .copied()
            .filter_map(esync_signal::to_signal)
            .collect())
    }
}

/// The host's `journal_load` callback (the Agent's and the Client's).
pub(crate) type esync_journal_load_fn =
    unsafe extern "C" fn(*mut c_void, *mut u8, usize, *mut usize, *mut bool) -> esync_host_status;
/// The host's `journal_store` callback (the Agent's and the Client's).
pub(crate) type esync_journal_store_fn =
    unsafe extern "C" fn(*mut c_void, *const u8, usize) -> esync_host_status;
/// The host's `log` callback (the Agent's and the Client's).
pub(crate) type esync_log_fn = unsafe extern "C" fn(*mut c_void, esync_log_level, *const u8, usize);

/// Passes a log line to a host's `log` callback, if any.
pub(crate) fn log_to(f: Option<esync_log_fn>, ud: *mut c_void, level: esync_log_level, msg: &str) {
    if let Some(f) = f {
        // SAFETY: host callback with its own userdata; `msg` is valid for
        // the call.
        unsafe { f(ud, level, msg.as_ptr(), msg.len()) }
    }
}

/// The host's journal store, through its two callbacks (one adapter for
/// the Agent's and the Client's handles; records over `max` bytes are
/// refused).
pub(crate) struct CallbackJournal {
    ud: *mut c_void,
    load: Option<esync_journal_load_fn>,
    store: Option<esync_journal_store_fn>,
    max: usize,
}

impl CallbackJournal {
    /// The Agent's journal, through its callbacks.
    pub(crate) fn agent(c: Callbacks) -> CallbackJournal {
        CallbackJournal {
            ud: c.ud,
            load: cb!(c, journal_load),
            store: cb!(c, journal_store),
            max: MAX_JOURNAL_BYTES,
        }
    }

    /// A journal over the host's callbacks; `ud` must stay valid as long as
    /// the returned value (the handle's callbacks contract).
    #[cfg(feature = "client")]
    pub(crate) fn new(
        ud: *mut c_void,
        load: Option<esync_journal_load_fn>,
        store: Option<esync_journal_store_fn>,
        max: usize,
    ) -> CallbackJournal {
        CallbackJournal {
            ud,
            load,
            store,
            max,
        }
    }
}

fn store_status(what: &str, s: esync_host_status, write: bool) -> Result<(), StoreError> {
    match s {
        ESYNC_HOST_OK => Ok(()),
        ESYNC_HOST_POWER_LOSS => Err(StoreError::PowerLoss),
        other => {
            let message = format!("host callback returned {other}");
            let what = what.to_string();
            let kind = std::io::ErrorKind::Other;
            Err(if write {
                StoreError::Unwritable {
                    what,
                    kind,
                    message,
                }
            } else {
                StoreError::Unreadable {
                    what,
                    kind,
                    message,
                }
            })
        }
    }
}

impl JournalStore for CallbackJournal {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let max = self.max;
        let f = self.load.ok_or_else(|| StoreError::Unreadable {
            what: "journal".into(),
            kind: std::io::ErrorKind::Other,
            message: "callback missing".into(),
        })?;
        let mut buf = vec![0u8; 4096];
        // Two attempts: the first may learn the record's length.
        for _ in 0..2 {
            let mut len = 0usize;
            let mut present = false;
            // SAFETY: host callback; `buf` valid for its length, outputs for
            // writes.
            let s = unsafe { f(self.ud, buf.as_mut_ptr(), buf.len(), &mut len, &mut present) };
            if s == ESYNC_HOST_BUFFER_TOO_SMALL {
                if len <= buf.len() || len > max {
                    return Err(StoreError::Unreadable {
                        what: "journal".into(),
                        kind: std::io::ErrorKind::InvalidData,
                        message: format!("host asked for a {len}-byte buffer (at most {max})"),
                    });
                }
                buf = vec![0u8; len];
                continue;
            }
            store_status("journal", s, false)?;
            if !present {
                return Ok(None);
            }
            if len > buf.len() {
                return Err(StoreError::Unreadable {
                    what: "journal".into(),
                    kind: std::io::ErrorKind::InvalidData,
                    message: format!("host reported {len} bytes in a {}-byte buffer", buf.len()),
                });
            }
            buf.truncate(len);
            return Ok(Some(buf));
        }
        Err(StoreError::Unreadable {
            what: "journal".into(),
            kind: std::io::ErrorKind::InvalidData,
            message: "the journal record changed size while loading".into(),
        })
    }

    fn store(&mut self, record: &[u8]) -> Result<(), StoreError> {
        let f = self.store.ok_or_else(|| StoreError::Unwritable {
            what: "journal".into(),
            kind: std::io::ErrorKind::Other,
            message: "callback missing".into(),
        })?;
        // SAFETY: host callback; `record` valid during the call.
        store_status(
            "journal",
            unsafe { f(self.ud, record.as_ptr(), record.len()) },
            true,
        )
    }
}

/// One Uptane trust store kept by the host, as its four callbacks (the
/// ones of `esync_agent_callbacks`, with their contract): the Client's
/// session (`esync_session_config`) has one for the Director repository
/// and one for the Image repository. The functions and `userdata` must
/// stay valid until the handle that copied them is freed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_trust_callbacks {
    /// Passed first to every callback.
    pub userdata: *mut c_void,
    /// As `esync_agent_callbacks::trust_load` (through
    /// [`esync_trust_loader_add_role`] and [`esync_trust_loader_set_time`]).
    pub trust_load:
        Option<unsafe extern "C" fn(*mut c_void, *mut esync_trust_loader) -> esync_host_status>,
    /// As `esync_agent_callbacks::trust_store_role`.
    pub trust_store_role: Option<
        unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> esync_host_status,
    >,
    /// As `esync_agent_callbacks::trust_remove_role`.
    pub trust_remove_role:
        Option<unsafe extern "C" fn(*mut c_void, *const u8, usize) -> esync_host_status>,
    /// As `esync_agent_callbacks::trust_store_time`.
    pub trust_store_time: Option<unsafe extern "C" fn(*mut c_void, i64) -> esync_host_status>,
}

impl esync_trust_callbacks {
    /// The trust callbacks of an Agent's callbacks.
    pub(crate) fn of_agent(c: &esync_agent_callbacks) -> esync_trust_callbacks {
        esync_trust_callbacks {
            userdata: c.userdata,
            trust_load: c.trust_load,
            trust_store_role: c.trust_store_role,
            trust_remove_role: c.trust_remove_role,
            trust_store_time: c.trust_store_time,
        }
    }

    /// The names of the callbacks that are NULL (all four are required).
    pub(crate) fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.trust_load.is_none() {
            m.push("trust_load");
        }
        if self.trust_store_role.is_none() {
            m.push("trust_store_role");
        }
        if self.trust_remove_role.is_none() {
            m.push("trust_remove_role");
        }
        if self.trust_store_time.is_none() {
            m.push("trust_store_time");
        }
        m
    }
}

/// The host's Uptane trust store, through its callbacks.
pub(crate) struct CallbackTrust(pub(crate) esync_trust_callbacks);

impl CallbackTrust {
    /// The Agent's trust store: the trust callbacks of its
    /// `esync_agent_callbacks`.
    pub(crate) fn agent(c: Callbacks) -> CallbackTrust {
        // SAFETY: `raw` points at the handle's own copy of the callbacks.
        CallbackTrust(esync_trust_callbacks::of_agent(unsafe { &*c.raw }))
    }
}

fn trust_err(op: &str, s: esync_host_status, write: bool) -> Result<(), TrustStoreError> {
    if s == ESYNC_HOST_OK {
        return Ok(());
    }
    let what = format!("trust store ({op})");
    let message = format!("host callback returned {s}");
    let kind = std::io::ErrorKind::Other;
    Err(if write {
        TrustStoreError::Unwritable {
            what,
            kind,
            message,
        }
    } else {
        TrustStoreError::Unreadable {
            what,
            kind,
            message,
        }
    })
}

impl TrustStore for CallbackTrust {
    fn load(&mut self) -> Result<StoredState, TrustStoreError> {
        let Some(f) = self.0.trust_load else {
            return trust_err("load", ESYNC_HOST_FAILED, false).map(|()| StoredState::default());
        };
        let mut loader = esync_trust_loader {
            state: StoredState::default(),
            error: None,
        };
        // SAFETY: host callback; `loader` is valid during the call.
        let s = unsafe { f(self.0.userdata, &mut loader) };
        trust_err("load", s, false)?;
        if let Some(reason) = loader.error {
            return Err(TrustStoreError::Corrupt {
                what: "trust store".into(),
                reason,
            });
        }
        Ok(loader.state)
    }

    fn store_role(&mut self, role: &str, bytes: &[u8]) -> Result<(), TrustStoreError> {
        let Some(f) = self.0.trust_store_role else {
            return trust_err("store_role", ESYNC_HOST_FAILED, true);
        };
        // SAFETY: host callback; both slices valid during the call.
        let s = unsafe {
            f(
                self.0.userdata,
                role.as_ptr(),
                role.len(),
                bytes.as_ptr(),
                bytes.len(),
            )
        };
        trust_err("store_role", s, true)
    }

    fn remove_role(&mut self, role: &str) -> Result<(), TrustStoreError> {
        let Some(f) = self.0.trust_remove_role else {
            return trust_err("remove_role", ESYNC_HOST_FAILED, true);
        };
        // SAFETY: host callback; `role` valid during the call.
        trust_err(
            "remove_role",
            unsafe { f(self.0.userdata, role.as_ptr(), role.len()) },
            true,
        )
    }

    fn store_time(&mut self, now: UnixTime) -> Result<(), TrustStoreError> {
        let Some(f) = self.0.trust_store_time else {
            return trust_err("store_time", ESYNC_HOST_FAILED, true);
        };
        // SAFETY: host callback.
        trust_err("store_time", unsafe { f(self.0.userdata, now.0) }, true)
    }
}

/// The host's consent policy, through its `consent` callback (or consent to
/// every verified offer when it is NULL).
pub(crate) struct CallbackConsent(pub(crate) Callbacks);

impl ConsentPolicy for CallbackConsent {
    fn decide(
        &mut self,
        offer: &DownloadOffer,
        _target: &DirectedTarget,
        _signals: &[Signal],
        now_ms: u64,
    ) -> Decision {
        let Some(f) = cb!(self.0, consent) else {
            return Decision::Consent;
        };
        let (is_delta, download_length) = match &offer.encoding {
            ImageEncoding::Full => (false, offer.length),
            ImageEncoding::Delta { patch_length, .. } => (true, *patch_length),
        };
        let c = esync_offer {
            update_id: offer.update_id.0,
            target_name: offer.target_name.as_ptr(),
            target_name_len: offer.target_name.len(),
            version: offer.version.as_str().as_ptr(),
            version_len: offer.version.as_str().len(),
            release_counter: offer.release_counter.0,
            image_length: offer.length,
            download_length,
            is_delta,
        };
        let mut d = esync_decision {
            kind: ESYNC_DECISION_CONSENT,
            postpone_until_ms: 0,
            reason: [0; ESYNC_REASON_MAX],
            reason_len: 0,
        };
        // SAFETY: host callback; `c` (and what it points to) and `d` are
        // valid during the call.
        let s = unsafe { f(self.0.ud, &c, now_ms, &mut d) };
        if s != ESYNC_HOST_OK {
            // The host could not decide now: ask again in a minute.
            return Decision::Postpone {
                until_ms: now_ms.saturating_add(60_000),
            };
        }
        match d.kind {
            ESYNC_DECISION_CONSENT => Decision::Consent,
            ESYNC_DECISION_POSTPONE => Decision::Postpone {
                until_ms: d.postpone_until_ms,
            },
            _ => Decision::Deny {
                reason: d
                    .reason
                    .get(..d.reason_len)
                    .map(String::from_utf8_lossy)
                    .map_or_else(|| "denied by the host".to_string(), |s| s.into_owned()),
            },
        }
    }
}
