//! The ECU Agent written in C (`examples/c/agent/agent.c`) over the C ABI,
//! built here with the system C compiler against this crate's static
//! library and `include/esync.h`, run as a child process whose stdin and
//! stdout are its bus (host transport: length-prefixed raw frames). This
//! test plays the Client: it signs the commands of one delta update with
//! the Client's key (Uptane Director metadata made by the signing side,
//! verified by the Agent against its pinned root), verifies every frame the
//! Agent answers, and checks the C host's A/B flash files afterwards.
//!
//! - `c_agent_completes_a_delta_update`: metadata, offer, transfer, prepare
//!   (the delta reconstructed by the built-in applier), install on trial,
//!   confirm; slot B then runs version 2.0.0, committed.
//! - `c_agent_rolls_back_on_a_failed_self_test`: the same with the C
//!   host's self-test failing: the Agent reports the failure and slot A
//!   runs 1.0.0 again.
//! - `c_agent_resumes_after_a_power_cut_mid_transfer`: the C Agent is
//!   killed after 3 chunks and started again on its files; it recovers from
//!   the journal it stored through its callbacks, asks for chunk 3, and the
//!   update completes.
//! - `c_agent_rolls_back_when_the_confirm_deadline_passes`: no confirm
//!   comes; the C host polls at the deadline the Agent gave it, and the
//!   Agent rolls back by itself.
//! - `c_agent_under_valgrind` and `c_agent_with_sanitizers`: the success
//!   run under valgrind (no errors, no leaks) and built with
//!   `-fsanitize=address,undefined`; each prints SKIPPED when its tool is
//!   absent.
//! - `pkg_config_file_links_the_shared_library`: `ffi/esync.pc.in` installed
//!   under a prefix gives the flags that build the C Agent against
//!   `libesync_ffi.so`, which then completes the update.
//! - `header_compiles_as_cxx17`: the header with `g++ -std=c++17`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

use std::process::Command;
use std::time::Duration;

use esync_agent::device::sha256;
use esync_proto::message::*;
use support::*;

#[test]
fn c_agent_completes_a_delta_update() {
    let out = tempfile::tempdir().unwrap();
    let exe = build_c_agent(out.path(), &[]);
    let (dir, outcome, status) =
        run_update(&AgentCmd::c(&exe, &[]), false, Duration::from_secs(60));
    assert_updated(dir.path(), &outcome, status);
    let new = std::fs::read(dir.path().join("slot_b.bin")).unwrap();
    assert_eq!(
        sha256(&new),
        sha256(&world().new),
        "slot B holds the new image"
    );
}

#[test]
fn c_agent_rolls_back_on_a_failed_self_test() {
    let out = tempfile::tempdir().unwrap();
    let exe = build_c_agent(out.path(), &[]);
    let (dir, outcome, status) = run_update(&AgentCmd::c(&exe, &[]), true, Duration::from_secs(60));
    assert_rolled_back_on_self_test(dir.path(), &outcome, status);
}

#[test]
fn c_agent_resumes_after_a_power_cut_mid_transfer() {
    let out = tempfile::tempdir().unwrap();
    let exe = build_c_agent(out.path(), &[]);
    let w = world();
    assert!(
        w.patch.len() > 3 * CHUNK as usize,
        "the patch spans more than 3 chunks"
    );
    let opts = RunOpts {
        crash_after_chunks: Some(3),
        ..RunOpts::default()
    };
    let (dir, outcome, status) =
        run_update_of(&w, &AgentCmd::c(&exe, &[]), &opts, Duration::from_secs(60));
    assert_updated(dir.path(), &outcome, status);
    let new = std::fs::read(dir.path().join("slot_b.bin")).unwrap();
    assert_eq!(sha256(&new), sha256(&w.new));
}

#[test]
fn c_agent_rolls_back_when_the_confirm_deadline_passes() {
    let out = tempfile::tempdir().unwrap();
    let exe = build_c_agent(out.path(), &[]);
    let opts = RunOpts {
        confirm_timeout_ms: Some(300),
        withhold_confirm: true,
        ..RunOpts::default()
    };
    let (dir, outcome, status) = run_update_of(
        &world(),
        &AgentCmd::c(&exe, &[]),
        &opts,
        Duration::from_secs(60),
    );
    assert_rolled_back_at_the_deadline(dir.path(), &outcome, status);
}

#[test]
fn c_agent_under_valgrind() {
    if !have("valgrind") {
        skip("valgrind is not installed");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let exe = build_c_agent(out.path(), &[]);
    let (dir, outcome, status) = run_update(
        &AgentCmd::c(&exe, VALGRIND),
        false,
        Duration::from_secs(300),
    );
    assert_ne!(status, 97, "valgrind reported errors or leaks");
    assert_updated(dir.path(), &outcome, status);
}

#[test]
fn c_agent_with_sanitizers() {
    let out = tempfile::tempdir().unwrap();
    // Probe: a toolchain without the sanitizer runtimes cannot link this.
    let probe = out.path().join("probe.c");
    std::fs::write(&probe, "int main(void) { return 0; }\n").unwrap();
    let ok = Command::new("cc")
        .args(["-fsanitize=address,undefined"])
        .arg(&probe)
        .arg("-o")
        .arg(out.path().join("probe"))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("the C compiler cannot link -fsanitize=address,undefined");
        return;
    }
    let exe = build_c_agent(
        out.path(),
        &[
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ],
    );
    let (dir, outcome, status) =
        run_update(&AgentCmd::c(&exe, &[]), true, Duration::from_secs(120));
    assert!(
        matches!(outcome, InstallOutcome::Failed { .. }),
        "{outcome:?}"
    );
    assert_eq!(status, 0, "the sanitized C Agent's exit status");
    assert_eq!(boot_state(dir.path()).0, 'a');
}

#[test]
fn pkg_config_file_links_the_shared_library() {
    if !have("pkg-config") {
        skip("pkg-config is not installed");
        return;
    }
    // An installation prefix as ffi/esync.pc.in describes it.
    let prefix = tempfile::tempdir().unwrap();
    let (lib, inc, pc) = (
        prefix.path().join("lib"),
        prefix.path().join("include"),
        prefix.path().join("lib/pkgconfig"),
    );
    for d in [&lib, &inc, &pc] {
        std::fs::create_dir_all(d).unwrap();
    }
    let built = staticlib();
    let so = built.with_file_name("libesync_ffi.so");
    std::fs::copy(&so, lib.join("libesync_ffi.so")).unwrap();
    std::fs::copy(repo().join("include/esync.h"), inc.join("esync.h")).unwrap();
    let template = std::fs::read_to_string(repo().join("ffi/esync.pc.in")).unwrap();
    std::fs::write(
        pc.join("esync.pc"),
        template.replace("@PREFIX@", prefix.path().to_str().unwrap()),
    )
    .unwrap();
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "esync"])
        .env("PKG_CONFIG_PATH", &pc)
        .output()
        .unwrap();
    assert!(
        flags.status.success(),
        "{}",
        String::from_utf8_lossy(&flags.stderr)
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    let exe = prefix.path().join("agent");
    let o = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(repo().join("examples/c/agent/agent.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cc {flags}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The dynamically linked C Agent completes the update too.
    let (dir, outcome, status) = run_update(
        &AgentCmd::c(
            &exe,
            &["env", &format!("LD_LIBRARY_PATH={}", lib.display())],
        ),
        false,
        Duration::from_secs(60),
    );
    assert_updated(dir.path(), &outcome, status);
}

#[test]
fn header_compiles_as_cxx17() {
    support::header_compiles_as_cxx17(&[], "esync_agent_free");
}
