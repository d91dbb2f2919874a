//! The Agent holds the chunk list once while receiving: its heap mid-transfer
//! (live, and recovered from the journal) is one 32-byte hash per chunk plus
//! a little, not two (the journaled `TransferRecord` and the assembler's plan
//! share the list). Measured with a counting global allocator, as in
//! `benches/agent.rs`; one test in this binary, so nothing else allocates
//! while it measures.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use esync_agent::device::mem::MemDevice;
use esync_agent::device::sha256;
use esync_agent::journal::MemJournal;
use esync_agent::patch::NoDeltas;
use esync_agent::policy::AlwaysConsent;
use esync_agent::target::DirectedTarget;
use esync_agent::testing::{dangerous_unsigned_metadata, DangerousUnverifiedMetadata};
use esync_agent::{Agent, AgentConfig, Context, Now};
use esync_proto::envelope::{Header, Recipient, Verified, PROTOCOL_VERSION};
use esync_proto::id::{DevicePath, EcuSerial, HardwareId, Id128, ReleaseCounter, SoftwareVersion};
use esync_proto::message::*;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(
    unsafe_code,
    reason = "a counting global allocator for the memory measurement"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Live heap owned by `agent`: how much dropping it frees.
fn heap_of(agent: Agent) -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    drop(agent);
    before - LIVE.load(Ordering::Relaxed)
}

const T0: u64 = 1_800_000_000_000;
const NOW: Now = Now {
    mono_ms: 0,
    wall_ms: T0,
};
const IMAGE: usize = 1 << 20;
const CHUNK: u32 = 4096;
const CHUNKS: usize = IMAGE / CHUNK as usize;
/// One copy of the chunk list.
const LIST: isize = (CHUNKS * 32) as isize;

fn config() -> AgentConfig {
    AgentConfig::new(
        DevicePath::new("/powertrain/ecm").unwrap(),
        HardwareId::new("ecm-hw-1").unwrap(),
        EcuSerial::new("ECM0001").unwrap(),
    )
}

struct World {
    dev: MemDevice,
    journal: MemJournal,
    verifier: DangerousUnverifiedMetadata,
    policy: AlwaysConsent,
    seq: u64,
}

impl World {
    fn new(journal: MemJournal) -> Self {
        World {
            dev: MemDevice::new(
                SoftwareVersion::new("1.0.0").unwrap(),
                1,
                vec![0; 16],
                4 << 20,
            ),
            journal,
            verifier: DangerousUnverifiedMetadata,
            policy: AlwaysConsent,
            seq: 0,
        }
    }

    fn ctx(&mut self) -> Context<'_> {
        Context {
            device: &mut self.dev,
            journal: &mut self.journal,
            verifier: &mut self.verifier,
            patcher: &NoDeltas,
            policy: &mut self.policy,
            reporter: None,
        }
    }

    fn handle(&mut self, agent: &mut Agent, payload: Payload) {
        self.seq += 1;
        let m = Verified {
            header: Header {
                version: PROTOCOL_VERSION,
                sender: Participant::Client,
                recipient: Recipient::Device(config().device),
                seq: self.seq,
                timestamp_ms: T0,
                correlation: Id128([1; 16]),
            },
            payload,
        };
        let mut out = agent.handle(NOW, &m, &mut self.ctx()).unwrap();
        while out.poll {
            out = agent.poll(NOW, &mut self.ctx()).unwrap();
        }
    }
}

#[test]
fn the_chunk_list_is_held_once_while_receiving() {
    let new: Vec<u8> = (0..IMAGE).map(|i| (i * 31 % 251) as u8).collect();
    let hashes: Vec<_> = new.chunks(CHUNK as usize).map(sha256).collect();
    let all: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
    let target = DirectedTarget {
        target_name: "ecm-2.0.0.bin".into(),
        version: SoftwareVersion::new("2.0.0").unwrap(),
        release_counter: ReleaseCounter(2),
        length: new.len() as u64,
        sha256: sha256(&new),
        hardware_id: config().hardware_id,
        ecu_serial: config().serial,
        chunk_list_digest: Some(sha256(&all)),
        deltas: vec![],
        expires_ms: T0 + 86_400_000,
    };
    let (id, tid) = (Id128([7; 16]), Id128([8; 16]));
    let mut w = World::new(MemJournal::new());
    let (mut agent, _) = Agent::recover(config(), NOW, &mut w.ctx()).unwrap();
    w.handle(
        &mut agent,
        Payload::UpdateMetadata(dangerous_unsigned_metadata(id, &target)),
    );
    w.handle(
        &mut agent,
        Payload::DownloadOffer(DownloadOffer {
            update_id: id,
            target_name: target.target_name.clone(),
            version: target.version.clone(),
            release_counter: target.release_counter,
            length: target.length,
            sha256: target.sha256,
            encoding: ImageEncoding::Full,
            consent_required: false,
        }),
    );
    w.handle(
        &mut agent,
        Payload::TransferStart(TransferStart {
            transfer_id: tid,
            update_id: id,
            total_length: new.len() as u64,
            chunk_size: CHUNK,
            chunk_hashes: hashes.clone(),
        }),
    );
    for i in 0..CHUNKS / 2 {
        let s = i * CHUNK as usize;
        w.handle(
            &mut agent,
            Payload::TransferChunk(TransferChunk {
                transfer_id: tid,
                index: i as u32,
                offset: s as u64,
                data: new[s..s + CHUNK as usize].to_vec(),
            }),
        );
    }
    let journaled = |a: &Agent| {
        a.state()
            .update
            .as_ref()
            .and_then(|u| u.transfer.as_ref())
            .map(|t| t.next_chunk)
    };
    assert_eq!(journaled(&agent), Some((CHUNKS / 2) as u32));

    // Recovered from the journal mid-transfer (the copy device has no
    // staged bytes: recovery stops at the journaled chunk, same structures).
    let mut w2 = World::new(w.journal.clone());
    let (recovered, _) = Agent::recover(config(), NOW, &mut w2.ctx()).unwrap();
    assert!(journaled(&recovered).is_some(), "recovered mid-transfer");
    let recovered = heap_of(recovered);
    let live = heap_of(agent);
    for (what, heap) in [("live", live), ("recovered", recovered)] {
        // The list itself, and far less than a second copy besides.
        assert!(heap >= LIST, "{what}: {heap} B cannot hold the list");
        assert!(
            heap < LIST + LIST / 2,
            "{what}: {heap} B while receiving {CHUNKS} chunks: the chunk list is held twice"
        );
    }
}
