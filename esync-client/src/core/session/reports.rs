//! Offline operation: reports queued in a journal (esync-store's
//! [`JournalStore`], as the Agent keeps its own) and sent when the link
//! returns, each under an idempotent [`ReportId`] (a retry of a report the
//! Server already stored is answered `duplicate`, not counted again).

use esync_api::body::Report;
use esync_api::ReportId;
use esync_store::journal::JournalStore;
use esync_store::{record, StoreError};
use serde::{Deserialize, Serialize};

use super::download::{Backoff, TransferLimits};

const MAGIC: &[u8; 4] = b"ECRQ";
const FORMAT: u16 = 1;
/// Most reports held while offline.
pub const MAX_QUEUED: usize = 256;
/// Largest journal record read back.
pub const MAX_JOURNAL_BYTES: usize = 4 * 1024 * 1024;

/// The outbox failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The journal could not be read or written.
    #[error("report journal: {0}")]
    Store(#[from] StoreError),
    /// The journal record is damaged.
    #[error("report journal is corrupt: {0}")]
    Corrupt(String),
    /// [`MAX_QUEUED`] reports are waiting already.
    #[error("report queue full ({MAX_QUEUED})")]
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    id: String,
    body: Vec<u8>,
}

/// A report to send: `PUT /v1/reports/{id}` with `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingReport {
    /// Idempotent id.
    pub id: ReportId,
    /// JSON body ([`Report`]).
    pub body: Vec<u8>,
}

/// Persistent queue of reports.
pub struct ReportOutbox<J: JournalStore> {
    journal: J,
    queue: Vec<Entry>,
    in_flight: bool,
    backoff: Backoff,
    retry_at_ms: u64,
}

impl<J: JournalStore> ReportOutbox<J> {
    /// Opens the outbox, reloading what the journal holds. Failed sends
    /// back off per `limits` but are never dropped.
    pub fn open(mut journal: J, limits: &TransferLimits) -> Result<Self, OutboxError> {
        let queue = match journal.load()? {
            None => Vec::new(),
            Some(bytes) => {
                let r = record::open(MAGIC, &bytes, MAX_JOURNAL_BYTES)
                    .map_err(|e| OutboxError::Corrupt(e.to_string()))?;
                if r.format != Some(FORMAT) {
                    return Err(OutboxError::Corrupt(format!("format {:?}", r.format)));
                }
                let q: Vec<Entry> = serde_json::from_slice(r.body)
                    .map_err(|e| OutboxError::Corrupt(e.to_string()))?;
                if q.len() > MAX_QUEUED {
                    return Err(OutboxError::Corrupt("too many reports".into()));
                }
                for e in &q {
                    ReportId::new(&e.id).map_err(|e| OutboxError::Corrupt(e.to_string()))?;
                }
                q
            }
        };
        let mut limits = *limits;
        limits.max_attempts = u32::MAX;
        Ok(ReportOutbox {
            journal,
            queue,
            in_flight: false,
            backoff: Backoff::new(&limits),
            retry_at_ms: 0,
        })
    }

    /// Reports waiting (including one in flight).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    fn persist(&mut self) -> Result<(), OutboxError> {
        let body =
            serde_json::to_vec(&self.queue).map_err(|e| OutboxError::Corrupt(e.to_string()))?;
        self.journal.store(&record::seal(MAGIC, FORMAT, &body))?;
        Ok(())
    }

    /// Queues `report` under `id` (persisted before this returns). A second
    /// report under an id already queued replaces nothing and is ignored.
    pub fn queue(&mut self, id: ReportId, report: &Report) -> Result<(), OutboxError> {
        if self.queue.iter().any(|e| e.id == id.as_str()) {
            return Ok(());
        }
        if self.queue.len() >= MAX_QUEUED {
            return Err(OutboxError::Full);
        }
        let body = serde_json::to_vec(report).map_err(|e| OutboxError::Corrupt(e.to_string()))?;
        self.queue.push(Entry {
            id: id.as_str().to_string(),
            body,
        });
        self.persist()
    }

    /// The report to send now, if any (one at a time, oldest first), or
    /// `None` while one is in flight, while backing off, or when empty.
    pub fn next(&mut self, now_ms: u64) -> Option<OutgoingReport> {
        if self.in_flight || now_ms < self.retry_at_ms {
            return None;
        }
        let e = self.queue.first()?;
        let id = ReportId::new(&e.id).ok()?;
        self.in_flight = true;
        Some(OutgoingReport {
            id,
            body: e.body.clone(),
        })
    }

    /// When to call [`ReportOutbox::next`] again while backing off.
    pub fn retry_at(&self) -> Option<u64> {
        (!self.queue.is_empty() && !self.in_flight).then_some(self.retry_at_ms)
    }

    /// The Server stored the report (`201`, or `200` duplicate): it leaves
    /// the queue.
    pub fn on_stored(&mut self, id: &ReportId) -> Result<(), OutboxError> {
        self.in_flight = false;
        self.backoff.succeed();
        self.retry_at_ms = 0;
        let before = self.queue.len();
        self.queue.retain(|e| e.id != id.as_str());
        if self.queue.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Sending failed (offline, timeout, 5xx): it stays queued; the next try
    /// waits for a growing back-off.
    pub fn on_failed(&mut self, now_ms: u64) {
        self.in_flight = false;
        let delay = self.backoff.fail().unwrap_or(0);
        self.retry_at_ms = now_ms.saturating_add(delay);
    }
}
