//! Offline operation: reports are journalled, survive a restart, and are
//! flushed once when the link returns (idempotent ids).

use std::collections::BTreeMap;

use esync_api::body::{PackageOutcome, Report, ReportEvent, ReportPhase};
use esync_api::ReportId;
use esync_client::core::session::download::TransferLimits;
use esync_client::core::session::reports::ReportOutbox;
use esync_store::MemJournal;

fn report(n: u64) -> Report {
    Report {
        created_wall_ms: 1_700_000_000_000 + n,
        event: if n % 2 == 0 {
            ReportEvent::Progress {
                package: "pkg-1".into(),
                ecu: None,
                phase: ReportPhase::Download,
                done: n,
                total: 10,
            }
        } else {
            ReportEvent::Result {
                package: "pkg-1".into(),
                outcome: PackageOutcome::Installed,
                components: vec![],
            }
        },
    }
}

/// A fake Server's report endpoint: stores by id, counts duplicates.
#[derive(Default)]
struct Reports {
    online: bool,
    stored: BTreeMap<String, Vec<u8>>,
    puts: u32,
    duplicates: u32,
}

fn pump(outbox: &mut ReportOutbox<&mut MemJournal>, srv: &mut Reports, now_ms: u64) {
    while let Some(r) = outbox.next(now_ms) {
        srv.puts += 1;
        if !srv.online {
            outbox.on_failed(now_ms);
            return;
        }
        if srv
            .stored
            .insert(r.id.as_str().to_string(), r.body)
            .is_some()
        {
            srv.duplicates += 1;
        }
        outbox.on_stored(&r.id).expect("journal");
    }
}

#[test]
fn offline_reports_are_queued_persisted_and_flushed_once() {
    let limits = TransferLimits {
        backoff_base_ms: 1_000,
        backoff_max_ms: 8_000,
        ..TransferLimits::default()
    };
    let mut journal = MemJournal::new();
    let mut srv = Reports::default();
    let ids: Vec<ReportId> = (0..5u8)
        .map(|i| ReportId::from_bytes([i + 1; 16]))
        .collect();
    {
        let mut outbox = ReportOutbox::open(&mut journal, &limits).expect("open");
        for (n, id) in ids.iter().enumerate() {
            outbox.queue(id.clone(), &report(n as u64)).expect("queue");
        }
        // The same id again is not queued twice.
        outbox.queue(ids[0].clone(), &report(0)).expect("queue");
        assert_eq!(outbox.len(), 5);
        // Offline: one attempt, then back-off; nothing is lost.
        pump(&mut outbox, &mut srv, 0);
        assert_eq!(srv.puts, 1);
        assert!(outbox.next(500).is_none(), "backing off");
        assert_eq!(outbox.retry_at(), Some(1_000));
        pump(&mut outbox, &mut srv, 1_000);
        assert_eq!(outbox.retry_at(), Some(3_000), "back-off grows");
        assert_eq!(outbox.len(), 5);
    }
    // Restart: the journal holds the queue.
    assert!(journal.stores >= 5);
    let mut outbox = ReportOutbox::open(&mut journal, &limits).expect("reopen");
    assert_eq!(outbox.len(), 5);
    srv.online = true;
    let before = srv.puts;
    pump(&mut outbox, &mut srv, 10_000);
    assert!(outbox.is_empty());
    assert_eq!(srv.puts - before, 5, "each report sent once");
    assert_eq!(srv.duplicates, 0);
    assert_eq!(srv.stored.len(), 5);
    for (n, id) in ids.iter().enumerate() {
        let body: Report = serde_json::from_slice(&srv.stored[id.as_str()]).expect("json");
        assert_eq!(body, report(n as u64));
    }
    // After a further restart nothing is sent again.
    drop(outbox);
    let mut outbox = ReportOutbox::open(&mut journal, &limits).expect("reopen");
    assert!(outbox.next(20_000).is_none());
}

#[test]
fn a_corrupt_journal_is_refused_not_guessed() {
    use esync_store::JournalStore;
    let mut journal = MemJournal::new();
    {
        let mut outbox =
            ReportOutbox::open(&mut journal, &TransferLimits::default()).expect("open");
        outbox
            .queue(ReportId::from_bytes([9; 16]), &report(1))
            .expect("queue");
    }
    let mut bytes = journal.record().expect("record").to_vec();
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    journal.store(&bytes).expect("store");
    assert!(ReportOutbox::open(&mut journal, &TransferLimits::default()).is_err());
}
