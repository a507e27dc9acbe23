//! The callguard agent: works through a queue of contacts, asking an LLM for a
//! script, having a TTS service speak it and recording the outcome in a CRM,
//! with every call going through callguard's resilience layer.

pub mod accounting;
pub mod app;
pub mod campaign;
pub mod config;
pub mod contacts;
pub mod events;
pub mod pipeline;
pub mod queue;
pub mod report;
pub mod serve;
#[cfg(feature = "mocks")]
pub mod simulate;
