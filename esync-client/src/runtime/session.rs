//! Driving the Server-facing sans-I/O session (`core::session::Session`)
//! over [`DeviceHttp`]: every [`ServerRequest`] becomes one HTTPS request and its
//! answer goes back through `Session::provide`.
//!
//! Blob bytes are written to `DOWNLOADS/SHA256.partial` at the offset the
//! session asks for (`range_start`), then handed to the session, which
//! hashes, caps and times them (A12, A14). When the session says
//! [`SessionStep::Ready`] every blob is verified: each partial file is fsynced
//! and renamed to `DOWNLOADS/SHA256`, and the directory fsynced.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use esync_api::BlobId;
use esync_proto::message::{ConsentRequest, ConsentResponse};
use esync_uptane::TrustStore;

use crate::core::session::{Answer, Now, ServerRequest, Session, SessionError, SessionStep};
use crate::http::{DeviceHttp, HttpError, Repo};

/// Errors of the session driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// The session failed (verification, A13, gave up after retries).
    #[error("session: {0}")]
    Session(#[from] SessionError),
    /// A local file failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The session asked for consent and no answer was available.
    #[error("consent needed and no HMI answer: {0:?}")]
    NoConsent(Box<ConsentRequest>),
    /// The session asked for a need this driver does not serve.
    #[error("need not served by the session driver: {0}")]
    Unserved(&'static str),
}

/// The host side of a session: HTTPS, the downloads directory, timeouts
/// and the two clocks.
#[derive(Debug)]
pub struct SessionHost<'a> {
    /// The HTTPS client.
    pub http: &'a DeviceHttp,
    /// Where blobs are written.
    pub downloads: PathBuf,
    /// Most time for one request's answer head (and metadata bodies).
    pub request_timeout: Duration,
    /// Most time between two chunks of a blob body.
    pub idle_timeout: Duration,
    /// Origin of the monotonic clock.
    pub started: Instant,
}

impl SessionHost<'_> {
    /// Both clocks now.
    pub fn now(&self) -> Now {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall_ms,
        }
    }

    /// The partial file of blob `sha`.
    pub fn partial(&self, blob: &BlobId) -> PathBuf {
        self.downloads.join(format!("{blob}.partial"))
    }

    /// The final file of blob `sha`.
    pub fn blob_path(&self, blob: &BlobId) -> PathBuf {
        self.downloads.join(blob.to_string())
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DriveError + '_ {
    move |source| DriveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs `session` from `step` until it reaches a step that is not a
/// request or a wait: [`SessionStep::UpToDate`], [`SessionStep::Blocked`],
/// [`SessionStep::Postponed`], [`SessionStep::Denied`] or [`SessionStep::Ready`] (after the
/// blobs were moved to their final names). `consent` answers the HMI
/// consent requests (`None`: no answer available, the drive stops with
/// [`DriveError::NoConsent`]).
pub async fn drive<SD: TrustStore, SI: TrustStore>(
    session: &mut Session<SD, SI>,
    host: &SessionHost<'_>,
    mut step: SessionStep,
    mut consent: impl FnMut(&ConsentRequest) -> Option<ConsentResponse>,
) -> Result<SessionStep, DriveError> {
    loop {
        step = match step {
            SessionStep::WaitUntil(at) => {
                let now = host.now().mono_ms;
                if at > now {
                    tokio::time::sleep(Duration::from_millis(at - now)).await;
                }
                session.poll(host.now())?
            }
            SessionStep::Continue => session.poll(host.now())?,
            SessionStep::Need(need) => serve(session, host, need, &mut consent).await?,
            SessionStep::Ready(ready) => {
                for c in &ready.components {
                    let blob = BlobId(c.artifact.sha256);
                    finish_blob(host, &blob)?;
                }
                return Ok(SessionStep::Ready(ready));
            }
            terminal => return Ok(terminal),
        };
    }
}

fn finish_blob(host: &SessionHost<'_>, blob: &BlobId) -> Result<(), DriveError> {
    let part = host.partial(blob);
    let dest = host.blob_path(blob);
    if !part.exists() && dest.exists() {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .map_err(io(&part))?;
    f.sync_all().map_err(io(&part))?;
    drop(f);
    std::fs::rename(&part, &dest).map_err(io(&dest))?;
    esync_store::file::sync_dir(&host.downloads).map_err(io(&host.downloads))
}

async fn serve<SD: TrustStore, SI: TrustStore>(
    session: &mut Session<SD, SI>,
    host: &SessionHost<'_>,
    need: ServerRequest,
    consent: &mut impl FnMut(&ConsentRequest) -> Option<ConsentResponse>,
) -> Result<SessionStep, DriveError> {
    let t = host.request_timeout;
    let failed = |session: &mut Session<SD, SI>, e: HttpError| {
        let why = e.to_string();
        session.provide(host.now(), Answer::Failed(&why))
    };
    let step = match need {
        ServerRequest::CheckIn { body } => match host.http.check_in_raw(body, t).await {
            Ok(r) => session.provide(host.now(), Answer::CheckIn(&r)),
            Err(e) => failed(session, e),
        },
        ServerRequest::UploadManifest { body } => match host.http.upload_manifest(&body, t).await {
            Ok(a) => session.provide(host.now(), Answer::ManifestAccepted(&a)),
            Err(e) => failed(session, e),
        },
        ServerRequest::DirectorFile { name, max_len } => {
            match host
                .http
                .metadata_file(Repo::Director, &name, max_len, t)
                .await
            {
                Ok(f) => session.provide(host.now(), Answer::File(f.as_deref())),
                Err(e) => failed(session, e),
            }
        }
        ServerRequest::ImageFile { name, max_len } => {
            match host
                .http
                .metadata_file(Repo::Image, &name, max_len, t)
                .await
            {
                Ok(f) => session.provide(host.now(), Answer::File(f.as_deref())),
                Err(e) => failed(session, e),
            }
        }
        ServerRequest::Consent(req) => match consent(&req) {
            Some(answer) => session.provide(host.now(), Answer::Consent(&answer)),
            None => return Err(DriveError::NoConsent(Box::new(req))),
        },
        ServerRequest::Blob {
            sha256,
            range_start,
            max_len: _,
            blob: _,
        } => return blob(session, host, BlobId(sha256), range_start).await,
        ServerRequest::Report { .. } => return Err(DriveError::Unserved("report")),
    };
    Ok(step?)
}

async fn blob<SD: TrustStore, SI: TrustStore>(
    session: &mut Session<SD, SI>,
    host: &SessionHost<'_>,
    blob: BlobId,
    range_start: u64,
) -> Result<SessionStep, DriveError> {
    std::fs::create_dir_all(&host.downloads).map_err(io(&host.downloads))?;
    let part = host.partial(&blob);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part)
        .map_err(io(&part))?;
    // Bytes past the session's offset were never accepted: drop them.
    file.set_len(range_start).map_err(io(&part))?;
    file.seek(SeekFrom::Start(range_start)).map_err(io(&part))?;
    let mut stream = match host
        .http
        .open_blob(&blob, range_start, host.idle_timeout)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            return Ok(session.provide(host.now(), Answer::Failed(&why))?);
        }
    };
    loop {
        match stream.next_chunk().await {
            Ok(Some(chunk)) => {
                file.write_all(&chunk).map_err(io(&part))?;
                match session.provide(host.now(), Answer::BlobBytes(&chunk))? {
                    SessionStep::Continue => {}
                    other => {
                        file.sync_data().map_err(io(&part))?;
                        return Ok(other);
                    }
                }
            }
            Ok(None) => {
                file.sync_data().map_err(io(&part))?;
                return Ok(session.provide(host.now(), Answer::BlobEnd)?);
            }
            Err(e) => {
                file.sync_data().map_err(io(&part))?;
                let why = e.to_string();
                return Ok(session.provide(host.now(), Answer::Failed(&why))?);
            }
        }
    }
}
