//! End-to-end tests of the mock server over real sockets on 127.0.0.1, with
//! a real reqwest client.

mod common;
mod control;
mod endpoints;
mod faults;
mod sheets;
