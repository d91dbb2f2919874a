//! The native methods of `io.esync.Agent` (`ffi/java/io/esync/Agent.java`)
//! over the `esync_agent` handle ([`crate::agent`]), its callbacks
//! ([`esync_agent_callbacks`]) calls into the Java host's `io.esync.AgentHost`
//! methods (device, signals, journal, trust store, consent, log), and of
//! `io.esync.TrustLoader` (over `esync_trust_loader_*`).
//!
//! The callbacks run synchronously inside a native method (the C ABI's
//! threading rule), so the calling thread is attached: each takes its
//! `JNIEnv` from the `JavaVM` and works in a local frame of its own (a
//! transfer makes many calls within one `poll`). A callback's outcome:
//!
//! - the Java method returned: `ESYNC_HOST_OK` and its outputs;
//! - it threw `io.esync.HostException`: that status (`REFUSED`,
//!   `NO_SPACE`, `POWER_LOSS`, ...), which the Agent handles;
//! - it threw anything else, returned a malformed value, or a JNI call or
//!   this adapter failed (a panic is caught here too: a callback is an
//!   `extern "C"` function, through which nothing may unwind):
//!   `ESYNC_HOST_FAILED` for the Agent, and the `Agent` method during which
//!   it happened throws `EsyncException` (the Java throwable its cause)
//!   once the C call returned. The call's effects stand: its frames wait in
//!   `nextFrame`.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use jni::objects::{
    GlobalRef, JByteArray, JClass, JLongArray, JObject, JObjectArray, JString, JValue,
};
use jni::sys::{jboolean, jint, jlong, JNI_FALSE, JNI_TRUE};
use jni::{JNIEnv, JavaVM};

use super::{
    bytes, check, opt_bytes, run, string, LastErrorFn, Native, PollFn, ReceiveFn, Thrown, Userdata,
    Wrapped,
};
use crate::agent::*;
use crate::esync_result;
use crate::host::{
    esync_agent_callbacks, esync_decision, esync_host_status, esync_image, esync_log_level,
    esync_offer, esync_signal, esync_trust_loader, esync_trust_loader_add_role,
    esync_trust_loader_set_time, ESYNC_HOST_FAILED, ESYNC_HOST_OK, ESYNC_HOST_POWER_LOSS,
    ESYNC_LOG_ERROR, ESYNC_MAX_SIGNALS, ESYNC_REASON_MAX, ESYNC_SIGNAL_NAME_MAX, ESYNC_SIGNAL_TEXT,
    ESYNC_SIGNAL_TEXT_MAX, ESYNC_VERSION_MAX,
};

/// The callbacks' `userdata`: the Java host and what went wrong in the
/// call running now.
pub(super) struct Upcalls {
    vm: JavaVM,
    /// The `io.esync.AgentHost`.
    host: GlobalRef,
    /// The first exception (not a `HostException`) a Java method threw
    /// during the current call.
    thrown: Option<GlobalRef>,
    /// The first failure of this adapter during the current call.
    fault: Option<String>,
    /// The last error logged (the detail of a failed `create`).
    last_error: String,
}

impl Userdata for Upcalls {
    fn last_error(&self) -> String {
        self.last_error.clone()
    }

    fn take_failure(&mut self) -> (Option<GlobalRef>, Option<String>) {
        (self.thrown.take(), self.fault.take())
    }
}

impl Native for esync_agent {
    type Step = esync_step;
    type Userdata = Upcalls;
    const NAME: &'static str = "Agent";
    const LAST_ERROR: LastErrorFn<Self> = esync_agent_last_error;
    const FREE: unsafe extern "C" fn(*mut Self) = esync_agent_free;
    const RECEIVE: ReceiveFn<Self, esync_step> = esync_agent_receive;
    const POLL: PollFn<Self, esync_step> = esync_agent_poll;

    fn input_and_deadline(s: &esync_step) -> (u32, Option<u64>) {
        (s.input, s.has_deadline.then_some(s.deadline_ms))
    }
}

fn agent<'a>(h: jlong) -> Result<&'a mut Wrapped<esync_agent>, Thrown> {
    Wrapped::live(h)
}

handle_natives!(
    esync_agent,
    Java_io_esync_Agent_free,
    Java_io_esync_Agent_receive,
    Java_io_esync_Agent_poll,
    Java_io_esync_Agent_deadline
);

/// Why a callback could not give its outputs.
enum Fail {
    Jni(jni::errors::Error),
    /// The Java method returned something the C ABI cannot carry.
    Bad(String),
}

impl From<jni::errors::Error> for Fail {
    fn from(e: jni::errors::Error) -> Fail {
        Fail::Jni(e)
    }
}

/// A callback's outcome, once its local frame is gone.
enum Outcome<T> {
    Done(T),
    Status(esync_host_status),
    Threw(GlobalRef),
    Fault(String),
}

/// Local references one callback may hold: the largest is `signals` (the
/// array, and per signal the element, its name and its text: 1 + 3 x 32),
/// and a few for the call itself.
const LOCAL_REFS: i32 = 1 + 3 * ESYNC_MAX_SIGNALS as i32 + 8;

/// Calls the Java host for callback `op` (`ud` the handle's [`Upcalls`]):
/// the outcome as the module docs say; `Err` holds the status to return.
fn upcall<T>(
    ud: *mut c_void,
    op: &str,
    f: impl FnOnce(&mut JNIEnv<'_>, &JObject<'_>) -> Result<T, Fail>,
) -> Result<T, esync_host_status> {
    // SAFETY: `ud` is the `Upcalls` of the handle whose call runs now on
    // this thread; no one else uses it during the callback.
    let up = unsafe { &mut *(ud as *mut Upcalls) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut env = match up.vm.get_env() {
            Ok(e) => e,
            Err(e) => return Outcome::Fault(format!("{op}: no JNIEnv on this thread: {e}")),
        };
        let host = up.host.as_obj();
        let r = env.with_local_frame(LOCAL_REFS, |env| -> jni::errors::Result<Outcome<T>> {
            match f(env, host) {
                Ok(v) => Ok(Outcome::Done(v)),
                Err(Fail::Bad(why)) => Ok(Outcome::Fault(format!("{op}: {why}"))),
                Err(Fail::Jni(e)) if !env.exception_check()? => {
                    Ok(Outcome::Fault(format!("{op}: JNI: {e}")))
                }
                Err(Fail::Jni(_)) => {
                    let ex = env.exception_occurred()?;
                    env.exception_clear()?;
                    if env.is_instance_of(&ex, "io/esync/HostException")? {
                        let s = env.call_method(&ex, "status", "()I", &[])?.i()?;
                        let known = (ESYNC_HOST_FAILED..=ESYNC_HOST_POWER_LOSS).contains(&s);
                        Ok(Outcome::Status(if known { s } else { ESYNC_HOST_FAILED }))
                    } else {
                        Ok(Outcome::Threw(env.new_global_ref(&ex)?))
                    }
                }
            }
        });
        r.unwrap_or_else(|e| {
            // Failing to look at the exception leaves it pending: clear it
            // (the C side must not return into Java with it).
            let _ = env.exception_clear();
            Outcome::Fault(format!("{op}: JNI: {e}"))
        })
    }))
    .unwrap_or_else(|_| Outcome::Fault(format!("{op}: a panic was caught in the adapter")));
    match outcome {
        Outcome::Done(v) => Ok(v),
        Outcome::Status(s) => Err(s),
        Outcome::Threw(t) => {
            up.thrown.get_or_insert(t);
            Err(ESYNC_HOST_FAILED)
        }
        Outcome::Fault(msg) => {
            up.fault.get_or_insert(msg);
            Err(ESYNC_HOST_FAILED)
        }
    }
}

/// The status a callback returns for `r`.
fn status(r: Result<(), esync_host_status>) -> esync_host_status {
    r.err().unwrap_or(ESYNC_HOST_OK)
}

/// A Java `io.esync.Image` as the C ABI's struct.
fn image_from_java(env: &mut JNIEnv<'_>, o: &JObject<'_>) -> Result<esync_image, Fail> {
    if o.is_null() {
        return Err(Fail::Bad("returned a null Image".into()));
    }
    let v = env.get_field(o, "version", "Ljava/lang/String;")?.l()?;
    if v.is_null() {
        return Err(Fail::Bad("an Image without a version".into()));
    }
    let v: String = env.get_string(&JString::from(v))?.into();
    let sha = JByteArray::from(env.get_field(o, "sha256", "[B")?.l()?);
    let sha = if sha.is_null() {
        Vec::new()
    } else {
        env.convert_byte_array(&sha)?
    };
    let mut out = esync_image {
        version: [0; ESYNC_VERSION_MAX],
        version_len: v.len(),
        release_counter: env.get_field(o, "releaseCounter", "J")?.j()? as u64,
        length: env.get_field(o, "length", "J")?.j()? as u64,
        sha256: sha
            .as_slice()
            .try_into()
            .map_err(|_| Fail::Bad(format!("an Image sha256 of {} bytes", sha.len())))?,
    };
    out.version
        .get_mut(..v.len())
        .ok_or_else(|| Fail::Bad(format!("an Image version over {ESYNC_VERSION_MAX} bytes")))?
        .copy_from_slice(v.as_bytes());
    Ok(out)
}

fn image_to_java<'l>(env: &mut JNIEnv<'l>, i: &esync_image) -> Result<JObject<'l>, Fail> {
    let v = String::from_utf8_lossy(&i.version[..i.version_len.min(ESYNC_VERSION_MAX)]);
    let v = env.new_string(v)?;
    let sha = env.byte_array_from_slice(&i.sha256)?;
    Ok(env.new_object(
        "io/esync/Image",
        "(Ljava/lang/String;JJ[B)V",
        &[
            (&v).into(),
            JValue::Long(i.release_counter as jlong),
            JValue::Long(i.length as jlong),
            (&sha).into(),
        ],
    )?)
}

/// C text (valid for `len` bytes) as a Java string.
///
/// # Safety
///
/// `p` valid for reads of `len` bytes.
unsafe fn jtext<'l>(env: &mut JNIEnv<'l>, p: *const u8, len: usize) -> Result<JString<'l>, Fail> {
    // SAFETY: as the caller guarantees.
    let b = unsafe { std::slice::from_raw_parts(p, len) };
    Ok(env.new_string(String::from_utf8_lossy(b))?)
}

/// `int m(long offset, byte[] buf)`: reads into the C buffer.
///
/// # Safety
///
/// `buf` valid for writes of `len` bytes, `n` for a write.
unsafe fn read_into(
    ud: *mut c_void,
    m: &str,
    offset: u64,
    buf: *mut u8,
    len: usize,
    n: *mut usize,
) -> esync_host_status {
    status(upcall(ud, m, |env, host| {
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        let arr = env.new_byte_array(len)?;
        let got = env
            .call_method(
                host,
                m,
                "(J[B)I",
                &[JValue::Long(offset as jlong), (&arr).into()],
            )?
            .i()?;
        let got = usize::try_from(got)
            .ok()
            .filter(|&g| g <= len as usize)
            .ok_or_else(|| Fail::Bad(format!("returned {got} for a {len}-byte buffer")))?;
        // SAFETY: the caller's buffer holds `len >= got` bytes; i8 and u8
        // have one layout.
        let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<i8>(), got) };
        env.get_byte_array_region(&arr, 0, out)?;
        // SAFETY: as the caller guarantees.
        unsafe { n.write(got) };
        Ok(())
    }))
}

/// `void m(long offset, byte[] data)`.
///
/// # Safety
///
/// `data` valid for reads of `len` bytes.
unsafe fn write_from(
    ud: *mut c_void,
    m: &str,
    offset: u64,
    data: *const u8,
    len: usize,
) -> esync_host_status {
    // SAFETY: as the caller guarantees.
    let data = unsafe { std::slice::from_raw_parts(data, len) };
    status(upcall(ud, m, |env, host| {
        let arr = env.byte_array_from_slice(data)?;
        env.call_method(
            host,
            m,
            "(J[B)V",
            &[JValue::Long(offset as jlong), (&arr).into()],
        )?;
        Ok(())
    }))
}

/// `void m()`.
fn unit(ud: *mut c_void, m: &str) -> esync_host_status {
    status(upcall(ud, m, |env, host| {
        env.call_method(host, m, "()V", &[])?;
        Ok(())
    }))
}

/// `void m(long len)`.
fn with_long(ud: *mut c_void, m: &str, v: i64) -> esync_host_status {
    status(upcall(ud, m, |env, host| {
        env.call_method(host, m, "(J)V", &[JValue::Long(v)])?;
        Ok(())
    }))
}

// The callbacks, one Java method each (AgentHost.java). SAFETY for all:
// the C ABI's callback contract (pointers valid as its header says, during
// the call).

unsafe extern "C" fn j_running(ud: *mut c_void, out: *mut esync_image) -> esync_host_status {
    status(upcall(ud, "running", |env, host| {
        let o = env
            .call_method(host, "running", "()Lio/esync/Image;", &[])?
            .l()?;
        let i = image_from_java(env, &o)?;
        // SAFETY: `out` valid for a write.
        unsafe { out.write(i) };
        Ok(())
    }))
}

unsafe extern "C" fn j_read_running(
    ud: *mut c_void,
    off: u64,
    buf: *mut u8,
    len: usize,
    n: *mut usize,
) -> esync_host_status {
    // SAFETY: the callback contract.
    unsafe { read_into(ud, "readRunning", off, buf, len, n) }
}

unsafe extern "C" fn j_staging_capacity(ud: *mut c_void) -> u64 {
    // A failure reads as no staging area (the callback has no status).
    upcall(ud, "stagingCapacity", |env, host| {
        Ok(env.call_method(host, "stagingCapacity", "()J", &[])?.j()?)
    })
    .map_or(0, |c| c.max(0) as u64)
}

unsafe extern "C" fn j_staging_reset(ud: *mut c_void, len: u64) -> esync_host_status {
    with_long(ud, "stagingReset", len as i64)
}

unsafe extern "C" fn j_staging_write(
    ud: *mut c_void,
    off: u64,
    data: *const u8,
    len: usize,
) -> esync_host_status {
    // SAFETY: the callback contract.
    unsafe { write_from(ud, "stagingWrite", off, data, len) }
}

unsafe extern "C" fn j_staging_read(
    ud: *mut c_void,
    off: u64,
    buf: *mut u8,
    len: usize,
    n: *mut usize,
) -> esync_host_status {
    // SAFETY: the callback contract.
    unsafe { read_into(ud, "stagingRead", off, buf, len, n) }
}

unsafe extern "C" fn j_pre_install(ud: *mut c_void) -> esync_host_status {
    unit(ud, "preInstall")
}

unsafe extern "C" fn j_slot_begin(ud: *mut c_void, len: u64) -> esync_host_status {
    with_long(ud, "slotBegin", len as i64)
}

unsafe extern "C" fn j_slot_write(
    ud: *mut c_void,
    off: u64,
    data: *const u8,
    len: usize,
) -> esync_host_status {
    // SAFETY: the callback contract.
    unsafe { write_from(ud, "slotWrite", off, data, len) }
}

unsafe extern "C" fn j_slot_read(
    ud: *mut c_void,
    off: u64,
    buf: *mut u8,
    len: usize,
    n: *mut usize,
) -> esync_host_status {
    // SAFETY: the callback contract.
    unsafe { read_into(ud, "slotRead", off, buf, len, n) }
}

unsafe extern "C" fn j_slot_finish(
    ud: *mut c_void,
    image: *const esync_image,
) -> esync_host_status {
    // SAFETY: `image` valid during the call.
    let image = unsafe { &*image };
    status(upcall(ud, "slotFinish", |env, host| {
        let o = image_to_java(env, image)?;
        env.call_method(host, "slotFinish", "(Lio/esync/Image;)V", &[(&o).into()])?;
        Ok(())
    }))
}

unsafe extern "C" fn j_inactive(
    ud: *mut c_void,
    out: *mut esync_image,
    present: *mut bool,
) -> esync_host_status {
    status(upcall(ud, "inactive", |env, host| {
        let o = env
            .call_method(host, "inactive", "()Lio/esync/Image;", &[])?
            .l()?;
        let i = if o.is_null() {
            None
        } else {
            Some(image_from_java(env, &o)?)
        };
        // SAFETY: both outputs valid for writes.
        unsafe {
            present.write(i.is_some());
            if let Some(i) = i {
                out.write(i);
            }
        }
        Ok(())
    }))
}

unsafe extern "C" fn j_activate(ud: *mut c_void) -> esync_host_status {
    unit(ud, "activate")
}

unsafe extern "C" fn j_self_test(
    ud: *mut c_void,
    passed: *mut bool,
    reason: *mut u8,
    cap: usize,
    reason_len: *mut usize,
) -> esync_host_status {
    status(upcall(ud, "selfTest", |env, host| {
        let o = env
            .call_method(host, "selfTest", "()Ljava/lang/String;", &[])?
            .l()?;
        let why: Option<String> = if o.is_null() {
            None
        } else {
            Some(env.get_string(&JString::from(o))?.into())
        };
        // SAFETY: outputs valid for writes, `reason` for `cap` bytes.
        unsafe {
            passed.write(why.is_none());
            if let Some(w) = why {
                let out = std::slice::from_raw_parts_mut(reason, cap);
                reason_len.write(crate::copy_text(&w, out));
            }
        }
        Ok(())
    }))
}

unsafe extern "C" fn j_commit(ud: *mut c_void) -> esync_host_status {
    unit(ud, "commit")
}

unsafe extern "C" fn j_on_trial(ud: *mut c_void, out: *mut bool) -> esync_host_status {
    status(upcall(ud, "onTrial", |env, host| {
        let t = env.call_method(host, "onTrial", "()Z", &[])?.z()?;
        // SAFETY: `out` valid for a write.
        unsafe { out.write(t) };
        Ok(())
    }))
}

unsafe extern "C" fn j_rollback_previous(ud: *mut c_void) -> esync_host_status {
    unit(ud, "rollbackPrevious")
}

unsafe extern "C" fn j_backups(
    ud: *mut c_void,
    out: *mut esync_image,
    cap: usize,
    count: *mut usize,
) -> esync_host_status {
    status(upcall(ud, "backups", |env, host| {
        let arr = JObjectArray::from(
            env.call_method(host, "backups", "()[Lio/esync/Image;", &[])?
                .l()?,
        );
        let n = if arr.is_null() {
            0
        } else {
            env.get_array_length(&arr)? as usize
        };
        if n > cap {
            return Err(Fail::Bad(format!("{n} backups, at most {cap}")));
        }
        let mut got = Vec::with_capacity(n);
        for i in 0..n {
            let o = env.get_object_array_element(&arr, i as i32)?;
            got.push(image_from_java(env, &o)?);
        }
        // SAFETY: `out` valid for `cap >= n` images, `count` for a write.
        unsafe {
            std::ptr::copy_nonoverlapping(got.as_ptr(), out, n);
            count.write(n);
        }
        Ok(())
    }))
}

unsafe extern "C" fn j_restore_backup(
    ud: *mut c_void,
    version: *const u8,
    len: usize,
) -> esync_host_status {
    status(upcall(ud, "restoreBackup", |env, host| {
        // SAFETY: `version` valid for `len` bytes.
        let v = unsafe { jtext(env, version, len) }?;
        env.call_method(
            host,
            "restoreBackup",
            "(Ljava/lang/String;)V",
            &[(&v).into()],
        )?;
        Ok(())
    }))
}

/// A Java string field (`null` as empty) copied into a fixed C buffer.
fn text_field<const N: usize>(
    env: &mut JNIEnv<'_>,
    o: &JObject<'_>,
    field: &str,
) -> Result<([u8; N], usize), Fail> {
    let v = env.get_field(o, field, "Ljava/lang/String;")?.l()?;
    let mut out = [0u8; N];
    if v.is_null() {
        return Ok((out, 0));
    }
    let v: String = env.get_string(&JString::from(v))?.into();
    out.get_mut(..v.len())
        .ok_or_else(|| Fail::Bad(format!("{field} over {N} bytes")))?
        .copy_from_slice(v.as_bytes());
    Ok((out, v.len()))
}

unsafe extern "C" fn j_signals(
    ud: *mut c_void,
    out: *mut esync_signal,
    cap: usize,
    count: *mut usize,
) -> esync_host_status {
    status(upcall(ud, "signals", |env, host| {
        let arr = JObjectArray::from(
            env.call_method(host, "signals", "()[Lio/esync/Signal;", &[])?
                .l()?,
        );
        let n = if arr.is_null() {
            0
        } else {
            env.get_array_length(&arr)? as usize
        };
        if n > cap {
            return Err(Fail::Bad(format!("{n} signals, at most {cap}")));
        }
        let mut got = Vec::with_capacity(n);
        for i in 0..n {
            let o = env.get_object_array_element(&arr, i as i32)?;
            if o.is_null() {
                return Err(Fail::Bad("a null Signal".into()));
            }
            let (name, name_len) = text_field::<ESYNC_SIGNAL_NAME_MAX>(env, &o, "name")?;
            let kind = env.get_field(&o, "kind", "I")?.i()? as u32;
            let (text, text_len) = if kind == ESYNC_SIGNAL_TEXT {
                text_field::<ESYNC_SIGNAL_TEXT_MAX>(env, &o, "text")?
            } else {
                ([0; ESYNC_SIGNAL_TEXT_MAX], 0)
            };
            got.push(esync_signal {
                name,
                name_len,
                kind,
                bool_value: env.get_field(&o, "boolValue", "Z")?.z()?,
                int_value: env.get_field(&o, "intValue", "J")?.j()?,
                float_value: env.get_field(&o, "floatValue", "D")?.d()?,
                text,
                text_len,
            });
        }
        // SAFETY: `out` valid for `cap >= n` signals, `count` for a write.
        unsafe {
            std::ptr::copy_nonoverlapping(got.as_ptr(), out, n);
            count.write(n);
        }
        Ok(())
    }))
}

unsafe extern "C" fn j_consent(
    ud: *mut c_void,
    offer: *const esync_offer,
    now_ms: u64,
    out: *mut esync_decision,
) -> esync_host_status {
    // SAFETY: `offer` and what it points to valid during the call.
    let offer = unsafe { &*offer };
    status(upcall(ud, "consent", |env, host| {
        let id = env.byte_array_from_slice(&offer.update_id)?;
        // SAFETY: the offer's texts, valid for their lengths.
        let target = unsafe { jtext(env, offer.target_name, offer.target_name_len) }?;
        let version = unsafe { jtext(env, offer.version, offer.version_len) }?;
        let o = env.new_object(
            "io/esync/Offer",
            "([BLjava/lang/String;Ljava/lang/String;JJJZ)V",
            &[
                (&id).into(),
                (&target).into(),
                (&version).into(),
                JValue::Long(offer.release_counter as jlong),
                JValue::Long(offer.image_length as jlong),
                JValue::Long(offer.download_length as jlong),
                JValue::Bool(offer.is_delta.into()),
            ],
        )?;
        let d = env
            .call_method(
                host,
                "consent",
                "(Lio/esync/Offer;J)Lio/esync/Decision;",
                &[(&o).into(), JValue::Long(now_ms as jlong)],
            )?
            .l()?;
        if d.is_null() {
            return Err(Fail::Bad("returned a null Decision".into()));
        }
        let kind = env.get_field(&d, "kind", "I")?.i()? as u32;
        let until = env.get_field(&d, "postponeUntilMs", "J")?.j()? as u64;
        let r = env.get_field(&d, "reason", "Ljava/lang/String;")?.l()?;
        let reason: String = if r.is_null() {
            String::new()
        } else {
            env.get_string(&JString::from(r))?.into()
        };
        let mut dec = esync_decision {
            kind,
            postpone_until_ms: until,
            reason: [0; ESYNC_REASON_MAX],
            reason_len: 0,
        };
        dec.reason_len = crate::copy_text(&reason, &mut dec.reason);
        // SAFETY: `out` valid for a write.
        unsafe { out.write(dec) };
        Ok(())
    }))
}

unsafe extern "C" fn j_journal_load(
    ud: *mut c_void,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    present: *mut bool,
) -> esync_host_status {
    let r = upcall(ud, "journalLoad", |env, host| {
        let o = JByteArray::from(env.call_method(host, "journalLoad", "()[B", &[])?.l()?);
        Ok(if o.is_null() {
            None
        } else {
            Some(env.convert_byte_array(&o)?)
        })
    });
    match r {
        Err(s) => s,
        // SAFETY: outputs valid for writes, `buf` for `cap` bytes.
        Ok(None) => unsafe {
            present.write(false);
            ESYNC_HOST_OK
        },
        Ok(Some(j)) if j.len() > cap => unsafe {
            len.write(j.len());
            crate::host::ESYNC_HOST_BUFFER_TOO_SMALL
        },
        Ok(Some(j)) => unsafe {
            std::ptr::copy_nonoverlapping(j.as_ptr(), buf, j.len());
            len.write(j.len());
            present.write(true);
            ESYNC_HOST_OK
        },
    }
}

unsafe extern "C" fn j_journal_store(
    ud: *mut c_void,
    rec: *const u8,
    len: usize,
) -> esync_host_status {
    // SAFETY: `rec` valid for `len` bytes.
    let rec = unsafe { std::slice::from_raw_parts(rec, len) };
    status(upcall(ud, "journalStore", |env, host| {
        let a = env.byte_array_from_slice(rec)?;
        env.call_method(host, "journalStore", "([B)V", &[(&a).into()])?;
        Ok(())
    }))
}

unsafe extern "C" fn j_trust_load(
    ud: *mut c_void,
    loader: *mut esync_trust_loader,
) -> esync_host_status {
    status(upcall(ud, "trustLoad", |env, host| {
        let l = env.new_object(
            "io/esync/TrustLoader",
            "(J)V",
            &[JValue::Long(loader as jlong)],
        )?;
        let r = env.call_method(
            host,
            "trustLoad",
            "(Lio/esync/TrustLoader;)V",
            &[(&l).into()],
        );
        // The loader is valid only during this callback: its Java object
        // forgets it (with any exception set aside meanwhile).
        let pending = if env.exception_check()? {
            let ex = env.exception_occurred()?;
            env.exception_clear()?;
            Some(ex)
        } else {
            None
        };
        env.set_field(&l, "loader", "J", JValue::Long(0))?;
        if let Some(ex) = pending {
            env.throw(ex)?;
        }
        r?;
        Ok(())
    }))
}

unsafe extern "C" fn j_trust_store_role(
    ud: *mut c_void,
    name: *const u8,
    name_len: usize,
    bytes: *const u8,
    len: usize,
) -> esync_host_status {
    // SAFETY: `bytes` valid for `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(bytes, len) };
    status(upcall(ud, "trustStoreRole", |env, host| {
        // SAFETY: `name` valid for `name_len` bytes.
        let n = unsafe { jtext(env, name, name_len) }?;
        let b = env.byte_array_from_slice(bytes)?;
        env.call_method(
            host,
            "trustStoreRole",
            "(Ljava/lang/String;[B)V",
            &[(&n).into(), (&b).into()],
        )?;
        Ok(())
    }))
}

unsafe extern "C" fn j_trust_remove_role(
    ud: *mut c_void,
    name: *const u8,
    len: usize,
) -> esync_host_status {
    status(upcall(ud, "trustRemoveRole", |env, host| {
        // SAFETY: `name` valid for `len` bytes.
        let n = unsafe { jtext(env, name, len) }?;
        env.call_method(
            host,
            "trustRemoveRole",
            "(Ljava/lang/String;)V",
            &[(&n).into()],
        )?;
        Ok(())
    }))
}

unsafe extern "C" fn j_trust_store_time(ud: *mut c_void, unix_seconds: i64) -> esync_host_status {
    with_long(ud, "trustStoreTime", unix_seconds)
}

unsafe extern "C" fn j_log(ud: *mut c_void, level: esync_log_level, msg: *const u8, len: usize) {
    // SAFETY: `msg` valid for `len` bytes during the call.
    let m = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(msg, len) }).into_owned();
    let _ = upcall(ud, "log", |env, host| {
        let s = env.new_string(&m)?;
        env.call_method(
            host,
            "log",
            "(ILjava/lang/String;)V",
            &[JValue::Int(level as jint), (&s).into()],
        )?;
        Ok(())
    });
    if level == ESYNC_LOG_ERROR {
        // SAFETY: as in `upcall` (the callback of the running call).
        unsafe { (*(ud as *mut Upcalls)).last_error = m };
    }
}

fn callbacks(up: *mut Upcalls) -> esync_agent_callbacks {
    esync_agent_callbacks {
        userdata: up.cast(),
        running: Some(j_running),
        read_running: Some(j_read_running),
        staging_capacity: Some(j_staging_capacity),
        staging_reset: Some(j_staging_reset),
        staging_write: Some(j_staging_write),
        staging_read: Some(j_staging_read),
        pre_install: Some(j_pre_install),
        slot_begin: Some(j_slot_begin),
        slot_write: Some(j_slot_write),
        slot_read: Some(j_slot_read),
        slot_finish: Some(j_slot_finish),
        inactive: Some(j_inactive),
        activate: Some(j_activate),
        self_test: Some(j_self_test),
        commit: Some(j_commit),
        on_trial: Some(j_on_trial),
        rollback_previous: Some(j_rollback_previous),
        backups: Some(j_backups),
        restore_backup: Some(j_restore_backup),
        signals: Some(j_signals),
        journal_load: Some(j_journal_load),
        journal_store: Some(j_journal_store),
        trust_load: Some(j_trust_load),
        trust_store_role: Some(j_trust_store_role),
        trust_remove_role: Some(j_trust_remove_role),
        trust_store_time: Some(j_trust_store_time),
        consent: Some(j_consent),
        log: Some(j_log),
    }
}

/// `static native long create(String device, String hardwareId, String
/// serial, String vin, byte[] agentSeed, byte[] clientKey, long sequence,
/// byte[] directorRoot, long confirmTimeoutMs, long writeQuantum, String
/// precondition, int uptaneSchemes, AgentHost host, long mono, long wall)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Agent_create<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    device: JString<'l>,
    hardware_id: JString<'l>,
    serial: JString<'l>,
    vin: JString<'l>,
    seed: JByteArray<'l>,
    client_key: JByteArray<'l>,
    sequence: jlong,
    root: JByteArray<'l>,
    confirm_timeout_ms: jlong,
    write_quantum: jlong,
    precondition: JString<'l>,
    uptane_schemes: jint,
    host: JObject<'l>,
    mono: jlong,
    wall: jlong,
) -> jlong {
    run(&mut env, 0, |env| {
        let (device, hw) = (string(env, &device)?, string(env, &hardware_id)?);
        let (serial, vin) = (string(env, &serial)?, string(env, &vin)?);
        let (seed, client_key) = (bytes(env, &seed)?, bytes(env, &client_key)?);
        let root = opt_bytes(env, &root)?.unwrap_or_default();
        let precondition = if precondition.is_null() {
            String::new()
        } else {
            string(env, &precondition)?
        };
        if host.is_null() {
            return Err(Thrown::new("the AgentHost is null"));
        }
        let up = Upcalls {
            vm: env.get_java_vm()?,
            host: env.new_global_ref(&host)?,
            thrown: None,
            fault: None,
            last_error: String::new(),
        };
        let mut limits = std::mem::MaybeUninit::uninit();
        // SAFETY: a local output.
        let r = unsafe { esync_agent_limits_default(limits.as_mut_ptr()) };
        check(r, || "default limits".into())?;
        // SAFETY: written by the call that returned OK.
        let mut limits = unsafe { limits.assume_init() };
        if confirm_timeout_ms >= 0 {
            limits.confirm_timeout_ms = confirm_timeout_ms as u64;
        }
        if write_quantum > 0 {
            limits.write_quantum = write_quantum as u64;
        }
        let config = esync_agent_config {
            device_path: device.as_ptr(),
            device_path_len: device.len(),
            hardware_id: hw.as_ptr(),
            hardware_id_len: hw.len(),
            serial: serial.as_ptr(),
            serial_len: serial.len(),
            vin: vin.as_ptr(),
            vin_len: vin.len(),
            agent_key: seed.as_ptr(),
            agent_key_len: seed.len(),
            client_key: client_key.as_ptr(),
            client_key_len: client_key.len(),
            envelope_sequence: sequence as u64,
            verification: ESYNC_VERIFY_UPTANE_PARTIAL,
            director_root: root.as_ptr(),
            director_root_len: root.len(),
            patching: ESYNC_PATCH_BUILTIN,
            uptane_schemes: uptane_schemes as u32,
            safety_precondition: precondition.as_ptr(),
            safety_precondition_len: precondition.len(),
            limits,
        };
        Wrapped::<esync_agent>::create(up, |up, a, step| {
            let cbs = callbacks(up);
            // SAFETY: every pointer is valid for the call; `up` outlives
            // the handle (both are freed together in `free`).
            unsafe { esync_agent_new(&config, &cbs, mono as u64, wall as u64, a, step) }
        })
    })
}

/// `static native void reconnected(long h, long mono, long wall)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Agent_reconnected<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
    mono: jlong,
    wall: jlong,
) {
    run(&mut env, (), |_| {
        // SAFETY: a live handle.
        agent(h)?
            .step(|a, s| unsafe { esync_agent_reconnected(a, mono as u64, wall as u64, s) })?;
        Ok(())
    })
}

/// `static native byte[] nextFrame(long h, long[] outboxId)`: the next
/// frame (its outbox id, or -1, in `outboxId[0]`), or null.
#[no_mangle]
pub extern "system" fn Java_io_esync_Agent_nextFrame<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
    id_out: JLongArray<'l>,
) -> jni::sys::jbyteArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        if id_out.is_null() || env.get_array_length(&id_out)? < 1 {
            return Err(Thrown::new("outboxId: a long[1] expected"));
        }
        let ja = agent(h)?;
        let (mut f, mut n, mut id, mut has) = (std::ptr::null(), 0, 0u64, false);
        // SAFETY: a live handle; outputs are locals.
        let r = unsafe { esync_agent_next_frame(ja.handle, &mut f, &mut n, &mut id, &mut has) };
        if r == esync_result::ESYNC_RESULT_NO_FRAME {
            return Ok(std::ptr::null_mut());
        }
        ja.check(r)?;
        // SAFETY: borrowed output, valid until the next call on the handle.
        let arr = env.byte_array_from_slice(unsafe { std::slice::from_raw_parts(f, n) })?;
        env.set_long_array_region(&id_out, 0, &[if has { id as jlong } else { -1 }])?;
        Ok(arr.into_raw())
    })
}

/// `static native void markSent(long h, long outboxId)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Agent_markSent<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
    outbox_id: jlong,
) {
    run(&mut env, (), |_| {
        let ja = agent(h)?;
        // SAFETY: a live handle.
        let r = unsafe { esync_agent_mark_sent(ja.handle, outbox_id as u64) };
        ja.check(r)
    })
}

/// `static native boolean pollPending(long h)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Agent_pollPending<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
) -> jboolean {
    run(&mut env, JNI_FALSE, |_| {
        Ok(if agent(h)?.step.poll {
            JNI_TRUE
        } else {
            JNI_FALSE
        })
    })
}

/// `static native void addRole(long loader, String name, byte[] bytes)` of
/// `io.esync.TrustLoader` (during `AgentHost.trustLoad` only).
#[no_mangle]
pub extern "system" fn Java_io_esync_TrustLoader_addRole<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    loader: jlong,
    name: JString<'l>,
    role: JByteArray<'l>,
) {
    run(&mut env, (), |env| {
        let l = loader_of(loader)?;
        let (n, b) = (string(env, &name)?, bytes(env, &role)?);
        // SAFETY: the loader of the running `trust_load` callback (the
        // Java object is zeroed when it returns); buffers valid.
        let r = unsafe { esync_trust_loader_add_role(l, n.as_ptr(), n.len(), b.as_ptr(), b.len()) };
        check(r, || {
            format!("trust store role {n:?} refused (the load fails)")
        })
    })
}

/// `static native void setTime(long loader, long unixSeconds)` of
/// `io.esync.TrustLoader`.
#[no_mangle]
pub extern "system" fn Java_io_esync_TrustLoader_setTime<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    loader: jlong,
    unix_seconds: jlong,
) {
    run(&mut env, (), |_| {
        // SAFETY: as in `addRole`.
        let r = unsafe { esync_trust_loader_set_time(loader_of(loader)?, unix_seconds) };
        check(r, String::new)
    })
}

fn loader_of(l: jlong) -> Result<*mut esync_trust_loader, Thrown> {
    if l == 0 {
        return Err(Thrown::new(
            "the TrustLoader is used outside AgentHost.trustLoad",
        ));
    }
    Ok(l as *mut esync_trust_loader)
}
