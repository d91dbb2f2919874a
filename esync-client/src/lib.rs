//! esync-client (being built).
