//! The `esync_session` handle (feature `client`): the Client's
//! Server-facing session ([`esync_client::core::session::Session`],
//! sans-I/O) driven by a gateway host that does its own HTTPS (libcurl,
//! Android's `HttpsURLConnection`).
//!
//! The host creates it ([`esync_session_new`]) with the vehicle's VIN, the
//! pinned Director and Image roots and its two Uptane trust stores (the
//! Agent's trust-store callbacks, [`esync_trust_callbacks`]); starts a
//! check-in with the signed vehicle manifest and the Agents' inventory
//! ([`esync_session_check_in`]); performs each request
//! [`esync_session_next_request`] describes (method, path, body, most bytes
//! to read) and hands its answer back ([`esync_session_provide_answer`]: the
//! HTTP status and body, a blob body in chunks; or
//! [`esync_session_provide_failure`] for a transport failure); answers a
//! consent request ([`esync_session_consent`], the Agent's
//! `esync_decision`); calls [`esync_session_poll`] at the step's deadline;
//! and ends at a terminal step: up to date, blocked, postponed, denied, or
//! ready ([`esync_session_outcome`]: the `ReadyPackage` JSON that
//! `esync_client_start` takes). Blob bytes stay with the host: it writes
//! each blob chunk it passes at the request's `range_start` onwards; the
//! session hashes and caps them (a mismatch restarts the blob at 0).
//!
//! Threading: a handle is used by one thread at a time (it may move between
//! threads); the trust callbacks run on the calling thread, synchronously,
//! and must not call into the same handle.

use std::ffi::c_void;

use ::esync_client::core::session::{
    Answer, Now, ServerRequest, Session, SessionConfig, SessionError, SessionStep,
};
use esync_api::body::{CheckInResponse, ManifestAccepted};
use esync_api::{BlobId, Route};
use esync_proto::id::{Sha256Digest, Vin};
use esync_proto::message::{ConsentResponse, Decision, InventoryReport};
use esync_uptane::TrustStore;

use crate::host::{
    esync_decision, esync_log_level, esync_trust_callbacks, log_to, CallbackTrust,
    ESYNC_DECISION_CONSENT, ESYNC_DECISION_DENY, ESYNC_DECISION_POSTPONE, ESYNC_LOG_ERROR,
};
use crate::{copy_text, esync_result, guard, slice, slice_mut};

/// Kind of a [`esync_session_step`]: perform the request of
/// [`esync_session_next_request`] and answer it.
pub const ESYNC_SESSION_REQUEST: u32 = 1;
/// Nothing to do before `deadline_ms` (monotonic): then call
/// [`esync_session_poll`].
pub const ESYNC_SESSION_WAIT: u32 = 2;
/// Keep passing the running blob response's chunks.
pub const ESYNC_SESSION_CONTINUE: u32 = 3;
/// The end: the Server has nothing for this vehicle.
pub const ESYNC_SESSION_UP_TO_DATE: u32 = 4;
/// Rules block the download now (network, battery, window): poll again
/// later. [`esync_session_outcome`] gives the reasons (text).
pub const ESYNC_SESSION_BLOCKED: u32 = 5;
/// Postponed (by the user, or while a consent answer is awaited) until
/// `until_wall_ms`: poll again then.
pub const ESYNC_SESSION_POSTPONED: u32 = 6;
/// The end: the user refused; [`esync_session_outcome`] gives the reason.
pub const ESYNC_SESSION_DENIED: u32 = 7;
/// The end: every blob is verified; [`esync_session_outcome`] gives the
/// `ReadyPackage` JSON for `esync_client_start`.
pub const ESYNC_SESSION_READY: u32 = 8;

/// Kind of a request: `POST /v1/manifest` (the signed vehicle manifest).
pub const ESYNC_REQUEST_UPLOAD_MANIFEST: u32 = 1;
/// `POST /v1/checkin` (the manifest hash).
pub const ESYNC_REQUEST_CHECK_IN: u32 = 2;
/// `GET /v1/director/{file}`.
pub const ESYNC_REQUEST_DIRECTOR_FILE: u32 = 3;
/// `GET /v1/image/{file}`.
pub const ESYNC_REQUEST_IMAGE_FILE: u32 = 4;
/// `GET /v1/blobs/{sha256}`, with `Range: bytes=range_start-` when
/// `range_start > 0`.
pub const ESYNC_REQUEST_BLOB: u32 = 5;
/// Ask the user (HMI): the `consent` fields; answer with
/// [`esync_session_consent`].
pub const ESYNC_REQUEST_CONSENT: u32 = 6;

/// Most bytes of a manifest or of the inventory JSON handed to
/// [`esync_session_check_in`].
pub const ESYNC_SESSION_MAX_INPUT: usize = 1 << 20;

/// The session's configuration (copied by [`esync_session_new`]).
#[repr(C)]
pub struct esync_session_config {
    /// The vehicle's VIN (UTF-8, `vin_len` bytes).
    pub vin: *const u8,
    /// Length of `vin`.
    pub vin_len: usize,
    /// The pinned Director root (JSON), stored when the Director trust
    /// store holds no root yet (may be NULL with length 0 otherwise).
    pub director_root: *const u8,
    /// Length of `director_root`.
    pub director_root_len: usize,
    /// The pinned Image repository root, as `director_root`.
    pub image_root: *const u8,
    /// Length of `image_root`.
    pub image_root_len: usize,
    /// The Director repository's trust store.
    pub director: esync_trust_callbacks,
    /// The Image repository's trust store.
    pub image: esync_trust_callbacks,
    /// The SHA-256 of the manifest the Server last accepted (32 bytes;
    /// persisted by the host from [`esync_session_accepted_manifest`]), or
    /// NULL: the first check-in uploads the manifest.
    pub accepted_manifest: *const u8,
    /// Length of `accepted_manifest` (32, or 0 with NULL).
    pub accepted_manifest_len: usize,
    /// Log lines (UTF-8, `len` bytes, not NUL-terminated). May be NULL.
    pub log: Option<unsafe extern "C" fn(*mut c_void, esync_log_level, *const u8, usize)>,
    /// Passed first to `log`.
    pub log_userdata: *mut c_void,
}

/// What a session call produced.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct esync_session_step {
    /// `ESYNC_SESSION_*`.
    pub kind: u32,
    /// For `ESYNC_SESSION_WAIT`: call [`esync_session_poll`] at this
    /// monotonic time.
    pub deadline_ms: u64,
    /// For `ESYNC_SESSION_POSTPONED`: wall time (ms since the Unix epoch)
    /// to poll again at.
    pub until_wall_ms: u64,
}

/// A consent request for the user (`ESYNC_REQUEST_CONSENT`). Text is
/// UTF-8, borrowed as the request is.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_consent_request {
    /// The request's id.
    pub request_id: [u8; 16],
    /// Title, `title_len` bytes.
    pub title: *const u8,
    /// Length of `title`.
    pub title_len: usize,
    /// Description, `description_len` bytes.
    pub description: *const u8,
    /// Length of `description`.
    pub description_len: usize,
    /// Bytes that will be downloaded.
    pub size_bytes: u64,
    /// Wall time (ms) after which no answer means: postponed.
    pub deadline_ms: u64,
}

/// The request to perform now. Every pointer is borrowed from the handle,
/// valid until the next call of any function on it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct esync_session_request {
    /// `ESYNC_REQUEST_*`.
    pub kind: u32,
    /// HTTP method (`GET`, `POST`), `method_len` bytes; empty for consent.
    pub method: *const u8,
    /// Length of `method`.
    pub method_len: usize,
    /// Path on the Server's device API, `path_len` bytes; empty for consent.
    pub path: *const u8,
    /// Length of `path`.
    pub path_len: usize,
    /// Request body (`application/json` when not empty), `body_len` bytes.
    pub body: *const u8,
    /// Length of `body`.
    pub body_len: usize,
    /// Most bytes of the answer body to read; a longer body is a failure.
    pub max_len: u64,
    /// For a blob: the session's blob number (`blob` in the `ReadyPackage`).
    pub blob: u64,
    /// For a blob: the first byte to fetch (0: no `Range`, the host drops
    /// what it held of this blob).
    pub range_start: u64,
    /// For `ESYNC_REQUEST_CONSENT`.
    pub consent: esync_consent_request,
}

struct Pending {
    request: ServerRequest,
    method: &'static str,
    path: String,
}

/// The session handle (opaque to C).
pub struct esync_session {
    session: Session<CallbackTrust, CallbackTrust>,
    log: Option<unsafe extern "C" fn(*mut c_void, esync_log_level, *const u8, usize)>,
    log_userdata: *mut c_void,
    pending: Option<Pending>,
    outcome: Vec<u8>,
    last_error: String,
}

type Fail = (esync_result, String);

fn session_err(e: SessionError) -> Fail {
    let r = match &e {
        SessionError::Uptane(_) => esync_result::ESYNC_RESULT_VERIFICATION,
        SessionError::ComponentWithheld { .. }
        | SessionError::BadTarget { .. }
        | SessionError::MixedPackages(..)
        | SessionError::Package(_) => esync_result::ESYNC_RESULT_VERIFICATION,
        SessionError::GaveUp { .. } => esync_result::ESYNC_RESULT_GAVE_UP,
        _ => esync_result::ESYNC_RESULT_SESSION,
    };
    (r, e.to_string())
}

fn pending(request: ServerRequest) -> Pending {
    let (route, path) = match &request {
        ServerRequest::UploadManifest { .. } => {
            (Some(Route::Manifest), Route::Manifest.template().to_owned())
        }
        ServerRequest::CheckIn { .. } => {
            (Some(Route::CheckIn), Route::CheckIn.template().to_owned())
        }
        ServerRequest::DirectorFile { name, .. } => {
            (Some(Route::DirectorFile), Route::director_file(name))
        }
        ServerRequest::ImageFile { name, .. } => (Some(Route::ImageFile), Route::image_file(name)),
        ServerRequest::Blob { sha256, .. } => (Some(Route::Blob), Route::blob(&BlobId(*sha256))),
        ServerRequest::Report { id, .. } => (Some(Route::Report), Route::report(id)),
        ServerRequest::Consent(_) => (None, String::new()),
    };
    let method = match route.map(|r| r.method()) {
        Some(m) if m.as_str() == "GET" => "GET",
        Some(m) if m.as_str() == "PUT" => "PUT",
        Some(_) => "POST",
        None => "",
    };
    Pending {
        request,
        method,
        path,
    }
}

impl esync_session {
    fn fail(&mut self, (r, msg): Fail) -> esync_result {
        log_to(self.log, self.log_userdata, ESYNC_LOG_ERROR, &msg);
        self.last_error = msg;
        r
    }

    /// Turns a core step into the C step, keeping its request or outcome.
    fn finish(
        &mut self,
        step: Result<SessionStep, SessionError>,
    ) -> Result<esync_session_step, esync_result> {
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                // An answer that did not fit leaves the session (and its
                // request) as it was; any other failure ends the session.
                if !matches!(e, SessionError::Unexpected(_)) {
                    self.pending = None;
                }
                return Err(self.fail(session_err(e)));
            }
        };
        let mut out = esync_session_step::default();
        // The request described stays only while it may still be answered:
        // a running blob response (`CONTINUE`), a consent request awaited
        // (`POSTPONED` until its deadline).
        let keep = match &step {
            SessionStep::Continue => true,
            SessionStep::Postponed { .. } => matches!(
                self.pending,
                Some(Pending {
                    request: ServerRequest::Consent(_),
                    ..
                })
            ),
            _ => false,
        };
        if !keep {
            self.pending = None;
        }
        self.outcome.clear();
        match step {
            SessionStep::Need(r) => {
                out.kind = ESYNC_SESSION_REQUEST;
                self.pending = Some(pending(r));
            }
            SessionStep::WaitUntil(t) => {
                out.kind = ESYNC_SESSION_WAIT;
                out.deadline_ms = t;
            }
            SessionStep::Continue => out.kind = ESYNC_SESSION_CONTINUE,
            SessionStep::UpToDate => out.kind = ESYNC_SESSION_UP_TO_DATE,
            SessionStep::Blocked(why) => {
                out.kind = ESYNC_SESSION_BLOCKED;
                self.outcome = format!("{why:?}").into_bytes();
            }
            SessionStep::Postponed { until_wall_ms } => {
                out.kind = ESYNC_SESSION_POSTPONED;
                out.until_wall_ms = until_wall_ms;
            }
            SessionStep::Denied(why) => {
                out.kind = ESYNC_SESSION_DENIED;
                self.outcome = why.into_bytes();
            }
            SessionStep::Ready(p) => {
                match serde_json::to_vec(&*p) {
                    Ok(json) => self.outcome = json,
                    Err(e) => {
                        return Err(self.fail((
                            esync_result::ESYNC_RESULT_SESSION,
                            format!("ready package not encoded: {e}"),
                        )))
                    }
                }
                out.kind = ESYNC_SESSION_READY;
            }
        }
        Ok(out)
    }
}

unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Fail> {
    // SAFETY: forwarded from the caller.
    unsafe { slice(ptr, len) }.ok_or((
        esync_result::ESYNC_RESULT_NULL_ARGUMENT,
        format!("{what}: NULL with a length"),
    ))
}

fn seeded(mut store: CallbackTrust, root: &[u8], what: &str) -> Result<CallbackTrust, Fail> {
    let failed = |e: &dyn std::fmt::Display| {
        (
            esync_result::ESYNC_RESULT_TRUST_STORE,
            format!("{what} trust store: {e}"),
        )
    };
    if store.load().map_err(|e| failed(&e))?.root.is_empty() {
        if root.is_empty() {
            return Err((
                esync_result::ESYNC_RESULT_INVALID_CONFIG,
                format!("the {what} trust store holds no root and none is configured"),
            ));
        }
        store.store_role("root", root).map_err(|e| failed(&e))?;
    }
    Ok(store)
}

unsafe fn build(cfg: &esync_session_config) -> Result<Box<esync_session>, Fail> {
    for (what, t) in [("director", &cfg.director), ("image", &cfg.image)] {
        let m = t.missing();
        if !m.is_empty() {
            return Err((
                esync_result::ESYNC_RESULT_INVALID_CONFIG,
                format!("{what} trust store callbacks missing: {}", m.join(", ")),
            ));
        }
    }
    // SAFETY: the caller guarantees the pointers of `cfg` are valid.
    let (vin, droot, iroot, acc) = unsafe {
        (
            bytes(cfg.vin, cfg.vin_len, "vin")?,
            bytes(cfg.director_root, cfg.director_root_len, "director_root")?,
            bytes(cfg.image_root, cfg.image_root_len, "image_root")?,
            bytes(
                cfg.accepted_manifest,
                cfg.accepted_manifest_len,
                "accepted_manifest",
            )?,
        )
    };
    let vin = std::str::from_utf8(vin)
        .ok()
        .and_then(|v| Vin::new(v).ok())
        .ok_or((
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            "vin: not a valid VIN".to_string(),
        ))?;
    let accepted = match acc.len() {
        0 => None,
        32 => {
            let mut a = [0u8; 32];
            a.copy_from_slice(acc);
            Some(Sha256Digest(a))
        }
        n => {
            return Err((
                esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                format!("accepted_manifest: {n} bytes, 32 expected"),
            ))
        }
    };
    let director = seeded(CallbackTrust(cfg.director), droot, "director")?;
    let image = seeded(CallbackTrust(cfg.image), iroot, "image")?;
    let session =
        Session::open(director, image, vin, accepted, SessionConfig::default()).map_err(|e| {
            (
                esync_result::ESYNC_RESULT_TRUST_STORE,
                format!("uptane trust stores: {e}"),
            )
        })?;
    Ok(Box::new(esync_session {
        session,
        log: cfg.log,
        log_userdata: cfg.log_userdata,
        pending: None,
        outcome: Vec::new(),
        last_error: String::new(),
    }))
}

/// Creates a session from `config` (copied): both trust stores are loaded
/// (an empty one gets the configured pinned root). On success writes the
/// handle to `*out`. Start it with [`esync_session_check_in`].
///
/// Ownership: `*out` is the caller's, freed with [`esync_session_free`];
/// the trust callbacks' `userdata` and functions (and `log`) must stay
/// valid until then. Threading: any thread.
///
/// # Safety
///
/// Every pointer of `config` valid as its fields describe; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_new(
    config: *const esync_session_config,
    out: *mut *mut esync_session,
) -> esync_result {
    guard(|| {
        if config.is_null() || out.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: checked non-null; the caller guarantees validity.
        let cfg = unsafe { &*config };
        // SAFETY: forwarded contract.
        match unsafe { build(cfg) } {
            Ok(h) => {
                // SAFETY: checked non-null; the caller guarantees writable.
                unsafe { out.write(Box::into_raw(h)) };
                esync_result::ESYNC_RESULT_OK
            }
            Err((r, msg)) => {
                log_to(
                    cfg.log,
                    cfg.log_userdata,
                    ESYNC_LOG_ERROR,
                    &format!("esync_session_new: {msg}"),
                );
                r
            }
        }
    })
}

/// Frees a session; `NULL` is accepted. Borrowed outputs become invalid.
///
/// # Safety
///
/// `session` must be `NULL` or a handle from [`esync_session_new`] not
/// freed before, used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn esync_session_free(session: *mut esync_session) {
    if session.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the caller guarantees a live handle from `Box::into_raw`.
        drop(unsafe { Box::from_raw(session) });
    });
}

/// Runs `f` with the handle and writes the step on success.
fn stepped(
    session: *mut esync_session,
    step: *mut esync_session_step,
    f: impl FnOnce(&mut esync_session) -> Result<esync_session_step, esync_result>,
) -> esync_result {
    with_session(session, |s| {
        if step.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        match f(s) {
            Ok(st) => {
                // SAFETY: checked non-null; the caller guarantees writable.
                unsafe { step.write(st) };
                esync_result::ESYNC_RESULT_OK
            }
            Err(r) => r,
        }
    })
}

fn with_session(
    session: *mut esync_session,
    f: impl FnOnce(&mut esync_session) -> esync_result,
) -> esync_result {
    // SAFETY: the caller of the entry point guarantees `session` is NULL or
    // a live handle used by no other thread.
    let Some(s) = (unsafe { session.as_mut() }) else {
        return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
    };
    let r = guard(|| f(&mut *s));
    if r == esync_result::ESYNC_RESULT_PANIC {
        // SAFETY: as above.
        if let Some(s) = unsafe { session.as_mut() } {
            s.pending = None;
            s.last_error = "a panic was caught; start a new check-in".into();
        }
    }
    r
}

/// Starts a check-in (again, after any earlier end or failure) with the
/// signed vehicle manifest (`manifest`, the Uptane vehicle manifest's
/// bytes) and the Agents' inventory (`inventory_json`: a JSON array of the
/// Agents' `InventoryReport` messages, esync-proto's serde form); each at
/// most `ESYNC_SESSION_MAX_INPUT` bytes, copied. The manifest is uploaded
/// only when the Server has not accepted it yet.
///
/// # Safety
///
/// `session` a live handle; both buffers valid for their lengths; `step`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_check_in(
    session: *mut esync_session,
    manifest: *const u8,
    manifest_len: usize,
    inventory_json: *const u8,
    inventory_len: usize,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_session_step,
) -> esync_result {
    stepped(session, step, |s| {
        // SAFETY: the caller guarantees both buffers.
        let input = unsafe {
            bytes(manifest, manifest_len, "manifest")
                .and_then(|m| Ok((m, bytes(inventory_json, inventory_len, "inventory_json")?)))
        };
        let (m, inv) = input.map_err(|f| s.fail(f))?;
        if m.len() > ESYNC_SESSION_MAX_INPUT || inv.len() > ESYNC_SESSION_MAX_INPUT {
            return Err(s.fail((
                esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                format!("manifest or inventory over {ESYNC_SESSION_MAX_INPUT} bytes"),
            )));
        }
        let inventory: Vec<InventoryReport> = serde_json::from_slice(inv).map_err(|e| {
            s.fail((
                esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                format!("inventory_json: {e}"),
            ))
        })?;
        let now = Now { mono_ms, wall_ms };
        let r = s.session.check_in(now, m.to_vec(), inventory);
        s.finish(r)
    })
}

/// Describes the request to perform now into `*request` (borrowed pointers,
/// valid until the next call of any function on the handle).
/// `ESYNC_RESULT_NO_FRAME` when none is waiting (nothing written). The same
/// request is described until it is answered.
///
/// # Safety
///
/// `session` a live handle; `request` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_next_request(
    session: *mut esync_session,
    request: *mut esync_session_request,
) -> esync_result {
    with_session(session, |s| {
        if request.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let Some(p) = &s.pending else {
            return esync_result::ESYNC_RESULT_NO_FRAME;
        };
        let mut r = esync_session_request {
            kind: 0,
            method: p.method.as_ptr(),
            method_len: p.method.len(),
            path: p.path.as_ptr(),
            path_len: p.path.len(),
            body: [].as_ptr(),
            body_len: 0,
            max_len: 0,
            blob: 0,
            range_start: 0,
            consent: esync_consent_request {
                request_id: [0; 16],
                title: [].as_ptr(),
                title_len: 0,
                description: [].as_ptr(),
                description_len: 0,
                size_bytes: 0,
                deadline_ms: 0,
            },
        };
        let cap = |route: Route| route.max_response_body().unwrap_or(0);
        match &p.request {
            ServerRequest::UploadManifest { body } => {
                r.kind = ESYNC_REQUEST_UPLOAD_MANIFEST;
                (r.body, r.body_len) = (body.as_ptr(), body.len());
                r.max_len = cap(Route::Manifest);
            }
            ServerRequest::CheckIn { body } => {
                r.kind = ESYNC_REQUEST_CHECK_IN;
                (r.body, r.body_len) = (body.as_ptr(), body.len());
                r.max_len = cap(Route::CheckIn);
            }
            ServerRequest::DirectorFile { max_len, .. } => {
                r.kind = ESYNC_REQUEST_DIRECTOR_FILE;
                r.max_len = (*max_len).min(cap(Route::DirectorFile));
            }
            ServerRequest::ImageFile { max_len, .. } => {
                r.kind = ESYNC_REQUEST_IMAGE_FILE;
                r.max_len = (*max_len).min(cap(Route::ImageFile));
            }
            ServerRequest::Blob {
                blob,
                range_start,
                max_len,
                ..
            } => {
                r.kind = ESYNC_REQUEST_BLOB;
                r.blob = blob.0;
                r.range_start = *range_start;
                r.max_len = *max_len;
            }
            ServerRequest::Consent(c) => {
                r.kind = ESYNC_REQUEST_CONSENT;
                r.consent = esync_consent_request {
                    request_id: c.request_id.0,
                    title: c.title.as_ptr(),
                    title_len: c.title.len(),
                    description: c.description.as_ptr(),
                    description_len: c.description.len(),
                    size_bytes: c.size_bytes,
                    deadline_ms: c.deadline_ms,
                };
            }
            ServerRequest::Report { .. } => {
                return s.fail((
                    esync_result::ESYNC_RESULT_SESSION,
                    "a report request is not the session's".into(),
                ))
            }
        }
        // SAFETY: checked non-null; the caller guarantees writable. The
        // pointers stay valid while `pending` holds the request.
        unsafe { request.write(r) };
        esync_result::ESYNC_RESULT_OK
    })
}

/// What an HTTP answer of `status` with `body` means for `request`: the
/// session's answer, or the failure it is for the session (retried after a
/// back-off); `Err` is the host's misuse (nothing handed in).
fn answer_of<'a>(
    request: &ServerRequest,
    status: u16,
    body: &'a [u8],
    end: bool,
    parsed: &'a mut Parsed,
) -> Result<Result<Answer<'a>, String>, Fail> {
    let route = match request {
        ServerRequest::UploadManifest { .. } => Route::Manifest,
        ServerRequest::CheckIn { .. } => Route::CheckIn,
        ServerRequest::DirectorFile { .. } => Route::DirectorFile,
        ServerRequest::ImageFile { .. } => Route::ImageFile,
        ServerRequest::Blob { .. } => Route::Blob,
        _ => return Err((
            esync_result::ESYNC_RESULT_SESSION,
            "no HTTP request is waiting for an answer (a consent request: esync_session_consent)"
                .into(),
        )),
    };
    if route != Route::Blob && !end {
        return Err((
            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
            "a check-in, manifest or metadata answer is passed whole (end = true)".into(),
        ));
    }
    let ok = route
        .success_statuses()
        .iter()
        .any(|s| s.as_u16() == status);
    let metadata = matches!(route, Route::DirectorFile | Route::ImageFile);
    if metadata && status == 404 {
        return Ok(Ok(Answer::File(None)));
    }
    if !ok {
        return Ok(Err(format!("HTTP {status}")));
    }
    if route == Route::Blob {
        return Ok(Ok(if end && body.is_empty() {
            Answer::BlobEnd
        } else {
            Answer::BlobBytes(body)
        }));
    }
    let max = match request {
        ServerRequest::DirectorFile { max_len, .. } | ServerRequest::ImageFile { max_len, .. } => {
            *max_len
        }
        _ => route.max_response_body().unwrap_or(0),
    };
    if body.len() as u64 > max {
        return Ok(Err(format!(
            "answer of {} bytes (at most {max})",
            body.len()
        )));
    }
    Ok(match route {
        Route::CheckIn => match serde_json::from_slice::<CheckInResponse>(body) {
            Ok(r) => Ok(Answer::CheckIn(parsed.check_in.insert(r))),
            Err(e) => Err(format!("check-in answer: {e}")),
        },
        Route::Manifest => match serde_json::from_slice::<ManifestAccepted>(body) {
            Ok(r) => Ok(Answer::ManifestAccepted(parsed.manifest.insert(r))),
            Err(e) => Err(format!("manifest answer: {e}")),
        },
        _ => Ok(Answer::File(Some(body))),
    })
}

#[derive(Default)]
struct Parsed {
    check_in: Option<CheckInResponse>,
    manifest: Option<ManifestAccepted>,
}

/// Hands in the answer to the request [`esync_session_next_request`]
/// described: its HTTP `status` and `body` (copied). A check-in, manifest
/// or metadata answer is passed whole (`end = true`; a metadata 404 is
/// "not found", any status that is not the route's success a failure). A
/// blob body is passed in chunks as it arrives (`end = false`; the host
/// writes each at the blob's running offset), then `end = true` (with the
/// last chunk or none); while the step says `ESYNC_SESSION_CONTINUE` keep
/// passing chunks, any other step means: drop the response. A non-blob
/// answer with `end = false` is `ESYNC_RESULT_INVALID_ARGUMENT`, an answer
/// while no HTTP request waits `ESYNC_RESULT_SESSION` (nothing changes,
/// the step untouched). A metadata
/// file that fails Uptane verification returns
/// `ESYNC_RESULT_VERIFICATION` (nothing is downloaded; the message says
/// why).
///
/// # Safety
///
/// `session` a live handle; `body` valid for `len` bytes; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_provide_answer(
    session: *mut esync_session,
    status: u16,
    body: *const u8,
    len: usize,
    end: bool,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_session_step,
) -> esync_result {
    stepped(session, step, |s| {
        // SAFETY: the caller guarantees `body` is valid for `len` bytes.
        let b = unsafe { bytes(body, len, "body") }.map_err(|f| s.fail(f))?;
        let Some(p) = s.pending.as_ref() else {
            return Err(s.fail((
                esync_result::ESYNC_RESULT_SESSION,
                "no request is waiting for an answer".into(),
            )));
        };
        let request = p.request.clone();
        let now = Now { mono_ms, wall_ms };
        let mut parsed = Parsed::default();
        let answer = match answer_of(&request, status, b, end, &mut parsed) {
            Ok(a) => a,
            Err(f) => return Err(s.fail(f)),
        };
        let r = match answer {
            Ok(Answer::BlobBytes(chunk)) if end => {
                match s.session.provide(now, Answer::BlobBytes(chunk)) {
                    Ok(SessionStep::Continue) => s.session.provide(now, Answer::BlobEnd),
                    other => other,
                }
            }
            Ok(a) => s.session.provide(now, a),
            Err(why) => s.session.provide(now, Answer::Failed(&why)),
        };
        s.finish(r)
    })
}

/// The request described last failed in transport (connection, TLS,
/// timeout): `reason` (UTF-8, copied) is kept for the message if the
/// session gives up. It is retried after a back-off (`ESYNC_SESSION_WAIT`).
///
/// # Safety
///
/// `session` a live handle; `reason` valid for `len` bytes; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_provide_failure(
    session: *mut esync_session,
    reason: *const u8,
    len: usize,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_session_step,
) -> esync_result {
    stepped(session, step, |s| {
        // SAFETY: the caller guarantees `reason` is valid for `len` bytes.
        let b = unsafe { bytes(reason, len, "reason") }.map_err(|f| s.fail(f))?;
        if s.pending.is_none() {
            return Err(s.fail((
                esync_result::ESYNC_RESULT_SESSION,
                "no request is waiting for an answer".into(),
            )));
        }
        let why = String::from_utf8_lossy(b).into_owned();
        let r = s
            .session
            .provide(Now { mono_ms, wall_ms }, Answer::Failed(&why));
        s.finish(r)
    })
}

/// The user's answer to the consent request described last
/// (`ESYNC_REQUEST_CONSENT`): the Agent's `esync_decision` (consent, deny
/// with a reason, or postpone until a wall time).
///
/// # Safety
///
/// `session` a live handle; `decision` readable; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_consent(
    session: *mut esync_session,
    decision: *const esync_decision,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_session_step,
) -> esync_result {
    stepped(session, step, |s| {
        // SAFETY: the caller guarantees `decision` is NULL or readable.
        let Some(d) = (unsafe { decision.as_ref() }) else {
            return Err(esync_result::ESYNC_RESULT_NULL_ARGUMENT);
        };
        let Some(Pending {
            request: ServerRequest::Consent(req),
            ..
        }) = &s.pending
        else {
            return Err(s.fail((
                esync_result::ESYNC_RESULT_SESSION,
                "no consent request is waiting for an answer".into(),
            )));
        };
        let decision = match d.kind {
            ESYNC_DECISION_CONSENT => Decision::Consent,
            ESYNC_DECISION_POSTPONE => Decision::Postpone {
                until_ms: d.postpone_until_ms,
            },
            ESYNC_DECISION_DENY => {
                let reason = d
                    .reason
                    .get(..d.reason_len)
                    .ok_or(())
                    .and_then(|r| std::str::from_utf8(r).map_err(|_| ()));
                match reason {
                    Ok(r) => Decision::Deny {
                        reason: r.to_owned(),
                    },
                    Err(()) => {
                        return Err(s.fail((
                            esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                            "decision: reason not UTF-8 or too long".into(),
                        )))
                    }
                }
            }
            k => {
                return Err(s.fail((
                    esync_result::ESYNC_RESULT_INVALID_ARGUMENT,
                    format!("decision: unknown kind {k}"),
                )))
            }
        };
        let answer = ConsentResponse {
            request_id: req.request_id,
            decision,
        };
        // Answered: a postponement now is the user's, not a wait for them.
        s.pending = None;
        let r = s
            .session
            .provide(Now { mono_ms, wall_ms }, Answer::Consent(&answer));
        s.finish(r)
    })
}

/// Deadlines, back-offs, postponements and rules at `mono_ms`/`wall_ms`
/// (call it at `step.deadline_ms`, after `ESYNC_SESSION_CONTINUE` steps
/// are done, or when a blocked or postponed session may go on).
///
/// # Safety
///
/// `session` a live handle; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_poll(
    session: *mut esync_session,
    mono_ms: u64,
    wall_ms: u64,
    step: *mut esync_session_step,
) -> esync_result {
    stepped(session, step, |s| {
        let r = s.session.poll(Now { mono_ms, wall_ms });
        s.finish(r)
    })
}

/// The outcome of the last step when it was an end, borrowed (valid until the next
/// call of any function on the handle): for `ESYNC_SESSION_READY` the
/// `ReadyPackage` as JSON (what `esync_client_start` takes; its `blob`
/// numbers are the ones of the blob requests), for `ESYNC_SESSION_DENIED`
/// the reason, for `ESYNC_SESSION_BLOCKED` the blocking rules (text).
/// `ESYNC_RESULT_NO_FRAME` when there is none.
///
/// # Safety
///
/// `session` a live handle; `out` and `len` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_outcome(
    session: *mut esync_session,
    out: *mut *const u8,
    len: *mut usize,
) -> esync_result {
    with_session(session, |s| {
        if out.is_null() || len.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        if s.outcome.is_empty() {
            return esync_result::ESYNC_RESULT_NO_FRAME;
        }
        // SAFETY: checked non-null; the caller guarantees writable.
        unsafe {
            out.write(s.outcome.as_ptr());
            len.write(s.outcome.len());
        }
        esync_result::ESYNC_RESULT_OK
    })
}

/// Writes the SHA-256 of the manifest the Server last accepted into `out`
/// (32 bytes) and sets `*has` (false: none yet, `out` untouched); the host
/// persists it for the next session's `accepted_manifest`.
///
/// # Safety
///
/// `session` a live handle; `out` valid for 32 bytes; `has` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_accepted_manifest(
    session: *mut esync_session,
    out: *mut u8,
    has: *mut bool,
) -> esync_result {
    with_session(session, |s| {
        if out.is_null() || has.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        let a = s.session.accepted_manifest();
        // SAFETY: checked non-null; the caller guarantees 32 writable bytes.
        unsafe {
            if let Some(a) = a {
                std::ptr::copy_nonoverlapping(a.0.as_ptr(), out, 32);
            }
            has.write(a.is_some());
        }
        esync_result::ESYNC_RESULT_OK
    })
}

/// Writes the detail of the handle's last failure into `buf` (UTF-8, not
/// NUL-terminated, truncated at a character boundary), its length into
/// `*written`.
///
/// # Safety
///
/// `session` a live handle; `buf` valid for `len` bytes; `written` writable.
#[no_mangle]
pub unsafe extern "C" fn esync_session_last_error(
    session: *mut esync_session,
    buf: *mut u8,
    len: usize,
    written: *mut usize,
) -> esync_result {
    with_session(session, |s| {
        if written.is_null() {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        }
        // SAFETY: the caller guarantees `buf` is valid for `len` bytes.
        let Some(out) = (unsafe { slice_mut(buf, len) }) else {
            return esync_result::ESYNC_RESULT_NULL_ARGUMENT;
        };
        let n = copy_text(&s.last_error, out);
        // SAFETY: checked non-null.
        unsafe { written.write(n) };
        esync_result::ESYNC_RESULT_OK
    })
}
