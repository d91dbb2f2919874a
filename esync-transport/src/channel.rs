//! In-process transport over bounded tokio channels.
//!
//! A [`ChannelTransport`] is one endpoint; its [`ChannelPeer`] is the other
//! side (a hub or a broker). [`ChannelHub`] routes between endpoints with the
//! same rules as the embedded broker ([`crate::routing`]), for tests and
//! single-process deployments; the embedded broker uses a
//! [`ChannelTransport`] as the Client's own endpoint.
//!
//! Every queue is bounded. The hub delivers with `try_send`: when an
//! endpoint's inbound queue is full, the message is dropped for that endpoint
//! and counted ([`HubStats::dropped_full`]), so a slow endpoint never blocks
//! the others nor grows memory. Sending into the hub waits while the hub's
//! inbound queue for that endpoint is full (backpressure on the sender).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use esync_proto::envelope::SignedEnvelope;
use esync_proto::frame::FrameLimits;
use esync_proto::id::GroupName;
use esync_proto::message::{Participant, PresenceState};
use tokio::sync::mpsc;

use crate::routing::RoutingTable;
use crate::{
    BoxFuture, CheckedFrame, FrameSink, FrameTransport, Incoming, PresenceEvent, TransportError,
};

/// What an endpoint hands to its peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// An envelope frame to route.
    Frame(Vec<u8>),
    /// Replace the endpoint's group subscriptions.
    Subscribe(Vec<GroupName>),
}

/// One in-process endpoint; use it through a [`Transport`](crate::Transport),
/// which checks its frames like those of every other transport.
#[derive(Debug)]
pub struct ChannelTransport {
    me: Participant,
    limits: FrameLimits,
    tx: Arc<QueueSink>,
    rx: mpsc::Receiver<Incoming>,
}

/// The sending half of a queue-based transport (channels, the broker link):
/// checked frames go into the bounded outbound queue.
#[derive(Debug)]
pub(crate) struct QueueSink(pub(crate) mpsc::Sender<Outbound>);

impl QueueSink {
    pub(crate) async fn send(&self, out: Outbound) -> Result<(), TransportError> {
        self.0.send(out).await.map_err(|_| TransportError::Closed)
    }
}

impl FrameSink for QueueSink {
    fn send_checked(&self, frame: CheckedFrame) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.send(Outbound::Frame(frame.into_bytes())))
    }
}

/// The other side of a [`ChannelTransport`].
#[derive(Debug)]
pub struct ChannelPeer {
    /// Whom the endpoint speaks for.
    pub participant: Participant,
    /// What the endpoint sends.
    pub rx: mpsc::Receiver<Outbound>,
    /// Where to deliver what the endpoint receives.
    pub tx: mpsc::Sender<Incoming>,
}

/// A connected endpoint and its peer, each direction bounded by `bound`
/// messages (at least 1); the endpoint's frames are checked against
/// `limits`.
pub fn channel_pair(
    me: Participant,
    bound: usize,
    limits: FrameLimits,
) -> (ChannelTransport, ChannelPeer) {
    let bound = bound.max(1);
    let (out_tx, out_rx) = mpsc::channel(bound);
    let (in_tx, in_rx) = mpsc::channel(bound);
    (
        ChannelTransport {
            me: me.clone(),
            limits,
            tx: Arc::new(QueueSink(out_tx)),
            rx: in_rx,
        },
        ChannelPeer {
            participant: me,
            rx: out_rx,
            tx: in_tx,
        },
    )
}

impl ChannelTransport {
    /// Whom this endpoint speaks for.
    pub fn participant(&self) -> &Participant {
        &self.me
    }
}

impl FrameTransport for ChannelTransport {
    fn limits(&self) -> FrameLimits {
        self.limits
    }

    fn sink(&self) -> Arc<dyn FrameSink> {
        self.tx.clone()
    }

    fn recv_raw(&mut self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(self.rx.recv())
    }

    fn set_groups(&self, groups: Vec<GroupName>) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.tx.send(Outbound::Subscribe(groups)))
    }
}

/// Counters of a [`ChannelHub`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Frames delivered to an endpoint.
    pub delivered: u64,
    /// Frames and presence events dropped because the receiving endpoint's
    /// queue was full.
    pub dropped_full: u64,
    /// Frames dropped because the header names another sender than the
    /// endpoint they came from.
    pub dropped_sender_mismatch: u64,
    /// Frames that are not envelope frames.
    pub dropped_malformed: u64,
    /// Frames with no reachable recipient.
    pub dropped_no_route: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    dropped_full: AtomicU64,
    dropped_sender_mismatch: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_no_route: AtomicU64,
}

#[derive(Clone, Debug)]
struct HubConn {
    generation: u64,
    tx: mpsc::Sender<Incoming>,
}

struct HubInner {
    table: Mutex<(RoutingTable<HubConn>, u64)>,
    bound: usize,
    limits: FrameLimits,
    counters: Counters,
}

/// Routes between in-process endpoints. Checks only that the sender named
/// in a frame's header is the endpoint it came from (no signatures: every
/// receiver still verifies end to end). Presence changes of other
/// endpoints are delivered to the Client endpoint as [`Incoming::Presence`].
#[derive(Clone)]
pub struct ChannelHub {
    inner: Arc<HubInner>,
}

impl core::fmt::Debug for ChannelHub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelHub")
            .field("bound", &self.inner.bound)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ChannelHub {
    /// A hub whose queues hold at most `bound` messages each.
    pub fn new(bound: usize, limits: FrameLimits) -> Self {
        ChannelHub {
            inner: Arc::new(HubInner {
                table: Mutex::new((RoutingTable::new(), 0)),
                bound: bound.max(1),
                limits,
                counters: Counters::default(),
            }),
        }
    }

    /// Connects an endpoint for `me` (replacing any previous endpoint with
    /// the same identity). Must be called inside a tokio runtime.
    pub fn connect(&self, me: Participant) -> ChannelTransport {
        let (transport, peer) = channel_pair(me.clone(), self.inner.bound, self.inner.limits);
        let generation = {
            let mut guard = lock(&self.inner.table);
            guard.1 += 1;
            let generation = guard.1;
            guard.0.insert(
                me.clone(),
                HubConn {
                    generation,
                    tx: peer.tx.clone(),
                },
            );
            if me == Participant::Client {
                // Tell the Client who is already there.
                let others: Vec<Participant> = guard
                    .0
                    .members()
                    .filter(|(p, _)| **p != Participant::Client)
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in others {
                    send_presence(&peer.tx, &self.inner.counters, &p, PresenceState::Connected);
                }
            } else {
                presence_to_client(
                    &guard.0,
                    &self.inner.counters,
                    &me,
                    PresenceState::Connected,
                );
            }
            generation
        };
        let inner = Arc::clone(&self.inner);
        tokio::spawn(pump(inner, peer, generation));
        transport
    }

    /// Current counters.
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        HubStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped_full: c.dropped_full.load(Ordering::Relaxed),
            dropped_sender_mismatch: c.dropped_sender_mismatch.load(Ordering::Relaxed),
            dropped_malformed: c.dropped_malformed.load(Ordering::Relaxed),
            dropped_no_route: c.dropped_no_route.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Queues a presence event for `to`; a full queue drops it and counts it, as
/// for frames.
fn send_presence(
    tx: &mpsc::Sender<Incoming>,
    counters: &Counters,
    who: &Participant,
    state: PresenceState,
) {
    let event = Incoming::Presence(PresenceEvent {
        participant: who.clone(),
        state,
    });
    if tx.try_send(event).is_err() {
        counters.dropped_full.fetch_add(1, Ordering::Relaxed);
    }
}

fn presence_to_client(
    table: &RoutingTable<HubConn>,
    counters: &Counters,
    who: &Participant,
    state: PresenceState,
) {
    if let Some(client) = table.get(&Participant::Client) {
        send_presence(&client.conn.tx, counters, who, state);
    }
}

async fn pump(inner: Arc<HubInner>, mut peer: ChannelPeer, generation: u64) {
    let me = peer.participant.clone();
    let c = &inner.counters;
    while let Some(out) = peer.rx.recv().await {
        match out {
            Outbound::Subscribe(groups) => {
                lock(&inner.table).0.set_groups(&me, groups);
            }
            Outbound::Frame(frame) => {
                let header = match SignedEnvelope::from_frame(&frame, inner.limits)
                    .and_then(|s| s.unverified_header())
                {
                    Ok(h) => h,
                    Err(_) => {
                        c.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                if header.sender != me {
                    c.dropped_sender_mismatch.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let targets = lock(&inner.table).0.route(&me, &header.recipient);
                if targets.is_empty() {
                    c.dropped_no_route.fetch_add(1, Ordering::Relaxed);
                }
                for (_, conn) in targets {
                    match conn.tx.try_send(Incoming::Frame(frame.clone())) {
                        Ok(()) => c.delivered.fetch_add(1, Ordering::Relaxed),
                        Err(_) => c.dropped_full.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }
    }
    let mut guard = lock(&inner.table);
    if guard
        .0
        .remove_if(&me, |c| c.generation == generation)
        .is_some()
        && me != Participant::Client
    {
        presence_to_client(&guard.0, &inner.counters, &me, PresenceState::Disconnected);
    }
}
