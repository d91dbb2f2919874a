//! The Java Agent (`io.esync.Agent` over the C ABI's Agent handle through
//! JNI, feature `jni`): `ffi/tests/java/AgentTest.java`, an A/B ECU Agent
//! whose `io.esync.AgentHost` keeps its flash on files as the C Agent
//! example does (signals meeting the install precondition, a consent that
//! checks the offer), compiled with `javac` with the classes of `ffi/java` and
//! run on the JVM against `libesync_ffi.so`. The rig that plays the Client
//! to the C Agent (`support`) plays it to the Java Agent over the same
//! pipe bus and checks the same files.
//!
//! - `java_agent_completes_a_delta_update`: metadata verified against the
//!   pinned Director root, offer, chunked transfer into the Java host's
//!   staging file, the delta reconstructed by the built-in applier, install
//!   on trial, confirm; slot B then runs 2.0.0, committed.
//! - `java_agent_rolls_back_on_a_failed_self_test`: the Java host's
//!   self-test fails; the Agent reports it and slot A runs 1.0.0 again.
//! - `java_agent_resumes_after_a_power_cut_mid_transfer`: the JVM is
//!   killed after 3 chunks and started again on its files; the Agent
//!   recovers from the journal its Java host stored, asks for chunk 3, and
//!   the update completes.
//! - `java_agent_rolls_back_when_the_confirm_deadline_passes`: no confirm
//!   comes; the Java host polls at the deadline, the Agent rolls back.
//! - `java_agent_failures_are_exceptions`: `AgentTest --errors`: a Rust
//!   error arrives as `EsyncException` with its result number (a 5-byte
//!   seed: 2, naming `agent_key`), a Java callback that throws inside the
//!   Rust call comes back as the exception's cause (a trust store that
//!   throws: 8), a status the host reports is the Agent's (a power loss
//!   while loading the journal: 6, halted), a `TrustLoader` kept past its
//!   callback and a closed Agent are refused; with feature `panic-probe`
//!   (as `--all-features` builds it), a panic in a JNI method and one in a
//!   C ABI entry point (9) arrive as exceptions too; then an Agent is
//!   created and polled on the same JVM.
//!
//! The JVM runs with `-Xcheck:jni` (a misuse of JNI is reported; the errors
//! run fails on any report). Each prints SKIPPED without a JDK (a failure in
//! CI).
#![cfg(feature = "jni")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use esync_agent::device::sha256;
use support::*;

/// The compiled classes (once for all the tests of this binary).
fn classes() -> PathBuf {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            // Beside the library, one directory per test binary.
            let out = staticlib().with_file_name("java_agent-test");
            let _ = std::fs::remove_dir_all(&out);
            compile_java(&out, &["AgentTest.java", "io/esync/PanicProbe.java"])
        })
        .clone()
}

/// `java -cp CLASSES AgentTest LIB`: the Java Agent's command line.
fn java_agent() -> AgentCmd {
    AgentCmd(vec![
        "java".into(),
        "-Xcheck:jni".into(),
        "-cp".into(),
        classes().into(),
        "AgentTest".into(),
        cdylib().into(),
    ])
}

#[test]
fn java_agent_completes_a_delta_update() {
    if !have_jdk() {
        skip("no JDK (javac and java)");
        return;
    }
    let (dir, outcome, status) = run_update(&java_agent(), false, Duration::from_secs(60));
    assert_updated(dir.path(), &outcome, status);
    let new = std::fs::read(dir.path().join("slot_b.bin")).unwrap();
    assert_eq!(
        sha256(&new),
        sha256(&world().new),
        "slot B holds the new image"
    );
}

#[test]
fn java_agent_rolls_back_on_a_failed_self_test() {
    if !have_jdk() {
        skip("no JDK (javac and java)");
        return;
    }
    let (dir, outcome, status) = run_update(&java_agent(), true, Duration::from_secs(60));
    assert_rolled_back_on_self_test(dir.path(), &outcome, status);
}

#[test]
fn java_agent_resumes_after_a_power_cut_mid_transfer() {
    if !have_jdk() {
        skip("no JDK (javac and java)");
        return;
    }
    let opts = RunOpts {
        crash_after_chunks: Some(3),
        ..RunOpts::default()
    };
    let w = world();
    let (dir, outcome, status) = run_update_of(&w, &java_agent(), &opts, Duration::from_secs(60));
    assert_updated(dir.path(), &outcome, status);
    let new = std::fs::read(dir.path().join("slot_b.bin")).unwrap();
    assert_eq!(sha256(&new), sha256(&w.new));
}

#[test]
fn java_agent_rolls_back_when_the_confirm_deadline_passes() {
    if !have_jdk() {
        skip("no JDK (javac and java)");
        return;
    }
    let opts = RunOpts {
        confirm_timeout_ms: Some(300),
        withhold_confirm: true,
        ..RunOpts::default()
    };
    let (dir, outcome, status) =
        run_update_of(&world(), &java_agent(), &opts, Duration::from_secs(60));
    assert_rolled_back_at_the_deadline(dir.path(), &outcome, status);
}

#[test]
fn java_agent_failures_are_exceptions() {
    if !have_jdk() {
        skip("no JDK (javac and java)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client_key = SigningKey::from_bytes(&[6; 32]);
    provision(
        dir.path(),
        &world(),
        &SigningKey::from_bytes(&[5; 32]),
        &client_key.verifying_key(),
    );
    let mut cmd = Command::new("java");
    cmd.arg("-Xcheck:jni")
        .arg("-cp")
        .arg(classes())
        .args(["AgentTest", "--errors"])
        .arg(cdylib())
        .arg(dir.path())
        .args([VIN, DEVICE, HW, SERIAL]);
    let probe = cfg!(feature = "panic-probe");
    if probe {
        cmd.arg("--panic-probe");
    }
    let o = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "java failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stdout.contains("WARNING in native method")
            && !stderr.contains("WARNING in native method"),
        "-Xcheck:jni found a misuse of JNI:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ERRORS OK"), "{stdout}");
    assert_eq!(
        stdout.matches("exception as expected").count(),
        if probe { 7 } else { 5 },
        "{stdout}"
    );
}
