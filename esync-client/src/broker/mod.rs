//! The in-vehicle broker embedded in the Client.
//!
//! Agents and listeners connect over TCP with mutual TLS (rustls; the server
//! configuration comes from `esync_identity::server_tls_config` with the
//! vehicle's certificate, and requires a client certificate chaining to the
//! fleet CA). The broker listens on a configurable address, loopback by
//! default. The Client itself talks to the broker in-process through the
//! [`ChannelTransport`] returned by [`Broker::start`] (wrap it in an
//! `esync_transport::Transport`, which checks its frames as on every other
//! transport).
//!
//! # Security: route, never forge
//!
//! Every frame is an esync-proto `SignedEnvelope` frame signed by its sender.
//! For each frame from a connection the broker:
//!
//! 1. decodes the frame within the configured limits (bounded before any
//!    body byte is buffered);
//! 2. checks that the sender named in the envelope header is the participant
//!    the connection's certificate names, for this vehicle
//!    (`esync_identity::check_sender`), and drops and counts it otherwise
//!    ([`BrokerStats::dropped_sender_mismatch`], attack A17);
//! 3. verifies the signature with the key of that certificate, and drops and
//!    counts on failure ([`BrokerStats::dropped_bad_signature`]);
//! 4. routes the frame's exact bytes ([`esync_transport::routing`]).
//!
//! It never re-signs or alters a frame: it can drop one but not forge one.
//! Receivers verify end to end with `esync_proto::envelope::Verifier`, which
//! also enforces that only the Client may send commands and refuses
//! replays. A connection presenting the vehicle's own (Client) certificate,
//! another vehicle's certificate or a server certificate is refused.
//!
//! # Presence
//!
//! When a participant connects or disconnects, the Client receives an
//! [`Incoming::Presence`] on its endpoint (in-process, so it needs no
//! signature). If a [`SharedSigner`] of the Client is configured, members of
//! the `presence` group also receive a `Presence` envelope signed with the
//! Client's key, from the Client's own sequence space (the signer is shared
//! with the Client runtime), stamped with the configured
//! [`BrokerConfig::clock`] (the broker never reads the system clock itself).
//!
//! # Backpressure policy
//!
//! Each connection has an outbound queue bounded both in frames
//! ([`BrokerConfig::queue_frames`]) and in bytes
//! ([`BrokerConfig::queue_bytes`]). A frame that does not fit is **dropped
//! for that consumer and counted** ([`QueueStats::dropped_full`],
//! [`BrokerStats::dropped_queue_full`]); the sender and the other consumers
//! are not slowed. Memory held for a slow consumer is therefore at most its
//! queue bound (frames are shared between recipients, so a group message
//! costs one copy). Dropping rather than disconnecting keeps a briefly busy
//! Agent connected; the protocol is request/response with retries (transfer
//! acks say where to resume), so a dropped message is recovered by the
//! sender's retry. The Client's in-process endpoint is bounded too
//! ([`BrokerConfig::client_queue`]), with the same policy.
//!
//! # Reconnection
//!
//! A new connection with the same identity replaces the old one (the old
//! connection is closed; frames queued for it are discarded). Sequence
//! numbers are per sender and independent of connections, so receivers'
//! replay state keeps working across reconnections.

mod queue;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use esync_identity::PeerIdentity;
use esync_proto::envelope::{Recipient, SignedEnvelope};
use esync_proto::frame::{FrameDecoder, FrameLimits};
use esync_proto::id::{GroupName, Id128, Vin};
use esync_proto::message::{Participant, Payload, Presence, PresenceState};
use esync_transport::channel::{channel_pair, ChannelPeer};
use esync_transport::link::{self, LinkMessage};
use esync_transport::routing::{RoutingTable, PRESENCE_GROUP};
use esync_transport::{
    ChannelTransport, Incoming, Outbound, PresenceEvent, SharedSigner, WallClock, MAX_GROUPS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use queue::OutQueue;
pub use queue::QueueStats;

/// Default listening address: loopback, port chosen by the system.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// Configuration of the embedded broker.
#[derive(Clone)]
pub struct BrokerConfig {
    /// Address to listen on ([`DEFAULT_LISTEN`] by default).
    pub listen: SocketAddr,
    /// TLS server configuration requiring client certificates
    /// (`esync_identity::server_tls_config` with the vehicle's identity).
    pub tls: Arc<rustls::ServerConfig>,
    /// The vehicle: only certificates of this vehicle are admitted.
    pub vin: Vin,
    /// Envelope frame limits.
    pub limits: FrameLimits,
    /// Per-connection outbound queue bound, in frames.
    pub queue_frames: usize,
    /// Per-connection outbound queue bound, in bytes.
    pub queue_bytes: usize,
    /// Bound of the Client's in-process inbound queue, in messages.
    pub client_queue: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// The Client's signer, to sign presence envelopes for the `presence`
    /// group (`None`: no presence envelopes, only the Client's events).
    pub presence_signer: Option<SharedSigner>,
    /// Wall time stamped on the presence envelopes the broker signs.
    pub clock: WallClock,
}

impl core::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("listen", &self.listen)
            .field("vin", &self.vin)
            .field("limits", &self.limits)
            .field("queue_frames", &self.queue_frames)
            .field("queue_bytes", &self.queue_bytes)
            .field("client_queue", &self.client_queue)
            .field("max_connections", &self.max_connections)
            .field("presence_signer", &self.presence_signer.is_some())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// Defaults: loopback, 1 MiB frames, 256 frames / 4 MiB per connection,
    /// 1024 messages for the Client, 5 s handshakes, 256 connections, no
    /// presence signer, the system clock.
    pub fn new(tls: Arc<rustls::ServerConfig>, vin: Vin) -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls,
            vin,
            limits: FrameLimits::default(),
            queue_frames: 256,
            queue_bytes: 4 << 20,
            client_queue: 1024,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 256,
            presence_signer: None,
            clock: WallClock::system(),
        }
    }
}

/// Broker-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Connections that completed TLS and were admitted.
    pub connections_admitted: u64,
    /// Connections refused (TLS failure, identity not admitted, limit).
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_active: usize,
    /// Connections replaced by a newer one with the same identity.
    pub connections_replaced: u64,
    /// Envelope frames received (network and Client).
    pub frames_in: u64,
    /// Deliveries into a recipient's queue.
    pub deliveries: u64,
    /// Frames whose header names another sender than the connection's
    /// certificate (A17).
    pub dropped_sender_mismatch: u64,
    /// Frames whose signature does not verify with the connection's key.
    pub dropped_bad_signature: u64,
    /// Frames that do not decode.
    pub dropped_malformed: u64,
    /// Frames with no connected recipient.
    pub dropped_no_route: u64,
    /// Deliveries dropped because the recipient's queue was full.
    pub dropped_queue_full: u64,
}

#[derive(Default)]
struct Counters {
    connections_admitted: AtomicU64,
    connections_refused: AtomicU64,
    connections_replaced: AtomicU64,
    frames_in: AtomicU64,
    deliveries: AtomicU64,
    dropped_sender_mismatch: AtomicU64,
    dropped_bad_signature: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_no_route: AtomicU64,
    dropped_queue_full: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone)]
enum Sink {
    Remote {
        generation: u64,
        queue: Arc<OutQueue>,
    },
    Local(mpsc::Sender<Incoming>),
}

struct Shared {
    config: BrokerConfig,
    table: Mutex<RoutingTable<Sink>>,
    next_generation: AtomicU64,
    active: AtomicUsize,
    counters: Counters,
    client_tx: mpsc::Sender<Incoming>,
    presence_group: GroupName,
    /// The key of each participant's certificate, as admitted at its last
    /// handshake (kept after it disconnects).
    keys: Mutex<BTreeMap<Participant, ed25519_dalek::VerifyingKey>>,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, RoutingTable<Sink>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The embedded broker.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// Binds the listening socket and starts the broker. Returns its handle
    /// and the Client's in-process endpoint.
    ///
    /// Fails if the address cannot be bound, or if `queue_bytes` could not
    /// hold one frame of the maximum size (such frames could never be
    /// delivered).
    pub async fn start(config: BrokerConfig) -> std::io::Result<(BrokerHandle, ChannelTransport)> {
        let largest_link_frame =
            config.limits.max_body as usize + esync_proto::frame::HEADER_LEN + 1;
        if config.queue_bytes < largest_link_frame {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "broker queue_bytes {} is below the largest frame ({largest_link_frame} bytes)",
                    config.queue_bytes
                ),
            ));
        }
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let presence_group = GroupName::new(PRESENCE_GROUP)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let (client, peer) = channel_pair(Participant::Client, config.client_queue, config.limits);
        let mut table = RoutingTable::new();
        table.insert(Participant::Client, Sink::Local(peer.tx.clone()));
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            next_generation: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            counters: Counters::default(),
            client_tx: peer.tx.clone(),
            presence_group,
            keys: Mutex::new(BTreeMap::new()),
            config,
        });
        let client_task = tokio::spawn(client_pump(Arc::clone(&shared), peer));
        let accept_task = tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        Ok((
            BrokerHandle {
                shared,
                local_addr,
                tasks: vec![accept_task, client_task],
            },
            client,
        ))
    }
}

/// The keys of the certificates the broker admitted (see
/// [`BrokerHandle::peer_keys`]); a participant that never connected has
/// none.
#[derive(Clone)]
pub struct PeerKeys(Arc<Shared>);

impl core::fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerKeys").finish_non_exhaustive()
    }
}

impl esync_proto::envelope::KeyResolver for PeerKeys {
    fn key_for(&self, sender: &Participant) -> Option<ed25519_dalek::VerifyingKey> {
        self.0.keys.lock().ok()?.get(sender).copied()
    }
}

/// Handle of a running broker; dropping it stops the broker.
pub struct BrokerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl BrokerHandle {
    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Broker-wide counters.
    pub fn stats(&self) -> BrokerStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BrokerStats {
            connections_admitted: l(&c.connections_admitted),
            connections_refused: l(&c.connections_refused),
            connections_active: self.shared.active.load(Ordering::Relaxed),
            connections_replaced: l(&c.connections_replaced),
            frames_in: l(&c.frames_in),
            deliveries: l(&c.deliveries),
            dropped_sender_mismatch: l(&c.dropped_sender_mismatch),
            dropped_bad_signature: l(&c.dropped_bad_signature),
            dropped_malformed: l(&c.dropped_malformed),
            dropped_no_route: l(&c.dropped_no_route),
            dropped_queue_full: l(&c.dropped_queue_full),
        }
    }

    /// Queue counters of `who`'s current connection.
    pub fn queue_stats(&self, who: &Participant) -> Option<QueueStats> {
        match &self.shared.table().get(who)?.conn {
            Sink::Remote { queue, .. } => Some(queue.stats()),
            Sink::Local(_) => None,
        }
    }

    /// Groups `who` is subscribed to now, if connected.
    pub fn groups(&self, who: &Participant) -> Option<Vec<GroupName>> {
        Some(
            self.shared
                .table()
                .get(who)?
                .groups
                .iter()
                .cloned()
                .collect(),
        )
    }

    /// Participants connected now (the Client included).
    pub fn connected(&self) -> Vec<Participant> {
        self.shared
            .table()
            .members()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Closes `who`'s connection (it may reconnect). False if not connected.
    pub fn disconnect(&self, who: &Participant) -> bool {
        let mut t = self.shared.table();
        let current = match t.get(who) {
            Some(member) => match &member.conn {
                Sink::Remote { generation, .. } => *generation,
                Sink::Local(_) => return false,
            },
            None => return false,
        };
        match t.remove_if(
            who,
            |s| matches!(s, Sink::Remote { generation, .. } if *generation == current),
        ) {
            Some(m) => {
                if let Sink::Remote { queue, .. } = &m.conn {
                    queue.close();
                }
                announce(&self.shared, &t, who, PresenceState::Disconnected);
                true
            }
            None => false,
        }
    }

    /// The keys of the participants' certificates, as the broker admitted
    /// them (fleet-CA chain, this VIN, the identity in the SAN): what the
    /// Client verifies their envelopes with end to end.
    pub fn peer_keys(&self) -> PeerKeys {
        PeerKeys(Arc::clone(&self.shared))
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let t = self.shared.table();
        for (_, m) in t.members() {
            if let Sink::Remote { queue, .. } = &m.conn {
                queue.close();
            }
        }
    }
}

/// Delivers an envelope frame to the routed recipients.
fn deliver(shared: &Shared, targets: Vec<(Participant, Sink)>, frame: &[u8]) {
    let c = &shared.counters;
    if targets.is_empty() {
        inc(&c.dropped_no_route);
        return;
    }
    let mut linked: Option<Arc<Vec<u8>>> = None;
    for (_, sink) in targets {
        let ok = match sink {
            Sink::Remote { queue, .. } => {
                let l = match &linked {
                    Some(l) => Arc::clone(l),
                    None => match link::envelope_to_link(frame, shared.config.limits) {
                        Ok(l) => {
                            let l = Arc::new(l);
                            linked = Some(Arc::clone(&l));
                            l
                        }
                        Err(_) => {
                            inc(&c.dropped_malformed);
                            return;
                        }
                    },
                };
                queue.push(l)
            }
            Sink::Local(tx) => tx.try_send(Incoming::Frame(frame.to_vec())).is_ok(),
        };
        if ok {
            inc(&c.deliveries);
        } else {
            inc(&c.dropped_queue_full);
        }
    }
}

/// Tells the Client (in-process) and the `presence` group (signed by the
/// Client's signer, if configured) that `who` changed state.
///
/// Called with the routing table locked, so that announcements are in the
/// same order as the table changes they report.
fn announce(shared: &Shared, table: &RoutingTable<Sink>, who: &Participant, state: PresenceState) {
    if shared
        .client_tx
        .try_send(Incoming::Presence(PresenceEvent {
            participant: who.clone(),
            state,
        }))
        .is_err()
    {
        inc(&shared.counters.dropped_queue_full);
    }
    let Some(signer) = &shared.config.presence_signer else {
        return;
    };
    let recipient = Recipient::Group(shared.presence_group.clone());
    let targets = table.route(&Participant::Client, &recipient);
    if targets.is_empty() {
        return;
    }
    let frame = {
        let mut s = signer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.seal(
            recipient,
            Id128([0; 16]),
            Payload::Presence(Presence {
                subject: who.clone(),
                state,
            }),
            shared.config.clock.now_ms(),
        )
    };
    match frame {
        Ok(f) => deliver(shared, targets, &f),
        Err(e) => tracing::warn!(error = %e, "broker: cannot sign presence"),
    }
}

/// Frames the Client sends through its in-process endpoint.
async fn client_pump(shared: Arc<Shared>, mut peer: ChannelPeer) {
    let c = &shared.counters;
    while let Some(out) = peer.rx.recv().await {
        match out {
            Outbound::Subscribe(groups) => {
                if groups.len() <= MAX_GROUPS {
                    shared.table().set_groups(&Participant::Client, groups);
                }
            }
            Outbound::Frame(frame) => {
                inc(&c.frames_in);
                let header = match SignedEnvelope::from_frame(&frame, shared.config.limits)
                    .and_then(|s| s.unverified_header())
                {
                    Ok(h) => h,
                    Err(_) => {
                        inc(&c.dropped_malformed);
                        continue;
                    }
                };
                // The Client is in-process and trusted to sign its own frames;
                // it may still only speak as the Client.
                if header.sender != Participant::Client {
                    inc(&c.dropped_sender_mismatch);
                    continue;
                }
                let targets = shared
                    .table()
                    .route(&Participant::Client, &header.recipient);
                deliver(&shared, targets, &frame);
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let acceptor = TlsAcceptor::from(Arc::clone(&shared.config.tls));
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "broker: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.active.load(Ordering::Relaxed) >= shared.config.max_connections {
            inc(&shared.counters.connections_refused);
            continue;
        }
        // Counted before the handshake, so a burst of half-open connections
        // cannot exceed the limit.
        shared.active.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            serve(&shared, acceptor, tcp, addr).await;
            shared.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Admits a TLS peer: its certificate must name an Agent or listener of this
/// vehicle.
fn admit(
    shared: &Shared,
    certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
) -> Option<(PeerIdentity, Participant)> {
    let identity = esync_identity::peer_identity_from_certs(certs?).ok()?;
    let who = identity.participant()?;
    if who == Participant::Client {
        return None;
    }
    esync_identity::check_sender(&identity, &who, Some(&shared.config.vin)).ok()?;
    Some((identity, who))
}

async fn serve(shared: &Arc<Shared>, acceptor: TlsAcceptor, tcp: TcpStream, addr: SocketAddr) {
    let c = &shared.counters;
    let _ = tcp.set_nodelay(true);
    let tls =
        match tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            _ => {
                tracing::debug!(%addr, "broker: TLS handshake failed");
                inc(&c.connections_refused);
                return;
            }
        };
    let Some((identity, who)) = admit(shared, tls.get_ref().1.peer_certificates()) else {
        tracing::debug!(%addr, "broker: peer identity not admitted");
        inc(&c.connections_refused);
        return;
    };
    inc(&c.connections_admitted);
    if let Ok(mut keys) = shared.keys.lock() {
        if keys.len() < shared.config.max_connections.saturating_mul(4) || keys.contains_key(&who) {
            keys.insert(who.clone(), identity.verifying_key);
        }
    }
    let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
    let queue = Arc::new(OutQueue::new(
        shared.config.queue_frames,
        shared.config.queue_bytes,
    ));
    {
        let mut t = shared.table();
        let old = t.insert(
            who.clone(),
            Sink::Remote {
                generation,
                queue: Arc::clone(&queue),
            },
        );
        if let Some(old) = old {
            if let Sink::Remote { queue, .. } = &old.conn {
                queue.close();
            }
            inc(&c.connections_replaced);
        }
        announce(shared, &t, &who, PresenceState::Connected);
    }

    let (r, w) = tokio::io::split(tls);
    tokio::select! {
        () = read_side(shared, &identity, &who, generation, r) => {}
        () = write_side(&queue, w) => {}
    }
    queue.close();
    let mut t = shared.table();
    let removed = t.remove_if(
        &who,
        |s| matches!(s, Sink::Remote { generation: g, .. } if *g == generation),
    );
    if removed.is_some() {
        announce(shared, &t, &who, PresenceState::Disconnected);
    }
}

type TlsRead = tokio::io::ReadHalf<tokio_rustls::server::TlsStream<TcpStream>>;
type TlsWrite = tokio::io::WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>;

async fn write_side(queue: &OutQueue, mut w: TlsWrite) {
    while let Some(batch) = queue.pop_batch(64).await {
        for f in batch {
            if w.write_all(&f).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_side(
    shared: &Shared,
    identity: &PeerIdentity,
    who: &Participant,
    generation: u64,
    mut r: TlsRead,
) {
    let c = &shared.counters;
    let limits = shared.config.limits;
    let mut decoder = FrameDecoder::new(link::link_limits(limits));
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            let body = match decoder.next_body() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(_) => {
                    // Out of sync: the connection cannot continue.
                    inc(&c.dropped_malformed);
                    return;
                }
            };
            match link::parse_link_body(&body) {
                Ok(LinkMessage::Envelope(frame)) => {
                    inc(&c.frames_in);
                    on_envelope(shared, identity, who, &frame);
                }
                Ok(LinkMessage::Subscribe(groups)) => {
                    if groups.len() > MAX_GROUPS {
                        inc(&c.dropped_malformed);
                        continue;
                    }
                    let mut t = shared.table();
                    let current = matches!(
                        t.get(who).map(|m| &m.conn),
                        Some(Sink::Remote { generation: g, .. }) if *g == generation
                    );
                    if current {
                        t.set_groups(who, groups);
                    }
                }
                Err(_) => inc(&c.dropped_malformed),
            }
        }
    }
}

/// Checks an envelope from a network connection and routes it.
fn on_envelope(shared: &Shared, identity: &PeerIdentity, who: &Participant, frame: &[u8]) {
    let c = &shared.counters;
    let Ok(signed) = SignedEnvelope::from_frame(frame, shared.config.limits) else {
        inc(&c.dropped_malformed);
        return;
    };
    let Ok(header) = signed.unverified_header() else {
        inc(&c.dropped_malformed);
        return;
    };
    if esync_identity::check_sender(identity, &header.sender, Some(&shared.config.vin)).is_err() {
        tracing::debug!(connection = %who, claimed = %header.sender, "broker: sender mismatch, dropped");
        inc(&c.dropped_sender_mismatch);
        return;
    }
    if signed.verify_signature(&identity.verifying_key).is_err() {
        tracing::debug!(connection = %who, "broker: bad signature, dropped");
        inc(&c.dropped_bad_signature);
        return;
    }
    let targets = shared.table().route(who, &header.recipient);
    deliver(shared, targets, frame);
}
