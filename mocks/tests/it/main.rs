//! End-to-end tests of the mock server over real sockets on 127.0.0.1, with
//! a real reqwest client; the SMTP sink with a raw SMTP conversation; the
//! fault proxy with raw TCP clients.

mod common;
mod control;
mod endpoints;
mod faults;
mod limits;
mod proxy;
mod sheets;
mod smtp;
