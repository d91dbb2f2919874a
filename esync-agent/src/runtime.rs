//! A tokio runtime that connects the [`Agent`] to an
//! [`esync_transport::Transport`] (built-in broker link, MQTT or in-process
//! channels). Feature `runtime`.
//!
//! The loop: frames from the transport are verified end to end with an
//! [`esync_proto::envelope::Verifier`] (signature, sender permissions,
//! recipient, replay) before the Agent sees them; the Agent's messages are
//! signed with the Agent's [`EnvelopeSigner`](esync_proto::envelope::EnvelopeSigner) and sent; final reports are
//! marked sent once the transport accepted them and are sent again after a
//! reconnection; pending work runs between messages (so "do not disturb"
//! answers go out while installing), and deadlines wake the Agent.
//!
//! Device and journal calls are synchronous and run on the task that runs
//! [`run_agent`]; give the Agent its own (current-thread) runtime or a
//! dedicated worker if device writes are slow.

use std::future::Future;

use esync_proto::envelope::{KeyResolver, Verifier};
use esync_proto::FrameError;
use esync_transport::{Incoming, SharedSigner, Transport, TransportError};

use crate::device::Device;
use crate::journal::JournalStore;
use crate::patch::PatchApplier;
use crate::policy::ConsentPolicy;
use crate::target::MetadataVerifier;
use crate::{Agent, AgentConfig, AgentError, Context, Output, VersionReporter};

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
    agent: &mut Agent,
    host: &mut AgentHost,
    sec: &Security,
    transport: &Transport,
    out: Output,
    clock: &impl Fn() -> u64,
    stats: &mut RuntimeStats,
) -> Result<(), RuntimeError> {
    for m in out.messages {
        let frame = {
            let mut signer = sec.signer.lock().unwrap_or_else(|e| e.into_inner());
            signer.seal(m.recipient, m.correlation, m.payload, clock())?
        };
        match transport.send(frame).await {
            Ok(()) => {
                stats.sent += 1;
                if let Some(id) = m.outbox_id {
                    agent.mark_sent(id, &mut ctx!(host))?;
                }
            }
            Err(TransportError::Closed) | Err(_) => stats.send_failed += 1,
        }
    }
    Ok(())
}

/// Runs the Agent on `transport` until `shutdown` completes or the
/// transport closes. `clock` returns the current time in ms since the Unix
/// epoch. Returns counters; an error means the Agent must be restarted
/// (call this again: it recovers from the journal).
pub async fn run_agent(
    host: &mut AgentHost,
    sec: &mut Security,
    transport: &mut Transport,
    clock: impl Fn() -> u64,
    shutdown: impl Future<Output = ()>,
) -> Result<RuntimeStats, RuntimeError> {
    let mut stats = RuntimeStats::default();
    let (mut agent, out) = Agent::recover(host.config.clone(), clock(), &mut ctx!(host))?;
    let mut work = out.poll;
    let mut deadline = out.deadline_ms;
    deliver(&mut agent, host, sec, transport, out, &clock, &mut stats).await?;
    tokio::pin!(shutdown);
    loop {
        let sleep_ms = match (work, deadline) {
            (true, _) => 0,
            (false, Some(d)) => d.saturating_sub(clock()),
            (false, None) => 3_600_000,
        };
        let out = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(stats),
            inc = transport.recv() => match inc {
                None => return Ok(stats),
                Some(Incoming::Frame(frame)) => {
                    let now = clock();
                    match sec.verifier.open(&frame, &*sec.keys, now) {
                        Ok(msg) => {
                            stats.accepted += 1;
                            agent.handle(now, &msg, &mut ctx!(host))?
                        }
                        Err(_) => {
                            stats.dropped += 1;
                            continue;
                        }
                    }
                }
                Some(Incoming::Reconnected) => agent.pending_reports(),
                Some(Incoming::Presence(_)) => continue,
            },
            () = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)) => {
                agent.poll(clock(), &mut ctx!(host))?
            }
        };
        work = out.poll;
        deadline = out.deadline_ms;
        deliver(&mut agent, host, sec, transport, out, &clock, &mut stats).await?;
    }
}
