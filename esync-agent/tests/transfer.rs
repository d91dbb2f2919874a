//! Chunk reception through the Agent: the one set of limits shared with
//! `esync_package::chunk` (1 KiB minimum chunk), and recovery that keeps
//! every chunk staged before a power cut.
#![allow(clippy::unwrap_used, reason = "test code")]

mod common;

use common::*;
use esync_agent::config::ConfigError;
use esync_agent::AgentError;
use esync_package::chunk::{MAX_CHUNKS, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use esync_proto::message::*;

fn new_img() -> Vec<u8> {
    image(2, 20_000)
}

fn acks(msgs: &[Payload]) -> Vec<TransferAck> {
    msgs.iter()
        .filter_map(|p| match p {
            Payload::TransferAck(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn start_refusal(msgs: &[Payload]) -> Option<Failure> {
    find(msgs, |p| match p {
        Payload::PrepareResult(PrepareResult {
            outcome: PrepareOutcome::Failed(f),
            ..
        }) => Some(f.clone()),
        _ => None,
    })
}

fn consented(u: &Update) -> MemRig {
    let mut rig = mem_rig(&image(1, 20_000));
    rig.send(u.metadata()).unwrap();
    rig.send(u.offer()).unwrap();
    rig
}

#[test]
fn chunk_below_the_minimum_is_refused() {
    let small = MIN_CHUNK_SIZE - 1;
    let u = Update::full(1, "2.0.0", 2, &new_img(), small);
    let mut rig = consented(&u);
    let msgs = rig.send(u.transfer_start()).unwrap();
    let f = start_refusal(&msgs).expect("transfer start refused");
    assert_eq!(f.code, FailureCode::LengthMismatch, "{f:?}");
    assert!(f.message.contains(&small.to_string()), "{}", f.message);
    assert!(acks(&msgs).is_empty());
    assert!(rig
        .agent()
        .state()
        .update
        .as_ref()
        .unwrap()
        .transfer
        .is_none());
    // A chunk of exactly the minimum is accepted.
    let u = Update::full(2, "2.0.0", 2, &new_img(), MIN_CHUNK_SIZE);
    let mut rig = consented(&u);
    let msgs = rig.send(u.transfer_start()).unwrap();
    assert!(start_refusal(&msgs).is_none());
    assert_eq!(acks(&msgs)[0].next_chunk, 0);
}

#[test]
fn configured_limits_stay_within_the_protocol_bounds() {
    let try_config = |max_chunk_size: u32, max_chunks: u32| {
        let mut c = config();
        c.max_chunk_size = max_chunk_size;
        c.max_chunks = max_chunks;
        c.validate()
    };
    assert!(try_config(MIN_CHUNK_SIZE, 1).is_ok());
    assert!(try_config(MAX_CHUNK_SIZE, MAX_CHUNKS as u32).is_ok());
    for (size, n) in [
        (MIN_CHUNK_SIZE - 1, 16),
        (MAX_CHUNK_SIZE + 1, 16),
        (4096, 0),
        (4096, MAX_CHUNKS as u32 + 1),
    ] {
        assert!(
            matches!(try_config(size, n), Err(ConfigError::Limit(_))),
            "{size} {n}"
        );
    }
    // And recovery refuses to start with such a configuration.
    let mut c = config();
    c.max_chunk_size = 512;
    let mut rig = mem_rig(&image(1, 100));
    rig.config = c;
    rig.crash();
    assert!(matches!(
        rig.boot(),
        Err(AgentError::Config(ConfigError::Limit(_)))
    ));
}

#[test]
fn narrower_configured_limits_refuse_a_transfer() {
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    let mut rig = consented(&u);
    let mut c = config();
    c.max_chunks = 8; // 20 chunks needed
    rig.config = c;
    rig.crash();
    rig.boot().unwrap();
    let f = start_refusal(&rig.send(u.transfer_start()).unwrap()).expect("refused");
    assert_eq!(f.code, FailureCode::LengthMismatch);
}

/// Chunks staged after a gap are re-verified on recovery: after the power
/// cut only the missing chunk needs sending.
#[test]
fn recovery_keeps_chunks_staged_after_a_gap() {
    let u = Update::full(1, "2.0.0", 2, &new_img(), 1024);
    let n = u.chunks();
    assert_eq!(n, 20);
    let mut rig = consented(&u);
    rig.send(u.transfer_start()).unwrap();
    for i in (0..n).filter(|&i| i != 1) {
        let a = acks(&rig.send(u.chunk(i)).unwrap());
        assert_eq!(a[0].next_chunk, 1, "chunk 1 is missing");
    }
    rig.crash();
    rig.boot().unwrap();
    let a = acks(&rig.send(u.chunk(1)).unwrap());
    assert_eq!(a[0].next_chunk, n, "every other chunk was kept");
    let ready = find(&rig.send(u.prepare()).unwrap(), |p| match p {
        Payload::PrepareResult(r) => Some(r.outcome.clone()),
        _ => None,
    });
    assert!(
        matches!(ready, Some(PrepareOutcome::Ready { .. })),
        "{ready:?}"
    );
}
