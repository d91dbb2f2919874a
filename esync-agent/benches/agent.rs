//! Agent benchmark (placeholder until written).
fn main() {}
