//! esync-agent (being built).
