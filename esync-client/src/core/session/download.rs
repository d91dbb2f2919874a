//! One resumable, hashed, size-capped blob download (A12, A14), sans-I/O.
//!
//! The host asks for `Range: bytes=START-` where `START` is the first byte
//! not yet received, reads at most `max_len` bytes, hands them in with
//! [`BlobDownload::on_bytes`], writes them itself, and ends the response with
//! [`BlobDownload::on_end`] (or [`BlobDownload::on_error`] when the link
//! dropped). Bytes received are hashed as they stream; the SHA-256 of the
//! whole blob is checked at the end. After a restart the host re-feeds the
//! bytes it stored ([`BlobDownload::resume`]) to rebuild the hasher, so no
//! received byte is fetched twice.

use esync_proto::id::Sha256Digest;
use sha2::{Digest, Sha256};

/// Slow-retrieval, stall and retry limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// A12: fewest bytes per second over [`TransferLimits::window_ms`]
    /// before the request is abandoned as a slow-retrieval attack.
    pub min_bytes_per_s: u64,
    /// Length of the rate window (monotonic ms).
    pub window_ms: u64,
    /// A12: longest gap without a byte (monotonic ms).
    pub stall_ms: u64,
    /// A14: failed attempts after which the download gives up.
    pub max_attempts: u32,
    /// First back-off delay (ms); doubles per failure.
    pub backoff_base_ms: u64,
    /// Longest back-off delay (ms).
    pub backoff_max_ms: u64,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            min_bytes_per_s: 1024,
            window_ms: 30_000,
            stall_ms: 60_000,
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
        }
    }
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// A12: fewer than the minimum bytes per second over a window.
    #[error("slow retrieval: {bytes} bytes in {elapsed_ms} ms (minimum {min_bytes_per_s}/s)")]
    SlowRetrieval {
        /// Bytes received in the window.
        bytes: u64,
        /// Window length.
        elapsed_ms: u64,
        /// The configured minimum.
        min_bytes_per_s: u64,
    },
    /// A12: no byte for the stall deadline.
    #[error("stalled: no byte for {idle_ms} ms")]
    Stalled {
        /// Time since the last byte.
        idle_ms: u64,
    },
    /// The response ended before the signed length.
    #[error("response ended at byte {at} of {length}")]
    Truncated {
        /// Bytes held.
        at: u64,
        /// Signed length.
        length: u64,
    },
    /// More bytes than the signed length: the extra bytes were refused.
    #[error("the server sent more than the signed length {length}")]
    TooLong {
        /// Signed length.
        length: u64,
    },
    /// The whole blob hashed to another value; the host must discard it.
    #[error("sha256 of the whole blob differs from the signed one")]
    HashMismatch,
    /// The host reported a transport or HTTP failure.
    #[error("transport: {0}")]
    Transport(String),
}

/// A14: bounded retries with exponential back-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    max_attempts: u32,
    base_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// From the limits.
    pub fn new(limits: &TransferLimits) -> Self {
        Backoff {
            failures: 0,
            max_attempts: limits.max_attempts.max(1),
            base_ms: limits.backoff_base_ms,
            max_ms: limits.backoff_max_ms,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure. `Some(delay_ms)` before the next attempt, or `None`
    /// when the attempts are used up.
    pub fn fail(&mut self) -> Option<u64> {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.max_attempts {
            return None;
        }
        let shift = (self.failures - 1).min(40);
        Some(self.base_ms.saturating_mul(1u64 << shift).min(self.max_ms))
    }

    /// Records a success (the failure count restarts).
    pub fn succeed(&mut self) {
        self.failures = 0;
    }
}

/// What the host should do for a blob now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStep {
    /// Send `GET /v1/blobs/{sha256}` with `Range: bytes={range_start}-`
    /// (no Range when 0) and read at most `max_len` bytes.
    Request {
        /// First byte wanted.
        range_start: u64,
        /// Most bytes to read.
        max_len: u64,
    },
    /// A request is running or a back-off is pending: call
    /// [`BlobDownload::poll`] again at this monotonic time (or on input).
    WaitUntil(u64),
    /// Every byte received and the SHA-256 verified.
    Done,
    /// A14: given up after this many failed attempts.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: AttemptFailure,
    },
}

#[derive(Debug, Clone)]
enum State {
    Ready,
    Backoff { until_ms: u64 },
    Running(Running),
    Done,
    GaveUp { attempts: u32, last: AttemptFailure },
}

#[derive(Debug, Clone, Copy)]
struct Running {
    window_start_ms: u64,
    window_bytes: u64,
    last_byte_ms: u64,
}

/// One blob being downloaded.
#[derive(Debug, Clone)]
pub struct BlobDownload {
    sha256: Sha256Digest,
    length: u64,
    received: u64,
    hasher: Sha256,
    limits: TransferLimits,
    backoff: Backoff,
    state: State,
    requests: u32,
}

impl BlobDownload {
    /// A download of `length` bytes hashing to `sha256` (both signed).
    pub fn new(sha256: Sha256Digest, length: u64, limits: TransferLimits) -> Self {
        BlobDownload {
            sha256,
            length,
            received: 0,
            hasher: Sha256::new(),
            backoff: Backoff::new(&limits),
            limits,
            state: State::Ready,
            requests: 0,
        }
    }

    /// A download resumed after a restart: `prefix` is what the host stored
    /// (re-hashed, never fetched again). A prefix longer than `length` is
    /// refused.
    pub fn resume(
        sha256: Sha256Digest,
        length: u64,
        prefix: &[u8],
        limits: TransferLimits,
    ) -> Result<Self, AttemptFailure> {
        if prefix.len() as u64 > length {
            return Err(AttemptFailure::TooLong { length });
        }
        let mut d = Self::new(sha256, length, limits);
        d.hasher.update(prefix);
        d.received = prefix.len() as u64;
        Ok(d)
    }

    /// The signed SHA-256.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// The signed length.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Bytes received and kept.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Requests issued so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Whether it finished and verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// What to do at monotonic time `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> BlobStep {
        match &self.state {
            State::Done => BlobStep::Done,
            State::GaveUp { attempts, last } => BlobStep::GaveUp {
                attempts: *attempts,
                last: last.clone(),
            },
            State::Backoff { until_ms } if *until_ms > now_ms => BlobStep::WaitUntil(*until_ms),
            State::Ready | State::Backoff { .. } => {
                if self.received == self.length {
                    // Everything is held (resumed after a restart): verify.
                    self.finish(now_ms);
                    return self.poll(now_ms);
                }
                self.requests += 1;
                self.state = State::Running(Running {
                    window_start_ms: now_ms,
                    window_bytes: 0,
                    last_byte_ms: now_ms,
                });
                BlobStep::Request {
                    range_start: self.received,
                    max_len: self.length - self.received,
                }
            }
            State::Running(r) => {
                let r = *r;
                if let Some(f) = self.check_rate(now_ms, r) {
                    self.fail(now_ms, f);
                    return self.poll(now_ms);
                }
                let next = (r.last_byte_ms.saturating_add(self.limits.stall_ms))
                    .min(r.window_start_ms.saturating_add(self.limits.window_ms));
                BlobStep::WaitUntil(next)
            }
        }
    }

    fn check_rate(&mut self, now_ms: u64, mut r: Running) -> Option<AttemptFailure> {
        let idle = now_ms.saturating_sub(r.last_byte_ms);
        if idle >= self.limits.stall_ms {
            return Some(AttemptFailure::Stalled { idle_ms: idle });
        }
        let elapsed = now_ms.saturating_sub(r.window_start_ms);
        if elapsed >= self.limits.window_ms {
            let need = self.limits.min_bytes_per_s.saturating_mul(elapsed) / 1000;
            if r.window_bytes < need {
                return Some(AttemptFailure::SlowRetrieval {
                    bytes: r.window_bytes,
                    elapsed_ms: elapsed,
                    min_bytes_per_s: self.limits.min_bytes_per_s,
                });
            }
            r.window_start_ms = now_ms;
            r.window_bytes = 0;
            self.state = State::Running(r);
        }
        None
    }

    /// Bytes of the running response. Returns how many of them the host
    /// must write (at its offset [`BlobDownload::received`] before the
    /// call); bytes past the signed length are refused and end the attempt.
    pub fn on_bytes(&mut self, now_ms: u64, bytes: &[u8]) -> Result<usize, AttemptFailure> {
        let State::Running(mut r) = self.state else {
            return Err(AttemptFailure::Transport("bytes without a request".into()));
        };
        let room = self.length - self.received;
        let take = usize::try_from(room).map_or(bytes.len(), |room| bytes.len().min(room));
        self.hasher.update(&bytes[..take]);
        self.received += take as u64;
        r.window_bytes += take as u64;
        if take > 0 {
            r.last_byte_ms = now_ms;
        }
        self.state = State::Running(r);
        if take < bytes.len() {
            let f = AttemptFailure::TooLong {
                length: self.length,
            };
            self.fail(now_ms, f.clone());
            return Err(f);
        }
        if let Some(f) = self.check_rate(now_ms, r) {
            self.fail(now_ms, f.clone());
            return Err(f);
        }
        Ok(take)
    }

    /// The response ended. `Ok(true)`: blob complete and verified;
    /// `Ok(false)`: truncated, a retry is scheduled (resuming at
    /// [`BlobDownload::received`]); `Err(HashMismatch)`: the host must drop
    /// the stored bytes (the download restarts at 0).
    pub fn on_end(&mut self, now_ms: u64) -> Result<bool, AttemptFailure> {
        if !matches!(self.state, State::Running(_)) {
            return Err(AttemptFailure::Transport("end without a request".into()));
        }
        if self.received < self.length {
            self.fail(
                now_ms,
                AttemptFailure::Truncated {
                    at: self.received,
                    length: self.length,
                },
            );
            return Ok(false);
        }
        self.finish(now_ms);
        if self.is_done() {
            Ok(true)
        } else {
            Err(AttemptFailure::HashMismatch)
        }
    }

    /// The running request failed (link dropped, HTTP error).
    pub fn on_error(&mut self, now_ms: u64, reason: impl Into<String>) {
        self.fail(now_ms, AttemptFailure::Transport(reason.into()));
    }

    fn finish(&mut self, now_ms: u64) {
        let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if got == self.sha256.0 {
            self.backoff.succeed();
            self.state = State::Done;
        } else {
            self.received = 0;
            self.fail(now_ms, AttemptFailure::HashMismatch);
        }
    }

    fn fail(&mut self, now_ms: u64, why: AttemptFailure) {
        self.state = match self.backoff.fail() {
            Some(delay) => State::Backoff {
                until_ms: now_ms.saturating_add(delay),
            },
            None => State::GaveUp {
                attempts: self.backoff.failures(),
                last: why,
            },
        };
    }
}
