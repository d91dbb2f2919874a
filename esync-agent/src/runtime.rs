//! A tokio runtime that connects the [`Agent`](crate::Agent) to an
//! [`esync_transport::Transport`] (built-in broker link, MQTT or in-process
//! channels). Feature `runtime`.
//!
//! A thin loop over the synchronous [`Endpoint`]: frames from the transport
//! are verified end to end with an [`esync_proto::envelope::Verifier`]
//! (signature, sender permissions, recipient, replay) before the Agent sees
//! them; the Agent's messages are signed with the Agent's
//! [`EnvelopeSigner`](esync_proto::envelope::EnvelopeSigner) and sent; final
//! reports are marked sent once the transport accepted them and are sent
//! again after a reconnection; pending work runs between messages (so "do
//! not disturb" answers go out while installing), and deadlines wake the
//! Agent.
//!
//! Device and journal calls are synchronous and run on the task that runs
//! [`run_agent`]; give the Agent its own (current-thread) runtime or a
//! dedicated worker if device writes are slow.

use std::future::Future;

use esync_proto::envelope::{KeyResolver, Verifier};
use esync_proto::FrameError;
use esync_transport::{Incoming, SharedSigner, Transport, TransportError};

use crate::device::Device;
use crate::endpoint::{Endpoint, EndpointError, Envelopes, Input, Step};
use crate::journal::JournalStore;
use crate::patch::PatchApplier;
use crate::policy::ConsentPolicy;
use crate::target::MetadataVerifier;
use crate::{AgentConfig, AgentError, Context, Now, VersionReporter};

/// The runtime stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The Agent halted (power loss, journal failure): restart it.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// A message could not be signed or framed.
    #[error("sealing a message: {0}")]
    Frame(#[from] FrameError),
}

impl From<EndpointError> for RuntimeError {
    fn from(e: EndpointError) -> Self {
        match e {
            EndpointError::Agent(e) => RuntimeError::Agent(e),
            EndpointError::Frame(e) => RuntimeError::Frame(e),
        }
    }
}

/// What the host plugs into the Agent.
pub struct AgentHost {
    /// Agent configuration.
    pub config: AgentConfig,
    /// The device.
    pub device: Box<dyn Device + Send>,
    /// Journal storage.
    pub journal: Box<dyn JournalStore + Send>,
    /// Metadata verification.
    pub verifier: Box<dyn MetadataVerifier + Send>,
    /// Delta reconstruction.
    pub patcher: Box<dyn PatchApplier + Send + Sync>,
    /// Download consent.
    pub policy: Box<dyn ConsentPolicy + Send>,
    /// Signs Uptane ECU version reports (`None`: requests are ignored).
    pub reporter: Option<Box<dyn VersionReporter + Send>>,
}

/// How the Agent authenticates itself and its peers.
pub struct Security {
    /// Signs the Agent's envelopes (shared with the transport's presence).
    pub signer: SharedSigner,
    /// Verifies incoming envelopes (recipient: this device).
    pub verifier: Verifier,
    /// The Client's key (and any other sender the Agent accepts).
    pub keys: Box<dyn KeyResolver + Send + Sync>,
}

/// Counters of a runtime run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Frames received and verified.
    pub accepted: u64,
    /// Frames dropped by envelope verification.
    pub dropped: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages that could not be sent (transport closed or full).
    pub send_failed: u64,
}

/// The envelope side, built per call so that no `dyn` borrow is held
/// across an `.await` (the runtime future stays `Send`).
macro_rules! env {
    ($sec:expr, $signer:expr) => {
        &mut Envelopes {
            verifier: &mut $sec.verifier,
            keys: &*$sec.keys,
            signer: &mut $signer,
        }
    };
}

macro_rules! ctx {
    ($h:expr) => {
        Context {
            device: &mut *$h.device,
            journal: &mut *$h.journal,
            verifier: &mut *$h.verifier,
            patcher: &*$h.patcher,
            policy: &mut *$h.policy,
            reporter: match &mut $h.reporter {
                Some(r) => Some(&mut **r as &mut dyn VersionReporter),
                None => None,
            },
        }
    };
}

async fn deliver(
    endpoint: &mut Endpoint,
    host: &mut AgentHost,
    transport: &Transport,
    step: Step,
    stats: &mut RuntimeStats,
) -> Result<(), RuntimeError> {
    for frame in step.frames {
        match transport.send(frame.bytes).await {
            Ok(()) => {
                stats.sent += 1;
                if let Some(id) = frame.outbox_id {
                    endpoint.mark_sent(id, &mut ctx!(host))?;
                }
            }
            Err(TransportError::Closed) | Err(_) => stats.send_failed += 1,
        }
    }
    Ok(())
}

/// Runs the Agent on `transport` until `shutdown` completes or the
/// transport closes. `clock` returns the current wall time in ms since the
/// Unix epoch (deadlines run on tokio's monotonic clock instead). Returns counters; an error means the Agent must be restarted
/// (call this again: it recovers from the journal).
///
/// The loop drives an [`Endpoint`]: received frames go to
/// [`Endpoint::receive`], pending work and deadlines to [`Endpoint::poll`],
/// a reconnection to [`Endpoint::reconnected`]; the frames each returns are
/// sent and final reports marked sent once the transport accepted them.
pub async fn run_agent(
    host: &mut AgentHost,
    sec: &mut Security,
    transport: &mut Transport,
    clock: impl Fn() -> u64,
    shutdown: impl Future<Output = ()>,
) -> Result<RuntimeStats, RuntimeError> {
    let mut stats = RuntimeStats::default();
    // Deadlines run on tokio's monotonic clock, from the start of this run
    // (the Agent re-arms pending deadlines when it recovers at the start).
    let origin = tokio::time::Instant::now();
    let now = || Now {
        mono_ms: u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX),
        wall_ms: clock(),
    };
    let mut signer: &std::sync::Mutex<esync_proto::envelope::EnvelopeSigner> = &sec.signer;
    let (mut endpoint, step) = Endpoint::recover(
        host.config.clone(),
        now(),
        &mut ctx!(host),
        env!(sec, signer),
    )?;
    let mut work = step.poll;
    let mut deadline = step.deadline_ms;
    deliver(&mut endpoint, host, transport, step, &mut stats).await?;
    tokio::pin!(shutdown);
    loop {
        let sleep_ms = match (work, deadline) {
            (true, _) => 0,
            (false, Some(d)) => d.saturating_sub(now().mono_ms),
            (false, None) => 3_600_000,
        };
        let step = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(stats),
            inc = transport.recv() => match inc {
                None => return Ok(stats),
                Some(Incoming::Frame(frame)) => {
                    let step = endpoint.receive(&frame, now(), &mut ctx!(host), env!(sec, signer))?;
                    if matches!(step.input, Input::Refused(_)) {
                        stats.dropped += 1;
                        continue;
                    }
                    stats.accepted += 1;
                    step
                }
                Some(Incoming::Reconnected) => endpoint.reconnected(now(), env!(sec, signer))?,
                Some(Incoming::Presence(_)) => continue,
            },
            () = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)) => {
                endpoint.poll(now(), &mut ctx!(host), env!(sec, signer))?
            }
        };
        work = step.poll;
        deadline = step.deadline_ms;
        deliver(&mut endpoint, host, transport, step, &mut stats).await?;
    }
}
