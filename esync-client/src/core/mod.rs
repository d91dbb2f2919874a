//! The Client's sans-I/O cores.

pub mod session;
