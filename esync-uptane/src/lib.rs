//! esync-uptane (being built).
