//! # esync-ffi
//!
//! The C ABI through which QNX, AUTOSAR and Android stacks embed the Client
//! and the Agent (opaque handles, a result enum, callbacks with `userdata`
//! first, a cbindgen-generated header in `include/`), and the JNI wrapper.
//!
//! **Not built yet.** This crate is reserved for the C ABI issue and exports
//! no symbols. The Agent core it will wrap is already sans-I/O
//! (`esync_agent::Agent` driven through host traits), and host transports can
//! already feed raw frames to it (`esync_transport::host::FrameReassembler`,
//! `esync_proto::frame::FrameDecoder`).
