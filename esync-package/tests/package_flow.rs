//! End to end: `esync-pkg build` from images on disk, targets entries, a
//! chunked transfer of the patch with one corrupted chunk, and the Agent-side
//! application.
#![cfg(feature = "generate")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::process::Command;

use esync_package::chunk::{
    ChunkAssembler, ChunkOutcome, ChunkPlan, ChunkSender, MemoryChunkStore,
};
use esync_package::delta::{apply_patch, ApplyLimits, TargetSpec};
use esync_package::digest::{from_hex, sha256};
use esync_package::package::{Package, TargetDescription};
use esync_proto::id::Id128;

fn firmware(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(13) ^ if i % 1000 == 0 { salt } else { 0 })
        .collect()
}

#[test]
fn cli_builds_a_package_that_an_agent_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (old_ecm, new_ecm, tcm) = (
        firmware(150_000, 1),
        firmware(152_000, 2),
        firmware(40_000, 3),
    );
    std::fs::write(p("ecm-1.bin"), &old_ecm).unwrap();
    std::fs::write(p("ecm-2.bin"), &new_ecm).unwrap();
    std::fs::write(p("tcm.bin"), &tcm).unwrap();
    let out = p("out");
    let st = Command::new(env!("CARGO_BIN_EXE_esync-pkg"))
        .arg("build")
        .arg("--out")
        .arg(&out)
        .args(["--id", "spring-2026", "--format", "xz", "--format", "bsdiff40", "--chunk-size", "4096"])
        .args(["--window", "22:00-06:00", "--network", "wifi"])
        .arg("--cache")
        .arg(p("cache"))
        .arg("--component")
        .arg(format!(
            "device=/powertrain/ecm,hw=ecm-v2,version=2.0.0,counter=5,image={},delta-from=1.0.0:{}",
            p("ecm-2.bin").display(),
            p("ecm-1.bin").display()
        ))
        .arg("--component")
        .arg(format!(
            "device=/powertrain/tcm,hw=tcm-v1,version=3.1.0,counter=2,image={},depends=/powertrain/ecm,stage=1,precondition=speed == 0 && gear == \"P\",consent=true,rollback=restore-backup,retries=2",
            p("tcm.bin").display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_dir(p("cache")).unwrap().count(),
        2,
        "one cached patch per format"
    );

    let pkg = Package::from_json(&std::fs::read(out.join("package.json")).unwrap()).unwrap();
    assert_eq!(pkg.install_sequence().len(), 2);
    let targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("targets.json")).unwrap()).unwrap();
    let targets = targets.as_object().unwrap();
    assert_eq!(targets.len(), 4, "ecm full + 2 deltas, tcm full");

    // The Agent's view: the xz delta entry for the ECM.
    let name = "spring-2026/powertrain/ecm/2.0.0/delta-1.0.0.bsdiff-xz";
    let entry = &targets[name];
    let sha = from_hex(entry["hashes"]["sha256"].as_str().unwrap()).unwrap();
    let len = entry["length"].as_u64().unwrap();
    let desc =
        TargetDescription::from_custom_json(&entry["custom"], Some((name, len, &sha))).unwrap();
    let delta = desc.delta().unwrap().clone();
    let patch = std::fs::read(out.join("blobs").join(esync_package::digest::to_hex(&sha))).unwrap();

    // Transfer the patch in chunks; chunk 0 is corrupted once and re-sent alone.
    let t = Id128([7; 16]);
    let send_plan = ChunkPlan::compute(&patch, delta.patch.chunk_size).unwrap();
    let start = send_plan.transfer_start(t, Id128([8; 16]));
    let plan = ChunkPlan::from_transfer_start(
        &start,
        delta.patch.length,
        delta.patch.chunk_size,
        &delta.patch.chunk_list_sha256,
    )
    .unwrap();
    let mut rx = ChunkAssembler::new(t, plan, MemoryChunkStore::default());
    let mut tx = ChunkSender::new(&send_plan, 0);
    let mut sends = 0;
    let mut corrupted = false;
    while let Some(i) = tx.next_index() {
        sends += 1;
        let mut c = send_plan.chunk(t, i, &patch).unwrap();
        if i == 0 && !corrupted {
            corrupted = true;
            c.data[0] ^= 0x40;
            assert_eq!(rx.accept(&c).unwrap(), ChunkOutcome::Rejected);
        } else {
            rx.accept(&c).unwrap();
        }
        tx.on_ack(&rx.ack());
    }
    assert!(rx.is_complete());
    assert_eq!(sends, send_plan.count() + 1);
    let stored = rx.into_store().0;

    // Apply against the installed image.
    let mut slot = Vec::new();
    let target = TargetSpec {
        length: desc.component.image.length,
        sha256: desc.component.image.sha256,
    };
    apply_patch(
        delta.format,
        &old_ecm,
        &delta.source_sha256,
        &stored,
        &target,
        &mut slot,
        &ApplyLimits::default(),
    )
    .unwrap();
    assert!(slot == new_ecm);
    assert_eq!(sha256(&slot), desc.component.image.sha256);
}

#[test]
fn cli_refuses_an_inconsistent_package() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.bin");
    std::fs::write(&img, b"image").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_esync-pkg"))
        .args(["build", "--id", "p"])
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--component")
        .arg(format!(
            "device=/a,hw=h,version=1.0,counter=1,image={},depends=/b",
            img.display()
        ))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in the package"));
}
