//! esync-agent binary.
fn main() {}
