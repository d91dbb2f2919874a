//! Envelope benchmark (being built).
fn main() {}
