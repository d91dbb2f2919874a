//! Golden vectors of the Agent's journal record (see `tests/vectors/README.md`).
//!
//! A device updates its own Agent: the new Agent must recover from the
//! journal the old one wrote. These tests pin the bytes of each journal
//! format and check that every one of them still recovers.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::*;

use esync_agent::journal::{decode_state, Corruption, StoreError, JOURNAL_FORMAT, JOURNAL_MAGIC};
use esync_agent::state::Stage;
use esync_agent::{AgentError, Context, Outgoing, Output};
use esync_proto::message::*;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn old_img() -> Vec<u8> {
    image(11, 9_000)
}

fn first() -> Update {
    Update::full(1, "2.0.0", 2, &image(12, 9_500), 2048)
}

fn second() -> Update {
    Update::full(2, "3.0.0", 3, &image(13, 10_000), 2048)
}

/// Handles `payload` and runs the work it starts, without telling the
/// Agent that final reports were sent (they stay in its outbox).
fn send_unsent(rig: &mut MemRig, payload: Payload) -> Vec<Outgoing> {
    rig.advance(1_000);
    let now = rig.now;
    let clocks = rig.clocks();
    let msg = esync_proto::envelope::Verified {
        header: esync_proto::envelope::Header {
            version: esync_proto::envelope::PROTOCOL_VERSION,
            sender: Participant::Client,
            recipient: esync_proto::envelope::Recipient::Device(rig.config.device.clone()),
            seq: 1_000_000 + now,
            timestamp_ms: now,
            correlation: esync_proto::id::Id128([0x5a; 16]),
        },
        payload,
    };
    let agent = rig.agent.as_mut().expect("agent running");
    let mut ctx = Context {
        device: &mut rig.dev,
        journal: &mut rig.journal,
        verifier: &mut *rig.verifier,
        patcher: &*rig.patcher,
        policy: &mut *rig.policy,
        reporter: None,
    };
    let mut out: Output = agent.handle(clocks, &msg, &mut ctx).unwrap();
    let mut all = std::mem::take(&mut out.messages);
    while out.poll {
        out = agent.poll(clocks, &mut ctx).unwrap();
        all.append(&mut out.messages);
    }
    all
}

/// The representative state of the vectors: update 1 installed (its final
/// report still unsent in the outbox), update 2 installed on trial and
/// awaiting the Client's confirm (a confirm deadline set), the clock floor
/// and generation well above zero.
fn scripted_rig() -> MemRig {
    let mut rig = mem_rig(&old_img());
    // The vectors were recorded when one clock served deadlines and expiry;
    // running the monotonic clock at the wall clock's value reproduces the
    // same deadline value, so the bytes compare the layout, not the clocks.
    rig.mono = rig.now;
    let u1 = first();
    assert_eq!(install_round(&mut rig, &u1, true).unwrap(), Round::Done);
    // Update 2: everything up to the install through the rig, the install
    // itself without marking its final report sent.
    let u2 = second();
    rig.send(u2.metadata()).unwrap();
    rig.send(u2.offer()).unwrap();
    rig.send(u2.transfer_start()).unwrap();
    for i in 0..u2.chunks() {
        rig.send(u2.chunk(i)).unwrap();
    }
    rig.send(u2.prepare()).unwrap();
    let out = send_unsent(&mut rig, u2.install(true));
    assert!(
        out.iter().any(|m| m.outbox_id.is_some()),
        "the install result is kept in the outbox: {out:?}"
    );
    let st = rig.agent().state();
    assert_eq!(st.update.as_ref().unwrap().stage, Stage::AwaitingConfirm);
    assert_eq!(st.outbox.len(), 1);
    rig
}

/// Writes the vector of the current format (run on purpose, see the README).
#[test]
#[ignore = "writes tests/vectors; run only to add a vector"]
fn write_vectors() {
    let rig = scripted_rig();
    let bytes = rig.journal.inner().record().unwrap().to_vec();
    assert_eq!(&bytes[..7], b"ESAJ\x02\x02\x00", "format 2");
    std::fs::write(format!("{VECTORS}/journal-format-2.bin"), bytes).unwrap();
}

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/{name}")).unwrap()
}

/// Restarts the Agent (no power cut: the device stays on trial) from a
/// journal holding `record`, then finishes the update with the Client's
/// confirm. Returns the messages of the recovery.
fn recover_from(record: &[u8]) -> (MemRig, esync_agent::state::JournalState, Vec<Payload>) {
    let mut rig = scripted_rig();
    let live = rig.agent().state().clone();
    rig.agent = None;
    esync_agent::journal::JournalStore::store(&mut rig.journal, record).unwrap();
    let msgs = rig.boot().unwrap();
    (rig, live, msgs)
}

fn check_recovered(record: &[u8]) {
    let (mut rig, live, msgs) = recover_from(record);
    let u2 = second();
    // The Agent is where the old one was, and re-sends the unsent report.
    assert_eq!(rig.agent().state().update, live.update);
    assert_eq!(rig.agent().state().clock_ms, live.clock_ms);
    assert_eq!(rig.agent().state().next_outbox_id, live.next_outbox_id);
    assert_eq!(
        msgs,
        vec![live.outbox[0].payload.clone()],
        "re-emits exactly the unsent report"
    );
    assert!(matches!(
        &msgs[0],
        Payload::InstallResult(InstallResult {
            update_id,
            outcome: InstallOutcome::Installed { awaiting_confirm: true, .. },
            ..
        }) if *update_id == u2.id
    ));
    // ... and finishes the update.
    let r = rig.send(u2.confirm()).unwrap();
    assert!(
        r.iter()
            .any(|p| matches!(p, Payload::Confirmed(c) if c.update_id == u2.id)),
        "{r:?}"
    );
    assert_eq!(
        rig.dev.inner().actual_running_sha(),
        u2.target.sha256,
        "runs update 2"
    );
}

/// A journal written by the Agent before journal records had their own
/// version (layout byte 1) still recovers.
#[test]
fn legacy_unversioned_record_recovers() {
    check_recovered(&vector("journal-legacy-unversioned.bin"));
}

/// A journal record of format 1 recovers.
#[test]
fn format_1_record_recovers() {
    check_recovered(&vector("journal-format-1.bin"));
}

/// A journal record of format 2 recovers.
#[test]
fn format_2_record_recovers() {
    check_recovered(&vector("journal-format-2.bin"));
}

/// This build writes exactly the format 2 vector for the scripted state: a
/// change to the journal's encoding (of the Agent's state or of a wire type
/// it holds) fails here and needs a new format version.
#[test]
fn this_build_writes_the_format_2_vector() {
    let rig = scripted_rig();
    assert_eq!(
        rig.journal.inner().record().unwrap(),
        vector("journal-format-2.bin").as_slice()
    );
}

/// Format 1 (no `staged_image_offset`) migrates to the same state as the
/// format 2 vector, whose update is a full image (offset unset).
#[test]
fn format_1_and_format_2_vectors_hold_the_same_state() {
    let v1 = decode_state(&vector("journal-format-1.bin")).unwrap();
    let v2 = decode_state(&vector("journal-format-2.bin")).unwrap();
    assert_eq!(v1, v2);
    assert_eq!(v2.update.as_ref().unwrap().staged_image_offset, None);
}

/// The legacy record and the format 1 record hold the same state; only the
/// header differs.
#[test]
fn legacy_and_format_1_vectors_hold_the_same_state() {
    let legacy = decode_state(&vector("journal-legacy-unversioned.bin")).unwrap();
    let v1 = decode_state(&vector("journal-format-1.bin")).unwrap();
    assert_eq!(legacy, v1);
    assert_eq!(v1.outbox.len(), 1);
    assert!(v1.clock_ms > T0 && v1.generation > 10);
}

/// A record of a future format (as a newer Agent would write) is refused
/// with a typed error, by the decoder and by `Agent::recover`; it is never
/// read as an empty journal.
#[test]
fn unknown_future_format_is_refused() {
    let v1 = vector("journal-format-1.bin");
    let body = &v1[7..v1.len() - 32];
    let future = esync_store::record::seal(JOURNAL_MAGIC, JOURNAL_FORMAT + 1, body);
    let unknown = |e: &StoreError| {
        matches!(
            e,
            StoreError::Corrupt {
                reason: Corruption::UnknownVersion { found, .. },
                ..
            } if *found == JOURNAL_FORMAT + 1
        )
    };
    let e = decode_state(&future).unwrap_err();
    assert!(unknown(&e), "{e}");
    let version = format!("format version {}", JOURNAL_FORMAT + 1);
    assert!(e.to_string().contains(&version), "{e}");
    let mut rig = mem_rig(&old_img());
    rig.agent = None;
    esync_agent::journal::JournalStore::store(&mut rig.journal, &future).unwrap();
    match rig.boot() {
        Err(AgentError::Journal(e)) => assert!(unknown(&e), "{e}"),
        other => panic!("expected the journal refused, got {other:?}"),
    }
    assert!(rig.agent.is_none());
}
