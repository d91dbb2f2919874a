//! # esync-proto
//!
//! The wire protocol of esync-rs: validated identities ([`id`]), the
//! in-vehicle message set ([`message`]), signed envelopes ([`envelope`]),
//! the frame format ([`frame`]) and the one precondition language of every
//! side ([`precondition`]: parsed and evaluated against [`message::Signal`]s).
//!
//! This crate is **sans-I/O**: it never opens a socket or a file, never reads
//! a clock and never spawns a thread. Callers hand it bytes and the current
//! time and get back values, bytes to send, or typed errors. With
//! `--no-default-features` it builds as `no_std + alloc` for
//! microcontroller-class Agents.
//!
//! ```
//! use esync_proto::envelope::{EnvelopeSigner, ReceiverIdentity, Recipient, Verifier};
//! use esync_proto::frame::FrameLimits;
//! use esync_proto::id::{DevicePath, Id128};
//! use esync_proto::message::{InventoryQuery, Participant, Payload};
//! use std::collections::BTreeMap;
//!
//! let client_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
//! let ecm = DevicePath::new("/powertrain/ecm").unwrap();
//! let mut signer = EnvelopeSigner::new(Participant::Client, client_key.clone(), 1, FrameLimits::default());
//! let frame = signer
//!     .seal(Recipient::Device(ecm.clone()), Id128([1; 16]),
//!           Payload::InventoryQuery(InventoryQuery { nonce: [0; 16] }), 1_700_000_000_000)
//!     .unwrap();
//!
//! let mut keys = BTreeMap::new();
//! keys.insert(Participant::Client, client_key.verifying_key());
//! let me = ReceiverIdentity { me: Participant::Device(ecm), groups: vec![] };
//! let mut verifier = Verifier::new(me, FrameLimits::default());
//! let msg = verifier.open(&frame, &keys, 1_700_000_000_000).unwrap();
//! assert_eq!(msg.payload.kind(), "inventory-query");
//! // The same frame again is a replay.
//! assert!(verifier.open(&frame, &keys, 1_700_000_000_000).is_err());
//! ```

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod envelope;
pub mod error;
pub mod frame;
pub mod id;
pub mod message;
pub mod precondition;

pub use envelope::{Envelope, EnvelopeSigner, Header, Recipient, SignedEnvelope, Verifier};
pub use error::{EnvelopeError, FrameError, IdError};
pub use frame::FrameLimits;
pub use message::{Participant, Payload};
pub use precondition::Precondition;
