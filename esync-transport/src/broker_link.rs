//! Link to the broker embedded in the Client: TCP with mutual TLS
//! (tokio-rustls), the link framing of [`crate::link`], and automatic
//! reconnection.
//!
//! A background task owns the connection. When it drops (broker restart,
//! network error, the broker replacing the connection), the task reconnects
//! with exponential backoff (`backoff_initial` doubling up to `backoff_max`;
//! reset once a link has stayed up for two seconds),
//! re-sends the group subscriptions, and reports [`Incoming::Reconnected`].
//! Frames queued while disconnected wait in the bounded outbound queue
//! (senders wait when it is full); a frame being written when the link
//! failed is lost. The receiver's `Verifier` lives outside the transport, so
//! its replay state is untouched by reconnections: sequence numbers simply
//! continue.
//!
//! Backpressure: reading and writing are independent halves; the reader
//! waits when the inbound queue is full, which stops reading the socket, so
//! the broker's bounded per-connection queue fills and the broker applies its
//! policy (it drops for this consumer and counts).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use esync_proto::frame::{FrameDecoder, FrameLimits};
use esync_proto::id::GroupName;
use esync_proto::message::Participant;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::channel::QueueSink;
use crate::link::{self, LinkMessage};
use crate::{BoxFuture, FrameSink, FrameTransport, Incoming, Outbound, TransportError};

/// Configuration of a [`BrokerTransport`].
#[derive(Clone, Debug)]
pub struct BrokerLinkConfig {
    /// Broker address (loopback by default deployments).
    pub addr: SocketAddr,
    /// TLS server name sent in the handshake (SNI). The in-vehicle broker
    /// serves with the vehicle's certificate, which names the vehicle by its
    /// `esync://vehicle/<VIN>` URI and carries no DNS name: Agents and
    /// listeners use `esync_identity::vehicle_client_tls_config`, which checks
    /// that URI and ignores this name, so any syntactically valid name (for
    /// example `vehicle.invalid`) works. With `client_tls_config` the broker's
    /// certificate would have to carry this DNS name or IP address.
    pub server_name: String,
    /// TLS client configuration with this participant's certificate and the
    /// fleet trust anchors (`esync_identity::vehicle_client_tls_config`).
    pub tls: Arc<rustls::ClientConfig>,
    /// Whom this link speaks for (must match the certificate).
    pub participant: Participant,
    /// Envelope frame limits.
    pub limits: FrameLimits,
    /// Outbound and inbound queue bound, in frames.
    pub queue: usize,
    /// First reconnection delay.
    pub backoff_initial: Duration,
    /// Largest reconnection delay.
    pub backoff_max: Duration,
    /// Limit for TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
}

impl BrokerLinkConfig {
    /// A configuration with defaults: 1 MiB frames, queues of 256 frames,
    /// backoff from 50 ms to 5 s, 5 s connect timeout.
    pub fn new(
        addr: SocketAddr,
        server_name: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
        participant: Participant,
    ) -> Self {
        BrokerLinkConfig {
            addr,
            server_name: server_name.into(),
            tls,
            participant,
            limits: FrameLimits::default(),
            queue: 256,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a [`BrokerTransport`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Successful connections (TLS established), including the first.
    pub connections: u64,
    /// Connection attempts that failed.
    pub failed_attempts: u64,
    /// Links lost after being established.
    pub disconnects: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Received link frames that were not understood.
    pub malformed_in: u64,
    /// Outgoing frames dropped because they could not be put on the link
    /// (none: every frame was checked by the [`Transport`](crate::Transport)
    /// against the same limits; counted as a guard).
    pub dropped_out: u64,
}

#[derive(Default)]
struct Counters {
    failed_attempts: AtomicU64,
    disconnects: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    malformed_in: AtomicU64,
    dropped_out: AtomicU64,
}

/// Link to the embedded broker; see the module docs. Use it through a
/// [`Transport`](crate::Transport).
pub struct BrokerTransport {
    me: Participant,
    limits: FrameLimits,
    tx: Arc<QueueSink>,
    rx: mpsc::Receiver<Incoming>,
    connections: watch::Receiver<u64>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl core::fmt::Debug for BrokerTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BrokerTransport")
            .field("me", &self.me)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for BrokerTransport {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BrokerTransport {
    /// Starts the link; connection happens in the background (see
    /// [`wait_connections`](Self::wait_connections)). Must be called inside
    /// a tokio runtime.
    pub fn connect(config: BrokerLinkConfig) -> Self {
        let queue = config.queue.max(1);
        let (out_tx, out_rx) = mpsc::channel(queue);
        let (in_tx, in_rx) = mpsc::channel(queue);
        let (conn_tx, conn_rx) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let me = config.participant.clone();
        let limits = config.limits;
        let task = tokio::spawn(supervise(
            config,
            out_rx,
            in_tx,
            conn_tx,
            Arc::clone(&counters),
        ));
        BrokerTransport {
            me,
            limits,
            tx: Arc::new(QueueSink(out_tx)),
            rx: in_rx,
            connections: conn_rx,
            counters,
            task,
        }
    }

    /// Whom this link speaks for.
    pub fn participant(&self) -> &Participant {
        &self.me
    }

    /// Waits until at least `n` connections have been established since the
    /// link started (1: the first connection).
    pub async fn wait_connections(&self, n: u64) -> Result<(), TransportError> {
        let mut rx = self.connections.clone();
        rx.wait_for(|c| *c >= n)
            .await
            .map(|_| ())
            .map_err(|_| TransportError::Closed)
    }

    /// Current counters.
    pub fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            connections: *self.connections.borrow(),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            frames_in: c.frames_in.load(Ordering::Relaxed),
            frames_out: c.frames_out.load(Ordering::Relaxed),
            malformed_in: c.malformed_in.load(Ordering::Relaxed),
            dropped_out: c.dropped_out.load(Ordering::Relaxed),
        }
    }
}

impl FrameTransport for BrokerTransport {
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

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn open(config: &BrokerLinkConfig) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(config.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(config.server_name.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(Arc::clone(&config.tls))
        .connect(name, tcp)
        .await
}

/// A link that stayed up this long resets the reconnection backoff.
const STABLE_LINK: Duration = Duration::from_secs(2);

enum LinkEnd {
    /// The transport handle is gone: stop.
    Closed,
    /// The connection failed: reconnect.
    Lost,
}

async fn supervise(
    config: BrokerLinkConfig,
    mut out_rx: mpsc::Receiver<Outbound>,
    in_tx: mpsc::Sender<Incoming>,
    conn_tx: watch::Sender<u64>,
    counters: Arc<Counters>,
) {
    let mut groups: Vec<GroupName> = Vec::new();
    let mut backoff = config.backoff_initial;
    loop {
        if in_tx.is_closed() {
            return;
        }
        let stream = match tokio::time::timeout(config.connect_timeout, open(&config)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "broker link: connect failed");
                counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.backoff_max);
                continue;
            }
            Err(_) => {
                counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.backoff_max);
                continue;
            }
        };
        let connected_at = tokio::time::Instant::now();
        let first = *conn_tx.borrow() == 0;
        conn_tx.send_modify(|n| *n += 1);
        if !first && in_tx.send(Incoming::Reconnected).await.is_err() {
            return;
        }
        match run_link(stream, &config, &mut out_rx, &in_tx, &mut groups, &counters).await {
            LinkEnd::Closed => return,
            LinkEnd::Lost => {
                counters.disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("broker link lost; reconnecting");
                // A link that lived a while starts over from the initial
                // delay; one lost quickly (e.g. replaced by another
                // connection with this identity) backs off further.
                if connected_at.elapsed() >= STABLE_LINK {
                    backoff = config.backoff_initial;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

async fn run_link(
    stream: Tls,
    config: &BrokerLinkConfig,
    out_rx: &mut mpsc::Receiver<Outbound>,
    in_tx: &mpsc::Sender<Incoming>,
    groups: &mut Vec<GroupName>,
    counters: &Counters,
) -> LinkEnd {
    let limits = config.limits;
    let (mut r, mut w) = tokio::io::split(stream);
    if !groups.is_empty() {
        let Ok(sub) = link::subscribe_to_link(groups, limits) else {
            return LinkEnd::Lost;
        };
        if w.write_all(&sub).await.is_err() || w.flush().await.is_err() {
            return LinkEnd::Lost;
        }
    }
    let reader = async {
        let mut decoder = FrameDecoder::new(link::link_limits(limits));
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return LinkEnd::Lost,
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            loop {
                match decoder.next_body() {
                    Ok(Some(body)) => match link::parse_link_body(&body) {
                        Ok(LinkMessage::Envelope(f)) => {
                            counters.frames_in.fetch_add(1, Ordering::Relaxed);
                            if in_tx.send(Incoming::Frame(f)).await.is_err() {
                                return LinkEnd::Closed;
                            }
                        }
                        Ok(LinkMessage::Subscribe(_)) | Err(_) => {
                            counters.malformed_in.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Ok(None) => break,
                    // The stream is out of sync: drop the connection.
                    Err(_) => {
                        counters.malformed_in.fetch_add(1, Ordering::Relaxed);
                        return LinkEnd::Lost;
                    }
                }
            }
        }
    };
    let writer = async {
        loop {
            let Some(first) = out_rx.recv().await else {
                let _ = w.shutdown().await;
                return LinkEnd::Closed;
            };
            let mut next = Some(first);
            let mut batch = 0;
            while let Some(out) = next.take() {
                // Frames were checked by the `Transport` against these
                // limits; one that still cannot be linked is dropped and
                // counted.
                let bytes = match out {
                    Outbound::Frame(f) => link::envelope_to_link(&f, limits).ok(),
                    Outbound::Subscribe(g) => {
                        *groups = g;
                        link::subscribe_to_link(groups, limits).ok()
                    }
                };
                if bytes.is_none() {
                    counters.dropped_out.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(bytes) = bytes {
                    if w.write_all(&bytes).await.is_err() {
                        return LinkEnd::Lost;
                    }
                    counters.frames_out.fetch_add(1, Ordering::Relaxed);
                }
                batch += 1;
                if batch < 64 {
                    next = out_rx.try_recv().ok();
                }
            }
            if w.flush().await.is_err() {
                return LinkEnd::Lost;
            }
        }
    };
    tokio::select! {
        end = reader => end,
        end = writer => end,
    }
}
