//! The Sheets logger against the mocks' Sheets and token fakes, over real
//! sockets on 127.0.0.1, mostly on a paused clock.

mod auth;
mod batching;
mod common;
mod rows;
