//! The rig of the tests and benches of the C ABI (`c_agent.rs`,
//! `c_client.rs`, `java_agent.rs`, `benches/c_agent_heap.rs`): building the
//! C examples against the static library, a signed Uptane delta update, the
//! Client's end of an Agent's bus (the C Agent's, or the Java Agent's: both
//! take the same command line and keep the same files), the header's C++17
//! check, and the tools a test needs (valgrind, a JDK).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test rig"
)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use esync_agent::device::sha256;
use esync_package::build::{ComponentInput, PackageBuilder};
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_package::package::{ArtifactRef, ComponentPolicy, PackageId, TargetDescription};
use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{
    DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, Sha256Digest, SoftwareVersion, Vin,
};
use esync_proto::message::*;
use esync_uptane::builder::RepositoryBuilder;
use esync_uptane::uptane::director_custom;
use esync_uptane::UnixTime;

pub const VIN: &str = "WVWZZZ1JZXW000001";
pub const DEVICE: &str = "/powertrain/ecm";
pub const HW: &str = "ecm-hw-1";
pub const SERIAL: &str = "ECM0001";
/// Transfer chunk size of the tests.
pub const CHUNK: u32 = 1024;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo put this crate's static library (next to `deps/`).
pub fn staticlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let lib = dir.join("libesync_ffi.a");
    assert!(lib.exists(), "{} not built", lib.display());
    lib
}

/// The system libraries the static library needs: `Libs.private` of the
/// pkg-config file (one list for C builds and this test).
pub fn native_libs() -> Vec<String> {
    let pc = std::fs::read_to_string(repo().join("ffi/esync.pc.in")).unwrap();
    let line = pc
        .lines()
        .find_map(|l| l.strip_prefix("Libs.private:"))
        .unwrap();
    line.split_whitespace().map(str::to_string).collect()
}

pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tool is absent: "SKIPPED: ..." (a failure in CI, `CI=true`, where
/// every tool must be there).
pub fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why} (CI=true: not skipped)"
    );
    println!("SKIPPED: {why}");
}

/// `javac` and `java` are installed.
pub fn have_jdk() -> bool {
    have("javac")
        && Command::new("java")
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Compiles the Java classes of `ffi/java` and the test sources `tests`
/// (paths below `ffi/tests/java`) with `javac -Xlint:all -Werror` into
/// `out/classes`; returns that directory.
pub fn compile_java(out: &Path, tests: &[&str]) -> PathBuf {
    let classes = out.join("classes");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(repo().join("ffi/java/io/esync"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "java"))
        .collect();
    sources.extend(tests.iter().map(|t| repo().join("ffi/tests/java").join(t)));
    let o = Command::new("javac")
        .args(["-Xlint:all", "-Werror", "-d"])
        .arg(&classes)
        .args(&sources)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "javac failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    classes
}

/// The shared library (`libesync_ffi.so`) beside the static one.
pub fn cdylib() -> PathBuf {
    staticlib().with_file_name("libesync_ffi.so")
}

/// valgrind as a wrapper: exit status 97 on any error or leak.
pub const VALGRIND: &[&str] = &[
    "valgrind",
    "--error-exitcode=97",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect,possible",
    "-q",
];

/// Compiles the C example `examples/c/{name}/{name}.c` to `out/{name}` with
/// the flags the issue sets (and `extra`), against the static library.
pub fn build_c(out: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let exe = out.join(name);
    let o = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .args(extra)
        .arg("-I")
        .arg(repo().join("include"))
        .arg(repo().join(format!("examples/c/{name}/{name}.c")))
        .arg(staticlib())
        .args(native_libs())
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    exe
}

/// Compiles the C Agent with the flags the issue sets (and `extra`).
pub fn build_c_agent(out: &Path, extra: &[&str]) -> PathBuf {
    build_c(out, "agent", extra)
}

/// `include/esync.h` (with `defines`) compiles under `g++ -std=c++17` and
/// links against the static library in a program that calls `free_fn(nullptr)`.
pub fn header_compiles_as_cxx17(defines: &[&str], free_fn: &str) {
    if !have("g++") {
        skip("g++ is not installed");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let src = out.path().join("h.cpp");
    std::fs::write(
        &src,
        format!(
            "#include \"esync.h\"\nint main() {{ {free_fn}(nullptr); return ESYNC_RESULT_OK; }}\n"
        ),
    )
    .unwrap();
    let o = Command::new("g++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(defines)
        .arg("-I")
        .arg(repo().join("include"))
        .arg(&src)
        .arg(staticlib())
        .args(native_libs())
        .arg("-o")
        .arg(out.path().join("h"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "g++ failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(Command::new(out.path().join("h"))
        .status()
        .unwrap()
        .success());
}

/// An Agent's command line before its arguments (`DIR VIN DEVICE_PATH
/// HARDWARE_ID SERIAL [--fail-self-test] [--confirm-timeout-ms N]`, as
/// `examples/c/agent/agent.c` and `ffi/tests/java/AgentTest.java` take
/// them): the program and its leading arguments.
#[derive(Clone, Debug)]
pub struct AgentCmd(pub Vec<OsString>);

impl AgentCmd {
    /// The C Agent `exe`, under `wrapper` (e.g. [`VALGRIND`]; may be empty).
    pub fn c(exe: &Path, wrapper: &[&str]) -> AgentCmd {
        let mut v: Vec<OsString> = wrapper.iter().map(Into::into).collect();
        v.push(exe.into());
        AgentCmd(v)
    }

    /// The whole command line for the files in `dir`.
    pub fn argv(&self, dir: &Path, opts: &RunOpts) -> Vec<OsString> {
        let mut a = self.0.clone();
        a.push(dir.into());
        a.extend([VIN, DEVICE, HW, SERIAL].map(Into::into));
        if opts.fail_self_test {
            a.push("--fail-self-test".into());
        }
        if let Some(t) = opts.confirm_timeout_ms {
            a.push("--confirm-timeout-ms".into());
            a.push(t.to_string().into());
        }
        a
    }

    fn command(&self, dir: &Path, opts: &RunOpts) -> Command {
        let argv = self.argv(dir, opts);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }
}

pub fn v(s: &str) -> SoftwareVersion {
    SoftwareVersion::new(s).unwrap()
}

pub fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn chunk_hashes(bytes: &[u8], chunk: u32) -> Vec<Sha256Digest> {
    bytes.chunks(chunk as usize).map(sha256).collect()
}

/// One signed delta update from 1.0.0 to 2.0.0 for the ECU.
pub struct World {
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub patch: Vec<u8>,
    pub director: RepositoryBuilder,
    pub target_name: String,
    pub chunk: u32,
    /// The package the update belongs to (its component carries the delta).
    pub package: esync_package::package::Package,
}

pub fn world() -> World {
    world_sized(40_000, CHUNK)
}

/// An update of an image of `len` bytes (a few KiB changed, 700 bytes
/// added), sent in chunks of `chunk` bytes.
pub fn world_sized(len: usize, chunk: u32) -> World {
    let old = image(21, len);
    let mut new = old.clone();
    new[4000..4400].copy_from_slice(&image(22, 400));
    let mid = len / 2;
    new[mid..mid + 3000].copy_from_slice(&image(24, 3000));
    new.extend_from_slice(&image(23, 700));
    let patch = generate_patch(&old, &new, &GenerateOptions::new(PatchFormat::BsdiffZstd)).unwrap();
    let built = PackageBuilder::new(PackageId::new("pkg-1").unwrap())
        .chunk_size(chunk)
        .component_from_image(
            ComponentInput {
                device: DevicePath::new(DEVICE).unwrap(),
                hardware_id: HardwareId::new(HW).unwrap(),
                version: v("2.0.0"),
                release_counter: ReleaseCounter(2),
                image: new.clone(),
                depends_on: vec![],
                stage: 0,
                policy: ComponentPolicy::default(),
            },
            vec![(
                PatchFormat::BsdiffZstd,
                v("1.0.0"),
                old.as_slice(),
                patch.clone(),
            )],
        )
        .unwrap()
        .build()
        .unwrap();
    let full = built
        .package
        .target_entries()
        .into_iter()
        .find(|e| {
            TargetDescription::from_custom_json(&e.custom, None)
                .unwrap()
                .artifact
                == ArtifactRef::Full
        })
        .unwrap();
    let expires = UnixTime((now_ms() / 1000) as i64 + 86_400);
    let mut director = RepositoryBuilder::generate(expires).unwrap();
    let custom = director_custom(
        &Vin::new(VIN).unwrap(),
        &EcuSerial::new(SERIAL).unwrap(),
        &HardwareId::new(HW).unwrap(),
        ReleaseCounter(2),
        Some(full.custom.clone()),
    );
    director.add_target(&full.name, &new, Some(custom)).unwrap();
    director.publish().unwrap();
    World {
        old,
        new,
        patch,
        director,
        target_name: full.name,
        chunk,
        package: built.package,
    }
}

/// The C host's files: slot A runs 1.0.0, keys, the pinned Director root.
pub fn provision(dir: &Path, w: &World, agent_key: &SigningKey, client_key: &VerifyingKey) {
    std::fs::write(dir.join("slot_a.bin"), &w.old).unwrap();
    std::fs::write(
        dir.join("boot.ctl"),
        format!(
            "active a\ntrial 0\nslot a 1.0.0 1 {} {}\nslot b -\n",
            w.old.len(),
            hex(&sha256(&w.old).0)
        ),
    )
    .unwrap();
    std::fs::write(dir.join("agent.key"), agent_key.to_bytes()).unwrap();
    std::fs::write(dir.join("client.pub"), client_key.to_bytes()).unwrap();
    std::fs::write(
        dir.join("director_root.json"),
        w.director.root_bytes(1).unwrap(),
    )
    .unwrap();
}

/// The Client's end of the C Agent's bus.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Vec<u8>>,
    signer: EnvelopeSigner,
    verifier: Verifier,
    agent_keys: BTreeMap<Participant, VerifyingKey>,
    seen: Vec<Payload>,
    timeout: Duration,
    corr: u8,
}

impl Peer {
    fn spawn(
        cmd: &mut Command,
        agent_key: &SigningKey,
        client_key: SigningKey,
        timeout: Duration,
    ) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || loop {
            let mut hdr = [0u8; 4];
            if out.read_exact(&mut hdr).is_err() {
                return;
            }
            let len = u32::from_be_bytes(hdr) as usize;
            assert!(len <= 4 << 20, "frame of {len} bytes");
            let mut buf = vec![0u8; len];
            if out.read_exact(&mut buf).is_err() || tx.send(buf).is_err() {
                return;
            }
        });
        let dev = Participant::Device(DevicePath::new(DEVICE).unwrap());
        Peer {
            stdin: child.stdin.take(),
            child,
            frames: rx,
            signer: EnvelopeSigner::new(Participant::Client, client_key, 1, FrameLimits::default()),
            verifier: Verifier::new(
                ReceiverIdentity {
                    me: Participant::Client,
                    groups: vec![],
                },
                FrameLimits::default(),
            ),
            agent_keys: BTreeMap::from([(dev, agent_key.verifying_key())]),
            seen: Vec::new(),
            timeout,
            corr: 0,
        }
    }

    fn send(&mut self, p: Payload) {
        self.corr = self.corr.wrapping_add(1);
        let frame = self
            .signer
            .seal(
                Recipient::Device(DevicePath::new(DEVICE).unwrap()),
                Id128([self.corr; 16]),
                p,
                now_ms(),
            )
            .unwrap();
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(&(frame.len() as u32).to_be_bytes())
            .unwrap();
        stdin.write_all(&frame).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the first answer that `f` picks, verifying every frame
    /// end to end (signature, sender, recipient, replay).
    fn expect<T>(&mut self, what: &str, f: impl Fn(&Payload) -> Option<T>) -> T {
        loop {
            let frame = match self.frames.recv_timeout(self.timeout) {
                Ok(f) => f,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {:?}; seen {:?}", self.timeout, self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the C Agent exited before {what}; seen {:?}", self.seen)
                }
            };
            let msg = self
                .verifier
                .open(&frame, &self.agent_keys, now_ms())
                .unwrap();
            assert_eq!(
                msg.header.sender,
                Participant::Device(DevicePath::new(DEVICE).unwrap())
            );
            let found = f(&msg.payload);
            self.seen.push(msg.payload);
            if let Some(t) = found {
                return t;
            }
        }
    }

    /// Kills the C Agent at once (a power cut) and reaps it.
    pub fn kill(mut self) {
        drop(self.stdin.take());
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Closes the bus and waits for the C Agent's exit status.
    fn finish(mut self) -> i32 {
        drop(self.stdin.take());
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

/// What the C host's boot control says: (active slot, on trial, version
/// and sha256 of the active slot's image).
pub fn boot_state(dir: &Path) -> (char, bool, String, String) {
    let ctl = std::fs::read_to_string(dir.join("boot.ctl")).unwrap();
    let mut active = '?';
    let mut trial = true;
    let mut slots = BTreeMap::new();
    for line in ctl.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["active", s] => active = s.chars().next().unwrap(),
            ["trial", t] => trial = *t != "0",
            ["slot", s, version, _rc, _len, sha] => {
                slots.insert(
                    s.chars().next().unwrap(),
                    (version.to_string(), sha.to_string()),
                );
            }
            _ => {}
        }
    }
    let (version, sha) = slots.get(&active).cloned().unwrap_or_default();
    (active, trial, version, sha)
}

/// Runs one update against the Agent `agent`; returns the install outcome
/// and the Agent's exit status.
pub fn run_update(
    agent: &AgentCmd,
    fail_self_test: bool,
    timeout: Duration,
) -> (tempfile::TempDir, InstallOutcome, i32) {
    let opts = RunOpts {
        fail_self_test,
        ..RunOpts::default()
    };
    run_update_of(&world(), agent, &opts, timeout)
}

/// How [`run_update_of`] runs.
#[derive(Clone, Debug, Default)]
pub struct RunOpts {
    /// The C host's self-test of a trial image fails.
    pub fail_self_test: bool,
    /// Kill the C Agent (a power cut) once it handled this many chunks,
    /// start it again, and resume.
    pub crash_after_chunks: Option<u32>,
    /// The Agent's confirm timeout (`--confirm-timeout-ms`).
    pub confirm_timeout_ms: Option<u64>,
    /// Never confirm: wait for the Agent's own rollback instead (returns
    /// the final report's outcome).
    pub withhold_confirm: bool,
}

/// [`run_update`] of the update `w`. With `crash_after_chunks = Some(k)`
/// the C Agent is killed (SIGKILL: a power cut) once it handled `k` chunks,
/// started again on the same files, and the transfer resumes where its
/// journal and staging say (checked: the Agent asks for chunk `k`).
pub fn run_update_of(
    w: &World,
    agent: &AgentCmd,
    opts: &RunOpts,
    timeout: Duration,
) -> (tempfile::TempDir, InstallOutcome, i32) {
    let crash_after_chunks = opts.crash_after_chunks;
    let dir = tempfile::tempdir().unwrap();
    let agent_key = SigningKey::from_bytes(&[5; 32]);
    let client_key = SigningKey::from_bytes(&[6; 32]);
    provision(dir.path(), w, &agent_key, &client_key.verifying_key());

    let mut cmd = agent.command(dir.path(), opts);
    let mut peer = Peer::spawn(&mut cmd, &agent_key, client_key.clone(), timeout);

    let update_id = Id128([0x42; 16]);
    let transfer_id = Id128([0x43; 16]);
    peer.send(Payload::InventoryQuery(InventoryQuery { nonce: [7; 16] }));
    let running = peer.expect("an inventory", |p| match p {
        Payload::InventoryReport(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(running.nonce, [7; 16]);

    peer.send(Payload::UpdateMetadata(UpdateMetadata {
        update_id,
        director: w.director.files().top_level_roles(),
        image: vec![],
    }));
    let encoding = ImageEncoding::Delta {
        format: PatchFormat::BsdiffZstd,
        from_version: v("1.0.0"),
        source_sha256: sha256(&w.old),
        patch_length: w.patch.len() as u64,
        patch_sha256: sha256(&w.patch),
    };
    peer.send(Payload::DownloadOffer(DownloadOffer {
        update_id,
        target_name: w.target_name.clone(),
        version: v("2.0.0"),
        release_counter: ReleaseCounter(2),
        length: w.new.len() as u64,
        sha256: sha256(&w.new),
        encoding,
        consent_required: false,
    }));
    let decision = peer.expect("a download decision", |p| match p {
        Payload::DownloadDecision(d) => Some(d.decision.clone()),
        _ => None,
    });
    assert_eq!(decision, Decision::Consent);

    peer.send(Payload::TransferStart(TransferStart {
        transfer_id,
        update_id,
        total_length: w.patch.len() as u64,
        chunk_size: w.chunk,
        chunk_hashes: chunk_hashes(&w.patch, w.chunk),
    }));
    let next = peer.expect("a transfer ack", |p| match p {
        Payload::TransferAck(a) => Some(a.next_chunk),
        _ => None,
    });
    assert_eq!(next, 0);
    let chunks: Vec<&[u8]> = w.patch.chunks(w.chunk as usize).collect();
    let chunk = |i: u32| {
        Payload::TransferChunk(TransferChunk {
            transfer_id,
            index: i,
            offset: u64::from(i) * u64::from(w.chunk),
            data: chunks[i as usize].to_vec(),
        })
    };
    let mut first = 0;
    if let Some(k) = crash_after_chunks {
        for i in 0..k {
            peer.send(chunk(i));
        }
        // Frames are handled in order: once this is answered, so are the
        // chunks.
        peer.send(Payload::InventoryQuery(InventoryQuery { nonce: [8; 16] }));
        peer.expect("an inventory", |p| {
            matches!(p, Payload::InventoryReport(r) if r.nonce == [8; 16]).then_some(())
        });
        peer.kill();
        peer = Peer::spawn(&mut cmd, &agent_key, client_key, timeout);
        peer.send(Payload::TransferStart(TransferStart {
            transfer_id,
            update_id,
            total_length: w.patch.len() as u64,
            chunk_size: w.chunk,
            chunk_hashes: chunk_hashes(&w.patch, w.chunk),
        }));
        first = peer.expect("a transfer ack after the restart", |p| match p {
            Payload::TransferAck(a) => Some(a.next_chunk),
            _ => None,
        });
        assert_eq!(
            first, k,
            "the transfer resumes at the first chunk not staged"
        );
    }
    for i in first..chunks.len() as u32 {
        peer.send(chunk(i));
    }
    peer.send(Payload::Prepare(Prepare {
        update_id,
        transfer_id,
    }));
    let prepared = peer.expect("a prepare result", |p| match p {
        Payload::PrepareResult(r) => Some(r.outcome.clone()),
        _ => None,
    });
    assert_eq!(
        prepared,
        PrepareOutcome::Ready {
            version: v("2.0.0"),
            sha256: sha256(&w.new)
        }
    );

    peer.send(Payload::InstallStart(InstallStart {
        update_id,
        stage: 0,
        await_confirm: true,
    }));
    let outcome = peer.expect("an install result", |p| match p {
        Payload::InstallResult(r) if r.update_id == update_id => Some(r.outcome.clone()),
        _ => None,
    });
    if opts.withhold_confirm {
        // The Agent's confirm deadline passes (its host polls at the
        // deadline it was given); it rolls back by itself and reports.
        let rolled_back = peer.expect("the Agent's report of its own rollback", |p| match p {
            Payload::InstallResult(r)
                if r.update_id == update_id
                    && matches!(r.outcome, InstallOutcome::Failed { .. }) =>
            {
                Some(r.outcome.clone())
            }
            _ => None,
        });
        let status = peer.finish();
        return (dir, rolled_back, status);
    }
    if matches!(outcome, InstallOutcome::Installed { .. }) {
        peer.send(Payload::Confirm(Confirm { update_id }));
        let confirmed = peer.expect("a confirmation", |p| match p {
            Payload::Confirmed(c) => Some(c.version.clone()),
            _ => None,
        });
        assert_eq!(confirmed, v("2.0.0"));
    }
    let status = peer.finish();
    (dir, outcome, status)
}

pub fn assert_updated(dir: &Path, outcome: &InstallOutcome, status: i32) {
    assert_eq!(
        outcome,
        &InstallOutcome::Installed {
            version: v("2.0.0"),
            awaiting_confirm: true
        }
    );
    assert_eq!(status, 0, "the C Agent's exit status");
    let (active, trial, version, sha) = boot_state(dir);
    let w_new = std::fs::read(dir.join("slot_b.bin")).unwrap();
    assert_eq!((active, trial, version.as_str()), ('b', false, "2.0.0"));
    assert_eq!(
        sha,
        hex(&sha256(&w_new).0),
        "slot B holds the image it is described as"
    );
    // The journal and the trust store were persisted through the callbacks.
    assert!(dir.join("journal.bin").exists());
    assert!(dir.join("trust/role-root").exists());
    assert!(dir.join("trust/role-targets").exists());
}

/// The Agent rolled back after its host's injected self-test failure: the
/// report says so and slot A runs 1.0.0 again, committed.
pub fn assert_rolled_back_on_self_test(dir: &Path, outcome: &InstallOutcome, status: i32) {
    match outcome {
        InstallOutcome::Failed { failure, running } => {
            assert_eq!(running, &v("1.0.0"));
            assert!(
                failure.message.contains("injected self-test failure"),
                "{failure:?}"
            );
        }
        other => panic!("expected a failed install, got {other:?}"),
    }
    assert_eq!(status, 0, "the Agent's exit status");
    let (active, trial, version, sha) = boot_state(dir);
    assert_eq!((active, trial, version.as_str()), ('a', false, "1.0.0"));
    assert_eq!(sha, hex(&sha256(&world().old).0));
}

/// The Agent rolled back by itself when its confirm deadline passed.
pub fn assert_rolled_back_at_the_deadline(dir: &Path, outcome: &InstallOutcome, status: i32) {
    match outcome {
        InstallOutcome::Failed { failure, running } => {
            assert_eq!(running, &v("1.0.0"));
            assert_eq!(failure.code, FailureCode::Timeout, "{failure:?}");
        }
        other => panic!("expected a rollback report, got {other:?}"),
    }
    assert_eq!(status, 0, "the Agent's exit status");
    let (active, trial, version, _) = boot_state(dir);
    assert_eq!((active, trial, version.as_str()), ('a', false, "1.0.0"));
}
