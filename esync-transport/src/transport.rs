//! The plug-in transport abstraction: the [`FrameTransport`] trait every
//! transport implements (built-in ones and a host's own bus), and the
//! [`Transport`] wrapper that the Client and Agent runtimes use, which runs
//! the checks shared by every transport in one place.
//!
//! # The shared checks
//!
//! Whatever the transport, [`Transport`] and its [`FrameSender`]s:
//!
//! - refuse an outbound frame that is not exactly one esync-proto frame
//!   within the transport's [`FrameLimits`] (version byte, declared length
//!   bounded by the limits, body complete, no trailing bytes), returning
//!   [`TransportError::Frame`] before the implementation sees it. An
//!   implementation only ever receives a [`CheckedFrame`], which cannot be
//!   built any other way;
//! - drop an inbound frame that fails the same check and count it
//!   ([`CheckStats::rejected_in`]): the receiver's `Verifier` only ever sees
//!   frames within the limits;
//! - refuse more than [`MAX_GROUPS`] group subscriptions.
//!
//! What stays with each implementation is what only it can do: bounding the
//! length of what it reads before allocating for it (the broker link and a
//! host's byte stream decode with [`esync_proto::frame::FrameDecoder`] or
//! [`crate::host::FrameReassembler`], MQTT caps the packet size), moving
//! bytes, and reconnecting.
//!
//! # Why boxed futures
//!
//! The trait's methods return [`BoxFuture`] rather than being `async fn`s:
//! `async fn` in traits (Rust 1.75) makes a trait not dyn-compatible, and a
//! host plugging in its own bus must be able to hand over a
//! `Box<dyn FrameTransport>` (what [`Transport`] holds by default), so that
//! runtimes do not become generic over every host's type. One allocation per
//! call is negligible beside a signature verification per frame.
//!
//! # Implementing a transport for a host bus
//!
//! ```
//! use std::sync::Arc;
//! use esync_proto::frame::FrameLimits;
//! use esync_proto::id::GroupName;
//! use esync_transport::{
//!     BoxFuture, CheckedFrame, FrameSink, FrameTransport, Incoming, Transport, TransportError,
//! };
//! use tokio::sync::mpsc;
//!
//! /// A bus that moves whole frames (e.g. reassembled CAN-TP PDUs).
//! struct Bus {
//!     out: Arc<BusOut>,
//!     rx: mpsc::Receiver<Vec<u8>>,
//! }
//! struct BusOut(mpsc::Sender<Vec<u8>>);
//!
//! impl FrameSink for BusOut {
//!     fn send_checked(&self, frame: CheckedFrame) -> BoxFuture<'_, Result<(), TransportError>> {
//!         Box::pin(async move {
//!             self.0.send(frame.into_bytes()).await.map_err(|_| TransportError::Closed)
//!         })
//!     }
//! }
//!
//! impl FrameTransport for Bus {
//!     fn limits(&self) -> FrameLimits {
//!         FrameLimits::default()
//!     }
//!     fn sink(&self) -> Arc<dyn FrameSink> {
//!         self.out.clone()
//!     }
//!     fn recv_raw(&mut self) -> BoxFuture<'_, Option<Incoming>> {
//!         Box::pin(async move { self.rx.recv().await.map(Incoming::Frame) })
//!     }
//!     fn set_groups(&self, _groups: Vec<GroupName>) -> BoxFuture<'_, Result<(), TransportError>> {
//!         // A point-to-point bus has no groups.
//!         Box::pin(async { Ok(()) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A loopback bus: what it sends comes back.
//! let (tx, rx) = mpsc::channel(8);
//! let mut t = Transport::boxed(Bus { out: Arc::new(BusOut(tx)), rx });
//! // A frame declaring a 4 GiB body is refused before the bus sees it.
//! let mut big = vec![1u8, 0xff, 0xff, 0xff, 0xff];
//! big.extend_from_slice(&[0; 8]);
//! assert!(matches!(t.send(big).await, Err(TransportError::Frame(_))));
//! assert_eq!(t.check_stats().rejected_out, 1);
//! // A valid frame goes through.
//! let ok = esync_proto::frame::wrap(b"body", FrameLimits::default()).unwrap();
//! t.send(ok.clone()).await.unwrap();
//! assert_eq!(t.recv().await, Some(Incoming::Frame(ok)));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use esync_proto::frame::{self, FrameLimits};
use esync_proto::id::GroupName;
use esync_proto::FrameError;

use crate::{Incoming, TransportError, MAX_GROUPS};

/// A boxed, sendable future: what [`FrameTransport`] and [`FrameSink`]
/// methods return, so that both traits stay dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An outbound frame that passed the shared checks: exactly one esync-proto
/// frame within the transport's limits. Only [`Transport`] and
/// [`FrameSender`] create them, so an implementation of [`FrameSink`] never
/// sees an unchecked frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedFrame(Vec<u8>);

impl CheckedFrame {
    /// The shared check: `bytes` must be one complete frame (known version,
    /// declared body length within `limits`, no trailing bytes).
    fn check(bytes: Vec<u8>, limits: FrameLimits) -> Result<Self, FrameError> {
        check_frame(&bytes, limits)?;
        Ok(CheckedFrame(bytes))
    }

    /// The frame's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The frame's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The frame-level check shared by every transport, both directions.
fn check_frame(bytes: &[u8], limits: FrameLimits) -> Result<(), FrameError> {
    let (_, rest) = frame::split(bytes, limits)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(())
}

/// The sending half of a transport: puts checked frames on the wire (routed
/// by the recipient in their header). Shared by a [`Transport`] and all its
/// [`FrameSender`]s.
pub trait FrameSink: Send + Sync {
    /// Sends one checked frame; waits while the outbound queue is full
    /// (backpressure).
    fn send_checked(&self, frame: CheckedFrame) -> BoxFuture<'_, Result<(), TransportError>>;
}

/// A transport of esync-proto frames: the built-in ones
/// ([`BrokerTransport`](crate::BrokerTransport),
/// [`MqttTransport`](crate::MqttTransport),
/// [`ChannelTransport`](crate::ChannelTransport)) and any a host implements
/// for its own bus. Use it through [`Transport`], which applies the shared
/// checks (see the [module docs](self)).
pub trait FrameTransport: Send + Sync {
    /// Frame limits of this transport; [`Transport`] checks every frame in
    /// both directions against them.
    fn limits(&self) -> FrameLimits;

    /// The sending half (called once by [`Transport::new`]).
    fn sink(&self) -> Arc<dyn FrameSink>;

    /// The next thing received, unchecked; `None` once the transport is
    /// closed. Must be cancel-safe (runtimes `select!` on it).
    fn recv_raw(&mut self) -> BoxFuture<'_, Option<Incoming>>;

    /// Replaces this connection's group subscriptions (at most
    /// [`MAX_GROUPS`], checked by [`Transport`]), to be
    /// restored after a reconnection.
    fn set_groups(&self, groups: Vec<GroupName>) -> BoxFuture<'_, Result<(), TransportError>>;
}

/// Counters of the shared checks of one [`Transport`] (its senders
/// included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Outbound frames refused.
    pub rejected_out: u64,
    /// Inbound frames dropped.
    pub rejected_in: u64,
}

#[derive(Debug, Default)]
struct CheckCounters {
    rejected_out: AtomicU64,
    rejected_in: AtomicU64,
}

/// A transport with the shared checks applied; what the Client and Agent
/// runtimes use. `Transport` (the default parameter) holds any
/// implementation behind `dyn`; `Transport<T>` keeps the concrete type, for
/// callers that need its own methods ([`inner`](Self::inner)).
pub struct Transport<T: ?Sized + FrameTransport = dyn FrameTransport> {
    sender: FrameSender,
    inner: Box<T>,
}

impl<T: ?Sized + FrameTransport> core::fmt::Debug for Transport<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transport")
            .field("limits", &self.sender.limits)
            .field("checks", &self.check_stats())
            .finish_non_exhaustive()
    }
}

impl<T: FrameTransport + 'static> Transport<T> {
    /// Wraps `inner`, keeping its type.
    pub fn new(inner: T) -> Self {
        Transport {
            sender: FrameSender {
                limits: inner.limits(),
                sink: inner.sink(),
                counters: Arc::new(CheckCounters::default()),
            },
            inner: Box::new(inner),
        }
    }

    /// The same transport behind `dyn` (counters kept).
    pub fn into_dyn(self) -> Transport {
        Transport {
            sender: self.sender,
            inner: self.inner,
        }
    }
}

impl Transport {
    /// Wraps `inner` behind `dyn`: `Transport::new(inner).into_dyn()`.
    pub fn boxed(inner: impl FrameTransport + 'static) -> Transport {
        Transport::new(inner).into_dyn()
    }
}

impl<T: ?Sized + FrameTransport> Transport<T> {
    /// Sends one frame (an esync-proto frame holding a signed envelope),
    /// after the shared checks. Waits while the outbound queue is full
    /// (backpressure).
    pub async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        self.sender.send(frame).await
    }

    /// The next thing received; `None` once the transport is closed. Frames
    /// that fail the shared checks are dropped and counted
    /// ([`CheckStats::rejected_in`]). Cancel-safe if the implementation's
    /// `recv_raw` is.
    pub async fn recv(&mut self) -> Option<Incoming> {
        loop {
            match self.inner.recv_raw().await? {
                Incoming::Frame(f) => match check_frame(&f, self.sender.limits) {
                    Ok(()) => return Some(Incoming::Frame(f)),
                    Err(e) => {
                        tracing::debug!(error = %e, "transport: inbound frame refused");
                        self.sender
                            .counters
                            .rejected_in
                            .fetch_add(1, Ordering::Relaxed);
                    }
                },
                other => return Some(other),
            }
        }
    }

    /// Replaces this connection's group subscriptions (at most
    /// [`MAX_GROUPS`]). They are restored automatically
    /// after a reconnection.
    pub async fn subscribe(&self, groups: Vec<GroupName>) -> Result<(), TransportError> {
        check_groups(&groups)?;
        self.inner.set_groups(groups).await
    }

    /// A cloneable handle that sends on this transport with the same checks,
    /// for runtimes that send from one task and receive in another.
    pub fn sender(&self) -> FrameSender {
        self.sender.clone()
    }

    /// Frame limits applied by the checks.
    pub fn limits(&self) -> FrameLimits {
        self.sender.limits
    }

    /// Counters of the shared checks.
    pub fn check_stats(&self) -> CheckStats {
        let c = &self.sender.counters;
        CheckStats {
            rejected_out: c.rejected_out.load(Ordering::Relaxed),
            rejected_in: c.rejected_in.load(Ordering::Relaxed),
        }
    }

    /// The implementation (its own counters and waits).
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

fn check_groups(groups: &[GroupName]) -> Result<(), TransportError> {
    if groups.len() > MAX_GROUPS {
        return Err(TransportError::TooManyGroups {
            got: groups.len(),
            max: MAX_GROUPS,
        });
    }
    Ok(())
}

/// A cloneable sending handle of a [`Transport`], with the same checks.
#[derive(Clone)]
pub struct FrameSender {
    limits: FrameLimits,
    sink: Arc<dyn FrameSink>,
    counters: Arc<CheckCounters>,
}

impl core::fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameSender")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FrameSender {
    /// Sends one frame after the shared checks; waits while the outbound
    /// queue is full.
    pub async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        let checked = CheckedFrame::check(frame, self.limits).inspect_err(|_| {
            self.counters.rejected_out.fetch_add(1, Ordering::Relaxed);
        })?;
        self.sink.send_checked(checked).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_refuses_what_is_not_one_frame_within_limits() {
        let limits = FrameLimits::new(8);
        let ok = frame::wrap(b"12345678", limits).unwrap();
        assert!(check_frame(&ok, limits).is_ok());
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(matches!(
            check_frame(&trailing, limits),
            Err(FrameError::Trailing(1))
        ));
        assert!(check_frame(&ok[..ok.len() - 1], limits).is_err());
        let mut bad_version = ok.clone();
        bad_version[0] = 9;
        assert!(check_frame(&bad_version, limits).is_err());
        let big = frame::wrap(b"123456789", FrameLimits::new(9)).unwrap();
        assert!(matches!(
            check_frame(&big, limits),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(check_frame(&[], limits).is_err());
    }
}
