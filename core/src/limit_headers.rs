//! The names of the limit headers providers send with their answers: what
//! callguard's limiter reads and its mocks of the services write.
//!
//! ElevenLabs sends `current-concurrent-requests` and
//! `maximum-concurrent-requests` on every answer; OpenAI-style APIs send
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the resets as Go
//! durations (`1s`, `6m0s`, `20ms`).

/// The limit of concurrent requests of the account (ElevenLabs).
pub const MAXIMUM_CONCURRENT_REQUESTS: &str = "maximum-concurrent-requests";
/// The account's requests in flight when this one was answered (ElevenLabs).
pub const CURRENT_CONCURRENT_REQUESTS: &str = "current-concurrent-requests";
/// Requests allowed per rate window (OpenAI).
pub const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
/// Requests left in the current rate window (OpenAI).
pub const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
/// Time until the request rate is back to its full allowance (OpenAI).
pub const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
/// Tokens left in the current rate window (OpenAI).
pub const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
/// Time until the token rate is back to its full allowance (OpenAI).
pub const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";
