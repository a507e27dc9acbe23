//! Integration tests of callguard-alerts: each channel against a real peer
//! (an SMTP server) or the mocks crate's fakes, and the manager's dedup,
//! breaker alerts, dead channels and secrecy.

mod common;
mod email;
mod manager;
mod telegram;
mod webhook;
