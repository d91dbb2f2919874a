//! The JNI wrapper (feature `jni`): the native methods of `io.esync.Client`
//! ([`client`]) and `io.esync.Agent` ([`agent`]), Java classes in
//! `ffi/java/io/esync/`, over the same `esync_client` and `esync_agent`
//! handles and functions C hosts use.
//!
//! Every native method body runs under [`run`]: a failure (an
//! `esync_result` other than OK, a malformed argument, a JNI error, an
//! exception a Java host callback threw during the call) and a panic
//! (caught here; the C ABI's entry points catch their own and return
//! `ESYNC_RESULT_PANIC`) become an `io.esync.EsyncException` carrying the
//! result's number (or -1) and the handle's last error: nothing unwinds
//! into the JVM.

pub mod agent;
pub mod client;

use std::panic::{catch_unwind, AssertUnwindSafe};

use jni::objects::{GlobalRef, JByteArray, JObject, JString, JThrowable, JValue};
use jni::sys::jlong;
use jni::JNIEnv;

use crate::esync_result;

/// A failure to throw as `io.esync.EsyncException`.
pub(crate) struct Thrown {
    /// The `esync_result` number, or -1.
    result: i32,
    message: String,
    /// What a Java host callback threw during the call.
    cause: Option<GlobalRef>,
}

impl Thrown {
    /// A failure that is not an `esync_result`.
    fn new(message: impl Into<String>) -> Thrown {
        Thrown {
            result: -1,
            message: message.into(),
            cause: None,
        }
    }
}

impl From<jni::errors::Error> for Thrown {
    fn from(e: jni::errors::Error) -> Thrown {
        Thrown::new(format!("JNI: {e}"))
    }
}

/// `Err` unless `r` is OK: the result's number and message, then `detail`
/// (the handle's last error).
fn check(r: esync_result, detail: impl FnOnce() -> String) -> Result<(), Thrown> {
    if r == esync_result::ESYNC_RESULT_OK {
        return Ok(());
    }
    Err(Thrown {
        result: r as i32,
        message: format!("esync_result {} ({}): {}", r as u32, r.message(), detail()),
        cause: None,
    })
}

/// The last error a C ABI handle recorded (`esync_*_last_error`), if it
/// can be had.
///
/// # Safety
///
/// `h` is NULL or a live handle of `f`'s type, not in use.
unsafe fn last_error<H>(
    f: unsafe extern "C" fn(*mut H, *mut u8, usize, *mut usize) -> esync_result,
    h: *mut H,
) -> Option<String> {
    let mut buf = [0u8; 512];
    let mut n = 0usize;
    // SAFETY: as the caller guarantees; a local buffer.
    let r = unsafe { f(h, buf.as_mut_ptr(), buf.len(), &mut n) };
    (r == esync_result::ESYNC_RESULT_OK).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The wrapper object behind a Java `long` handle.
///
/// The Java classes zero their field on close and are used by one thread
/// at a time (their documented contract), so a non-zero value is a live
/// `T` that no other call is using.
fn live<'a, T>(h: jlong, what: &str) -> Result<&'a mut T, Thrown> {
    if h == 0 {
        return Err(Thrown::new(format!("the {what} is closed")));
    }
    // SAFETY: a non-zero handle is a `Box<T>` the `create` of this class
    // leaked and its `free` has not released (see above).
    Ok(unsafe { &mut *(h as *mut T) })
}

/// Releases what [`live`] points at (0 accepted).
///
/// # Safety
///
/// `h` is 0 or a `Box<T>` leaked by `create`, released once.
unsafe fn release<T>(h: jlong) -> Option<Box<T>> {
    // SAFETY: as the caller guarantees.
    (h != 0).then(|| unsafe { Box::from_raw(h as *mut T) })
}

/// Runs a call that writes a step: `f` gets a copy of the current step and
/// writes the new one; it is kept only on success (outputs only on
/// success, as in C).
fn stepped<S: Copy>(cur: &mut S, f: impl FnOnce(&mut S) -> esync_result) -> (esync_result, S) {
    let mut s = *cur;
    let r = f(&mut s);
    if r == esync_result::ESYNC_RESULT_OK {
        *cur = s;
    }
    (r, *cur)
}

/// Runs a native method body: errors and panics become an
/// `io.esync.EsyncException` and the method returns `fallback`.
fn run<'l, T>(
    env: &mut JNIEnv<'l>,
    fallback: T,
    f: impl FnOnce(&mut JNIEnv<'l>) -> Result<T, Thrown>,
) -> T {
    let r = catch_unwind(AssertUnwindSafe(|| f(env)))
        .unwrap_or_else(|_| Err(Thrown::new("a panic was caught in the native code")));
    match r {
        Ok(v) => v,
        Err(t) => {
            throw(env, t);
            fallback
        }
    }
}

fn throw(env: &mut JNIEnv<'_>, t: Thrown) {
    // An exception may be pending already (a failed JNI call): it stands.
    if env.exception_check().unwrap_or(true) {
        return;
    }
    let thrown = (|| -> jni::errors::Result<()> {
        let msg = env.new_string(&t.message)?;
        let null = JObject::null();
        let cause = t.cause.as_ref().map_or(&null, |g| g.as_obj());
        let e = env.new_object(
            "io/esync/EsyncException",
            "(ILjava/lang/String;Ljava/lang/Throwable;)V",
            &[JValue::Int(t.result), (&msg).into(), cause.into()],
        )?;
        env.throw(JThrowable::from(e))
    })();
    if thrown.is_err() && !env.exception_check().unwrap_or(true) {
        let _ = env.throw_new("java/lang/IllegalStateException", &t.message);
    }
}

fn string(env: &mut JNIEnv<'_>, s: &JString<'_>) -> Result<String, Thrown> {
    if s.is_null() {
        return Err(Thrown::new("a String argument is null"));
    }
    Ok(env.get_string(s)?.into())
}

fn bytes(env: &mut JNIEnv<'_>, b: &JByteArray<'_>) -> Result<Vec<u8>, Thrown> {
    if b.is_null() {
        return Err(Thrown::new("a byte[] argument is null"));
    }
    Ok(env.convert_byte_array(b)?)
}

/// `bytes`, or `None` for a null array.
fn opt_bytes(env: &mut JNIEnv<'_>, b: &JByteArray<'_>) -> Result<Option<Vec<u8>>, Thrown> {
    if b.is_null() {
        return Ok(None);
    }
    bytes(env, b).map(Some)
}

/// The test-only native methods of `io.esync.PanicProbe`
/// (`ffi/tests/java/io/esync/PanicProbe.java`; feature `panic-probe`, never
/// in a release build): production code has no panic a Java caller can
/// reach, so these make one, to show where it ends.
#[cfg(feature = "panic-probe")]
pub mod panic_probe {
    use jni::objects::JClass;
    use jni::JNIEnv;

    use super::{check, run};

    /// `static native void inJni()`: panics in a native method body (caught
    /// by [`run`]).
    #[no_mangle]
    pub extern "system" fn Java_io_esync_PanicProbe_inJni<'l>(
        mut env: JNIEnv<'l>,
        _class: JClass<'l>,
    ) {
        run(&mut env, (), |_| panic!("panic probe: in a JNI method"))
    }

    /// `static native void inAbi()`: panics under the guard every C ABI
    /// entry point runs in (`ESYNC_RESULT_PANIC`, 9).
    #[no_mangle]
    pub extern "system" fn Java_io_esync_PanicProbe_inAbi<'l>(
        mut env: JNIEnv<'l>,
        _class: JClass<'l>,
    ) {
        run(&mut env, (), |_| {
            let r = crate::guard(|| panic!("panic probe: in a C ABI entry point"));
            check(r, || "the probe's panic".into())
        })
    }
}
