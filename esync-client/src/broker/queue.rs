//! Bounded per-connection outbound queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Counters and gauges of one connection's outbound queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames waiting now.
    pub queued_frames: usize,
    /// Bytes waiting now.
    pub queued_bytes: usize,
    /// Largest number of frames ever waiting.
    pub max_queued_frames: usize,
    /// Largest number of bytes ever waiting.
    pub max_queued_bytes: usize,
    /// Frames accepted into the queue.
    pub enqueued: u64,
    /// Frames dropped because the queue was full (frames or bytes bound).
    pub dropped_full: u64,
    /// Configured frame bound.
    pub bound_frames: usize,
    /// Configured byte bound.
    pub bound_bytes: usize,
}

struct State {
    frames: VecDeque<Arc<Vec<u8>>>,
    bytes: usize,
    max_frames_seen: usize,
    max_bytes_seen: usize,
    closed: bool,
}

/// A queue bounded in frames and in bytes. When a frame does not fit, it is
/// dropped for this consumer and counted: the sender and other consumers are
/// never slowed by a slow one, and memory per connection never exceeds the
/// bound.
pub(crate) struct OutQueue {
    state: Mutex<State>,
    notify: Notify,
    max_frames: usize,
    max_bytes: usize,
    enqueued: AtomicU64,
    dropped: AtomicU64,
}

impl OutQueue {
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Self {
        OutQueue {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                max_frames_seen: 0,
                max_bytes_seen: 0,
                closed: false,
            }),
            notify: Notify::new(),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
            enqueued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Enqueues `frame`; false if it was dropped (queue full or closed).
    pub(crate) fn push(&self, frame: Arc<Vec<u8>>) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        if s.frames.len() >= self.max_frames || s.bytes + frame.len() > self.max_bytes {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        s.max_frames_seen = s.max_frames_seen.max(s.frames.len());
        s.max_bytes_seen = s.max_bytes_seen.max(s.bytes);
        drop(s);
        self.enqueued.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
        true
    }

    /// Takes up to `max` frames, waiting for at least one; `None` once closed.
    pub(crate) async fn pop_batch(&self, max: usize) -> Option<Vec<Arc<Vec<u8>>>> {
        loop {
            {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                if !s.frames.is_empty() {
                    let n = s.frames.len().min(max.max(1));
                    let batch: Vec<_> = s.frames.drain(..n).collect();
                    s.bytes -= batch.iter().map(|f| f.len()).sum::<usize>();
                    return Some(batch);
                }
            }
            // Single consumer: a notify_one before this await leaves a permit.
            self.notify.notified().await;
        }
    }

    /// Closes the queue: the writer stops, queued frames are discarded.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.frames.clear();
        s.bytes = 0;
        drop(s);
        self.notify.notify_one();
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let s = self.lock();
        QueueStats {
            queued_frames: s.frames.len(),
            queued_bytes: s.bytes,
            max_queued_frames: s.max_frames_seen,
            max_queued_bytes: s.max_bytes_seen,
            enqueued: self.enqueued.load(Ordering::Relaxed),
            dropped_full: self.dropped.load(Ordering::Relaxed),
            bound_frames: self.max_frames,
            bound_bytes: self.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_frames_and_bytes() {
        let q = OutQueue::new(3, 10);
        assert!(q.push(Arc::new(vec![0; 4])));
        assert!(q.push(Arc::new(vec![0; 4])));
        assert!(!q.push(Arc::new(vec![0; 4])), "bytes bound");
        assert!(q.push(Arc::new(vec![0; 2])));
        assert!(!q.push(Arc::new(vec![0; 0])), "frames bound");
        let st = q.stats();
        assert_eq!(
            (st.queued_frames, st.queued_bytes, st.dropped_full),
            (3, 10, 2)
        );
        let b = q.pop_batch(2).await.unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(q.stats().queued_bytes, 2);
        q.close();
        assert!(q.pop_batch(2).await.is_none());
        assert!(!q.push(Arc::new(vec![1])));
    }
}
