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

/// Defines the native methods `free`, `receive`, `poll` and `deadline` of
/// a Java class over the handle type `$h` (their bodies: [`Wrapped::free`],
/// [`receive`], [`poll`], [`deadline`]), under their JNI names.
macro_rules! handle_natives {
    ($h:ty, $free:ident, $receive:ident, $poll:ident, $deadline:ident) => {
        /// `static native void free(long h)`: frees the handle (0
        /// accepted).
        #[no_mangle]
        pub extern "system" fn $free<'l>(mut env: JNIEnv<'l>, _class: JClass<'l>, h: jlong) {
            super::run(&mut env, (), |_| {
                // SAFETY: a handle from `create`, released once (the Java
                // class zeroes its field).
                unsafe { super::Wrapped::<$h>::free(h) };
                Ok(())
            })
        }

        /// `static native int receive(long h, byte[] frame, long mono, long
        /// wall)`: what became of the frame (`INPUT_*`).
        #[no_mangle]
        pub extern "system" fn $receive<'l>(
            mut env: JNIEnv<'l>,
            _class: JClass<'l>,
            h: jlong,
            frame: JByteArray<'l>,
            mono: jlong,
            wall: jlong,
        ) -> jint {
            super::receive::<$h>(&mut env, h, &frame, mono, wall)
        }

        /// `static native void poll(long h, long mono, long wall)`.
        #[no_mangle]
        pub extern "system" fn $poll<'l>(
            mut env: JNIEnv<'l>,
            _class: JClass<'l>,
            h: jlong,
            mono: jlong,
            wall: jlong,
        ) {
            super::poll::<$h>(&mut env, h, mono, wall)
        }

        /// `static native long deadline(long h)`: the monotonic time to
        /// call `poll` at, or -1.
        #[no_mangle]
        pub extern "system" fn $deadline<'l>(
            mut env: JNIEnv<'l>,
            _class: JClass<'l>,
            h: jlong,
        ) -> jlong {
            super::deadline::<$h>(&mut env, h)
        }
    };
}

pub mod agent;
pub mod client;

use std::panic::{catch_unwind, AssertUnwindSafe};

use jni::objects::{GlobalRef, JByteArray, JObject, JString, JThrowable, JValue};
use jni::sys::{jint, jlong};
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
unsafe fn last_error<H>(f: LastErrorFn<H>, h: *mut H) -> Option<String> {
    let mut buf = [0u8; 512];
    let mut n = 0usize;
    // SAFETY: as the caller guarantees; a local buffer.
    let r = unsafe { f(h, buf.as_mut_ptr(), buf.len(), &mut n) };
    (r == esync_result::ESYNC_RESULT_OK).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `esync_*_last_error(handle, buf, len, written)`.
type LastErrorFn<H> = unsafe extern "C" fn(*mut H, *mut u8, usize, *mut usize) -> esync_result;
/// `esync_*_receive(handle, frame, len, mono, wall, step)`.
type ReceiveFn<H, S> =
    unsafe extern "C" fn(*mut H, *const u8, usize, u64, u64, *mut S) -> esync_result;
/// `esync_*_poll(handle, mono, wall, step)`.
type PollFn<H, S> = unsafe extern "C" fn(*mut H, u64, u64, *mut S) -> esync_result;

/// A C ABI handle type the Java classes wrap (`esync_client`,
/// `esync_agent`).
trait Native: Sized {
    /// What its calls write (`esync_step`, `esync_client_step`).
    type Step: Copy + Default;
    /// The callbacks' userdata, owned beside the handle.
    type Userdata: Userdata;
    /// The Java class's name, for messages.
    const NAME: &'static str;
    /// `esync_*_last_error`.
    const LAST_ERROR: LastErrorFn<Self>;
    /// `esync_*_free`.
    const FREE: unsafe extern "C" fn(*mut Self);
    /// `esync_*_receive`.
    const RECEIVE: ReceiveFn<Self, Self::Step>;
    /// `esync_*_poll`.
    const POLL: PollFn<Self, Self::Step>;
    /// A step's `input` (`ESYNC_INPUT_*`) and deadline.
    fn input_and_deadline(s: &Self::Step) -> (u32, Option<u64>);
}

/// The body of `native int receive(long h, byte[] frame, long mono, long
/// wall)` of either class: what became of the frame (`INPUT_*`).
fn receive<H: Native>(
    env: &mut JNIEnv<'_>,
    h: jlong,
    frame: &JByteArray<'_>,
    mono: jlong,
    wall: jlong,
) -> jint {
    run(env, -1, |env| {
        let f = bytes(env, frame)?;
        let s = Wrapped::<H>::live(h)?.step(|a, s| {
            // SAFETY: a live handle; `f` valid for the call.
            unsafe { (H::RECEIVE)(a, f.as_ptr(), f.len(), mono as u64, wall as u64, s) }
        })?;
        Ok(H::input_and_deadline(&s).0 as jint)
    })
}

/// The body of `native void poll(long h, long mono, long wall)`.
fn poll<H: Native>(env: &mut JNIEnv<'_>, h: jlong, mono: jlong, wall: jlong) {
    run(env, (), |_| {
        // SAFETY: a live handle.
        Wrapped::<H>::live(h)?.step(|a, s| unsafe { (H::POLL)(a, mono as u64, wall as u64, s) })?;
        Ok(())
    })
}

/// The body of `native long deadline(long h)`: the monotonic time to call
/// `poll` at, or -1.
fn deadline<H: Native>(env: &mut JNIEnv<'_>, h: jlong) -> jlong {
    run(env, -1, |_| {
        let w = Wrapped::<H>::live(h)?;
        Ok(H::input_and_deadline(&w.step).1.map_or(-1, |d| d as jlong))
    })
}

/// What the callbacks' userdata tells after a call.
trait Userdata {
    /// The last error logged (the detail of a failed `create`, which has
    /// no handle to ask).
    fn last_error(&self) -> String;
    /// What went wrong in the Java host's callbacks during the call that
    /// returned: the first exception a Java method threw, and the first
    /// failure of the adapter. Taken: the next call starts clean.
    fn take_failure(&mut self) -> (Option<GlobalRef>, Option<String>) {
        (None, None)
    }
}

/// What a Java object's `long` handle points at: the C handle, its
/// callbacks' userdata (a separate allocation: the callbacks use it while a
/// call holds the wrapper) and the last step.
struct Wrapped<H: Native> {
    ud: *mut H::Userdata,
    handle: *mut H,
    step: H::Step,
}

impl<H: Native> Wrapped<H> {
    /// Creates the handle (`new` calls `esync_*_new` with the userdata's
    /// pointer); returns the Java handle.
    fn create(
        ud: H::Userdata,
        new: impl FnOnce(*mut H::Userdata, &mut *mut H, &mut H::Step) -> esync_result,
    ) -> Result<jlong, Thrown> {
        let mut w = Box::new(Wrapped::<H> {
            ud: Box::into_raw(Box::new(ud)),
            handle: std::ptr::null_mut(),
            step: H::Step::default(),
        });
        let (ud, mut handle) = (w.ud, std::ptr::null_mut());
        if let Err(e) = w.step(|_, s| new(ud, &mut handle, s)) {
            // SAFETY: not handed out (no handle was made); released once.
            drop(unsafe { Box::from_raw(ud) });
            return Err(e);
        }
        w.handle = handle;
        Ok(Box::into_raw(w) as jlong)
    }

    /// The wrapper behind a Java handle.
    ///
    /// The Java classes zero their field on close and are used by one
    /// thread at a time (their documented contract), so a non-zero value is
    /// a live wrapper that no other call is using.
    fn live<'a>(h: jlong) -> Result<&'a mut Wrapped<H>, Thrown> {
        if h == 0 {
            return Err(Thrown::new(format!("the {} is closed", H::NAME)));
        }
        // SAFETY: a non-zero handle is a `Box<Wrapped<H>>` that `create`
        // leaked and `free` has not released (see above).
        Ok(unsafe { &mut *(h as *mut Wrapped<H>) })
    }

    /// Frees the handle, then its userdata (0 accepted).
    ///
    /// # Safety
    ///
    /// `h` is 0 or a handle from `create`, released once (the Java classes
    /// zero their field).
    unsafe fn free(h: jlong) {
        if h != 0 {
            // SAFETY: as the caller guarantees; the handle no longer uses
            // its userdata once freed (no callback runs in `_free`).
            unsafe {
                let w = Box::from_raw(h as *mut Wrapped<H>);
                (H::FREE)(w.handle);
                drop(Box::from_raw(w.ud));
            }
        }
    }

    /// `Err` if `r` is not OK (its number, message and the handle's last
    /// error) or a callback of the call that returned `r` threw or failed
    /// (then with the Java throwable as the cause).
    fn check(&mut self, r: esync_result) -> Result<(), Thrown> {
        // SAFETY: this wrapper's userdata; the C call returned.
        let ud = unsafe { &mut *self.ud };
        let (cause, fault) = ud.take_failure();
        let handle = self.handle;
        let mut t = match check(r, || {
            // SAFETY: a live handle (or NULL before creation), no call
            // running; else the last error logged.
            unsafe { last_error(H::LAST_ERROR, handle) }.unwrap_or_else(|| ud.last_error())
        }) {
            Ok(()) if cause.is_none() && fault.is_none() => return Ok(()),
            Ok(()) => Thrown::new("the call succeeded, but"),
            Err(t) => t,
        };
        if let Some(f) = fault {
            t.message
                .push_str(&format!("; a host callback failed: {f}"));
        }
        if cause.is_some() {
            t.message
                .push_str("; a host callback threw (the cause; it counted as FAILED)");
        }
        t.cause = cause;
        Err(t)
    }

    /// Runs a C call that writes a step: `f` gets the handle and a copy of
    /// the current step, kept only on success (outputs only on success, as
    /// in C).
    fn step(
        &mut self,
        f: impl FnOnce(*mut H, &mut H::Step) -> esync_result,
    ) -> Result<H::Step, Thrown> {
        let mut s = self.step;
        let r = f(self.handle, &mut s);
        if r == esync_result::ESYNC_RESULT_OK {
            self.step = s;
        }
        self.check(r)?;
        Ok(s)
    }
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
