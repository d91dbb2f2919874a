//! esync-identity (being built).
