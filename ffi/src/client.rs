//! The `esync_client` handle (feature `client`): the Client's sans-I/O
//! orchestration core ([`esync_client::core::Client`]) driven by a gateway
//! host.
//!
//! The host creates it ([`esync_client_new`], which recovers the campaign
//! from the journal), tells it which Agents are present
//! ([`esync_client_presence`]), asks them for their inventory
//! ([`esync_client_query_inventory`]), hands it every frame received from its
//! bus ([`esync_client_receive`]), starts a verified, downloaded package
//! ([`esync_client_start`]), answers its blob reads
//! ([`esync_client_next_need`], [`esync_client_provide_blob`]), pushes the
//! vehicle signals ([`esync_client_signals`]), calls [`esync_client_poll`]
//! when the monotonic clock reaches `esync_client_step::deadline_ms`, sends
//! every frame [`esync_client_next_frame`] gives to the Agent it names, and
//! takes final package reports ([`esync_client_next_report`],
//! [`esync_client_report_delivered`]).
//!
//! The Server-facing session (`core::session`: check-in, full Uptane
//! verification, downloads) is the `esync_session` handle
//! ([`crate::session`]); the package handed to [`esync_client_start`] is its
//! output ([`crate::session::esync_session_outcome`]), a `ReadyPackage` as
//! JSON.
//!
//! Threading: a handle is used by one thread at a time (it may move between
//! threads); the callbacks run on the calling thread, synchronously, and
//! must not call into the same handle. Distinct handles are independent.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::c_void;

use ::esync_client::core::journal::MAX_JOURNAL_BYTES;
use ::esync_client::core::plan::{BlobHandle, ReadyPackage};
use ::esync_client::core::{
    inventory::Inventory, AgentFrame, Client, ClientError, ClientInput, ClientStep, Envelopes,
    HostNeed, Now, OrchestratorConfig,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_package::package::PackageId;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::DevicePath;
use esync_proto::message::{Participant, PresenceState};

use crate::agent::{
    ESYNC_INPUT_HANDLED, ESYNC_INPUT_IGNORED, ESYNC_INPUT_NONE, ESYNC_INPUT_REFUSED,
};
use crate::host::{
    esync_host_status, esync_log_level, esync_signal, log_to, CallbackJournal, ESYNC_LOG_ERROR,
    ESYNC_LOG_INFO, ESYNC_LOG_WARN, ESYNC_MAX_SIGNALS,
};
use crate::{copy_text, esync_result, guard, slice, slice_mut};

/// One Agent the Client talks to: its device path (UTF-8) and its 32-byte
/// ed25519 public key (its envelopes are verified with it).
#[repr(C)]
pub struct esync_client_agent {
    /// Device path, e.g. `/powertrain/ecm` (UTF-8, `device_path_len` bytes).
    pub device_path: *const u8,
    /// Length of `device_path`.
    pub device_path_len: usize,
    /// The Agent's ed25519 public key.
    pub key: *const u8,
    /// Length of `key` (32).
    pub key_len: usize,
}

/// The Client's configuration (copied by [`esync_client_new`]).
#[repr(C)]
pub struct esync_client_config {
    /// The Client's ed25519 seed (32 bytes): it signs every command.
    pub client_key: *const u8,
    /// Length of `client_key` (32).
    pub client_key_len: usize,
    /// The first envelope sequence number (it must grow across restarts).
    pub envelope_sequence: u64,
    /// The vehicle's Agents (`agents_len` entries; at most 1024).
    pub agents: *const esync_client_agent,
    /// Number of `agents`.
    pub agents_len: usize,
    /// Wait for an answer before a command is sent again (ms; 0: default).
    pub answer_timeout_ms: u64,
    /// How long an install or rollback may take (ms; 0: default).
    pub install_timeout_ms: u64,
    /// Resends without an answer before a component fails (0: default).
    pub max_resends: u32,
    /// Chunks in flight per transfer (0: default).
    pub window: u32,
    /// How long a component waits for its precondition (ms; 0: default).
    pub precondition_wait_ms: u64,
}

/// The host's callbacks for the Client (copied by [`esync_client_new`];
/// `userdata` and the functions must stay valid until the handle is freed).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_client_callbacks {
    /// Passed first to every callback.
    pub userdata: *mut c_void,
    /// Loads the campaign journal record (required), as the Agent's
    /// `journal_load`.
    pub journal_load: Option<
        unsafe extern "C" fn(
            *mut c_void,
            *mut u8,
            usize,
            *mut usize,
            *mut bool,
        ) -> esync_host_status,
    >,
    /// Replaces the campaign journal record atomically, durable on return
    /// (required), as the Agent's `journal_store`.
    pub journal_store:
        Option<unsafe extern "C" fn(*mut c_void, *const u8, usize) -> esync_host_status>,
    /// Log lines (UTF-8, `len` bytes, not NUL-terminated). May be NULL.
    pub log: Option<unsafe extern "C" fn(*mut c_void, esync_log_level, *const u8, usize)>,
}

/// A frame was verified; it comes from a participant that is not an Agent
/// (a listener such as the HMI): not the orchestrator's, dropped (logged).
pub const ESYNC_INPUT_NOT_FROM_AGENT: u32 = 4;

/// What a Client call produced.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct esync_client_step {
    /// Frames waiting in [`esync_client_next_frame`].
    pub frames: usize,
    /// Blob reads waiting in [`esync_client_next_need`].
    pub needs: usize,
    /// Final package reports waiting in [`esync_client_next_report`].
    pub reports: usize,
    /// What became of the input frame (`ESYNC_INPUT_*`).
    pub input: u32,
    /// Whether `deadline_ms` is set.
    pub has_deadline: bool,
    /// Call [`esync_client_poll`] at this monotonic time.
    pub deadline_ms: u64,
}

/// A blob read the Client needs: `len` bytes of the host's blob `blob` at
/// `offset`; answer with [`esync_client_provide_blob`].
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct esync_client_need {
    /// The host's blob number (the package's `blob`).
    pub blob: u64,
    /// Offset.
    pub offset: u64,
    /// Length.
    pub len: u32,
}

/// The Client handle (opaque to C).
pub struct esync_client {
    callbacks: esync_client_callbacks,
    client: Option<Client>,
    journal: CallbackJournal,
    env_verifier: Verifier,
    keys: BTreeMap<Participant, VerifyingKey>,
    signer: EnvelopeSigner,
    frames: VecDeque<AgentFrame>,
    needs: VecDeque<HostNeed>,
    reports: VecDeque<Vec<u8>>,
    current_frame: Option<AgentFrame>,
    current_report: Option<Vec<u8>>,
    last_error: String,
}

type Fail = (esync_result, String);

fn client_err(e: ClientError) -> Fail {
    let r = match &e {
        ClientError::Store(_) | ClientError::Encode(_) => esync_result::ESYNC_RESULT_HALTED,
        ClientError::Frame(_) => esync_result::ESYNC_RESULT_FRAME,
        ClientError::Refused(_) => esync_result::ESYNC_RESULT_REFUSED,
        ClientError::Busy => esync_result::ESYNC_RESULT_BUSY,
        _ => esync_result::ESYNC_RESULT_HALTED,
    };
    (r, e.to_string())
}

impl esync_client {
    fn log(&self, level: u32, msg: &str) {
        log_to(self.callbacks.log, self.callbacks.userdata, level, msg);
    }

    fn fail(&mut self, (r, msg): Fail) -> esync_result {
        self.log(ESYNC_LOG_ERROR, &msg);
        self.last_error = msg;
        r
    }

    /// Runs one core call; a journal failure halts the handle.
    fn call(
        &mut self,
        f: impl FnOnce(
            &mut Client,
            &mut CallbackJournal,
            &mut Envelopes<'_>,
        ) -> Result<ClientStep, ClientError>,
    ) -> Result<esync_client_step, esync_result> {
        let Some(c) = self.client.as_mut() else {
            return Err(esync_result::ESYNC_RESULT_HALTED);
        };
        let mut env = Envelopes {
            verifier: &mut self.env_verifier,
            keys: &self.keys,
            signer: &mut self.signer,
        };
        match f(c, &mut self.journal, &mut env) {
            Ok(step) => Ok(self.finish(step)),
            Err(e) => {
                let (r, msg) = client_err(e);
                if r == esync_result::ESYNC_RESULT_HALTED {
                    self.client = None;
                }
                Err(self.fail((r, msg)))
            }
        }
    }

    fn finish(&mut self, step: ClientStep) -> esync_client_step {
        let input = match &step.input {
            ClientInput::None => ESYNC_INPUT_NONE,
            ClientInput::Handled => ESYNC_INPUT_HANDLED,
            ClientInput::Refused(e) => {
                self.log(ESYNC_LOG_WARN, &format!("frame refused: {e}"));
                ESYNC_INPUT_REFUSED
            }
            ClientInput::NotFromAgent(m) => {
                let from = m.header.sender.clone();
                self.log(ESYNC_LOG_INFO, &format!("message from {from:?} dropped"));
                ESYNC_INPUT_NOT_FROM_AGENT
            }
            _ => ESYNC_INPUT_IGNORED,
        };
        self.frames.extend(step.frames);
        self.needs.extend(step.needs);
        for r in &step.reports {
            match serde_json::to_vec(r) {
                Ok(json) => self.reports.push_back(json),
                Err(e) => self.log(ESYNC_LOG_ERROR, &format!("report not encoded: {e}")),
            }
        }
        esync_client_step {
            frames: self.frames.len(),
            needs: self.needs.len(),
            reports: self.reports.len(),
            input,
            has_deadline: step.deadline_ms.is_some(),
            deadline_ms: step.deadline_ms.unwrap_or(0),
        }
    }
}

unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, Fail> {
    // SAFETY: forwarded from the caller.
    let b = unsafe { slice(ptr, len) }.ok_or((
        esync_result::ESYNC_RESULT_NULL_ARGUMENT,
        format!("{what}: NULL with a length"),
    ))?;
    std::str::from_utf8(b).map_err(|_| {
        (
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            format!("{what}: not UTF-8"),
        )
    })
}

unsafe fn device(ptr: *const u8, len: usize) -> Result<DevicePath, Fail> {
    // SAFETY: forwarded from the caller.
    let t = unsafe { text(ptr, len, "device_path") }?;
    DevicePath::new(t).map_err(|e| {
        (
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            format!("device_path: {e}"),
        )
    })
}

unsafe fn key32(ptr: *const u8, len: usize, what: &str) -> Result<[u8; 32], Fail> {
    // SAFETY: forwarded from the caller.
    let b = unsafe { slice(ptr, len) }.ok_or((
        esync_result::ESYNC_RESULT_NULL_ARGUMENT,
        format!("{what}: NULL"),
    ))?;
    b.try_into().map_err(|_| {
        (
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            format!("{what}: {} bytes, 32 expected", b.len()),
        )
    })
}

fn nonzero(v: u64, default: u64) -> u64 {
    if v == 0 {
        default
    } else {
        v
    }
}

unsafe fn build(
    cfg: &esync_client_config,
    callbacks: &esync_client_callbacks,
    now: Now,
) -> Result<(Box<esync_client>, ClientStep), Fail> {
    if callbacks.journal_load.is_none() || callbacks.journal_store.is_none() {
        return Err((
            esync_result::ESYNC_RESULT_INVALID_CONFIG,
            "required callbacks missing: journal_load, journal_store".into(),
        ));
    }
    // SAFETY: the caller guarantees the pointers of `cfg` are valid.
    let seed = unsafe { key32(cfg.client_key, cfg.client_key_len, "client_key") }?;
    if cfg.agents_len > ::esync_client::core::inventory::MAX_AGENTS {
        return Err((
            esync_result::ESYNC_RESULT_INVALID_CONFIG,
            format!(
                "{} agents (at most {})",
                cfg.agents_len,
                ::esync_client::core::inventory::MAX_AGENTS
            ),
        ));
    }
    let agents: &[esync_client_agent] = if cfg.agents_len == 0 {
        &[]
    } else if cfg.agents.is_null() {
        return Err((
            esync_result::ESYNC_RESULT_NULL_ARGUMENT,
            "agents: NULL with a length".into(),
        ));
    } else {
        // SAFETY: the caller guarantees `agents` holds `agents_len` entries.
        unsafe { std::slice::from_raw_parts(cfg.agents, cfg.agents_len) }
    };
    let mut keys = BTreeMap::new();
    for a in agents {
        // SAFETY: the caller guarantees each entry's pointers are valid.
        let d = unsafe { device(a.device_path, a.device_path_len) }?;
        let k = unsafe { key32(a.key, a.key_len, "agent key") }?;
        let k = VerifyingKey::from_bytes(&k).map_err(|e| {
            (
                esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                format!("agent key of {d}: {e}"),
            )
        })?;
        keys.insert(Participant::Device(d), k);
    }
    let d = OrchestratorConfig::default();
    let config = OrchestratorConfig {
        answer_timeout_ms: nonzero(cfg.answer_timeout_ms, d.answer_timeout_ms),
        install_timeout_ms: nonzero(cfg.install_timeout_ms, d.install_timeout_ms),
        max_resends: if cfg.max_resends == 0 {
            d.max_resends
        } else {
            cfg.max_resends
        },
        window: if cfg.window == 0 {
            d.window
        } else {
            cfg.window
        },
        precondition_wait_ms: nonzero(cfg.precondition_wait_ms, d.precondition_wait_ms),
    };
    let mut h = Box::new(esync_client {
        callbacks: *callbacks,
        client: None,
        journal: CallbackJournal::new(
            callbacks.userdata,
            callbacks.journal_load,
            callbacks.journal_store,
            MAX_JOURNAL_BYTES,
        ),
        env_verifier: Verifier::new(
            ReceiverIdentity {
                me: Participant::Client,
                groups: vec![],
            },
            FrameLimits::default(),
        ),
        keys,
        signer: EnvelopeSigner::new(
            Participant::Client,
            SigningKey::from_bytes(&seed),
            cfg.envelope_sequence,
            FrameLimits::default(),
        ),
        frames: VecDeque::new(),
        needs: VecDeque::new(),
        reports: VecDeque::new(),
        current_frame: None,
        current_report: None,
        last_error: String::new(),
    });
    let c = &mut *h;
    let mut env = Envelopes {
        verifier: &mut c.env_verifier,
        keys: &c.keys,
        signer: &mut c.signer,
    };
    let (client, step) = Client::recover(config, Inventory::new(), now, &mut c.journal, &mut env)
        .map_err(|e| {
        let (r, m) = client_err(e);
        (r, format!("recovery: {m}"))
    })?;
    c.client = Some(client);
    Ok((h, step))
}

/// Creates a Client from `config` and `callbacks` (both copied), recovering
/// its campaign from the journal (`journal_load`): an open campaign is
/// rolled back, a committed one confirmed to the end, unsent reports come
/// out again (`step.reports`). On success writes the handle to `*out` and
/// what recovery produced to `*step`.
///
/// Ownership: `*out` is the caller's, freed with [`esync_client_free`].
/// Threading: any thread.
///
/// # Safety
///
/// Every pointer must be valid as the config's fields describe; `out` and
/// `step` valid for writes; the callbacks' `userdata` and functions valid
/// until the handle is freed.
#[no_mangle]
pub unsafe extern "C" fn esync_client_new(
    config: *const esync_client_config,
    callbacks: *const esync_client_callbacks,
    mono_ms: u64,
    wall_ms: u64,
    out: *mut *mut esync_client,
    step: *mut esync_client_step,
) -> esync_result {
    guard(|| {
        if config.is_null() || callbacks.is_null() || out.is_null() || step.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: checked non-null; the caller guarantees validity.
        let (cfg, cbs) = unsafe { (&*config, &*callbacks) };
        // SAFETY: forwarded contract.
        match unsafe { build(cfg, cbs, Now { mono_ms, wall_ms }) } {
            Ok((mut h, s)) => {
                let st = h.finish(s);
                // SAFETY: checked non-null; the caller guarantees writable.
                unsafe {
                    step.write(st);
                    out.write(Box::into_raw(h));
                }
                esync_result::ESYNC_RESULT_OK
            }
            Err((r, msg)) => {
                log_to(
                    cbs.log,
                    cbs.userdata,
                    ESYNC_LOG_ERROR,
                    &format!("esync_client_new: {msg}"),
                );
                r
            }
        }
    })
}

/// Frees a Client handle; `NULL` is accepted. Borrowed outputs of the
/// handle become invalid.
///
/// # Safety
///
/// `client` must be `NULL` or a handle from [`esync_client_new`] not freed
/// before, used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn esync_client_free(client: *mut esync_client) {
    if client.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the caller guarantees a live handle from `Box::into_raw`.
        drop(unsafe { Box::from_raw(client) });
    });
}

fn with_client(
    client: *mut esync_client,
    f: impl FnOnce(&mut esync_client) -> esync_result,
) -> esync_result {
    // SAFETY: the caller of the entry point guarantees `client` is NULL or a
    // live handle used by no other thread.
    let Some(c) = (unsafe { client.as_mut() }) else {
        return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
    };
    let r = guard(|| f(&mut *c));
    if r == esync_result::ESYNC_RESULT_PANIC {
        // The state may be half-updated: halt (the journal is the truth).
        // SAFETY: as above.
        if let Some(c) = unsafe { client.as_mut() } {
            c.client = None;
            c.last_error = "a panic was caught; the Client halted".into();
        }
    }
    r
}

/// Runs `f` with the handle, then writes the step on success.
fn stepped(
    client: *mut esync_client,
    step: *mut esync_client_step,
    f: impl FnOnce(&mut esync_client) -> Result<esync_client_step, esync_result>,
) -> esync_result {
    with_client(client, |c| {
        if step.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        match f(c) {
            Ok(s) => {
                // SAFETY: checked non-null; the caller guarantees writable.
                unsafe { step.write(s) };
                esync_result::ESYNC_RESULT_OK
            }
            Err(r) => r,
        }
    })
}

/// One frame from the host's bus (copied). It is verified end to end
/// (signature against the configured Agent keys, recipient, replay); a
/// refused frame changes nothing (`step.input == ESYNC_INPUT_REFUSED`).
/// Inventory reports, version reports and confirmations update the
/// inventory.
///
/// Ownership: `frame` stays the caller's. Threading: see the module.
///
/// # Safety
///
/// `client` a live handle; `frame` valid for `len` bytes; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_receive(
    client: *mut esync_client,
    frame: *const u8,
    len: usize,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_client_step,
) -> esync_result {
    stepped(client, step, |c| {
        // SAFETY: the caller guarantees `frame` is valid for `len` bytes.
        let Some(bytes) = (unsafe { slice(frame, len) }) else {
            return Err(esync_result::ESYNC_RESULT_NULL_ARGUMENT);
        };
        let now = Now { mono_ms, wall_ms };
        c.call(|cl, j, env| cl.receive(bytes, now, j, env))
    })
}

/// Handles the deadlines due at `mono_ms` (call it at `step.deadline_ms`).
///
/// # Safety
///
/// `client` a live handle; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_poll(
    client: *mut esync_client,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_client_step,
) -> esync_result {
    stepped(client, step, |c| {
        let now = Now { mono_ms, wall_ms };
        c.call(|cl, j, env| cl.poll(now, j, env))
    })
}

/// The host's bus says the Agent `device_path` (UTF-8) connected
/// (`connected = true`) or disconnected.
///
/// # Safety
///
/// `client` a live handle; `device_path` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn esync_client_presence(
    client: *mut esync_client,
    device_path: *const u8,
    len: usize,
    connected: bool,
) -> esync_result {
    with_client(client, |c| {
        // SAFETY: the caller guarantees `device_path` is valid.
        let d = match unsafe { device(device_path, len) } {
            Ok(d) => d,
            Err(f) => return c.fail(f),
        };
        let Some(cl) = c.client.as_mut() else {
            return esync_result::ESYNC_RESULT_HALTED;
        };
        let state = if connected {
            PresenceState::Connected
        } else {
            PresenceState::Disconnected
        };
        cl.presence(&d, state);
        esync_result::ESYNC_RESULT_OK
    })
}

/// Asks the Agent `device_path` (UTF-8) for its inventory, with the
/// 16-byte `nonce`; its report updates the inventory a package is checked
/// against.
///
/// # Safety
///
/// `client` a live handle; `device_path` valid for `len` bytes; `nonce`
/// valid for 16 bytes; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_query_inventory(
    client: *mut esync_client,
    device_path: *const u8,
    len: usize,
    nonce: *const u8,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_client_step,
) -> esync_result {
    stepped(client, step, |c| {
        // SAFETY: the caller guarantees both pointers are valid.
        let parsed = unsafe { device(device_path, len) }.and_then(|d| {
            // SAFETY: as above.
            let n = unsafe { slice(nonce, 16) }
                .filter(|_| !nonce.is_null())
                .ok_or((
                    esync_result::ESYNC_RESULT_NULL_ARGUMENT,
                    "nonce: NULL".into(),
                ))?;
            let mut a = [0u8; 16];
            a.copy_from_slice(n);
            Ok((d, a))
        });
        let (d, n) = parsed.map_err(|f| c.fail(f))?;
        let now = Now { mono_ms, wall_ms };
        c.call(|cl, j, env| cl.query_inventory(&[d], n, now, j, env))
    })
}

/// Starts installing a verified, downloaded package: `package_json` is a
/// `ReadyPackage` (esync-client's `core::plan`) as JSON, `len` bytes (at
/// most 16 MiB). It is checked against the inventory first; a package that
/// does not decode or fit returns `ESYNC_RESULT_REFUSED` and sends nothing;
/// a running campaign returns `ESYNC_RESULT_BUSY`.
///
/// # Safety
///
/// `client` a live handle; `package_json` valid for `len` bytes; `step`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_start(
    client: *mut esync_client,
    package_json: *const u8,
    len: usize,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_client_step,
) -> esync_result {
    const MAX_PACKAGE_JSON: usize = 16 << 20;
    stepped(client, step, |c| {
        // SAFETY: the caller guarantees `package_json` is valid.
        let Some(bytes) = (unsafe { slice(package_json, len) }) else {
            return Err(esync_result::ESYNC_RESULT_NULL_ARGUMENT);
        };
        if bytes.len() > MAX_PACKAGE_JSON {
            return Err(c.fail((
                esync_result::ESYNC_RESULT_REFUSED,
                format!(
                    "package: {} bytes (at most {MAX_PACKAGE_JSON})",
                    bytes.len()
                ),
            )));
        }
        let ready: ReadyPackage = serde_json::from_slice(bytes).map_err(|e| {
            c.fail((
                esync_result::ESYNC_RESULT_REFUSED,
                format!("package does not decode: {e}"),
            ))
        })?;
        let now = Now { mono_ms, wall_ms };
        c.call(|cl, j, env| cl.start(ready, now, j, env))
    })
}

/// The vehicle state changed: `signals` (`count` entries, at most
/// `ESYNC_MAX_SIGNALS`, copied) replace the previous ones; preconditions
/// are evaluated on them. An entry of an unknown kind or with bad text is
/// `ESYNC_RESULT_INVALID_ARGUMENT` (nothing changes).
///
/// # Safety
///
/// `client` a live handle; `signals` valid for `count` entries; `step`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_signals(
    client: *mut esync_client,
    signals: *const esync_signal,
    count: usize,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_client_step,
) -> esync_result {
    stepped(client, step, |c| {
        if count > ESYNC_MAX_SIGNALS {
            return Err(c.fail((
                esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                format!("{count} signals (at most {ESYNC_MAX_SIGNALS})"),
            )));
        }
        let raw: &[esync_signal] = if count == 0 {
            &[]
        } else if signals.is_null() {
            return Err(esync_result::ESYNC_RESULT_NULL_ARGUMENT);
        } else {
            // SAFETY: the caller guarantees `count` valid entries.
            unsafe { std::slice::from_raw_parts(signals, count) }
        };
        let mut list = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            match s.to_signal() {
                Some(s) => list.push(s),
                None => {
                    return Err(c.fail((
                        esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                        format!("signal {i} is malformed"),
                    )))
                }
            }
        }
        let now = Now { mono_ms, wall_ms };
        c.call(|cl, j, env| cl.signals(list, now, j, env))
    })
}

/// Takes the next blob read into `*need` (`ESYNC_RESULT_NO_FRAME` when none
/// is waiting; nothing written then).
///
/// # Safety
///
/// `client` a live handle; `need` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_next_need(
    client: *mut esync_client,
    need: *mut esync_client_need,
) -> esync_result {
    with_client(client, |c| {
        if need.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let Some(n) = c.needs.pop_front() else {
            return esync_result::ESYNC_RESULT_NO_FRAME;
        };
        let HostNeed::ReadBlob { blob, offset, len } = n else {
            return c.fail((
                esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                "a need this version of the C ABI does not know".into(),
            ));
        };
        // SAFETY: checked non-null; the caller guarantees writable.
        unsafe {
            need.write(esync_client_need {
                blob: blob.0,
                offset,
                len,
            })
        };
        esync_result::ESYNC_RESULT_OK
    })
}

/// The host's answer to a blob read: `len` bytes of blob `blob` at
/// `offset` (copied).
///
/// # Safety
///
/// `client` a live handle; `data` valid for `len` bytes; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_provide_blob(
    client: *mut esync_client,
    blob: u64,
    offset: u64,
    data: *const u8,
    len: usize,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_client_step,
) -> esync_result {
    stepped(client, step, |c| {
        // SAFETY: the caller guarantees `data` is valid for `len` bytes.
        let Some(bytes) = (unsafe { slice(data, len) }) else {
            return Err(esync_result::ESYNC_RESULT_NULL_ARGUMENT);
        };
        let now = Now { mono_ms, wall_ms };
        c.call(|cl, j, env| cl.provide_blob(BlobHandle(blob), offset, bytes, now, j, env))
    })
}

/// Takes the next frame to send: `*to`/`*to_len` the Agent's device path
/// (UTF-8), `*frame`/`*frame_len` the frame. Both are borrowed, valid until
/// the next call of any function on the handle. `ESYNC_RESULT_NO_FRAME`
/// when none is waiting (nothing written).
///
/// # Safety
///
/// `client` a live handle; every out-pointer writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_next_frame(
    client: *mut esync_client,
    to: *mut *const u8,
    to_len: *mut usize,
    frame: *mut *const u8,
    frame_len: *mut usize,
) -> esync_result {
    with_client(client, |c| {
        if to.is_null() || to_len.is_null() || frame.is_null() || frame_len.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let Some(f) = c.frames.pop_front() else {
            return esync_result::ESYNC_RESULT_NO_FRAME;
        };
        let f = c.current_frame.insert(f);
        // SAFETY: checked non-null; the caller guarantees writable. The
        // pointers stay valid while `current_frame` holds the frame.
        unsafe {
            to.write(f.to.as_str().as_ptr());
            to_len.write(f.to.as_str().len());
            frame.write(f.bytes.as_ptr());
            frame_len.write(f.bytes.len());
        }
        esync_result::ESYNC_RESULT_OK
    })
}

/// Takes the next final package report, as JSON (`PackageReport` of
/// esync-client's `core::orchestrate`: package, outcome `Committed`,
/// `RolledBack` or `Failed`, per-component ends). Borrowed, valid until the
/// next call of any function on the handle. The report stays in the
/// journal until [`esync_client_report_delivered`]. `ESYNC_RESULT_NO_FRAME`
/// when none is waiting.
///
/// # Safety
///
/// `client` a live handle; `json` and `len` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_next_report(
    client: *mut esync_client,
    json: *mut *const u8,
    len: *mut usize,
) -> esync_result {
    with_client(client, |c| {
        if json.is_null() || len.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let Some(r) = c.reports.pop_front() else {
            return esync_result::ESYNC_RESULT_NO_FRAME;
        };
        let r = c.current_report.insert(r);
        // SAFETY: checked non-null; the caller guarantees writable.
        unsafe {
            json.write(r.as_ptr());
            len.write(r.len());
        }
        esync_result::ESYNC_RESULT_OK
    })
}

/// The host delivered the report of package `package_id` (UTF-8): it
/// leaves the journal.
///
/// # Safety
///
/// `client` a live handle; `package_id` valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn esync_client_report_delivered(
    client: *mut esync_client,
    package_id: *const u8,
    len: usize,
) -> esync_result {
    with_client(client, |c| {
        // SAFETY: the caller guarantees `package_id` is valid.
        let id = match unsafe { text(package_id, len, "package_id") }.and_then(|t| {
            PackageId::new(t).map_err(|e| {
                (
                    esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                    format!("package_id: {e}"),
                )
            })
        }) {
            Ok(id) => id,
            Err(f) => return c.fail(f),
        };
        let Some(cl) = c.client.as_mut() else {
            return esync_result::ESYNC_RESULT_HALTED;
        };
        match cl.report_delivered(&id, &mut c.journal) {
            Ok(()) => esync_result::ESYNC_RESULT_OK,
            Err(e) => {
                c.client = None;
                let (_, msg) = client_err(e);
                c.fail((esync_result::ESYNC_RESULT_HALTED, msg))
            }
        }
    })
}

/// Writes the detail of the handle's last failure into `buf` (UTF-8, not
/// NUL-terminated, truncated at a character boundary), its length into
/// `*written`.
///
/// # Safety
///
/// `client` a live handle; `buf` valid for `len` bytes; `written` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_client_last_error(
    client: *mut esync_client,
    buf: *mut u8,
    len: usize,
    written: *mut usize,
) -> esync_result {
    with_client(client, |c| {
        if written.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: the caller guarantees `buf` is valid for `len` bytes.
        let Some(out) = (unsafe { slice_mut(buf, len) }) else {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        };
        let n = copy_text(&c.last_error, out);
        // SAFETY: checked non-null.
        unsafe { written.write(n) };
        esync_result::ESYNC_RESULT_OK
    })
}
