//! Agent state machine benchmark: heap and size of the Agent (excluding
//! image buffers, which live in the device) measured with a counting global
//! allocator, CPU time per handled message, and the peak heap of a delta
//! Prepare and install (the Agent, the patch applier and its decoders; the
//! in-memory device's buffers are sized by an earlier install, so they do
//! not grow).
//!
//! Run: `cargo bench -p esync-agent --bench agent`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use esync_agent::delta::PackageApplier;
use esync_agent::device::mem::MemDevice;
use esync_agent::device::sha256;
use esync_agent::journal::MemJournal;
use esync_agent::policy::AlwaysConsent;
use esync_agent::target::DeltaEntry;
use esync_agent::target::DirectedTarget;
use esync_agent::testing::{dangerous_unsigned_metadata, DangerousUnverifiedMetadata};
use esync_agent::{Agent, AgentConfig, Context};
use esync_package::chunk::ChunkPlan;
use esync_package::delta::generate::{generate_patch, GenerateOptions};
use esync_proto::envelope::{Header, Recipient, Verified, PROTOCOL_VERSION};
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, SoftwareVersion};
use esync_proto::message::*;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(
    unsafe_code,
    reason = "a counting global allocator for the memory measurement"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        grew(new as isize - l.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `f` and returns how far the heap rose above its level at the start.
fn peak_during(f: impl FnOnce()) -> isize {
    let base = live();
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

const T0: u64 = 1_800_000_000_000;
/// Both clocks (monotonic from 0, wall time at `T0`).
const NOW: esync_agent::Now = esync_agent::Now {
    mono_ms: 0,
    wall_ms: T0,
};
const IMAGE: usize = 1 << 20;
const CHUNK: u32 = 4096;

fn image(seed: u8, len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct World {
    dev: MemDevice,
    journal: MemJournal,
    verifier: DangerousUnverifiedMetadata,
    patcher: PackageApplier,
    policy: AlwaysConsent,
    seq: u64,
}

impl World {
    fn ctx(&mut self) -> Context<'_> {
        Context {
            device: &mut self.dev,
            journal: &mut self.journal,
            verifier: &mut self.verifier,
            patcher: &self.patcher,
            policy: &mut self.policy,
            reporter: None,
        }
    }

    fn msg(&mut self, payload: Payload) -> Verified {
        self.seq += 1;
        Verified {
            header: Header {
                version: PROTOCOL_VERSION,
                sender: Participant::Client,
                recipient: Recipient::Device(config().device),
                seq: self.seq,
                timestamp_ms: T0,
                correlation: Id128([1; 16]),
            },
            payload,
        }
    }
}

fn config() -> AgentConfig {
    AgentConfig::new(
        DevicePath::new("/powertrain/ecm").expect("valid path"),
        HardwareId::new("ecm-hw-1").expect("valid id"),
        EcuSerial::new("ECM0001").expect("valid serial"),
    )
}

fn handle(agent: &mut Agent, w: &mut World, p: Payload) {
    let m = w.msg(p);
    let mut out = agent
        .handle(NOW, &m, &mut w.ctx())
        .expect("no power loss in the bench");
    while out.poll {
        out = agent
            .poll(NOW, &mut w.ctx())
            .expect("no power loss in the bench");
    }
    for o in out.messages {
        if let Some(id) = o.outbox_id {
            agent.mark_sent(id, &mut w.ctx()).expect("journal works");
        }
    }
}

/// Live heap owned by `agent`: how much dropping it frees.
fn heap_of(agent: Agent) -> isize {
    let before = live();
    drop(agent);
    before - live()
}

fn per_op(label: &str, iters: u32, mut f: impl FnMut(u32)) -> f64 {
    // Warm-up, then the best of 5 batches.
    for i in 0..iters / 10 + 1 {
        f(i);
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..iters {
            f(i);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    println!("| {label} | {:.0} ns | {:.2} µs |", best, best / 1000.0);
    best
}

fn main() {
    let old = image(1, IMAGE);
    let new = image(2, IMAGE);
    let hashes: Vec<_> = new.chunks(CHUNK as usize).map(sha256).collect();
    let mut all = Vec::new();
    for h in &hashes {
        all.extend_from_slice(&h.0);
    }
    let target = DirectedTarget {
        target_name: "ecm-2.0.0.bin".into(),
        version: SoftwareVersion::new("2.0.0").expect("valid"),
        release_counter: ReleaseCounter(2),
        length: new.len() as u64,
        sha256: sha256(&new),
        hardware_id: config().hardware_id,
        ecu_serial: config().serial,
        chunk_list_digest: Some(sha256(&all)),
        deltas: vec![],
        expires_ms: T0 + 86_400_000,
    };
    let id = Id128([7; 16]);
    let tid = Id128([8; 16]);
    let mut w = World {
        dev: MemDevice::new(
            SoftwareVersion::new("1.0.0").expect("valid"),
            1,
            old,
            4 << 20,
        ),
        journal: MemJournal::new(),
        verifier: DangerousUnverifiedMetadata,
        patcher: PackageApplier,
        policy: AlwaysConsent,
        seq: 0,
    };

    println!("## esync-agent state machine\n");
    println!("size_of::<Agent>() = {} bytes\n", size_of::<Agent>());

    // Memory at each point of a 1 MiB / 4 KiB-chunk lifecycle.
    let fresh = || {
        let mut w2 = World {
            dev: MemDevice::new(
                SoftwareVersion::new("1.0.0").expect("valid"),
                1,
                vec![0; 16],
                4 << 20,
            ),
            journal: MemJournal::new(),
            verifier: DangerousUnverifiedMetadata,
            patcher: PackageApplier,
            policy: AlwaysConsent,
            seq: 0,
        };
        let (a, _) = Agent::recover(config(), NOW, &mut w2.ctx()).expect("recover");
        a
    };
    println!("| point | Agent heap (bytes) | journal record (bytes) |\n| --- | --- | --- |");
    println!("| fresh (idle) | {} | 0 |", heap_of(fresh()));

    let (mut agent, _) = Agent::recover(config(), NOW, &mut w.ctx()).expect("recover");
    handle(
        &mut agent,
        &mut w,
        Payload::UpdateMetadata(dangerous_unsigned_metadata(id, &target)),
    );
    let offer = DownloadOffer {
        update_id: id,
        target_name: target.target_name.clone(),
        version: target.version.clone(),
        release_counter: target.release_counter,
        length: target.length,
        sha256: target.sha256,
        encoding: ImageEncoding::Full,
        consent_required: false,
    };
    handle(&mut agent, &mut w, Payload::DownloadOffer(offer.clone()));
    let start = TransferStart {
        transfer_id: tid,
        update_id: id,
        total_length: new.len() as u64,
        chunk_size: CHUNK,
        chunk_hashes: hashes.clone(),
    };
    handle(&mut agent, &mut w, Payload::TransferStart(start.clone()));
    let chunk = |i: u32| {
        let s = i as usize * CHUNK as usize;
        Payload::TransferChunk(TransferChunk {
            transfer_id: tid,
            index: i,
            offset: s as u64,
            data: new[s..s + CHUNK as usize].to_vec(),
        })
    };
    let n = hashes.len() as u32;
    for i in 0..n / 2 {
        handle(&mut agent, &mut w, chunk(i));
    }
    let record = |w: &World| w.journal.record().map_or(0, <[u8]>::len);
    // Re-create from the journal to measure the Agent mid-transfer.
    let mid = {
        let mut w3 = World {
            dev: MemDevice::new(
                SoftwareVersion::new("1.0.0").expect("valid"),
                1,
                vec![0; 16],
                4 << 20,
            ),
            journal: w.journal.clone(),
            verifier: DangerousUnverifiedMetadata,
            patcher: PackageApplier,
            policy: AlwaysConsent,
            seq: 0,
        };
        // The copy device has no staged bytes, so recovery stops at the
        // journaled chunk; the structures are the same size.
        let (a, _) = Agent::recover(config(), NOW, &mut w3.ctx()).expect("recover");
        heap_of(a)
    };
    println!(
        "| receiving 1 MiB in 4 KiB chunks (256 chunk hashes) | {mid} | {} |",
        record(&w)
    );
    for i in n / 2..n {
        handle(&mut agent, &mut w, chunk(i));
    }
    handle(
        &mut agent,
        &mut w,
        Payload::Prepare(Prepare {
            update_id: id,
            transfer_id: tid,
        }),
    );
    handle(
        &mut agent,
        &mut w,
        Payload::InstallStart(InstallStart {
            update_id: id,
            stage: 0,
            await_confirm: false,
        }),
    );
    let rec = record(&w);

    // CPU per message.
    println!("\n| message | time per message | |\n| --- | --- | --- |");
    per_op("InventoryQuery → InventoryReport", 20_000, |_| {
        let m = w.msg(Payload::InventoryQuery(InventoryQuery { nonce: [0; 16] }));
        black_box(agent.handle(NOW, &m, &mut w.ctx()).expect("ok"));
    });
    per_op("Prepare re-sent (answered without rework)", 20_000, |_| {
        let m = w.msg(Payload::Prepare(Prepare {
            update_id: id,
            transfer_id: tid,
        }));
        black_box(agent.handle(NOW, &m, &mut w.ctx()).expect("ok"));
    });
    per_op("Confirm re-sent (report resent)", 20_000, |_| {
        let m = w.msg(Payload::Confirm(Confirm { update_id: id }));
        black_box(agent.handle(NOW, &m, &mut w.ctx()).expect("ok"));
    });
    println!("| point | Agent heap (bytes) | journal record (bytes) |\n| --- | --- | --- |");
    println!("| installed (settled) | {} | {rec} |", heap_of(agent));

    // A fresh Agent per round for the transfer path (includes journal
    // writes every 16 chunks and the SHA-256 of each 4 KiB chunk).
    let (mut agent, _) = Agent::recover(config(), NOW, &mut w.ctx()).expect("recover");
    handle(
        &mut agent,
        &mut w,
        Payload::UpdateMetadata(dangerous_unsigned_metadata(Id128([9; 16]), &target)),
    );
    let mut offer2 = offer.clone();
    offer2.update_id = Id128([9; 16]);
    handle(&mut agent, &mut w, Payload::DownloadOffer(offer2));
    let mut start2 = start.clone();
    start2.update_id = Id128([9; 16]);
    start2.transfer_id = Id128([10; 16]);
    let chunks: Vec<Payload> = (0..n)
        .map(|i| match chunk(i) {
            Payload::TransferChunk(mut c) => {
                c.transfer_id = Id128([10; 16]);
                Payload::TransferChunk(c)
            }
            p => p,
        })
        .collect();
    println!("\n| message | time per message | |\n| --- | --- | --- |");
    let mut round = 0u32;
    per_op(
        "TransferChunk 4 KiB (verify, stage, ack; journal every 16)",
        n,
        |i| {
            if i == 0 {
                // Abandon the previous transfer and start a fresh one.
                let m = w.msg(Payload::TransferAbort(TransferAbort {
                    transfer_id: Id128([10 + round as u8; 16]),
                    reason: String::new(),
                }));
                black_box(agent.handle(NOW, &m, &mut w.ctx()).expect("ok"));
                round += 1;
                let m = w.msg(Payload::TransferStart(TransferStart {
                    transfer_id: Id128([10 + round as u8; 16]),
                    ..start2.clone()
                }));
                black_box(agent.handle(NOW, &m, &mut w.ctx()).expect("ok"));
            }
            let Payload::TransferChunk(mut c) = chunks[i as usize].clone() else {
                return;
            };
            c.transfer_id = Id128([10 + round as u8; 16]);
            let m = w.msg(Payload::TransferChunk(c));
            black_box(agent.handle(NOW, &m, &mut w.ctx()).expect("ok"));
        },
    );
    let block = vec![0x5au8; CHUNK as usize];
    per_op("baseline: SHA-256 of 4 KiB alone", 20_000, |_| {
        black_box(sha256(black_box(&block)));
    });
    let t = Instant::now();
    let m = w.msg(Payload::Prepare(Prepare {
        update_id: Id128([9; 16]),
        transfer_id: Id128([10 + round as u8; 16]),
    }));
    black_box(agent.handle(NOW, &m, &mut w.ctx()).expect("ok"));
    println!(
        "| Prepare, full 1 MiB image (hash staged image) | {:.0} µs | |",
        t.elapsed().as_secs_f64() * 1e6
    );
    let t = Instant::now();
    handle(
        &mut agent,
        &mut w,
        Payload::InstallStart(InstallStart {
            update_id: Id128([9; 16]),
            stage: 0,
            await_confirm: false,
        }),
    );
    println!("| InstallStart → Installed, 1 MiB (write, verify, activate, self-test, commit) | {:.0} µs | |", t.elapsed().as_secs_f64() * 1e6);

    // Delta 2.0.0 -> 3.0.0 of the 1 MiB image (slot and staging buffers of
    // the in-memory device already hold 1 MiB, so they do not grow).
    let mut v3 = new.clone();
    for k in 0..64 {
        let at = k * (IMAGE / 64);
        v3[at..at + 512].copy_from_slice(&image(3 + k as u8, 512));
    }
    let patch = generate_patch(&new, &v3, &GenerateOptions::new(PatchFormat::BsdiffZstd))
        .expect("patch generated");
    let pplan = ChunkPlan::compute(&patch, CHUNK).expect("chunk plan");
    let v3_plan = ChunkPlan::compute(&v3, CHUNK).expect("chunk plan");
    let (did, dtid) = (Id128([40; 16]), Id128([41; 16]));
    let delta_target = DirectedTarget {
        target_name: "ecm-3.0.0.bin".into(),
        version: SoftwareVersion::new("3.0.0").expect("valid"),
        release_counter: ReleaseCounter(3),
        length: v3.len() as u64,
        sha256: sha256(&v3),
        chunk_list_digest: Some(v3_plan.list_digest()),
        deltas: vec![DeltaEntry {
            format: PatchFormat::BsdiffZstd,
            from_version: SoftwareVersion::new("2.0.0").expect("valid"),
            source_sha256: sha256(&new),
            patch_length: patch.len() as u64,
            patch_sha256: sha256(&patch),
            chunk_list_digest: Some(pplan.list_digest()),
        }],
        ..target.clone()
    };
    handle(
        &mut agent,
        &mut w,
        Payload::UpdateMetadata(dangerous_unsigned_metadata(did, &delta_target)),
    );
    handle(
        &mut agent,
        &mut w,
        Payload::DownloadOffer(DownloadOffer {
            update_id: did,
            target_name: delta_target.target_name.clone(),
            version: delta_target.version.clone(),
            release_counter: delta_target.release_counter,
            length: delta_target.length,
            sha256: delta_target.sha256,
            encoding: ImageEncoding::Delta {
                format: PatchFormat::BsdiffZstd,
                from_version: SoftwareVersion::new("2.0.0").expect("valid"),
                source_sha256: sha256(&new),
                patch_length: patch.len() as u64,
                patch_sha256: sha256(&patch),
            },
            consent_required: false,
        }),
    );
    handle(
        &mut agent,
        &mut w,
        Payload::TransferStart(pplan.transfer_start(dtid, did)),
    );
    for i in 0..pplan.count() {
        let c = pplan.chunk(dtid, i, &patch.as_slice()).expect("chunk");
        handle(&mut agent, &mut w, Payload::TransferChunk(c));
    }
    let mut polls = 0u32;
    let prepare = peak_during(|| {
        handle(
            &mut agent,
            &mut w,
            Payload::Prepare(Prepare {
                update_id: did,
                transfer_id: dtid,
            }),
        )
    });
    let install = peak_during(|| {
        let m = w.msg(Payload::InstallStart(InstallStart {
            update_id: did,
            stage: 0,
            await_confirm: false,
        }));
        let mut out = agent.handle(NOW, &m, &mut w.ctx()).expect("ok");
        while out.poll {
            polls += 1;
            out = agent.poll(NOW, &mut w.ctx()).expect("ok");
        }
    });
    assert_eq!(
        agent.state().update.as_ref().map(|u| &u.stage),
        Some(&esync_agent::state::Stage::Settled),
        "delta installed"
    );
    println!(
        "\n| delta install, 1 MiB image, {} B zstd patch | peak heap above idle |\n| --- | --- |",
        patch.len()
    );
    println!("| Prepare (verify patch and source, reconstruct into staging, bounded polls) | {prepare} B |");
    println!("| InstallStart → Installed ({polls} polls) | {install} B |");
}
