//! The C ABI's conventions, exercised from Rust through the exported
//! functions with a host written as `extern "C"` callbacks over an
//! in-memory device: results and their messages, NULL and malformed
//! arguments (nothing written on failure), refused frames, the borrowed
//! frame, halting on a power loss reported by a callback, and recovery by
//! creating the handle again.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(unsafe_code, reason = "a C host written in Rust calls the C ABI")]
#![allow(non_camel_case_types)]

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::ptr;

use ::esync_agent::device::mem::MemDevice;
use ::esync_agent::device::{Device, DeviceError, SelfTest};
use ed25519_dalek::SigningKey;
use esync_ffi::agent::*;
use esync_ffi::esync_result;
use esync_ffi::host::*;
use esync_ffi::result::esync_result_message;
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, Id128, SoftwareVersion};
use esync_proto::message::*;
use esync_uptane::builder::RepositoryBuilder;
use esync_uptane::UnixTime;

const T0: u64 = 1_800_000_000_000;

struct Host {
    dev: MemDevice,
    journal: Option<Vec<u8>>,
    trust: BTreeMap<String, Vec<u8>>,
    time: Option<i64>,
    /// Every journal operation reports a power loss.
    power_loss: bool,
    /// `trust_load` hands in a role the loader must refuse, and ignores
    /// the refusal.
    bad_role: bool,
    logs: Vec<(u32, String)>,
}

fn ud(p: *mut c_void) -> &'static mut Host {
    // SAFETY: every callback receives the `Host` the test registered.
    unsafe { &mut *(p as *mut Host) }
}

fn st(r: Result<(), DeviceError>) -> esync_host_status {
    match r {
        Ok(()) => ESYNC_HOST_OK,
        Err(DeviceError::PowerLoss(_)) => ESYNC_HOST_POWER_LOSS,
        Err(DeviceError::Refused { .. }) => ESYNC_HOST_REFUSED,
        Err(DeviceError::NoSpace { .. }) => ESYNC_HOST_NO_SPACE,
        Err(_) => ESYNC_HOST_FAILED,
    }
}

fn c_image(i: &InstalledImage) -> esync_image {
    let mut version = [0u8; ESYNC_VERSION_MAX];
    version[..i.version.as_str().len()].copy_from_slice(i.version.as_str().as_bytes());
    esync_image {
        version,
        version_len: i.version.as_str().len(),
        release_counter: i.release_counter.0,
        length: i.length,
        sha256: i.sha256.0,
    }
}

fn r_image(i: &esync_image) -> InstalledImage {
    InstalledImage {
        version: SoftwareVersion::new(std::str::from_utf8(&i.version[..i.version_len]).unwrap())
            .unwrap(),
        release_counter: esync_proto::id::ReleaseCounter(i.release_counter),
        length: i.length,
        sha256: esync_proto::id::Sha256Digest(i.sha256),
    }
}

unsafe fn buf<'a>(p: *mut u8, n: usize) -> &'a mut [u8] {
    // SAFETY: the library passes a buffer of `n` bytes.
    unsafe { std::slice::from_raw_parts_mut(p, n) }
}

unsafe fn data<'a>(p: *const u8, n: usize) -> &'a [u8] {
    // SAFETY: the library passes `n` readable bytes.
    unsafe { std::slice::from_raw_parts(p, n) }
}

macro_rules! read_cb {
    ($name:ident, $m:ident) => {
        unsafe extern "C" fn $name(
            u: *mut c_void,
            off: u64,
            b: *mut u8,
            n: usize,
            read: *mut usize,
        ) -> esync_host_status {
            match ud(u).dev.$m(off, unsafe { buf(b, n) }) {
                Ok(k) => {
                    unsafe { *read = k };
                    ESYNC_HOST_OK
                }
                Err(e) => st(Err(e)),
            }
        }
    };
}
macro_rules! write_cb {
    ($name:ident, $m:ident) => {
        unsafe extern "C" fn $name(
            u: *mut c_void,
            off: u64,
            d: *const u8,
            n: usize,
        ) -> esync_host_status {
            st(ud(u).dev.$m(off, unsafe { data(d, n) }))
        }
    };
}
macro_rules! unit_cb {
    ($name:ident, $m:ident) => {
        unsafe extern "C" fn $name(u: *mut c_void) -> esync_host_status {
            st(ud(u).dev.$m())
        }
    };
}
read_cb!(read_running, read_running);
read_cb!(staging_read, staging_read);
read_cb!(slot_read, slot_read);
write_cb!(staging_write, staging_write);
write_cb!(slot_write, slot_write);
unit_cb!(pre_install, pre_install);
unit_cb!(activate, activate);
unit_cb!(commit, commit);
unit_cb!(rollback_previous, rollback_previous);

unsafe extern "C" fn running(u: *mut c_void, out: *mut esync_image) -> esync_host_status {
    match ud(u).dev.running() {
        Ok(i) => {
            unsafe { out.write(c_image(&i)) };
            ESYNC_HOST_OK
        }
        Err(e) => st(Err(e)),
    }
}
unsafe extern "C" fn staging_capacity(u: *mut c_void) -> u64 {
    ud(u).dev.staging_capacity()
}
unsafe extern "C" fn staging_reset(u: *mut c_void, n: u64) -> esync_host_status {
    st(ud(u).dev.staging_reset(n))
}
unsafe extern "C" fn slot_begin(u: *mut c_void, n: u64) -> esync_host_status {
    st(ud(u).dev.slot_begin(n))
}
unsafe extern "C" fn slot_finish(u: *mut c_void, i: *const esync_image) -> esync_host_status {
    st(ud(u).dev.slot_finish(&r_image(unsafe { &*i })))
}
unsafe extern "C" fn inactive(
    u: *mut c_void,
    out: *mut esync_image,
    present: *mut bool,
) -> esync_host_status {
    match ud(u).dev.inactive() {
        Ok(i) => {
            unsafe {
                *present = i.is_some();
                if let Some(i) = i {
                    out.write(c_image(&i));
                }
            }
            ESYNC_HOST_OK
        }
        Err(e) => st(Err(e)),
    }
}
unsafe extern "C" fn self_test(
    u: *mut c_void,
    passed: *mut bool,
    _r: *mut u8,
    _cap: usize,
    _len: *mut usize,
) -> esync_host_status {
    match ud(u).dev.self_test() {
        Ok(t) => {
            unsafe { *passed = t == SelfTest::Passed };
            ESYNC_HOST_OK
        }
        Err(e) => st(Err(e)),
    }
}
unsafe extern "C" fn on_trial(u: *mut c_void, out: *mut bool) -> esync_host_status {
    match ud(u).dev.on_trial() {
        Ok(t) => {
            unsafe { *out = t };
            ESYNC_HOST_OK
        }
        Err(e) => st(Err(e)),
    }
}
unsafe extern "C" fn backups(
    _u: *mut c_void,
    _o: *mut esync_image,
    _cap: usize,
    n: *mut usize,
) -> esync_host_status {
    unsafe { *n = 0 };
    ESYNC_HOST_OK
}
unsafe extern "C" fn restore_backup(
    _u: *mut c_void,
    _v: *const u8,
    _n: usize,
) -> esync_host_status {
    ESYNC_HOST_REFUSED
}
unsafe extern "C" fn journal_load(
    u: *mut c_void,
    b: *mut u8,
    cap: usize,
    len: *mut usize,
    present: *mut bool,
) -> esync_host_status {
    let h = ud(u);
    if h.power_loss {
        return ESYNC_HOST_POWER_LOSS;
    }
    match &h.journal {
        None => unsafe { *present = false },
        Some(j) if j.len() > cap => {
            unsafe { *len = j.len() };
            return ESYNC_HOST_BUFFER_TOO_SMALL;
        }
        Some(j) => unsafe {
            buf(b, cap)[..j.len()].copy_from_slice(j);
            *len = j.len();
            *present = true;
        },
    }
    ESYNC_HOST_OK
}
unsafe extern "C" fn journal_store(u: *mut c_void, d: *const u8, n: usize) -> esync_host_status {
    let h = ud(u);
    if h.power_loss {
        return ESYNC_HOST_POWER_LOSS;
    }
    h.journal = Some(unsafe { data(d, n) }.to_vec());
    ESYNC_HOST_OK
}
unsafe extern "C" fn trust_load(u: *mut c_void, l: *mut esync_trust_loader) -> esync_host_status {
    let h = ud(u);
    if h.bad_role {
        let name = [0xffu8];
        let _ignored = unsafe { esync_trust_loader_add_role(l, name.as_ptr(), 1, ptr::null(), 0) };
    }
    for (name, bytes) in &h.trust {
        let r = unsafe {
            esync_trust_loader_add_role(l, name.as_ptr(), name.len(), bytes.as_ptr(), bytes.len())
        };
        assert_eq!(r, esync_result::ESYNC_RESULT_OK);
    }
    if let Some(t) = h.time {
        unsafe { esync_trust_loader_set_time(l, t) };
    }
    ESYNC_HOST_OK
}
unsafe extern "C" fn trust_store_role(
    u: *mut c_void,
    n: *const u8,
    nl: usize,
    b: *const u8,
    bl: usize,
) -> esync_host_status {
    let name = String::from_utf8(unsafe { data(n, nl) }.to_vec()).unwrap();
    ud(u).trust.insert(name, unsafe { data(b, bl) }.to_vec());
    ESYNC_HOST_OK
}
unsafe extern "C" fn trust_remove_role(
    u: *mut c_void,
    n: *const u8,
    nl: usize,
) -> esync_host_status {
    let name = String::from_utf8(unsafe { data(n, nl) }.to_vec()).unwrap();
    ud(u).trust.remove(&name);
    ESYNC_HOST_OK
}
unsafe extern "C" fn trust_store_time(u: *mut c_void, t: i64) -> esync_host_status {
    ud(u).time = Some(t);
    ESYNC_HOST_OK
}
unsafe extern "C" fn log(u: *mut c_void, level: u32, m: *const u8, n: usize) {
    let text = String::from_utf8_lossy(unsafe { data(m, n) }).into_owned();
    ud(u).logs.push((level, text));
}

fn callbacks(h: &mut Host) -> esync_agent_callbacks {
    esync_agent_callbacks {
        userdata: h as *mut Host as *mut c_void,
        running: Some(running),
        read_running: Some(read_running),
        staging_capacity: Some(staging_capacity),
        staging_reset: Some(staging_reset),
        staging_write: Some(staging_write),
        staging_read: Some(staging_read),
        pre_install: Some(pre_install),
        slot_begin: Some(slot_begin),
        slot_write: Some(slot_write),
        slot_read: Some(slot_read),
        slot_finish: Some(slot_finish),
        inactive: Some(inactive),
        activate: Some(activate),
        self_test: Some(self_test),
        commit: Some(commit),
        on_trial: Some(on_trial),
        rollback_previous: Some(rollback_previous),
        backups: Some(backups),
        restore_backup: Some(restore_backup),
        signals: None,
        journal_load: Some(journal_load),
        journal_store: Some(journal_store),
        trust_load: Some(trust_load),
        trust_store_role: Some(trust_store_role),
        trust_remove_role: Some(trust_remove_role),
        trust_store_time: Some(trust_store_time),
        consent: None,
        log: Some(log),
    }
}

const DEVICE: &str = "/powertrain/ecm";

struct Keys {
    root: Vec<u8>,
    agent: [u8; 32],
    client: SigningKey,
}

fn keys() -> Keys {
    let mut director = RepositoryBuilder::generate(UnixTime((T0 / 1000) as i64 + 86_400)).unwrap();
    director.publish().unwrap();
    Keys {
        root: director.root_bytes(1).unwrap().to_vec(),
        agent: [5; 32],
        client: SigningKey::from_bytes(&[6; 32]),
    }
}

fn config(k: &Keys) -> esync_agent_config {
    let client = Box::leak(Box::new(k.client.verifying_key().to_bytes()));
    let mut limits = std::mem::MaybeUninit::uninit();
    assert_eq!(
        unsafe { esync_agent_limits_default(limits.as_mut_ptr()) },
        esync_result::ESYNC_RESULT_OK
    );
    esync_agent_config {
        device_path: DEVICE.as_ptr(),
        device_path_len: DEVICE.len(),
        hardware_id: b"ecm-hw-1".as_ptr(),
        hardware_id_len: 8,
        serial: b"ECM0001".as_ptr(),
        serial_len: 7,
        vin: b"WVWZZZ1JZXW000001".as_ptr(),
        vin_len: 17,
        agent_key: k.agent.as_ptr(),
        agent_key_len: 32,
        client_key: client.as_ptr(),
        client_key_len: 32,
        envelope_sequence: 1,
        verification: ESYNC_VERIFY_UPTANE_PARTIAL,
        director_root: k.root.as_ptr(),
        director_root_len: k.root.len(),
        patching: ESYNC_PATCH_BUILTIN,
        uptane_schemes: 0,
        safety_precondition: ptr::null(),
        safety_precondition_len: 0,
        limits: unsafe { limits.assume_init() },
    }
}

fn host() -> Box<Host> {
    Box::new(Host {
        dev: MemDevice::new(
            SoftwareVersion::new("1.0.0").unwrap(),
            1,
            vec![7; 5000],
            1 << 20,
        ),
        journal: None,
        trust: BTreeMap::new(),
        time: None,
        power_loss: false,
        bad_role: false,
        logs: Vec::new(),
    })
}

fn new_agent(
    cfg: &esync_agent_config,
    cb: &esync_agent_callbacks,
) -> (esync_result, *mut esync_agent) {
    let mut out: *mut esync_agent = ptr::null_mut();
    let mut step = esync_step::default();
    let r = unsafe { esync_agent_new(cfg, cb, 0, T0, &mut out, &mut step) };
    (r, out)
}

fn message(r: u32) -> String {
    let mut b = [0u8; 256];
    let mut n = 0usize;
    let rc = unsafe { esync_result_message(r, b.as_mut_ptr(), b.len(), &mut n) };
    assert_eq!(rc, esync_result::ESYNC_RESULT_OK);
    String::from_utf8(b[..n].to_vec()).unwrap()
}

#[test]
fn results_have_stable_numbers_and_messages() {
    let expected = [
        (esync_result::ESYNC_RESULT_OK, 0),
        (esync_result::ESYNC_RESULT_NULL_ARGUMENT, 1),
        (esync_result::ESYNC_RESULT_INVALID_ARGUMENT, 2),
        (esync_result::ESYNC_RESULT_INVALID_CONFIG, 3),
        (esync_result::ESYNC_RESULT_BUFFER_TOO_SMALL, 4),
        (esync_result::ESYNC_RESULT_NO_FRAME, 5),
        (esync_result::ESYNC_RESULT_HALTED, 6),
        (esync_result::ESYNC_RESULT_FRAME, 7),
        (esync_result::ESYNC_RESULT_TRUST_STORE, 8),
        (esync_result::ESYNC_RESULT_PANIC, 9),
        (esync_result::ESYNC_RESULT_REFUSED, 10),
        (esync_result::ESYNC_RESULT_BUSY, 11),
        (esync_result::ESYNC_RESULT_VERIFICATION, 12),
        (esync_result::ESYNC_RESULT_GAVE_UP, 13),
        (esync_result::ESYNC_RESULT_SESSION, 14),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (r, n) in expected {
        assert_eq!(r as u32, n);
        let m = message(n);
        assert_eq!(m, r.message());
        assert!(seen.insert(m), "messages are distinct");
    }
    assert_eq!(message(15), "unknown result");
    assert_eq!(message(u32::MAX), "unknown result");
    // Truncated to the buffer; NULL `written` refused.
    let mut b = [0u8; 4];
    let mut n = 99usize;
    assert_eq!(
        unsafe { esync_result_message(0, b.as_mut_ptr(), b.len(), &mut n) },
        esync_result::ESYNC_RESULT_OK
    );
    assert_eq!((&b[..n], n), (&b"succ"[..], 4));
    assert_eq!(
        unsafe { esync_result_message(0, b.as_mut_ptr(), b.len(), ptr::null_mut()) },
        esync_result::ESYNC_RESULT_NULL_ARGUMENT
    );
}

#[test]
fn bad_arguments_are_refused_and_nothing_is_written() {
    let k = keys();
    let mut h = host();
    let cb = callbacks(&mut h);
    let cfg = config(&k);
    let sentinel = ptr::dangling_mut::<esync_agent>();
    let mut out = sentinel;
    let mut step = esync_step::default();
    // NULL arguments.
    assert_eq!(
        unsafe { esync_agent_new(ptr::null(), &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_NULL_ARGUMENT
    );
    // A required callback missing: named in the log.
    let mut partial = cb;
    partial.activate = None;
    partial.journal_store = None;
    assert_eq!(
        unsafe { esync_agent_new(&cfg, &partial, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_CONFIG
    );
    assert!(h.logs.iter().any(|(l, m)| *l == ESYNC_LOG_ERROR
        && m.contains("activate")
        && m.contains("journal_store")));
    // A key of the wrong length, a device path that is not one, an unknown mode.
    let mut bad = config(&k);
    bad.agent_key_len = 31;
    assert_eq!(
        unsafe { esync_agent_new(&bad, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_ARGUMENT
    );
    let mut bad = config(&k);
    bad.device_path = b"no slash".as_ptr();
    bad.device_path_len = 8;
    assert_eq!(
        unsafe { esync_agent_new(&bad, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_ARGUMENT
    );
    let mut bad = config(&k);
    bad.uptane_schemes = 1 << 7;
    assert_eq!(
        unsafe { esync_agent_new(&bad, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_ARGUMENT
    );
    let mut bad = config(&k);
    bad.verification = 0;
    assert_eq!(
        unsafe { esync_agent_new(&bad, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_ARGUMENT
    );
    // A safety-critical Agent's precondition must parse; a limit must be in range.
    let mut bad = config(&k);
    bad.safety_precondition = b"speed ==".as_ptr();
    bad.safety_precondition_len = 8;
    assert_eq!(
        unsafe { esync_agent_new(&bad, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_CONFIG
    );
    let mut bad = config(&k);
    bad.limits.max_install_attempts = 0;
    assert_eq!(
        unsafe { esync_agent_new(&bad, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_CONFIG
    );
    // No trust store root and no pinned root.
    let mut bad = config(&k);
    bad.director_root_len = 0;
    assert_eq!(
        unsafe { esync_agent_new(&bad, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_INVALID_CONFIG
    );
    // A trust store role the loader refuses fails the load, even when the
    // host ignores the refusal.
    h.bad_role = true;
    assert_eq!(
        unsafe { esync_agent_new(&cfg, &cb, 0, T0, &mut out, &mut step) },
        esync_result::ESYNC_RESULT_TRUST_STORE
    );
    h.bad_role = false;
    assert_eq!(out, sentinel, "nothing written on failure");
    // NULL handles.
    unsafe { esync_agent_free(ptr::null_mut()) };
    let (mut f, mut l, mut id, mut has) = (ptr::null(), 0usize, 0u64, false);
    assert_eq!(
        unsafe { esync_agent_next_frame(ptr::null_mut(), &mut f, &mut l, &mut id, &mut has) },
        esync_result::ESYNC_RESULT_NULL_ARGUMENT
    );
    assert_eq!(
        unsafe { esync_agent_poll(ptr::null_mut(), 0, T0, &mut step) },
        esync_result::ESYNC_RESULT_NULL_ARGUMENT
    );
}

#[test]
fn frames_in_and_out_refused_frames_change_nothing() {
    let k = keys();
    let mut h = host();
    let cb = callbacks(&mut h);
    let cfg = config(&k);
    let (r, a) = new_agent(&cfg, &cb);
    assert_eq!(r, esync_result::ESYNC_RESULT_OK);
    assert_eq!(
        h.trust.get("root"),
        Some(&k.root),
        "the pinned root was stored"
    );

    // Garbage and a frame signed by someone else: refused.
    let mut step = esync_step::default();
    let junk = [0u8; 40];
    assert_eq!(
        unsafe { esync_agent_receive(a, junk.as_ptr(), junk.len(), 1, T0, &mut step) },
        esync_result::ESYNC_RESULT_OK
    );
    assert_eq!((step.input, step.frames), (ESYNC_INPUT_REFUSED, 0));
    let dev = DevicePath::new(DEVICE).unwrap();
    let query = Payload::InventoryQuery(InventoryQuery { nonce: [3; 16] });
    let mut forger = EnvelopeSigner::new(
        Participant::Client,
        SigningKey::from_bytes(&[9; 32]),
        1,
        FrameLimits::default(),
    );
    let forged = forger
        .seal(
            Recipient::Device(dev.clone()),
            Id128([1; 16]),
            query.clone(),
            T0,
        )
        .unwrap();
    assert_eq!(
        unsafe { esync_agent_receive(a, forged.as_ptr(), forged.len(), 2, T0, &mut step) },
        esync_result::ESYNC_RESULT_OK
    );
    assert_eq!((step.input, step.frames), (ESYNC_INPUT_REFUSED, 0));
    assert!(h
        .logs
        .iter()
        .any(|(l, m)| *l == ESYNC_LOG_WARN && m.contains("refused")));

    // The Client's query: one signed answer, borrowed until the next call.
    let mut client = EnvelopeSigner::new(
        Participant::Client,
        k.client.clone(),
        1,
        FrameLimits::default(),
    );
    let frame = client
        .seal(Recipient::Device(dev.clone()), Id128([2; 16]), query, T0)
        .unwrap();
    assert_eq!(
        unsafe { esync_agent_receive(a, frame.as_ptr(), frame.len(), 3, T0, &mut step) },
        esync_result::ESYNC_RESULT_OK
    );
    assert_eq!(
        (step.input, step.frames, step.poll),
        (ESYNC_INPUT_HANDLED, 1, false)
    );
    let (mut f, mut l, mut id, mut has) = (ptr::null(), 0usize, 0u64, true);
    assert_eq!(
        unsafe { esync_agent_next_frame(a, &mut f, &mut l, &mut id, &mut has) },
        esync_result::ESYNC_RESULT_OK
    );
    let bytes = unsafe { std::slice::from_raw_parts(f, l) }.to_vec();
    assert!(!has, "an inventory is not a journaled report");
    let mut verifier = Verifier::new(
        ReceiverIdentity {
            me: Participant::Client,
            groups: vec![],
        },
        FrameLimits::default(),
    );
    let agent_pub = SigningKey::from_bytes(&k.agent).verifying_key();
    let keys = BTreeMap::from([(Participant::Device(dev), agent_pub)]);
    let msg = verifier.open(&bytes, &keys, T0).unwrap();
    assert!(matches!(&msg.payload, Payload::InventoryReport(r) if r.nonce == [3; 16]));
    let (mut f2, mut l2) = (ptr::null(), 7usize);
    assert_eq!(
        unsafe { esync_agent_next_frame(a, &mut f2, &mut l2, &mut id, &mut has) },
        esync_result::ESYNC_RESULT_NO_FRAME
    );
    assert_eq!(
        (f2, l2),
        (ptr::null(), 7),
        "nothing written when no frame waits"
    );
    unsafe { esync_agent_free(a) };
}

#[test]
fn a_power_loss_halts_the_agent_and_creating_it_again_recovers() {
    let k = keys();
    let mut h = host();
    let cb = callbacks(&mut h);
    let cfg = config(&k);
    // Power lost while recovering: creation halts, nothing written.
    h.power_loss = true;
    let (r, a) = new_agent(&cfg, &cb);
    assert_eq!((r, a), (esync_result::ESYNC_RESULT_HALTED, ptr::null_mut()));

    h.power_loss = false;
    let (r, a) = new_agent(&cfg, &cb);
    assert_eq!(r, esync_result::ESYNC_RESULT_OK);
    // An offer the Agent journals; the journal loses power.
    let dev = DevicePath::new(DEVICE).unwrap();
    let mut client = EnvelopeSigner::new(
        Participant::Client,
        k.client.clone(),
        1,
        FrameLimits::default(),
    );
    let meta = client
        .seal(
            Recipient::Device(dev.clone()),
            Id128([2; 16]),
            Payload::UpdateMetadata(UpdateMetadata {
                update_id: Id128([4; 16]),
                director: vec![],
                image: vec![],
            }),
            T0,
        )
        .unwrap();
    h.power_loss = true;
    let mut step = esync_step::default();
    let r = unsafe { esync_agent_receive(a, meta.as_ptr(), meta.len(), 1, T0, &mut step) };
    assert_eq!(r, esync_result::ESYNC_RESULT_HALTED);
    assert_eq!(
        unsafe { esync_agent_poll(a, 2, T0, &mut step) },
        esync_result::ESYNC_RESULT_HALTED,
        "a halted handle stays halted"
    );
    let mut b = [0u8; 256];
    let mut n = 0usize;
    assert_eq!(
        unsafe { esync_agent_last_error(a, b.as_mut_ptr(), b.len(), &mut n) },
        esync_result::ESYNC_RESULT_OK
    );
    assert!(
        String::from_utf8_lossy(&b[..n]).contains("power"),
        "{}",
        String::from_utf8_lossy(&b[..n])
    );
    unsafe { esync_agent_free(a) };

    // After the restart: created again from the journal.
    h.power_loss = false;
    let (r, a) = new_agent(&cfg, &cb);
    assert_eq!(r, esync_result::ESYNC_RESULT_OK);
    unsafe { esync_agent_free(a) };
}
