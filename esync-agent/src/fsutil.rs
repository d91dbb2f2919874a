//! Durable file helpers for the file-backed device and journal: re-exported
//! from [`esync_store::file`], where the atomic replace lives.

pub use esync_store::file::{atomic_write, read_bounded, sync_dir};
