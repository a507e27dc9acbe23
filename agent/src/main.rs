//! The `callguard` command line.

fn main() {}
