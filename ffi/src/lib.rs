//! esync-ffi (being built).
