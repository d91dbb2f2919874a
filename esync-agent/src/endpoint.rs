//! A synchronous, sans-I/O endpoint: the glue between frames and the
//! [`Agent`].
//!
//! Frame bytes go in ([`Endpoint::receive`]): the envelope is verified with
//! the host's [`Verifier`] (signature, sender permissions, recipient,
//! replay), the message goes to [`Agent::handle`], and the Agent's messages
//! come out sealed as [`Frame`]s, with the outbox id of every final report
//! and the next deadline ([`Step`]). The host sends the frames, calls
//! [`Endpoint::mark_sent`] for each outbox id its transport accepted, and
//! calls [`Endpoint::poll`] while [`Step::poll`] is set or at
//! [`Step::deadline_ms`]. Every call takes both clocks ([`Now`]): envelope
//! timestamps and the verifier's window use wall time, deadlines monotonic
//! time. No async, no I/O, no clock, no thread: the tokio
//! runtime (`crate::runtime`, feature `runtime`) is a loop over this, and so are a C ABI or a
//! test harness.

use std::sync::Mutex;

use esync_proto::envelope::{EnvelopeSigner, KeyResolver, Recipient, Verifier};
use esync_proto::id::CorrelationId;
use esync_proto::message::Payload;
use esync_proto::{EnvelopeError, FrameError};

use crate::agent::{Agent, Context, Ignored, Now, Output};
use crate::config::AgentConfig;
use crate::error::AgentError;

/// Signs and frames the Agent's messages.
pub trait Sealer {
    /// A framed, signed envelope for `payload`; `now_ms` (wall time) is its
    /// timestamp.
    fn seal(
        &mut self,
        recipient: Recipient,
        correlation: CorrelationId,
        payload: Payload,
        now_ms: u64,
    ) -> Result<Vec<u8>, FrameError>;
}

impl Sealer for EnvelopeSigner {
    fn seal(
        &mut self,
        recipient: Recipient,
        correlation: CorrelationId,
        payload: Payload,
        now_ms: u64,
    ) -> Result<Vec<u8>, FrameError> {
        EnvelopeSigner::seal(self, recipient, correlation, payload, now_ms)
    }
}

/// A signer shared with a transport (which signs presence with it): locked
/// only while one envelope is sealed, never during device work.
impl Sealer for &Mutex<EnvelopeSigner> {
    fn seal(
        &mut self,
        recipient: Recipient,
        correlation: CorrelationId,
        payload: Payload,
        now_ms: u64,
    ) -> Result<Vec<u8>, FrameError> {
        // A panic while sealing leaves the signer's sequence number as it
        // was (it advances only after a successful signature): reuse it.
        let mut signer = self.lock().unwrap_or_else(|e| e.into_inner());
        signer.seal(recipient, correlation, payload, now_ms)
    }
}

/// The envelope side of the endpoint, passed in at each call like the
/// Agent's [`Context`].
pub struct Envelopes<'a> {
    /// Verifies incoming frames (its replay state is the host's to keep).
    pub verifier: &'a mut Verifier,
    /// Keys of the senders the Agent accepts (the Client).
    pub keys: &'a dyn KeyResolver,
    /// Seals outgoing messages.
    pub signer: &'a mut dyn Sealer,
}

/// A frame to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The framed, signed envelope.
    pub bytes: Vec<u8>,
    /// Set for a final report: call [`Endpoint::mark_sent`] with it once the
    /// transport accepted the frame (until then it is sent again after a
    /// restart or a reconnection).
    pub outbox_id: Option<u64>,
}

/// What became of the input of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// No input (a poll, a reconnection, recovery).
    None,
    /// The frame was verified and handled.
    Handled,
    /// The frame was verified; the Agent ignored the message.
    Ignored(Ignored),
    /// The frame was refused by envelope verification; the Agent never
    /// saw it.
    Refused(EnvelopeError),
}

/// What a call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Frames to send, in order.
    pub frames: Vec<Frame>,
    /// What became of the input.
    pub input: Input,
    /// Call [`Endpoint::poll`] again now (work is pending).
    pub poll: bool,
    /// Call [`Endpoint::poll`] at this monotonic time ([`Now::mono_ms`]) if
    /// nothing happens before.
    pub deadline_ms: Option<u64>,
}

impl Step {
    /// The outbox ids of the final reports among [`Step::frames`].
    pub fn outbox_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.frames.iter().filter_map(|f| f.outbox_id)
    }
}

/// The endpoint stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The Agent halted (power loss, journal failure): drop the endpoint and
    /// recover it (after the restart).
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// A message of the Agent could not be signed or framed (it exceeds the
    /// frame limits). The Agent's state is journaled; a final report among
    /// the messages stays in its outbox.
    #[error("sealing a message: {0}")]
    Frame(#[from] FrameError),
}

/// The Agent behind an envelope verifier and a signer. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    agent: Agent,
}

impl Endpoint {
    /// Recovers the Agent from its journal ([`Agent::recover`]) and seals
    /// what it has to send (every unsent final report).
    pub fn recover(
        config: AgentConfig,
        now: Now,
        ctx: &mut Context<'_>,
        env: &mut Envelopes<'_>,
    ) -> Result<(Endpoint, Step), EndpointError> {
        let (agent, out) = Agent::recover(config, now, ctx)?;
        let step = seal(out, Input::None, now, env)?;
        Ok((Endpoint { agent }, step))
    }

    /// The Agent.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Verifies one received frame and, if it verifies, hands the message
    /// to the Agent. A refused frame changes nothing and produces no frame.
    pub fn receive(
        &mut self,
        frame: &[u8],
        now: Now,
        ctx: &mut Context<'_>,
        env: &mut Envelopes<'_>,
    ) -> Result<Step, EndpointError> {
        let msg = match env.verifier.open(frame, env.keys, now.wall_ms) {
            Ok(msg) => msg,
            Err(e) => {
                let (poll, deadline_ms) = self.agent.schedule();
                return Ok(Step {
                    frames: Vec::new(),
                    input: Input::Refused(e),
                    poll,
                    deadline_ms,
                });
            }
        };
        let out = self.agent.handle(now, &msg, ctx)?;
        let input = match out.ignored {
            Some(why) => Input::Ignored(why),
            None => Input::Handled,
        };
        seal(out, input, now, env)
    }

    /// Does the next piece of pending work and handles deadlines
    /// ([`Agent::poll`]).
    pub fn poll(
        &mut self,
        now: Now,
        ctx: &mut Context<'_>,
        env: &mut Envelopes<'_>,
    ) -> Result<Step, EndpointError> {
        let out = self.agent.poll(now, ctx)?;
        seal(out, Input::None, now, env)
    }

    /// The transport reconnected: every final report not yet marked sent,
    /// sealed again.
    pub fn reconnected(
        &mut self,
        now: Now,
        env: &mut Envelopes<'_>,
    ) -> Result<Step, EndpointError> {
        seal(self.agent.pending_reports(), Input::None, now, env)
    }

    /// The transport accepted the frame of this outbox id: the report
    /// leaves the journal ([`Agent::mark_sent`]).
    pub fn mark_sent(&mut self, outbox_id: u64, ctx: &mut Context<'_>) -> Result<(), AgentError> {
        self.agent.mark_sent(outbox_id, ctx)
    }
}

fn seal(
    out: Output,
    input: Input,
    now: Now,
    env: &mut Envelopes<'_>,
) -> Result<Step, EndpointError> {
    let mut frames = Vec::with_capacity(out.messages.len());
    for m in out.messages {
        let bytes = env
            .signer
            .seal(m.recipient, m.correlation, m.payload, now.wall_ms)?;
        frames.push(Frame {
            bytes,
            outbox_id: m.outbox_id,
        });
    }
    Ok(Step {
        frames,
        input,
        poll: out.poll,
        deadline_ms: out.deadline_ms,
    })
}
