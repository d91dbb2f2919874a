//! Transport through an existing MQTT broker (e.g. Mosquitto), with rumqttc.
//!
//! # Topics
//!
//! With `root` the configured topic root (default `esync`; tests use a unique
//! root per run) and `VIN` the vehicle:
//!
//! | recipient | topic | subscribed by |
//! | --- | --- | --- |
//! | `Client` | `root/VIN/client` | the Client |
//! | `Device(/a/b)` | `root/VIN/device/a/b` | the Agent `/a/b` |
//! | `DevicePrefix(/a)` | `root/VIN/prefix/a` | every Agent at or below `/a`: Agent `/a/b` subscribes `prefix/a` and `prefix/a/b` (one per leading segment run, at most 8) |
//! | `Group(g)` | `root/VIN/group/g` | members of `g` ([`Transport::subscribe`](crate::Transport::subscribe)) |
//! | `Listener(l)` | `root/VIN/listener/l` | the listener `l` |
//! | presence of Agent `/a/b` | `root/VIN/presence/device/a/b` (retained) | the Client (`root/VIN/presence/#`) |
//! | presence of listener `l` | `root/VIN/presence/listener/l` (retained) | the Client |
//!
//! Device paths and names are restricted to `[a-z0-9._-]` segments, so they
//! never contain MQTT wildcards. The topic is chosen from the recipient in
//! the envelope's (signed) header; the payload is the envelope frame,
//! unchanged.
//!
//! # QoS
//!
//! Every publish is QoS 1 (at least once). Duplicates that QoS 1 may produce
//! are dropped by the receiver's `Verifier` as replays. Sessions are clean:
//! after a reconnection the transport re-subscribes (its own topics and its
//! groups) and reports [`Incoming::Reconnected`]; messages published while
//! it was away are not kept for it.
//!
//! # Presence
//!
//! Presence is carried by retained messages plus the MQTT last will, and each
//! presence message is itself a signed envelope: an `EventReport` from the
//! Agent (or listener) to the Client holding one event whose code is
//! [`PRESENCE_CONNECTED`] or [`PRESENCE_DISCONNECTED`], signed with the
//! participant's own key ([`MqttPresence::Announce`] with its
//! [`SharedSigner`]). On every connection the transport signs two markers
//! with consecutive sequence numbers, `connected` (seq N) and `disconnected`
//! (seq N+1): the second becomes the connection's last will (retained, QoS
//! 1), the first is published retained once connected. When the connection
//! ends without an MQTT DISCONNECT (crash, network loss, or dropping the
//! transport) the broker publishes the will. Ordinary messages continue at
//! N+2, so sequence numbers stay strictly increasing.
//!
//! The Client ([`MqttPresence::Watch`]) verifies each marker: the topic names
//! the same participant as the signed header, the recipient is the Client,
//! the signature verifies with the participant's provisioned key, and the
//! sequence number is above the last presence marker accepted from it (its
//! own replay guard, separate from the message `Verifier`, because a will is
//! signed before the messages that precede its delivery). Only then does it
//! report an [`Incoming::Presence`]. A forged or replayed marker is counted
//! ([`MqttStats::presence_rejected`]) and ignored.
//!
//! # Security
//!
//! Mosquitto does not know envelopes, so there is no broker-side sender
//! check here: receivers' `Verifier`s do all of it (signature, permitted
//! sender, recipient, replay). A deployment should also give each
//! participant its own MQTT credentials and a Mosquitto ACL restricting it
//! to its own topics. This transport talks plain MQTT (TCP); MQTT over TLS is
//! not built here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use esync_proto::envelope::{KeyResolver, Recipient, ReplayGuard, SignedEnvelope};
use esync_proto::frame::FrameLimits;
use esync_proto::id::{DevicePath, GroupName, Id128, ListenerName, Vin};
use esync_proto::message::{Event, EventReport, Participant, Payload, PresenceState, Severity};
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{
    BoxFuture, CheckedFrame, FrameSink, FrameTransport, Incoming, PresenceEvent, SharedSigner,
    TransportError, WallClock,
};

/// Event code of a "connected" presence marker.
pub const PRESENCE_CONNECTED: &str = "esync.presence.connected";
/// Event code of a "disconnected" presence marker.
pub const PRESENCE_DISCONNECTED: &str = "esync.presence.disconnected";

/// What this transport does about presence.
#[derive(Clone)]
pub enum MqttPresence {
    /// Nothing.
    None,
    /// Announce this participant's presence, signing markers with its signer.
    Announce(SharedSigner),
    /// Watch the presence of the others (the Client), verifying markers with
    /// the participants' provisioned keys.
    Watch(Arc<dyn KeyResolver + Send + Sync>),
}

impl core::fmt::Debug for MqttPresence {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            MqttPresence::None => "None",
            MqttPresence::Announce(_) => "Announce",
            MqttPresence::Watch(_) => "Watch",
        })
    }
}

/// Configuration of an [`MqttTransport`].
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic root (no `+`, `#` or empty segment).
    pub topic_root: String,
    /// The vehicle.
    pub vin: Vin,
    /// Whom this transport speaks for.
    pub participant: Participant,
    /// MQTT client id (unique per broker; a second connection with the same
    /// id takes the session over).
    pub client_id: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Inbound queue bound, in messages.
    pub queue: usize,
    /// Envelope frame limits (also the MQTT packet size limit, plus topic
    /// room).
    pub limits: FrameLimits,
    /// Presence behaviour.
    pub presence: MqttPresence,
    /// First reconnection delay.
    pub backoff_initial: Duration,
    /// Largest reconnection delay.
    pub backoff_max: Duration,
    /// Wall time stamped on the presence markers this transport signs.
    pub clock: WallClock,
}

impl MqttConfig {
    /// A configuration with defaults: root `esync`, client id derived from
    /// the root, VIN and participant, 10 s keep-alive, queue of 256, 1 MiB
    /// frames, backoff 100 ms to 5 s, the system clock.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        vin: Vin,
        participant: Participant,
        presence: MqttPresence,
    ) -> Self {
        let mut c = MqttConfig {
            host: host.into(),
            port,
            topic_root: "esync".into(),
            vin,
            participant,
            client_id: String::new(),
            keep_alive: Duration::from_secs(10),
            queue: 256,
            limits: FrameLimits::default(),
            presence,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            clock: WallClock::system(),
        };
        c.client_id = default_client_id(&c.topic_root, &c.vin, &c.participant);
        c
    }

    /// Sets the topic root (and the derived client id).
    pub fn with_topic_root(mut self, root: impl Into<String>) -> Self {
        self.topic_root = root.into();
        self.client_id = default_client_id(&self.topic_root, &self.vin, &self.participant);
        self
    }

    /// Sets the clock stamped on presence markers.
    pub fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }
}

fn default_client_id(root: &str, vin: &Vin, p: &Participant) -> String {
    format!("{root}:{vin}:{p}")
}

/// Topic naming for one vehicle under one root; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics under `root/VIN`.
    pub fn new(root: &str, vin: &Vin) -> Result<Self, TransportError> {
        if root.is_empty()
            || root.contains(['+', '#'])
            || root.split('/').any(str::is_empty)
            || root.len() > 256
        {
            return Err(TransportError::Config(
                "MQTT topic root must be non-empty segments without wildcards",
            ));
        }
        Ok(Topics {
            base: format!("{root}/{vin}"),
        })
    }

    /// The topic an envelope for `recipient` is published on.
    pub fn for_recipient(&self, recipient: &Recipient) -> String {
        let b = &self.base;
        match recipient {
            Recipient::Client => format!("{b}/client"),
            Recipient::Device(p) => format!("{b}/device{p}"),
            Recipient::DevicePrefix(p) => format!("{b}/prefix{p}"),
            Recipient::Group(g) => format!("{b}/group/{g}"),
            Recipient::Listener(l) => format!("{b}/listener/{l}"),
        }
    }

    /// The topics `me` subscribes to for itself (groups aside).
    pub fn own_subscriptions(&self, me: &Participant, watch_presence: bool) -> Vec<String> {
        let b = &self.base;
        let mut out = Vec::new();
        match me {
            Participant::Client => {
                out.push(format!("{b}/client"));
                if watch_presence {
                    out.push(format!("{b}/presence/#"));
                }
            }
            Participant::Device(p) => {
                out.push(format!("{b}/device{p}"));
                let mut prefix = String::new();
                for seg in p.segments() {
                    prefix.push('/');
                    prefix.push_str(seg);
                    out.push(format!("{b}/prefix{prefix}"));
                }
            }
            Participant::Listener(l) => out.push(format!("{b}/listener/{l}")),
        }
        out
    }

    /// The retained presence topic of `who` (none for the Client).
    pub fn presence(&self, who: &Participant) -> Option<String> {
        let b = &self.base;
        match who {
            Participant::Client => None,
            Participant::Device(p) => Some(format!("{b}/presence/device{p}")),
            Participant::Listener(l) => Some(format!("{b}/presence/listener/{l}")),
        }
    }

    /// The topic of group `g`.
    pub fn group(&self, g: &GroupName) -> String {
        format!("{}/group/{g}", self.base)
    }

    /// The participant a presence topic names.
    pub fn presence_subject(&self, topic: &str) -> Option<Participant> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/presence/")?;
        if let Some(path) = rest.strip_prefix("device") {
            DevicePath::new(path).ok().map(Participant::Device)
        } else if let Some(name) = rest.strip_prefix("listener/") {
            ListenerName::new(name).ok().map(Participant::Listener)
        } else {
            None
        }
    }

    fn presence_root(&self) -> String {
        format!("{}/presence/", self.base)
    }
}

/// Counters of an [`MqttTransport`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqttStats {
    /// Connections acknowledged by the broker, including the first.
    pub connections: u64,
    /// Connection errors.
    pub connection_errors: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames dropped because the inbound queue was full.
    pub dropped_full: u64,
    /// Presence markers accepted.
    pub presence_accepted: u64,
    /// Presence markers refused (bad signature, mismatch, replay, malformed).
    pub presence_rejected: u64,
}

#[derive(Default)]
struct Counters {
    connection_errors: AtomicU64,
    frames_in: AtomicU64,
    dropped_full: AtomicU64,
    presence_accepted: AtomicU64,
    presence_rejected: AtomicU64,
}

/// Cloneable publishing half of an [`MqttTransport`].
#[derive(Clone, Debug)]
pub struct MqttSender {
    client: AsyncClient,
    topics: Topics,
    limits: FrameLimits,
}

impl MqttSender {
    /// Publishes a checked frame on the topic of its recipient (QoS 1); the
    /// frame must hold an envelope whose header names the recipient.
    async fn publish(&self, frame: CheckedFrame) -> Result<(), TransportError> {
        let header =
            SignedEnvelope::from_frame(frame.as_bytes(), self.limits)?.unverified_header()?;
        let topic = self.topics.for_recipient(&header.recipient);
        self.client
            .publish(topic, QoS::AtLeastOnce, false, frame.into_bytes())
            .await
            .map_err(|e| TransportError::Mqtt(e.to_string()))
    }
}

impl FrameSink for MqttSender {
    fn send_checked(&self, frame: CheckedFrame) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.publish(frame))
    }
}

/// MQTT transport; see the module docs. Use it through a
/// [`Transport`](crate::Transport).
pub struct MqttTransport {
    me: Participant,
    sender: Arc<MqttSender>,
    groups: Arc<Mutex<Vec<GroupName>>>,
    rx: mpsc::Receiver<Incoming>,
    connections: watch::Receiver<u64>,
    subacks: watch::Receiver<u64>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl core::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MqttTransport")
            .field("me", &self.me)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for MqttTransport {
    /// Ends the event loop; the socket closes without an MQTT DISCONNECT, so
    /// the broker publishes this participant's signed "disconnected" will.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Signs the (connected, disconnected) markers, consecutive sequence numbers,
/// stamped with `clock`.
fn sign_markers(
    signer: &SharedSigner,
    limits: FrameLimits,
    clock: &WallClock,
) -> Result<(Vec<u8>, Vec<u8>), TransportError> {
    let mut s = signer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = clock.now_ms();
    let marker = |code: &str| {
        Payload::EventReport(EventReport {
            events: vec![Event {
                time_ms: now,
                code: code.to_string(),
                severity: Severity::Info,
                data: Vec::new(),
            }],
        })
    };
    let up = s.sign(
        Recipient::Client,
        Id128([0; 16]),
        marker(PRESENCE_CONNECTED),
        now,
    )?;
    let down = s.sign(
        Recipient::Client,
        Id128([0; 16]),
        marker(PRESENCE_DISCONNECTED),
        now,
    )?;
    Ok((up.to_frame(limits)?, down.to_frame(limits)?))
}

struct Ctx {
    me: Participant,
    topics: Topics,
    limits: FrameLimits,
    presence: MqttPresence,
    own_subs: Vec<String>,
    groups: Arc<Mutex<Vec<GroupName>>>,
    in_tx: mpsc::Sender<Incoming>,
    conn_tx: watch::Sender<u64>,
    subacks_tx: watch::Sender<u64>,
    counters: Arc<Counters>,
    backoff_initial: Duration,
    backoff_max: Duration,
    clock: WallClock,
}

impl MqttTransport {
    /// Starts the transport; connection happens in the background (see
    /// [`wait_connections`](Self::wait_connections)). Must be called inside
    /// a tokio runtime.
    pub fn connect(config: MqttConfig) -> Result<Self, TransportError> {
        let topics = Topics::new(&config.topic_root, &config.vin)?;
        if matches!(config.presence, MqttPresence::Watch(_))
            && config.participant != Participant::Client
        {
            return Err(TransportError::Config("only the Client watches presence"));
        }
        if matches!(config.presence, MqttPresence::Announce(_))
            && config.participant == Participant::Client
        {
            return Err(TransportError::Config(
                "the Client does not announce presence over MQTT",
            ));
        }
        let mut options =
            MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        options.set_keep_alive(config.keep_alive);
        options.set_clean_session(true);
        // Room for the topic and MQTT header beside the frame.
        let max_packet = config.limits.max_body as usize + 1024;
        options.set_max_packet_size(max_packet, max_packet);
        let mut connected_marker = None;
        if let MqttPresence::Announce(signer) = &config.presence {
            let (up, down) = sign_markers(signer, config.limits, &config.clock)?;
            let topic = topics
                .presence(&config.participant)
                .ok_or(TransportError::Config("no presence topic"))?;
            options.set_last_will(LastWill::new(topic, down, QoS::AtLeastOnce, true));
            connected_marker = Some(up);
        }
        let queue = config.queue.max(1);
        // The request channel must hold a re-subscription burst.
        let (client, eventloop) = AsyncClient::new(options, queue.max(64));
        let (in_tx, in_rx) = mpsc::channel(queue);
        let (conn_tx, conn_rx) = watch::channel(0u64);
        let (subacks_tx, subacks_rx) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let groups = Arc::new(Mutex::new(Vec::new()));
        let ctx = Ctx {
            me: config.participant.clone(),
            own_subs: topics.own_subscriptions(
                &config.participant,
                matches!(config.presence, MqttPresence::Watch(_)),
            ),
            topics: topics.clone(),
            limits: config.limits,
            presence: config.presence.clone(),
            groups: Arc::clone(&groups),
            in_tx,
            conn_tx,
            subacks_tx,
            counters: Arc::clone(&counters),
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
            clock: config.clock.clone(),
        };
        let task = tokio::spawn(run(eventloop, client.clone(), ctx, connected_marker));
        Ok(MqttTransport {
            me: config.participant,
            sender: Arc::new(MqttSender {
                client,
                topics,
                limits: config.limits,
            }),
            groups,
            rx: in_rx,
            connections: conn_rx,
            subacks: subacks_rx,
            counters,
            task,
        })
    }

    /// Whom this transport speaks for.
    pub fn participant(&self) -> &Participant {
        &self.me
    }

    /// Waits until the broker acknowledged at least `n` connections, then
    /// for the subscription requests made on connecting to be acknowledged
    /// (SUBACK) so messages sent after this returns reach this transport.
    pub async fn wait_connections(&self, n: u64) -> Result<(), TransportError> {
        let mut rx = self.connections.clone();
        rx.wait_for(|c| *c >= n)
            .await
            .map(|_| ())
            .map_err(|_| TransportError::Closed)
    }

    /// Current counters.
    pub fn stats(&self) -> MqttStats {
        let c = &self.counters;
        MqttStats {
            connections: *self.connections.borrow(),
            connection_errors: c.connection_errors.load(Ordering::Relaxed),
            frames_in: c.frames_in.load(Ordering::Relaxed),
            dropped_full: c.dropped_full.load(Ordering::Relaxed),
            presence_accepted: c.presence_accepted.load(Ordering::Relaxed),
            presence_rejected: c.presence_rejected.load(Ordering::Relaxed),
        }
    }
}

impl MqttTransport {
    /// Replaces the group subscriptions (restored after reconnections) and
    /// waits (at most 10 s) for the broker to acknowledge them.
    async fn subscribe(&self, groups: Vec<GroupName>) -> Result<(), TransportError> {
        let mut subacks = self.subacks.clone();
        let before = *subacks.borrow_and_update();
        let old = {
            let mut g = self
                .groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *g, groups.clone())
        };
        let c = &self.sender.client;
        for g in old.iter().filter(|g| !groups.contains(g)) {
            c.unsubscribe(self.sender.topics.group(g))
                .await
                .map_err(|e| TransportError::Mqtt(e.to_string()))?;
        }
        for g in &groups {
            c.subscribe(self.sender.topics.group(g), QoS::AtLeastOnce)
                .await
                .map_err(|e| TransportError::Mqtt(e.to_string()))?;
        }
        let want = before + groups.len() as u64;
        let acked = tokio::time::timeout(Duration::from_secs(10), subacks.wait_for(|c| *c >= want))
            .await
            .map(|r| r.is_ok());
        match acked {
            Ok(true) => Ok(()),
            Ok(false) => Err(TransportError::Closed),
            Err(_) => Err(TransportError::Mqtt(
                "subscription not acknowledged within 10 s".into(),
            )),
        }
    }
}

impl FrameTransport for MqttTransport {
    fn limits(&self) -> FrameLimits {
        self.sender.limits
    }

    fn sink(&self) -> Arc<dyn FrameSink> {
        self.sender.clone()
    }

    fn recv_raw(&mut self) -> BoxFuture<'_, Option<Incoming>> {
        Box::pin(self.rx.recv())
    }

    /// Replaces the group subscriptions (restored after reconnections) and
    /// waits (at most 10 s) for the broker to acknowledge them.
    fn set_groups(&self, groups: Vec<GroupName>) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.subscribe(groups))
    }
}

async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    ctx: Ctx,
    mut connected_marker: Option<Vec<u8>>,
) {
    let mut replay = ReplayGuard::new();
    let mut backoff = ctx.backoff_initial;
    let mut connections = 0u64;
    // SUBACKs still expected for the current connection's subscriptions.
    let mut pending_subacks = 0usize;
    let presence_root = ctx.topics.presence_root();
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff = ctx.backoff_initial;
                let groups = ctx
                    .groups
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let topics = ctx
                    .own_subs
                    .iter()
                    .cloned()
                    .chain(groups.iter().map(|g| ctx.topics.group(g)));
                pending_subacks = 0;
                for t in topics {
                    if client.try_subscribe(t, QoS::AtLeastOnce).is_ok() {
                        pending_subacks += 1;
                    }
                }
                if let (Some(marker), Some(topic)) =
                    (&connected_marker, ctx.topics.presence(&ctx.me))
                {
                    let _ = client.try_publish(topic, QoS::AtLeastOnce, true, marker.clone());
                }
                connections += 1;
                if connections > 1 && ctx.in_tx.try_send(Incoming::Reconnected).is_err() {
                    ctx.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                }
                if pending_subacks == 0 {
                    ctx.conn_tx.send_modify(|n| *n = connections);
                }
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                ctx.subacks_tx.send_modify(|n| *n += 1);
                if pending_subacks > 0 {
                    pending_subacks -= 1;
                    if pending_subacks == 0 {
                        ctx.conn_tx.send_modify(|n| *n = connections);
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if p.topic.starts_with(&presence_root) {
                    match &ctx.presence {
                        MqttPresence::Watch(keys) => {
                            if p.payload.is_empty() {
                                continue; // a cleared retained marker
                            }
                            match check_marker(
                                &ctx.topics,
                                &p.topic,
                                &p.payload,
                                keys.as_ref(),
                                ctx.limits,
                                &mut replay,
                            ) {
                                Some(ev) => {
                                    ctx.counters
                                        .presence_accepted
                                        .fetch_add(1, Ordering::Relaxed);
                                    if ctx.in_tx.try_send(Incoming::Presence(ev)).is_err() {
                                        ctx.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                None => {
                                    ctx.counters
                                        .presence_rejected
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        MqttPresence::None | MqttPresence::Announce(_) => {}
                    }
                    continue;
                }
                ctx.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                if ctx
                    .in_tx
                    .try_send(Incoming::Frame(p.payload.to_vec()))
                    .is_err()
                {
                    if ctx.in_tx.is_closed() {
                        return;
                    }
                    ctx.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(e) => {
                if ctx.in_tx.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, "mqtt connection error; reconnecting");
                ctx.counters
                    .connection_errors
                    .fetch_add(1, Ordering::Relaxed);
                // A will already published or still pending belongs to the old
                // connection: sign a fresh pair for the next one.
                if let MqttPresence::Announce(signer) = &ctx.presence {
                    if let (Ok((up, down)), Some(topic)) = (
                        sign_markers(signer, ctx.limits, &ctx.clock),
                        ctx.topics.presence(&ctx.me),
                    ) {
                        eventloop.mqtt_options.set_last_will(LastWill::new(
                            topic,
                            down,
                            QoS::AtLeastOnce,
                            true,
                        ));
                        connected_marker = Some(up);
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ctx.backoff_max);
            }
        }
    }
}

fn check_marker(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    keys: &(dyn KeyResolver + Send + Sync),
    limits: FrameLimits,
    replay: &mut ReplayGuard,
) -> Option<PresenceEvent> {
    let subject = topics.presence_subject(topic)?;
    let signed = SignedEnvelope::from_frame(payload, limits).ok()?;
    let header = signed.unverified_header().ok()?;
    if header.sender != subject || header.recipient != Recipient::Client {
        return None;
    }
    let key = keys.key_for(&subject)?;
    let envelope = signed.verify_signature(&key).ok()?;
    let Payload::EventReport(report) = envelope.payload else {
        return None;
    };
    let [event] = report.events.as_slice() else {
        return None;
    };
    let state = match event.code.as_str() {
        PRESENCE_CONNECTED => PresenceState::Connected,
        PRESENCE_DISCONNECTED => PresenceState::Disconnected,
        _ => return None,
    };
    replay.check(&subject, envelope.header.seq).ok()?;
    replay.accept(&subject, envelope.header.seq);
    Some(PresenceEvent {
        participant: subject,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use esync_proto::envelope::EnvelopeSigner;

    #[test]
    fn presence_markers_carry_the_injected_clock() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let who = Participant::Device(DevicePath::new("/powertrain/ecm").unwrap());
        let limits = FrameLimits::default();
        let signer: SharedSigner = Arc::new(Mutex::new(EnvelopeSigner::new(
            who,
            key.clone(),
            10,
            limits,
        )));
        let fixed = 1_234_567;
        let (up, down) = sign_markers(&signer, limits, &WallClock::new(move || fixed)).unwrap();
        for (frame, code, seq) in [
            (up, PRESENCE_CONNECTED, 10),
            (down, PRESENCE_DISCONNECTED, 11),
        ] {
            let env = SignedEnvelope::from_frame(&frame, limits)
                .unwrap()
                .verify_signature(&key.verifying_key())
                .unwrap();
            assert_eq!((env.header.timestamp_ms, env.header.seq), (fixed, seq));
            let Payload::EventReport(r) = env.payload else {
                panic!("not an event report");
            };
            assert_eq!(r.events.len(), 1);
            assert_eq!(
                (r.events[0].time_ms, r.events[0].code.as_str()),
                (fixed, code)
            );
        }
    }

    #[test]
    fn topics_follow_the_table() {
        let vin = Vin::new("WVWZZZ1JZXW000001").unwrap();
        let t = Topics::new("esync", &vin).unwrap();
        let p = DevicePath::new("/powertrain/ecm").unwrap();
        assert_eq!(
            t.for_recipient(&Recipient::Device(p.clone())),
            "esync/WVWZZZ1JZXW000001/device/powertrain/ecm"
        );
        assert_eq!(
            t.for_recipient(&Recipient::Client),
            "esync/WVWZZZ1JZXW000001/client"
        );
        assert_eq!(
            t.own_subscriptions(&Participant::Device(p.clone()), false),
            vec![
                "esync/WVWZZZ1JZXW000001/device/powertrain/ecm",
                "esync/WVWZZZ1JZXW000001/prefix/powertrain",
                "esync/WVWZZZ1JZXW000001/prefix/powertrain/ecm",
            ]
        );
        assert_eq!(
            t.for_recipient(&Recipient::DevicePrefix(
                DevicePath::new("/powertrain").unwrap()
            )),
            "esync/WVWZZZ1JZXW000001/prefix/powertrain"
        );
        let pt = t.presence(&Participant::Device(p.clone())).unwrap();
        assert_eq!(t.presence_subject(&pt), Some(Participant::Device(p)));
        assert!(Topics::new("a/+/b", &vin).is_err());
        assert!(Topics::new("a//b", &vin).is_err());
    }
}
