//! The native methods of `io.esync.Client` (`ffi/java/io/esync/Client.java`)
//! over the `esync_client` handle ([`crate::client`]).
//!
//! The Java object holds the handle (a `long`: a [`Wrapped`] client) and a host record in Rust
//! that keeps the campaign journal in memory: it starts from the bytes the
//! Java host passes to `Client.create` (what it persisted last), and
//! `Client.journal()` gives the current record, which the Java host stores
//! durably **before** it sends the frames of the same call (the journal
//! rule of the C ABI's `journal_store`, moved to the Java side).

use std::ffi::c_void;

use jni::objects::{JByteArray, JClass, JObject, JString};
use jni::sys::{jboolean, jint, jlong, jlongArray, jobjectArray, jstring, JNI_TRUE};
use jni::JNIEnv;

use super::{
    bytes, opt_bytes, run, string, LastErrorFn, Native, PollFn, ReceiveFn, Thrown, Userdata,
    Wrapped,
};
use crate::client::*;
use crate::esync_result;
use crate::host::{
    esync_host_status, esync_log_level, ESYNC_HOST_BUFFER_TOO_SMALL, ESYNC_HOST_OK, ESYNC_LOG_ERROR,
};

/// What the callbacks keep (their `userdata`): the in-memory journal
/// record and the last error logged (the detail of a failed `create`,
/// which has no handle to ask).
#[derive(Default)]
pub(super) struct Journal {
    record: Option<Vec<u8>>,
    last_error: String,
}

impl Userdata for Journal {
    fn last_error(&self) -> String {
        self.last_error.clone()
    }
}

impl Native for esync_client {
    type Step = esync_client_step;
    type Userdata = Journal;
    const NAME: &'static str = "Client";
    const LAST_ERROR: LastErrorFn<Self> = esync_client_last_error;
    const FREE: unsafe extern "C" fn(*mut Self) = esync_client_free;
    const RECEIVE: ReceiveFn<Self, esync_client_step> = esync_client_receive;
    const POLL: PollFn<Self, esync_client_step> = esync_client_poll;

    fn input_and_deadline(s: &esync_client_step) -> (u32, Option<u64>) {
        (s.input, s.has_deadline.then_some(s.deadline_ms))
    }
}

fn client<'a>(h: jlong) -> Result<&'a mut Wrapped<esync_client>, Thrown> {
    Wrapped::live(h)
}

handle_natives!(
    esync_client,
    Java_io_esync_Client_free,
    Java_io_esync_Client_receive,
    Java_io_esync_Client_poll,
    Java_io_esync_Client_deadline
);

unsafe extern "C" fn jload(
    ud: *mut c_void,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    present: *mut bool,
) -> esync_host_status {
    // SAFETY: `ud` is the `Journal` this handle was created with; the
    // outputs are valid for writes (the C ABI's contract).
    unsafe {
        match &(*(ud as *const Journal)).record {
            None => {
                present.write(false);
                ESYNC_HOST_OK
            }
            Some(j) if j.len() > cap => {
                len.write(j.len());
                ESYNC_HOST_BUFFER_TOO_SMALL
            }
            Some(j) => {
                std::ptr::copy_nonoverlapping(j.as_ptr(), buf, j.len());
                len.write(j.len());
                present.write(true);
                ESYNC_HOST_OK
            }
        }
    }
}

unsafe extern "C" fn jstore(ud: *mut c_void, rec: *const u8, len: usize) -> esync_host_status {
    // SAFETY: as `jload`; `rec` is valid for `len` bytes.
    unsafe {
        (*(ud as *mut Journal)).record = Some(std::slice::from_raw_parts(rec, len).to_vec());
    }
    ESYNC_HOST_OK
}

unsafe extern "C" fn jlog(ud: *mut c_void, level: esync_log_level, msg: *const u8, len: usize) {
    // SAFETY: `msg` is valid for `len` bytes during the call; `ud` as in
    // `jload`.
    let m = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(msg, len) });
    eprintln!("esync[{level}]: {m}");
    if level == ESYNC_LOG_ERROR {
        // SAFETY: as above.
        unsafe { (*(ud as *mut Journal)).last_error = m.into_owned() };
    }
}

/// `static native long create(byte[] clientSeed, long envelopeSequence,
/// String device, byte[] agentKey, byte[] journal, long mono, long wall)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_create<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    seed: JByteArray<'l>,
    sequence: jlong,
    device: JString<'l>,
    agent_key: JByteArray<'l>,
    journal: JByteArray<'l>,
    mono: jlong,
    wall: jlong,
) -> jlong {
    run(&mut env, 0, |env| {
        let seed = bytes(env, &seed)?;
        let device = string(env, &device)?;
        let agent_key = bytes(env, &agent_key)?;
        let journal = Journal {
            record: opt_bytes(env, &journal)?,
            last_error: String::new(),
        };
        let agent = esync_client_agent {
            device_path: device.as_ptr(),
            device_path_len: device.len(),
            key: agent_key.as_ptr(),
            key_len: agent_key.len(),
        };
        let config = esync_client_config {
            client_key: seed.as_ptr(),
            client_key_len: seed.len(),
            envelope_sequence: sequence as u64,
            agents: &agent,
            agents_len: 1,
            answer_timeout_ms: 0,
            install_timeout_ms: 0,
            max_resends: 0,
            window: 0,
            precondition_wait_ms: 0,
        };
        Wrapped::<esync_client>::create(journal, |ud, client, step| {
            let cbs = esync_client_callbacks {
                userdata: ud.cast(),
                journal_load: Some(jload),
                journal_store: Some(jstore),
                log: Some(jlog),
            };
            // SAFETY: every pointer is valid for the call; `ud` outlives
            // the handle (both are freed together in `free`).
            unsafe { esync_client_new(&config, &cbs, mono as u64, wall as u64, client, step) }
        })
    })
}

/// `static native void presence(long h, String device, boolean connected)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_presence<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
    device: JString<'l>,
    connected: jboolean,
) {
    run(&mut env, (), |env| {
        let d = string(env, &device)?;
        let h = client(h)?;
        // SAFETY: a live handle; `d` valid for the call.
        let r =
            unsafe { esync_client_presence(h.handle, d.as_ptr(), d.len(), connected == JNI_TRUE) };
        h.check(r)
    })
}

/// `static native void queryInventory(long h, String device, byte[] nonce,
/// long mono, long wall)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_queryInventory<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
    device: JString<'l>,
    nonce: JByteArray<'l>,
    mono: jlong,
    wall: jlong,
) {
    run(&mut env, (), |env| {
        let d = string(env, &device)?;
        let n = bytes(env, &nonce)?;
        if n.len() != 16 {
            return Err(Thrown::new(format!(
                "nonce: {} bytes, 16 expected",
                n.len()
            )));
        }
        client(h)?.step(|c, s| {
            // SAFETY: a live handle; buffers valid for the call.
            unsafe {
                esync_client_query_inventory(
                    c,
                    d.as_ptr(),
                    d.len(),
                    n.as_ptr(),
                    mono as u64,
                    wall as u64,
                    s,
                )
            }
        })?;
        Ok(())
    })
}

/// `static native void start(long h, byte[] packageJson, long mono, long
/// wall)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_start<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
    package: JByteArray<'l>,
    mono: jlong,
    wall: jlong,
) {
    run(&mut env, (), |env| {
        let p = bytes(env, &package)?;
        client(h)?.step(|c, s| {
            // SAFETY: a live handle; `p` valid for the call.
            unsafe { esync_client_start(c, p.as_ptr(), p.len(), mono as u64, wall as u64, s) }
        })?;
        Ok(())
    })
}

/// `static native void provideBlob(long h, long blob, long offset, byte[]
/// data, long mono, long wall)`.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_provideBlob<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
    blob: jlong,
    offset: jlong,
    data: JByteArray<'l>,
    mono: jlong,
    wall: jlong,
) {
    run(&mut env, (), |env| {
        let d = bytes(env, &data)?;
        client(h)?.step(|c, s| {
            // SAFETY: a live handle; `d` valid for the call.
            unsafe {
                esync_client_provide_blob(
                    c,
                    blob as u64,
                    offset as u64,
                    d.as_ptr(),
                    d.len(),
                    mono as u64,
                    wall as u64,
                    s,
                )
            }
        })?;
        Ok(())
    })
}

/// `static native byte[][] nextFrame(long h)`: `{deviceUtf8, frame}`, or
/// null when none is waiting.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_nextFrame<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
) -> jobjectArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let h = client(h)?;
        let (mut to, mut to_len, mut f, mut f_len) = (std::ptr::null(), 0, std::ptr::null(), 0);
        // SAFETY: a live handle; outputs are locals.
        let r =
            unsafe { esync_client_next_frame(h.handle, &mut to, &mut to_len, &mut f, &mut f_len) };
        if r == esync_result::ESYNC_RESULT_NO_FRAME {
            return Ok(std::ptr::null_mut());
        }
        h.check(r)?;
        // SAFETY: borrowed outputs, valid until the next call on the handle.
        let (to, f) = unsafe {
            (
                std::slice::from_raw_parts(to, to_len),
                std::slice::from_raw_parts(f, f_len),
            )
        };
        let to = env.byte_array_from_slice(to)?;
        let f = env.byte_array_from_slice(f)?;
        let arr = env.new_object_array(2, "[B", JObject::null())?;
        env.set_object_array_element(&arr, 0, to)?;
        env.set_object_array_element(&arr, 1, f)?;
        Ok(arr.into_raw())
    })
}

/// `static native long[] nextNeed(long h)`: `{blob, offset, len}`, or null.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_nextNeed<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
) -> jlongArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let h = client(h)?;
        let mut need = esync_client_need::default();
        // SAFETY: a live handle; output is a local.
        let r = unsafe { esync_client_next_need(h.handle, &mut need) };
        if r == esync_result::ESYNC_RESULT_NO_FRAME {
            return Ok(std::ptr::null_mut());
        }
        h.check(r)?;
        let arr = env.new_long_array(3)?;
        env.set_long_array_region(
            &arr,
            0,
            &[
                need.blob as jlong,
                need.offset as jlong,
                jlong::from(need.len),
            ],
        )?;
        Ok(arr.into_raw())
    })
}

/// `static native String nextReport(long h)`: the final report's JSON, or
/// null.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_nextReport<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
) -> jstring {
    run(&mut env, std::ptr::null_mut(), |env| {
        let h = client(h)?;
        let (mut p, mut n) = (std::ptr::null(), 0);
        // SAFETY: a live handle; outputs are locals.
        let r = unsafe { esync_client_next_report(h.handle, &mut p, &mut n) };
        if r == esync_result::ESYNC_RESULT_NO_FRAME {
            return Ok(std::ptr::null_mut());
        }
        h.check(r)?;
        // SAFETY: borrowed output, valid until the next call.
        let json =
            String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p, n) }).into_owned();
        Ok(env.new_string(json)?.into_raw())
    })
}

/// `static native byte[] journal(long h)`: the current journal record, or
/// null if none was ever stored.
#[no_mangle]
pub extern "system" fn Java_io_esync_Client_journal<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    h: jlong,
) -> jni::sys::jbyteArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        let h = client(h)?;
        // SAFETY: the host's journal; no call on the handle is running.
        match unsafe { &(*h.ud).record } {
            None => Ok(std::ptr::null_mut()),
            Some(j) => Ok(env.byte_array_from_slice(j)?.into_raw()),
        }
    })
}
