//! The `esync_agent` handle: the Agent behind its synchronous endpoint
//! ([`esync_agent::endpoint::Endpoint`]), driven by the host.
//!
//! The host creates it ([`esync_agent_new`], which recovers from the
//! journal), hands it every frame received from its bus
//! ([`esync_agent_receive`]), calls [`esync_agent_poll`] while
//! `esync_step::poll` is set or when the monotonic clock reaches
//! `esync_step::deadline_ms`, sends every frame [`esync_agent_next_frame`]
//! gives, and calls [`esync_agent_mark_sent`] with a frame's outbox id once
//! its transport accepted it. After a reconnection it calls
//! [`esync_agent_reconnected`] (unsent final reports are sealed again).
//!
//! Threading: a handle is used by one thread at a time (it may move between
//! threads); the callbacks run on the calling thread, synchronously, and
//! must not call into the same handle. Distinct handles are independent.

use std::collections::{BTreeMap, VecDeque};

use ::esync_agent::endpoint::{Endpoint, EndpointError, Envelopes, Frame, Input, Step};
use ::esync_agent::patch::{NoDeltas, PatchApplier};
use ::esync_agent::uptane::{UptanePartial, UptaneReporter};
use ::esync_agent::{AgentConfig, Context, Now, VersionReporter};
use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, Vin};
use esync_proto::message::Participant;
use esync_uptane::crypto::{Scheme, SchemeSet};
use esync_uptane::store::TrustStore as _;

use crate::host::{
    esync_agent_callbacks, CallbackConsent, CallbackDevice, CallbackJournal, CallbackTrust,
    Callbacks, ESYNC_LOG_ERROR, ESYNC_LOG_INFO, ESYNC_LOG_WARN,
};
use crate::{copy_text, esync_result, guard, slice, slice_mut};

/// Metadata verification modes (`esync_agent_config::verification`).
pub type esync_verification = u32;
/// Uptane partial verification: Director targets only, against the
/// Director root pinned at provisioning (`director_root`), with the
/// trusted state kept through the trust-store callbacks.
pub const ESYNC_VERIFY_UPTANE_PARTIAL: esync_verification = 1;

/// Patch application modes (`esync_agent_config::patching`).
pub type esync_patching = u32;
/// No deltas: the Agent advertises no patch format and receives full
/// images.
pub const ESYNC_PATCH_NONE: esync_patching = 0;
/// esync-package's bsdiff-family applier (the formats it supports).
pub const ESYNC_PATCH_BUILTIN: esync_patching = 1;

/// Uptane key schemes an Agent accepts (`esync_agent_config::uptane_schemes`,
/// a bit set; 0: all of them). Director keys of other schemes are ignored:
/// they never count toward a threshold and their cost is never paid.
pub type esync_schemes = u32;
/// `ed25519`.
pub const ESYNC_SCHEME_ED25519: esync_schemes = 1;
/// `ecdsa-sha2-nistp256`.
pub const ESYNC_SCHEME_ECDSA_P256: esync_schemes = 1 << 1;
/// `ecdsa-sha2-nistp384`.
pub const ESYNC_SCHEME_ECDSA_P384: esync_schemes = 1 << 2;
/// `rsassa-pss-sha256`.
pub const ESYNC_SCHEME_RSA_PSS_SHA256: esync_schemes = 1 << 3;

/// What became of a step's input (`esync_step::input`).
pub type esync_input = u32;
/// No input (a poll, a reconnection, recovery).
pub const ESYNC_INPUT_NONE: esync_input = 0;
/// The frame was verified and handled.
pub const ESYNC_INPUT_HANDLED: esync_input = 1;
/// The frame was verified; the Agent ignored the message (the reason went
/// to the `log` callback).
pub const ESYNC_INPUT_IGNORED: esync_input = 2;
/// The frame was refused by envelope verification (signature, sender,
/// recipient, replay, limits); the Agent never saw it.
pub const ESYNC_INPUT_REFUSED: esync_input = 3;

/// The Agent's limits. Start from [`esync_agent_limits_default`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_agent_limits {
    /// Largest image (or patch) accepted, in bytes.
    pub max_image_len: u64,
    /// Largest transfer chunk accepted, in bytes.
    pub max_chunk_size: u32,
    /// Most chunks in one transfer.
    pub max_chunks: u32,
    /// Memory given to patching, in bytes.
    pub max_patch_memory: u64,
    /// Install attempts per update.
    pub max_install_attempts: u32,
    /// The transfer position is journaled at least every this many chunks.
    pub journal_every_chunks: u32,
    /// A progress report is sent every this many chunks.
    pub progress_every_chunks: u32,
    /// Bytes written to the slot (or patch work done) per poll.
    pub write_quantum: u64,
    /// Automatic rollback if the Client does not confirm an activated image
    /// within this time (monotonic ms); 0: never.
    pub confirm_timeout_ms: u64,
    /// Suggested delay in "do not disturb" answers, in ms.
    pub busy_retry_after_ms: u32,
}

/// How to create an Agent. Every pointer is followed by its length; the
/// bytes are copied during [`esync_agent_new`] and need not outlive it.
/// Text is UTF-8, not NUL-terminated.
#[repr(C)]
pub struct esync_agent_config {
    /// This Agent's device path (e.g. `/powertrain/ecm`).
    pub device_path: *const u8,
    /// Length of `device_path`.
    pub device_path_len: usize,
    /// Hardware id.
    pub hardware_id: *const u8,
    /// Length of `hardware_id`.
    pub hardware_id_len: usize,
    /// ECU serial (Uptane ECU id).
    pub serial: *const u8,
    /// Length of `serial`.
    pub serial_len: usize,
    /// The vehicle's VIN.
    pub vin: *const u8,
    /// Length of `vin`.
    pub vin_len: usize,
    /// This Agent's ed25519 signing key: its 32-byte seed. Signs envelopes
    /// and Uptane ECU version reports.
    pub agent_key: *const u8,
    /// Length of `agent_key` (32).
    pub agent_key_len: usize,
    /// The Client's ed25519 public key (32 bytes): the only sender accepted.
    pub client_key: *const u8,
    /// Length of `client_key` (32).
    pub client_key_len: usize,
    /// First envelope sequence number; it must grow across restarts (e.g.
    /// 1000 x wall ms at start, or a persisted counter).
    pub envelope_sequence: u64,
    /// `ESYNC_VERIFY_*`.
    pub verification: esync_verification,
    /// The Director root metadata pinned at provisioning (JSON bytes),
    /// stored into the trust store when it holds no root yet. May be empty
    /// once the trust store is provisioned.
    pub director_root: *const u8,
    /// Length of `director_root`.
    pub director_root_len: usize,
    /// `ESYNC_PATCH_*`.
    pub patching: esync_patching,
    /// `ESYNC_SCHEME_*` bits: the Uptane key schemes accepted (0: all).
    pub uptane_schemes: esync_schemes,
    /// Install precondition (esync's precondition language, e.g. `speed ==
    /// 0 && gear == "P"`); non-empty makes the Agent safety-critical.
    pub safety_precondition: *const u8,
    /// Length of `safety_precondition` (0: none).
    pub safety_precondition_len: usize,
    /// Limits.
    pub limits: esync_agent_limits,
}

/// What a call produced. Written only on success.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct esync_step {
    /// Frames now waiting in [`esync_agent_next_frame`] (all calls'
    /// frames not yet taken).
    pub frames: usize,
    /// `ESYNC_INPUT_*`.
    pub input: esync_input,
    /// Call [`esync_agent_poll`] again now: work is pending.
    pub poll: bool,
    /// Whether `deadline_ms` is set.
    pub has_deadline: bool,
    /// Call [`esync_agent_poll`] when the monotonic clock reaches this, if
    /// nothing happens before.
    pub deadline_ms: u64,
}

/// The Agent. Opaque; create with [`esync_agent_new`], free with
/// [`esync_agent_free`].
pub struct esync_agent {
    /// The host's callbacks, owned here so the adapters' pointer stays valid.
    callbacks: Box<esync_agent_callbacks>,
    /// `None` once halted.
    endpoint: Option<Endpoint>,
    device: CallbackDevice,
    journal: CallbackJournal,
    verifier: UptanePartial<CallbackTrust>,
    patcher: Box<dyn PatchApplier>,
    policy: CallbackConsent,
    reporter: UptaneReporter,
    env_verifier: Verifier,
    keys: BTreeMap<Participant, VerifyingKey>,
    signer: EnvelopeSigner,
    queue: VecDeque<Frame>,
    /// The frame last handed out by `esync_agent_next_frame`.
    current: Option<Frame>,
    last_error: String,
}

impl esync_agent {
    fn cbs(&self) -> Callbacks {
        // SAFETY: `callbacks` is a Box owned by this handle, valid as long
        // as the handle.
        unsafe { Callbacks::new(&*self.callbacks) }
    }

    fn fail(&mut self, r: esync_result, msg: String) -> esync_result {
        self.cbs().log(ESYNC_LOG_ERROR, &msg);
        self.last_error = msg;
        r
    }

    /// Runs `f` on the endpoint with the Agent's context and envelopes.
    fn with_endpoint(
        &mut self,
        f: impl FnOnce(
            &mut Endpoint,
            &mut Context<'_>,
            &mut Envelopes<'_>,
        ) -> Result<Step, EndpointError>,
    ) -> Result<Step, esync_result> {
        let Some(ep) = self.endpoint.as_mut() else {
            return Err(esync_result::ESYNC_RESULT_HALTED);
        };
        let mut ctx = Context {
            device: &mut self.device,
            journal: &mut self.journal,
            verifier: &mut self.verifier,
            patcher: &*self.patcher,
            policy: &mut self.policy,
            reporter: Some(&mut self.reporter as &mut dyn VersionReporter),
        };
        let mut env = Envelopes {
            verifier: &mut self.env_verifier,
            keys: &self.keys,
            signer: &mut self.signer,
        };
        match f(ep, &mut ctx, &mut env) {
            Ok(step) => Ok(step),
            Err(EndpointError::Agent(e)) => {
                self.endpoint = None;
                let msg = format!("the Agent halted: {e}");
                Err(self.fail(esync_result::ESYNC_RESULT_HALTED, msg))
            }
            Err(e) => {
                let msg = e.to_string();
                Err(self.fail(esync_result::ESYNC_RESULT_FRAME, msg))
            }
        }
    }

    /// Queues a step's frames and describes it.
    fn finish(&mut self, step: Step) -> esync_step {
        let cbs = self.cbs();
        let input = match &step.input {
            Input::None => ESYNC_INPUT_NONE,
            Input::Handled => ESYNC_INPUT_HANDLED,
            Input::Ignored(why) => {
                cbs.log(ESYNC_LOG_INFO, &format!("message ignored: {why}"));
                ESYNC_INPUT_IGNORED
            }
            Input::Refused(e) => {
                cbs.log(ESYNC_LOG_WARN, &format!("frame refused: {e}"));
                ESYNC_INPUT_REFUSED
            }
            _ => ESYNC_INPUT_NONE,
        };
        self.queue.extend(step.frames);
        esync_step {
            frames: self.queue.len(),
            input,
            poll: step.poll,
            has_deadline: step.deadline_ms.is_some(),
            deadline_ms: step.deadline_ms.unwrap_or(0),
        }
    }
}

fn default_limits() -> esync_agent_limits {
    // The core's defaults, one source of truth.
    let c = AgentConfig::new(
        DevicePath::new("/d").expect("a valid literal device path"),
        HardwareId::new("h").expect("a valid literal hardware id"),
        EcuSerial::new("s").expect("a valid literal serial"),
    );
    esync_agent_limits {
        max_image_len: c.max_image_len,
        max_chunk_size: c.max_chunk_size,
        max_chunks: c.max_chunks,
        max_patch_memory: c.max_patch_memory,
        max_install_attempts: c.max_install_attempts,
        journal_every_chunks: c.journal_every_chunks,
        progress_every_chunks: c.progress_every_chunks,
        write_quantum: c.write_quantum as u64,
        confirm_timeout_ms: c.confirm_timeout_ms.unwrap_or(0),
        busy_retry_after_ms: c.busy_retry_after_ms,
    }
}

/// Writes the default limits (the Agent core's) to `*out`.
///
/// Ownership: `out` is the caller's. Thread safety: any thread.
///
/// # Safety
///
/// `out` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_limits_default(out: *mut esync_agent_limits) -> esync_result {
    guard(|| {
        if out.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let l = default_limits();
        // SAFETY: checked non-null; the caller guarantees it is writable.
        unsafe { out.write(l) };
        esync_result::ESYNC_RESULT_OK
    })
}

/// Text from a C pointer and length.
///
/// # Safety
///
/// As [`slice`].
unsafe fn text<'a>(ptr: *const u8, len: usize) -> Result<&'a str, (esync_result, String)> {
    // SAFETY: forwarded from the caller.
    let b = unsafe { slice(ptr, len) }.ok_or((
        esync_result::ESYNC_RESULT_NULL_ARGUMENT,
        "NULL text with a length".into(),
    ))?;
    std::str::from_utf8(b).map_err(|_| {
        (
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            "text is not UTF-8".into(),
        )
    })
}

fn key32(b: &[u8], what: &str) -> Result<[u8; 32], (esync_result, String)> {
    b.try_into().map_err(|_| {
        (
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            format!("{what}: {} bytes, 32 expected", b.len()),
        )
    })
}

fn invalid<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> (esync_result, String) {
    move |e| {
        (
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            format!("{what}: {e}"),
        )
    }
}

fn config_err<E: std::fmt::Display>(e: E) -> (esync_result, String) {
    (esync_result::ESYNC_RESULT_INVALID_CONFIG, e.to_string())
}

fn schemes(bits: esync_schemes) -> Result<SchemeSet, (esync_result, String)> {
    if bits == 0 {
        return Ok(SchemeSet::ALL);
    }
    let table = [
        (ESYNC_SCHEME_ED25519, Scheme::Ed25519),
        (ESYNC_SCHEME_ECDSA_P256, Scheme::EcdsaP256Sha256),
        (ESYNC_SCHEME_ECDSA_P384, Scheme::EcdsaP384Sha384),
        (ESYNC_SCHEME_RSA_PSS_SHA256, Scheme::RsaPssSha256),
    ];
    let known = table.iter().fold(0, |m, (b, _)| m | b);
    if bits & !known != 0 {
        return Err((
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            format!("uptane_schemes: unknown bits {:#x}", bits & !known),
        ));
    }
    let set = table
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .fold(SchemeSet::EMPTY, |set, (_, s)| set.with(*s));
    if let Some(s) = set.iter().find(|s| !s.is_built()) {
        return Err((
            esync_result::ESYNC_RESULT_INVALID_CONFIG,
            format!("uptane_schemes: {s} is not built into this library (features ecdsa, rsa)"),
        ));
    }
    Ok(set)
}

/// Builds the handle (everything but the first step).
///
/// # Safety
///
/// `cfg` and `callbacks` valid as stated on [`esync_agent_new`].
unsafe fn build(
    cfg: &esync_agent_config,
    callbacks: &esync_agent_callbacks,
    now: Now,
) -> Result<(Box<esync_agent>, Step), (esync_result, String)> {
    let missing = Callbacks::missing_required(callbacks);
    if !missing.is_empty() {
        return Err((
            esync_result::ESYNC_RESULT_INVALID_CONFIG,
            format!("required callbacks missing: {}", missing.join(", ")),
        ));
    }
    // SAFETY (each `text`/`slice` below): the caller guarantees every
    // pointer of `cfg` is valid for its length.
    let device = DevicePath::new(unsafe { text(cfg.device_path, cfg.device_path_len) }?)
        .map_err(invalid("device_path"))?;
    let hardware_id = HardwareId::new(unsafe { text(cfg.hardware_id, cfg.hardware_id_len) }?)
        .map_err(invalid("hardware_id"))?;
    let serial =
        EcuSerial::new(unsafe { text(cfg.serial, cfg.serial_len) }?).map_err(invalid("serial"))?;
    let vin = Vin::new(unsafe { text(cfg.vin, cfg.vin_len) }?).map_err(invalid("vin"))?;
    let null = || {
        (
            esync_result::ESYNC_RESULT_NULL_ARGUMENT,
            "NULL key".to_string(),
        )
    };
    let agent_seed = key32(
        unsafe { slice(cfg.agent_key, cfg.agent_key_len) }.ok_or_else(null)?,
        "agent_key",
    )?;
    let client_key = VerifyingKey::from_bytes(&key32(
        unsafe { slice(cfg.client_key, cfg.client_key_len) }.ok_or_else(null)?,
        "client_key",
    )?)
    .map_err(invalid("client_key"))?;
    let root = unsafe { slice(cfg.director_root, cfg.director_root_len) }.ok_or_else(null)?;
    let precondition = unsafe { text(cfg.safety_precondition, cfg.safety_precondition_len) }?;

    let mut config = AgentConfig::new(device.clone(), hardware_id, serial.clone());
    if !precondition.is_empty() {
        config = config.safety_critical(precondition).map_err(config_err)?;
    }
    let l = cfg.limits;
    config.max_image_len = l.max_image_len;
    config.max_chunk_size = l.max_chunk_size;
    config.max_chunks = l.max_chunks;
    config.max_patch_memory = l.max_patch_memory;
    config.max_install_attempts = l.max_install_attempts;
    config.journal_every_chunks = l.journal_every_chunks;
    config.progress_every_chunks = l.progress_every_chunks;
    config.write_quantum =
        usize::try_from(l.write_quantum).map_err(|_| config_err("write_quantum out of range"))?;
    config.confirm_timeout_ms = (l.confirm_timeout_ms != 0).then_some(l.confirm_timeout_ms);
    config.busy_retry_after_ms = l.busy_retry_after_ms;
    config.uptane_schemes = schemes(cfg.uptane_schemes)?;
    config.validate().map_err(config_err)?;

    let patcher: Box<dyn PatchApplier> = match cfg.patching {
        ESYNC_PATCH_NONE => Box::new(NoDeltas),
        ESYNC_PATCH_BUILTIN => Box::new(::esync_agent::delta::PackageApplier),
        other => {
            return Err((
                esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                format!("patching: unknown mode {other}"),
            ))
        }
    };
    if cfg.verification != ESYNC_VERIFY_UPTANE_PARTIAL {
        return Err((
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            format!("verification: unknown mode {}", cfg.verification),
        ));
    }

    let callbacks = Box::new(*callbacks);
    // SAFETY: the Box lives in the handle as long as every adapter.
    let cbs = unsafe { Callbacks::new(&*callbacks) };
    let trust_failed = |e: &dyn std::fmt::Display| {
        (
            esync_result::ESYNC_RESULT_TRUST_STORE,
            format!("uptane trust store: {e}"),
        )
    };
    let mut trust = CallbackTrust::agent(cbs);
    if trust.load().map_err(|e| trust_failed(&e))?.root.is_empty() {
        if root.is_empty() {
            return Err((
                esync_result::ESYNC_RESULT_INVALID_CONFIG,
                "the trust store holds no root and no director_root is configured".into(),
            ));
        }
        trust
            .store_role("root", root)
            .map_err(|e| trust_failed(&e))?;
    }
    let verifier = UptanePartial::open(trust, vin, &config).map_err(|e| trust_failed(&e))?;

    let me = Participant::Device(device);
    let mut agent = Box::new(esync_agent {
        endpoint: None,
        device: CallbackDevice(cbs),
        journal: CallbackJournal::agent(cbs),
        verifier,
        patcher,
        policy: CallbackConsent(cbs),
        reporter: UptaneReporter::new(esync_uptane::PrivateKey::from_seed(&agent_seed), serial),
        env_verifier: Verifier::new(
            ReceiverIdentity {
                me: me.clone(),
                groups: vec![],
            },
            FrameLimits::default(),
        ),
        keys: BTreeMap::from([(Participant::Client, client_key)]),
        signer: EnvelopeSigner::new(
            me,
            SigningKey::from_bytes(&agent_seed),
            cfg.envelope_sequence,
            FrameLimits::default(),
        ),
        queue: VecDeque::new(),
        current: None,
        last_error: String::new(),
        callbacks,
    });
    let a = &mut *agent;
    let mut ctx = Context {
        device: &mut a.device,
        journal: &mut a.journal,
        verifier: &mut a.verifier,
        patcher: &*a.patcher,
        policy: &mut a.policy,
        reporter: Some(&mut a.reporter as &mut dyn VersionReporter),
    };
    let mut env = Envelopes {
        verifier: &mut a.env_verifier,
        keys: &a.keys,
        signer: &mut a.signer,
    };
    let (ep, step) = Endpoint::recover(config, now, &mut ctx, &mut env).map_err(|e| match e {
        EndpointError::Agent(e) => (esync_result::ESYNC_RESULT_HALTED, format!("recovery: {e}")),
        e => (esync_result::ESYNC_RESULT_FRAME, e.to_string()),
    })?;
    a.endpoint = Some(ep);
    Ok((agent, step))
}

/// Creates an Agent: checks the configuration, opens the Uptane verifier on
/// the host's trust store (storing the pinned `director_root` if the store
/// holds no root), and recovers the Agent from the host's journal. The
/// frames recovery produces (unsent final reports) wait in
/// [`esync_agent_next_frame`]; `*step` describes them and the next
/// deadline. On success `*out` holds the new handle.
///
/// `mono_ms`: the host's monotonic clock (any origin; never goes backwards
/// while the handle lives). `wall_ms`: real time, ms since the Unix epoch.
///
/// Ownership: `config` and everything it points to are copied (the caller
/// keeps them); `callbacks` is copied (the struct need not outlive the
/// call) but `userdata` and the functions must stay valid until
/// [`esync_agent_free`]. The handle is the caller's; free it with
/// [`esync_agent_free`]. On failure nothing is written, and the reason goes
/// to the `log` callback (if any). Threading: callbacks run on this thread
/// during the call.
///
/// # Safety
///
/// `config` and `callbacks` must be valid for reads; every pointer in
/// `config` valid for reads of its length; `out` and `step` valid for
/// writes.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_new(
    config: *const esync_agent_config,
    callbacks: *const esync_agent_callbacks,
    mono_ms: u64,
    wall_ms: u64,
    out: *mut *mut esync_agent,
    step: *mut esync_step,
) -> esync_result {
    guard(|| {
        if config.is_null() || callbacks.is_null() || out.is_null() || step.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: checked non-null; the caller guarantees validity.
        let (cfg, cbs) = unsafe { (&*config, &*callbacks) };
        let now = Now { mono_ms, wall_ms };
        // SAFETY: forwarded contract.
        match unsafe { build(cfg, cbs, now) } {
            Ok((mut agent, s)) => {
                let st = agent.finish(s);
                // SAFETY: checked non-null; the caller guarantees writable.
                unsafe {
                    step.write(st);
                    out.write(Box::into_raw(agent));
                }
                esync_result::ESYNC_RESULT_OK
            }
            Err((r, msg)) => {
                // SAFETY: `cbs` is valid for the call; only `log` is used.
                let c = unsafe { Callbacks::new(cbs) };
                c.log(ESYNC_LOG_ERROR, &format!("esync_agent_new: {msg}"));
                r
            }
        }
    })
}

/// Runs an entry point on a handle: NULL check, panic guard (a panic halts
/// the handle).
fn with_agent(
    agent: *mut esync_agent,
    f: impl FnOnce(&mut esync_agent) -> esync_result,
) -> esync_result {
    // SAFETY: the caller of the entry point guarantees `agent` is NULL or a
    // live handle used by no other thread.
    let Some(a) = (unsafe { agent.as_mut() }) else {
        return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
    };
    let r = guard(|| f(&mut *a));
    if r == esync_result::ESYNC_RESULT_PANIC {
        // The state may be half-updated: halt (the journal is the truth).
        if let Some(a) = unsafe { agent.as_mut() } {
            a.endpoint = None;
            a.last_error = "a panic was caught; the Agent halted".into();
        }
    }
    r
}

fn write_step(step: *mut esync_step, s: esync_step) {
    // SAFETY: checked non-null by the caller; the caller of the entry point
    // guarantees writable.
    unsafe { step.write(s) }
}

/// Verifies one received frame (`frame`, `len` bytes: one framed envelope)
/// and, if it verifies, hands its message to the Agent. A refused frame
/// changes nothing (`step->input == ESYNC_INPUT_REFUSED`). The frames the
/// Agent answers with wait in [`esync_agent_next_frame`].
///
/// Ownership: `frame` is the caller's, read during the call only.
/// Threading: see the module docs; callbacks run during the call.
/// Returns `ESYNC_RESULT_HALTED` if the Agent halted (now or before).
///
/// # Safety
///
/// `agent` a live handle; `frame` valid for `len` bytes; `step` valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_receive(
    agent: *mut esync_agent,
    frame: *const u8,
    len: usize,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_step,
) -> esync_result {
    with_agent(agent, |a| {
        if step.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: the caller guarantees `frame` is valid for `len` bytes.
        let Some(bytes) = (unsafe { slice(frame, len) }) else {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        };
        let now = Now { mono_ms, wall_ms };
        match a.with_endpoint(|ep, ctx, env| ep.receive(bytes, now, ctx, env)) {
            Ok(s) => {
                let st = a.finish(s);
                write_step(step, st);
                esync_result::ESYNC_RESULT_OK
            }
            Err(r) => r,
        }
    })
}

/// Does the next piece of pending work and handles deadlines. Call while
/// `step->poll` is set and when the monotonic clock reaches
/// `step->deadline_ms`. Same ownership, threading and results as
/// [`esync_agent_receive`].
///
/// # Safety
///
/// `agent` a live handle; `step` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_poll(
    agent: *mut esync_agent,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_step,
) -> esync_result {
    with_agent(agent, |a| {
        if step.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let now = Now { mono_ms, wall_ms };
        match a.with_endpoint(|ep, ctx, env| ep.poll(now, ctx, env)) {
            Ok(s) => {
                let st = a.finish(s);
                write_step(step, st);
                esync_result::ESYNC_RESULT_OK
            }
            Err(r) => r,
        }
    })
}

/// The host's transport reconnected: every final report not yet marked
/// sent is sealed again and waits in [`esync_agent_next_frame`]. Same
/// ownership, threading and results as [`esync_agent_receive`].
///
/// # Safety
///
/// `agent` a live handle; `step` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_reconnected(
    agent: *mut esync_agent,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_step,
) -> esync_result {
    with_agent(agent, |a| {
        if step.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let now = Now { mono_ms, wall_ms };
        match a.with_endpoint(|ep, _ctx, env| ep.reconnected(now, env)) {
            Ok(s) => {
                let st = a.finish(s);
                write_step(step, st);
                esync_result::ESYNC_RESULT_OK
            }
            Err(r) => r,
        }
    })
}

/// Takes the next frame to send, in order. On success `*frame` points at
/// its bytes and `*len` holds their number; `*has_outbox_id` says whether
/// it is a final report, whose `*outbox_id` the host passes to
/// [`esync_agent_mark_sent`] once its transport accepted the frame.
/// Returns `ESYNC_RESULT_NO_FRAME` (nothing written) when none waits.
///
/// Ownership and lifetime: the bytes are the handle's, **borrowed until the
/// next call of any function on this handle** (copy them to keep them).
/// Works on a halted handle too (frames sealed before the halt can still be
/// sent).
///
/// # Safety
///
/// `agent` a live handle; every output pointer valid for a write.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_next_frame(
    agent: *mut esync_agent,
    frame: *mut *const u8,
    len: *mut usize,
    outbox_id: *mut u64,
    has_outbox_id: *mut bool,
) -> esync_result {
    with_agent(agent, |a| {
        if frame.is_null() || len.is_null() || outbox_id.is_null() || has_outbox_id.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        a.current = a.queue.pop_front();
        let Some(f) = a.current.as_ref() else {
            return esync_result::ESYNC_RESULT_NO_FRAME;
        };
        // SAFETY: checked non-null; the caller guarantees writable.
        unsafe {
            frame.write(f.bytes.as_ptr());
            len.write(f.bytes.len());
            outbox_id.write(f.outbox_id.unwrap_or(0));
            has_outbox_id.write(f.outbox_id.is_some());
        }
        esync_result::ESYNC_RESULT_OK
    })
}

/// The host's transport accepted the frame of `outbox_id`: the report
/// leaves the journal (an id that is not pending changes nothing).
/// Threading: callbacks (`journal_store`) run during the call. Returns
/// `ESYNC_RESULT_HALTED` if the Agent halted.
///
/// # Safety
///
/// `agent` a live handle.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_mark_sent(
    agent: *mut esync_agent,
    outbox_id: u64,
) -> esync_result {
    with_agent(agent, |a| {
        let Some(ep) = a.endpoint.as_mut() else {
            return esync_result::ESYNC_RESULT_HALTED;
        };
        let mut ctx = Context {
            device: &mut a.device,
            journal: &mut a.journal,
            verifier: &mut a.verifier,
            patcher: &*a.patcher,
            policy: &mut a.policy,
            reporter: Some(&mut a.reporter as &mut dyn VersionReporter),
        };
        match ep.mark_sent(outbox_id, &mut ctx) {
            Ok(()) => esync_result::ESYNC_RESULT_OK,
            Err(e) => {
                a.endpoint = None;
                a.fail(
                    esync_result::ESYNC_RESULT_HALTED,
                    format!("the Agent halted: {e}"),
                )
            }
        }
    })
}

/// Writes the message of the handle's last failure (UTF-8, truncated to
/// `len` bytes at a character boundary; empty if none) into `buf` and its
/// length into `*written`.
///
/// Ownership: `buf` and `written` are the caller's. Threading: as every
/// function on the handle.
///
/// # Safety
///
/// `agent` a live handle; `buf` valid for writes of `len` bytes (or NULL
/// with `len == 0`); `written` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_last_error(
    agent: *mut esync_agent,
    buf: *mut u8,
    len: usize,
    written: *mut usize,
) -> esync_result {
    with_agent(agent, |a| {
        if written.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: the caller guarantees `buf` is valid for `len` bytes.
        let Some(out) = (unsafe { slice_mut(buf, len) }) else {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        };
        let n = copy_text(&a.last_error, out);
        // SAFETY: checked non-null; writable by contract.
        unsafe { written.write(n) };
        esync_result::ESYNC_RESULT_OK
    })
}

/// Frees a handle. `NULL` is accepted (does nothing). No callback runs.
/// Frames not taken are dropped (final reports among them stay in the
/// journal and are sent again after recovery).
///
/// Ownership: takes the handle; it must not be used afterwards.
///
/// # Safety
///
/// `agent` is NULL or a handle from [`esync_agent_new`] not yet freed and
/// not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn esync_agent_free(agent: *mut esync_agent) {
    let _ = guard(|| {
        if !agent.is_null() {
            // SAFETY: the caller passes a handle from `esync_agent_new`,
            // freed once.
            drop(unsafe { Box::from_raw(agent) });
        }
        esync_result::ESYNC_RESULT_OK
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheme bit of a scheme this build does not verify (features
    /// `ecdsa`, `rsa`) is a configuration error, not a silently empty
    /// verifier; built schemes pass.
    #[test]
    fn scheme_bits_of_schemes_not_built_are_refused() {
        assert_eq!(
            schemes(ESYNC_SCHEME_ED25519).ok(),
            Some(SchemeSet::only(Scheme::Ed25519))
        );
        let p256 = schemes(ESYNC_SCHEME_ED25519 | ESYNC_SCHEME_ECDSA_P256);
        if Scheme::EcdsaP256Sha256.is_built() {
            assert!(p256.is_ok());
        } else {
            let (code, msg) = p256.unwrap_err();
            assert_eq!(
                code as u32,
                esync_result::ESYNC_RESULT_INVALID_CONFIG as u32
            );
            assert!(msg.contains("not built"), "{msg}");
        }
        assert_eq!(cfg!(feature = "ecdsa"), Scheme::EcdsaP256Sha256.is_built());
    }
}
