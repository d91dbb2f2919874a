//! Background delta generation.
//!
//! A [`DeltaWorker`] claims a job from the [`Store`] (the database decides
//! who gets it: several workers, on one node or several, never generate
//! the same (from, to, format) twice while a claim is live), reads both
//! images from the [`BlobStore`], generates the patch with
//! `esync_package` (feature `generate`) on a blocking thread, stores the
//! result blob and marks the job done. A worker that dies leaves its claim
//! to expire after the lease; a worker whose lease was taken over cannot
//! overwrite the new holder's result (`finish_delta` checks the claim).

use std::sync::Arc;
use std::time::Duration;

use esync_package::delta::generate::{generate_patch, GenerateError, GenerateOptions};
use esync_proto::message::PatchFormat;
use thiserror::Error;

use crate::blob::{BlobError, BlobInfo, BlobStore, Expect};
use crate::store::{DbError, DeltaJob, Inserted, Store};

/// Stored name of a patch format (its serde name, as in package JSON).
pub fn format_name(f: PatchFormat) -> &'static str {
    match f {
        PatchFormat::Bsdiff40 => "Bsdiff40",
        PatchFormat::BsdiffZstd => "BsdiffZstd",
        PatchFormat::BsdiffXz => "BsdiffXz",
    }
}

/// Parses a stored patch format name.
pub fn parse_format(s: &str) -> Option<PatchFormat> {
    [
        PatchFormat::Bsdiff40,
        PatchFormat::BsdiffZstd,
        PatchFormat::BsdiffXz,
    ]
    .into_iter()
    .find(|f| format_name(*f) == s)
}

/// Running a delta job failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeltaJobError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The generation thread panicked or was cancelled.
    #[error("delta generation task failed: {0}")]
    Join(String),
}

/// What one [`DeltaWorker::run_once`] did.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeltaOutcome {
    /// No job was waiting.
    Idle,
    /// A patch was generated and stored.
    Done {
        /// The job.
        job_id: i64,
        /// The patch blob.
        patch: BlobInfo,
        /// How long reading the images, generating and storing the patch
        /// took.
        elapsed: Duration,
    },
    /// The job failed (unknown format, missing image, generator error) and
    /// is marked failed with this reason.
    Failed {
        /// The job.
        job_id: i64,
        /// Why.
        reason: String,
    },
    /// The patch was generated but the claim had been taken over meanwhile;
    /// the other holder's result stands.
    Lost {
        /// The job.
        job_id: i64,
    },
}

/// Queues the delta from `from` to `to` in `format` (once per triple).
pub async fn request_delta(
    store: &dyn Store,
    from: &[u8; 32],
    to: &[u8; 32],
    format: PatchFormat,
    now_ms: i64,
) -> Result<(DeltaJob, Inserted), DbError> {
    store
        .enqueue_delta(from, to, format_name(format), now_ms)
        .await
}

/// A delta generation worker.
#[derive(Clone, Debug)]
pub struct DeltaWorker {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    name: String,
    lease_ms: i64,
    options: fn(PatchFormat) -> GenerateOptions,
}

impl DeltaWorker {
    /// A worker called `name` (unique per worker, e.g. host and index);
    /// claims expire after `lease_ms`.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: BlobStore,
        name: impl Into<String>,
        lease_ms: i64,
    ) -> Self {
        Self {
            store,
            blobs,
            name: name.into(),
            lease_ms,
            options: GenerateOptions::new,
        }
    }

    /// Uses `options` to choose the generator settings per format.
    pub fn with_options(mut self, options: fn(PatchFormat) -> GenerateOptions) -> Self {
        self.options = options;
        self
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Claims and runs at most one job at wall time `now_ms`.
    pub async fn run_once(&self, now_ms: i64) -> Result<DeltaOutcome, DeltaJobError> {
        let Some(job) = self
            .store
            .claim_delta(&self.name, now_ms, self.lease_ms)
            .await?
        else {
            return Ok(DeltaOutcome::Idle);
        };
        tracing::debug!(job = job.id, worker = %self.name, "delta job claimed");
        let started = std::time::Instant::now();
        match self.generate(&job).await? {
            Ok(patch) => {
                let kept = self
                    .store
                    .finish_delta(job.id, &self.name, &patch.sha256, patch.length)
                    .await?;
                Ok(if kept {
                    DeltaOutcome::Done {
                        job_id: job.id,
                        patch,
                        elapsed: started.elapsed(),
                    }
                } else {
                    DeltaOutcome::Lost { job_id: job.id }
                })
            }
            Err(reason) => {
                let kept = self.store.fail_delta(job.id, &self.name, &reason).await?;
                Ok(if kept {
                    DeltaOutcome::Failed {
                        job_id: job.id,
                        reason,
                    }
                } else {
                    DeltaOutcome::Lost { job_id: job.id }
                })
            }
        }
    }

    /// Runs jobs until none is waiting; `now` gives the wall time in ms.
    /// Returns the outcomes.
    pub async fn drain(&self, now: impl Fn() -> i64) -> Result<Vec<DeltaOutcome>, DeltaJobError> {
        let mut out = Vec::new();
        loop {
            match self.run_once(now()).await? {
                DeltaOutcome::Idle => return Ok(out),
                o => out.push(o),
            }
        }
    }

    /// Runs forever, polling every `idle` when there is nothing to do;
    /// `now` gives the wall time in ms. Errors are logged and retried.
    pub async fn run(&self, now: impl Fn() -> i64, idle: Duration) {
        loop {
            match self.run_once(now()).await {
                Ok(DeltaOutcome::Idle) => tokio::time::sleep(idle).await,
                Ok(o) => tracing::info!(worker = %self.name, outcome = ?o, "delta job"),
                Err(e) => {
                    tracing::warn!(worker = %self.name, error = %e, "delta worker");
                    tokio::time::sleep(idle).await;
                }
            }
        }
    }

    /// Generates the job's patch: `Ok(Ok(blob))`, or `Ok(Err(reason))` for a
    /// job that cannot succeed.
    async fn generate(&self, job: &DeltaJob) -> Result<Result<BlobInfo, String>, DeltaJobError> {
        let Some(format) = parse_format(&job.format) else {
            return Ok(Err(format!("unknown patch format {:?}", job.format)));
        };
        let source = match self.blobs.read(&job.from_sha256).await {
            Ok(b) => b,
            Err(BlobError::NotFound(d)) => return Ok(Err(format!("source image {d} missing"))),
            Err(e) => return Err(e.into()),
        };
        let target = match self.blobs.read(&job.to_sha256).await {
            Ok(b) => b,
            Err(BlobError::NotFound(d)) => return Ok(Err(format!("target image {d} missing"))),
            Err(e) => return Err(e.into()),
        };
        let opts = (self.options)(format);
        let patch: Result<Vec<u8>, GenerateError> =
            tokio::task::spawn_blocking(move || generate_patch(&source, &target, &opts))
                .await
                .map_err(|e| DeltaJobError::Join(e.to_string()))?;
        let patch = match patch {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.to_string())),
        };
        match self.blobs.put_bytes(Expect::default(), &patch).await {
            Ok(info) => Ok(Ok(info)),
            Err(BlobError::TooLarge { limit }) => Ok(Err(format!(
                "patch larger than the {limit}-byte blob limit"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}
