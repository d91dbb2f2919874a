//! The Client host written in C (`examples/c/client/client.c`) over the C
//! ABI's Client handle (feature `client`), driving the C Agent example
//! (`examples/c/agent/agent.c`) as its child process over a pipe bus: both
//! built here with `-std=c11 -Wall -Wextra -Werror -pedantic` against this
//! crate's static library and `include/esync.h`.
//!
//! The package is a signed Uptane delta update (the rig's `world()`): the
//! test hands the C Client host the `ReadyPackage` the Client's session
//! would produce (JSON) and the patch as its blob file; the Client core
//! orchestrates the Agent (metadata, offer, chunked transfer from the
//! host's blob reads, prepare, install on trial, confirm or roll back).
//!
//! - `c_client_installs_a_delta_update`: the report says committed; the
//!   Agent's slot B runs 2.0.0.
//! - `c_client_rolls_back_on_a_failed_self_test`: the Agent's self-test
//!   fails; the report says rolled back and slot A runs 1.0.0.
//! - `c_client_under_valgrind`: the success run with the C Client host
//!   under valgrind (no errors, no leaks; SKIPPED without valgrind).
//! - `java_client_installs_an_update_through_jni` (feature `jni`): the
//!   Java classes of `ffi/java` and `ffi/tests/java/ClientTest.java`,
//!   compiled with `javac` and run on the JVM against the cdylib, install
//!   the same package on the C Agent through `io.esync.Client`; a bad seed
//!   and a malformed package arrive as `io.esync.EsyncException` (SKIPPED
//!   without a JDK).
//! - `client_header_compiles_as_cxx17`: the header with `-DESYNC_CLIENT`
//!   under `g++ -std=c++17`, linked against the static library.
//! - `conventions`: the Client handle's C conventions from a Rust host.
#![cfg(feature = "client")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(unsafe_code, reason = "a C host written in Rust calls the C ABI")]

mod support;

use std::path::PathBuf;
use std::process::Command;

use ed25519_dalek::SigningKey;
use esync_agent::device::sha256;
use esync_client::core::plan::{BlobHandle, ForwardedMetadata, ReadyComponent, ReadyPackage};
use esync_proto::message::{ImageEncoding, PatchFormat};
use support::*;

/// The package the Client's session would hand over: the component's delta
/// from 1.0.0, its chunk hashes, the Director metadata to forward.
fn ready(w: &World) -> ReadyPackage {
    let c = &w.package.components()[0];
    let delta = c.deltas[0].clone();
    assert_eq!(delta.patch.length, w.patch.len() as u64);
    ReadyPackage {
        package: w.package.clone(),
        components: vec![ReadyComponent {
            device: c.device.clone(),
            target_name: w.target_name.clone(),
            encoding: ImageEncoding::Delta {
                format: PatchFormat::BsdiffZstd,
                from_version: v("1.0.0"),
                source_sha256: sha256(&w.old),
                patch_length: w.patch.len() as u64,
                patch_sha256: sha256(&w.patch),
            },
            artifact: delta.patch,
            chunk_hashes: chunk_hashes(&w.patch, w.chunk),
            blob: BlobHandle(1),
            metadata: ForwardedMetadata {
                director: w.director.files().top_level_roles(),
                image: vec![],
            },
        }],
    }
}

/// The two sides' files: the C Agent's directory (slot A runs 1.0.0) and
/// the Client host's (keys, package, blob); the built C Agent.
struct Setup {
    out: tempfile::TempDir,
    agent: PathBuf,
    agent_dir: tempfile::TempDir,
    client_dir: PathBuf,
    package_id: String,
}

fn setup() -> Setup {
    let out = tempfile::tempdir().unwrap();
    let agent = build_c_agent(out.path(), &[]);
    let w = world();
    let agent_dir = tempfile::tempdir().unwrap();
    let client_dir = out.path().join("client-state");
    std::fs::create_dir_all(&client_dir).unwrap();
    let agent_key = SigningKey::from_bytes(&[5; 32]);
    let client_key = SigningKey::from_bytes(&[6; 32]);
    provision(
        agent_dir.path(),
        &w,
        &agent_key,
        &client_key.verifying_key(),
    );
    std::fs::write(client_dir.join("client.key"), client_key.to_bytes()).unwrap();
    std::fs::write(
        client_dir.join("agent.pub"),
        agent_key.verifying_key().to_bytes(),
    )
    .unwrap();
    std::fs::write(
        client_dir.join("package.json"),
        serde_json::to_vec(&ready(&w)).unwrap(),
    )
    .unwrap();
    std::fs::write(client_dir.join("blob-1.bin"), &w.patch).unwrap();
    Setup {
        agent,
        agent_dir,
        client_dir,
        package_id: w.package.id().as_str().to_string(),
        out,
    }
}

impl Setup {
    /// The C Agent's command line.
    fn agent_args(&self, fail_self_test: bool) -> Vec<std::ffi::OsString> {
        let opts = RunOpts {
            fail_self_test,
            ..RunOpts::default()
        };
        AgentCmd::c(&self.agent, &[]).argv(self.agent_dir.path(), &opts)
    }
}

/// Runs the C Client host (under `wrapper`) over the C Agent; returns the
/// report (JSON), the Agent's directory and the host's exit status.
fn run(wrapper: &[&str], fail_self_test: bool) -> (serde_json::Value, tempfile::TempDir, i32) {
    let s = setup();
    let client = build_c(s.out.path(), "client", &["-DESYNC_CLIENT"]);
    let mut cmd = match wrapper.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(&client);
            c
        }
        None => Command::new(&client),
    };
    cmd.arg(&s.client_dir)
        .args([DEVICE, s.package_id.as_str(), "--"])
        .args(s.agent_args(fail_self_test));
    let status = cmd.status().unwrap().code().unwrap_or(-1);
    let report = std::fs::read(s.client_dir.join("report.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(serde_json::Value::Null);
    // The campaign journal was kept through the callbacks.
    assert!(s.client_dir.join("journal.bin").exists());
    (report, s.agent_dir, status)
}

fn outcome(report: &serde_json::Value) -> String {
    match &report["outcome"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        other => panic!("no outcome in {other}"),
    }
}

#[test]
fn c_client_installs_a_delta_update() {
    let (report, dir, status) = run(&[], false);
    assert_eq!(
        status, 0,
        "the C Client host's exit status; report {report}"
    );
    assert_eq!(outcome(&report), "Installed", "{report}");
    let (active, trial, version, sha) = boot_state(dir.path());
    assert_eq!((active, trial, version.as_str()), ('b', false, "2.0.0"));
    assert_eq!(sha, hex(&sha256(&world().new).0));
}

#[test]
fn c_client_rolls_back_on_a_failed_self_test() {
    let (report, dir, status) = run(&[], true);
    assert_eq!(
        status, 0,
        "the C Client host's exit status; report {report}"
    );
    assert_eq!(outcome(&report), "Failed", "{report}");
    assert_eq!(
        report["components"][0]["end"]["RolledBack"]["running"], "1.0.0",
        "{report}"
    );
    assert!(
        report["outcome"]["Failed"]["cause"]
            .as_str()
            .unwrap()
            .contains("injected self-test failure"),
        "{report}"
    );
    let (active, trial, version, _) = boot_state(dir.path());
    assert_eq!((active, trial, version.as_str()), ('a', false, "1.0.0"));
}

#[test]
fn c_client_under_valgrind() {
    if !have("valgrind") {
        skip("valgrind is not installed");
        return;
    }
    let (report, dir, status) = run(VALGRIND, false);
    assert_ne!(status, 97, "valgrind reported errors or leaks");
    assert_eq!(status, 0, "{report}");
    assert_eq!(outcome(&report), "Installed", "{report}");
    assert_eq!(boot_state(dir.path()).0, 'b');
}

#[cfg(feature = "jni")]
#[test]
fn java_client_installs_an_update_through_jni() {
    if !have_jdk() {
        skip("no JDK (javac and java)");
        return;
    }
    let s = setup();
    let classes = compile_java(s.out.path(), &["ClientTest.java"]);
    let so = cdylib();
    let o = Command::new("java")
        .arg("-Xcheck:jni")
        .arg("-cp")
        .arg(&classes)
        .arg("ClientTest")
        .arg(&so)
        .arg(&s.client_dir)
        .arg(DEVICE)
        .args(s.agent_args(false))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "java failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("JAVA CLIENT OK"), "{stdout}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !format!("{stdout}{stderr}").contains("WARNING in native method"),
        "-Xcheck:jni found a misuse of JNI:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches("exception as expected").count(),
        2,
        "{stdout}"
    );
    let (active, trial, version, _) = boot_state(s.agent_dir.path());
    assert_eq!((active, trial, version.as_str()), ('b', false, "2.0.0"));
}

#[test]
fn client_header_compiles_as_cxx17() {
    header_compiles_as_cxx17(&["-DESYNC_CLIENT"], "esync_client_free");
}

mod conventions {
    //! The Client handle's conventions from a Rust host: NULL and malformed
    //! arguments refused with outputs untouched, `_free(NULL)`, a refused
    //! package sends nothing, a refused frame changes nothing.
    use std::ffi::c_void;
    use std::ptr;

    use esync_ffi::client::*;
    use esync_ffi::esync_result as R;
    use esync_ffi::host::{esync_host_status, ESYNC_HOST_BUFFER_TOO_SMALL, ESYNC_HOST_OK};

    use super::*;

    unsafe extern "C" fn load(
        ud: *mut c_void,
        buf: *mut u8,
        cap: usize,
        len: *mut usize,
        present: *mut bool,
    ) -> esync_host_status {
        let j = unsafe { &*(ud as *const Option<Vec<u8>>) };
        match j {
            None => unsafe { present.write(false) },
            Some(r) if r.len() > cap => {
                unsafe { len.write(r.len()) };
                return ESYNC_HOST_BUFFER_TOO_SMALL;
            }
            Some(r) => unsafe {
                ptr::copy_nonoverlapping(r.as_ptr(), buf, r.len());
                len.write(r.len());
                present.write(true);
            },
        }
        ESYNC_HOST_OK
    }

    unsafe extern "C" fn store(ud: *mut c_void, rec: *const u8, len: usize) -> esync_host_status {
        unsafe {
            *(ud as *mut Option<Vec<u8>>) = Some(std::slice::from_raw_parts(rec, len).to_vec())
        };
        ESYNC_HOST_OK
    }

    fn last_error(c: *mut esync_client) -> String {
        let mut b = [0u8; 512];
        let mut n = 0;
        assert_eq!(
            unsafe { esync_client_last_error(c, b.as_mut_ptr(), b.len(), &mut n) },
            R::ESYNC_RESULT_OK
        );
        String::from_utf8(b[..n].to_vec()).unwrap()
    }

    #[test]
    fn client_handle_follows_the_conventions() {
        unsafe { esync_client_free(ptr::null_mut()) };
        let mut journal: Option<Vec<u8>> = None;
        let seed = [6u8; 32];
        let agent_pub = SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes();
        let agent = esync_client_agent {
            device_path: DEVICE.as_ptr(),
            device_path_len: DEVICE.len(),
            key: agent_pub.as_ptr(),
            key_len: 32,
        };
        let mut config = esync_client_config {
            client_key: seed.as_ptr(),
            client_key_len: 31,
            envelope_sequence: 1,
            agents: &agent,
            agents_len: 1,
            answer_timeout_ms: 0,
            install_timeout_ms: 0,
            max_resends: 0,
            window: 0,
            precondition_wait_ms: 0,
        };
        let mut cbs = esync_client_callbacks {
            userdata: (&mut journal as *mut Option<Vec<u8>>).cast(),
            journal_load: None,
            journal_store: Some(store),
            log: None,
        };
        let sentinel = 0x5a5a as *mut esync_client;
        let mut c = sentinel;
        let mut step = esync_client_step {
            frames: 77,
            ..Default::default()
        };
        let new = |config: &esync_client_config,
                   cbs: &esync_client_callbacks,
                   c: &mut *mut esync_client,
                   step: &mut esync_client_step| unsafe {
            esync_client_new(config, cbs, 1, now_ms(), c, step)
        };
        assert_eq!(
            unsafe { esync_client_new(ptr::null(), &cbs, 1, 1, &mut c, &mut step) },
            R::ESYNC_RESULT_NULL_ARGUMENT
        );
        assert_eq!(
            new(&config, &cbs, &mut c, &mut step),
            R::ESYNC_RESULT_INVALID_CONFIG,
            "journal_load missing"
        );
        cbs.journal_load = Some(load);
        assert_eq!(
            new(&config, &cbs, &mut c, &mut step),
            R::ESYNC_RESULT_INVALID_ARGUMENT,
            "a 31-byte seed"
        );
        assert_eq!((c, step.frames), (sentinel, 77), "outputs untouched");
        config.client_key_len = 32;
        assert_eq!(new(&config, &cbs, &mut c, &mut step), R::ESYNC_RESULT_OK);
        assert_ne!(c, sentinel);
        assert_eq!((step.frames, step.needs, step.reports), (0, 0, 0));

        // A package that does not decode, and one for a device not in the
        // inventory: refused, nothing sent, the step untouched.
        let mut s2 = esync_client_step {
            frames: 99,
            ..Default::default()
        };
        let bad = b"{\"package\": 1}";
        assert_eq!(
            unsafe { esync_client_start(c, bad.as_ptr(), bad.len(), 2, now_ms(), &mut s2) },
            R::ESYNC_RESULT_REFUSED
        );
        assert!(
            last_error(c).contains("does not decode"),
            "{}",
            last_error(c)
        );
        let pkg = serde_json::to_vec(&ready(&world())).unwrap();
        assert_eq!(
            unsafe { esync_client_start(c, pkg.as_ptr(), pkg.len(), 2, now_ms(), &mut s2) },
            R::ESYNC_RESULT_REFUSED
        );
        assert!(
            last_error(c).contains("not a device of this vehicle"),
            "{}",
            last_error(c)
        );
        assert_eq!(s2.frames, 99, "outputs untouched");
        let (mut to, mut to_len, mut f, mut f_len) = (ptr::null(), 0, ptr::null(), 0);
        assert_eq!(
            unsafe { esync_client_next_frame(c, &mut to, &mut to_len, &mut f, &mut f_len) },
            R::ESYNC_RESULT_NO_FRAME
        );
        assert!(to.is_null() && f.is_null());

        // A forged frame is refused by envelope verification; nothing changes.
        let junk = [0u8; 64];
        assert_eq!(
            unsafe { esync_client_receive(c, junk.as_ptr(), junk.len(), 3, now_ms(), &mut s2) },
            R::ESYNC_RESULT_OK
        );
        assert_eq!((s2.input, s2.frames), (3, 0), "ESYNC_INPUT_REFUSED");

        // NULL where a pointer is required.
        assert_eq!(
            unsafe { esync_client_next_need(c, ptr::null_mut()) },
            R::ESYNC_RESULT_NULL_ARGUMENT
        );
        assert_eq!(
            unsafe { esync_client_receive(c, ptr::null(), 5, 3, now_ms(), &mut s2) },
            R::ESYNC_RESULT_NULL_ARGUMENT
        );
        assert_eq!(
            unsafe { esync_client_poll(ptr::null_mut(), 3, now_ms(), &mut s2) },
            R::ESYNC_RESULT_NULL_ARGUMENT
        );
        // A device path that is not one.
        assert_eq!(
            unsafe { esync_client_presence(c, b"no slash".as_ptr(), 8, true) },
            R::ESYNC_RESULT_INVALID_ARGUMENT
        );
        unsafe { esync_client_free(c) };
    }
}
