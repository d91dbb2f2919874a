//! esync-transport (being built).
