//! Driving `esync_uptane::repo::Repository` (sans-I/O) over HTTPS: each
//! [`Need`](esync_uptane::Need) becomes one GET of the device API.

use std::time::Duration;

use esync_api::body::{CheckInRequest, CheckInResponse};
use esync_proto::id::Sha256Digest;
use esync_uptane::{RepoProgress, Repository, Response, TrustStore, UnixTime};

use crate::http::{DeviceHttp, HttpError, Repo};

/// Most metadata files one refresh may fetch: a bound on a server that
/// keeps answering (the verifier bounds root rotations itself; this also
/// bounds delegations).
pub const MAX_FETCHES_PER_REFRESH: usize = 1024;

/// Errors of a runtime step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientRuntimeError {
    /// The HTTPS side failed.
    #[error("http: {0}")]
    Http(#[from] HttpError),
    /// Uptane verification failed (the metadata is not trusted).
    #[error("uptane: {0}")]
    Uptane(#[from] esync_uptane::Error),
    /// More than [`MAX_FETCHES_PER_REFRESH`] files asked for.
    #[error("refresh asked for more than {0} files")]
    TooManyFetches(usize),
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// Files fetched (GETs, including the 404 that ends root rotation).
    pub fetched: usize,
    /// Version of the trusted `timestamp.json` after the refresh.
    pub timestamp_version: Option<u64>,
    /// Version of the trusted top-level `targets.json` after the refresh.
    pub targets_version: Option<u64>,
}

/// Refreshes `repository` (a Director or Image repository client over
/// any trust store, e.g. `esync_store::trust::DirTrustStore`) from `repo`
/// on the Server, verifying everything at `now`. Each GET has `timeout`.
pub async fn refresh<S: TrustStore>(
    http: &DeviceHttp,
    repo: Repo,
    repository: &mut Repository<S>,
    now: UnixTime,
    timeout: Duration,
) -> Result<RefreshOutcome, ClientRuntimeError> {
    let mut progress = repository.begin_refresh(now)?;
    let mut fetched = 0;
    while let RepoProgress::Need(need) = progress {
        if fetched == MAX_FETCHES_PER_REFRESH {
            return Err(ClientRuntimeError::TooManyFetches(MAX_FETCHES_PER_REFRESH));
        }
        fetched += 1;
        let got = http.fetch_need(repo, &need, timeout).await?;
        progress = repository.provide(match &got {
            Some(b) => Response::Bytes(b),
            None => Response::NotFound,
        })?;
    }
    Ok(RefreshOutcome {
        fetched,
        timestamp_version: repository.timestamp().map(|t| t.meta.version),
        targets_version: repository.top_targets().map(|t| t.version),
    })
}

/// What a check-in led to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckInOutcome {
    /// Nothing new.
    UpToDate,
    /// The Server wanted the manifest; it was uploaded and the check-in
    /// repeated (its answer inside).
    ManifestUploaded(Box<CheckInOutcome>),
    /// The Server wanted the manifest and none was given to upload.
    ManifestWanted,
    /// New Director metadata: the Director was refreshed.
    DirectorRefreshed(RefreshOutcome),
}

/// One check-in: sends the hash of `signed_manifest`; uploads it when the
/// Server asks (once per call); refreshes the Director when the Server has
/// a timestamp newer than the trusted one.
pub async fn check_in<S: TrustStore>(
    http: &DeviceHttp,
    signed_manifest: Option<&[u8]>,
    director: &mut Repository<S>,
    now: UnixTime,
    timeout: Duration,
) -> Result<CheckInOutcome, ClientRuntimeError> {
    use sha2::Digest;
    let digest = Sha256Digest(sha2::Sha256::digest(signed_manifest.unwrap_or_default()).into());
    let req = CheckInRequest {
        manifest_sha256: digest,
    };
    let mut uploaded = false;
    loop {
        let answer = http.check_in(&req, timeout).await?;
        let outcome = match answer {
            CheckInResponse::UpToDate => CheckInOutcome::UpToDate,
            CheckInResponse::NewDirectorMetadata { timestamp_version } => {
                let have = director.timestamp().map(|t| t.meta.version);
                if have >= Some(timestamp_version) {
                    CheckInOutcome::UpToDate
                } else {
                    let r = refresh(http, Repo::Director, director, now, timeout).await?;
                    CheckInOutcome::DirectorRefreshed(r)
                }
            }
            CheckInResponse::ManifestWanted => match signed_manifest {
                Some(m) if !uploaded => {
                    http.upload_manifest(m, timeout).await?;
                    uploaded = true;
                    continue;
                }
                _ => CheckInOutcome::ManifestWanted,
            },
            // A newer Server's answer this Client does not know: nothing
            // to act on.
            _ => CheckInOutcome::UpToDate,
        };
        return Ok(if uploaded {
            CheckInOutcome::ManifestUploaded(Box::new(outcome))
        } else {
            outcome
        });
    }
}
