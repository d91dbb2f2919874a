//! esync-server (being built).
