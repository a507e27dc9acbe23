//! Limits the fakes enforce as the real services do, across everyone calling
//! this mock process: ElevenLabs' concurrent requests, the LLM's requests per
//! minute. Neither is on unless the config or the control API sets it.
//!
//! **ElevenLabs.** At most `max_concurrent` API requests are served at once.
//! One over the limit waits up to `queue` (50 ms by default) for a slot, then
//! is answered `429 {"detail":{"status":"too_many_concurrent_requests",…}}`.
//! Every API answer carries `current-concurrent-requests` (the requests in
//! flight as it is answered, itself included) and
//! `maximum-concurrent-requests`, unless the limit says `headers = false`
//! (a provider that does not announce its limit). A slot is held for the whole request,
//! faults included (a `slow` fault's latency, a held `timeout`).
//!
//! **LLM.** A bucket of `requests_per_minute` requests that refills
//! continuously, as OpenAI's does. Every API answer carries
//! `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests` and
//! `x-ratelimit-reset-requests` (the time until the bucket is full again, as
//! a Go duration: `1s`, `6m0s`, `20ms`); an empty bucket answers `429`
//! `{"error":{"type":"requests","code":"rate_limit_exceeded",…}}`, saying
//! which limit it is and when to try again.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use callguard_core::classify::TOO_MANY_CONCURRENT_REQUESTS;
use callguard_core::config::at_least;
use callguard_core::limit_headers::{
    CURRENT_CONCURRENT_REQUESTS, LIMIT_REQUESTS, MAXIMUM_CONCURRENT_REQUESTS, REMAINING_REQUESTS,
    RESET_REQUESTS,
};
use callguard_core::{ConfigDuration, ValidationError};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};

use crate::EndpointKind;
use crate::service::Service;
use crate::stats::StatsBook;

/// ElevenLabs' concurrency limit: `{"max_concurrent": 4, "queue": "50ms"}`
/// (`"headers": false` keeps the limit to itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    /// Requests served at once (`maximum-concurrent-requests`), at least 1.
    pub max_concurrent: u32,
    /// How long a request over the limit waits for a slot before its `429`.
    #[serde(default = "ConcurrencyLimit::default_queue")]
    pub queue: ConfigDuration,
    /// Whether answers carry `current-concurrent-requests` and
    /// `maximum-concurrent-requests`, as ElevenLabs' do (the default);
    /// `false` plays a provider that enforces a limit it does not announce.
    #[serde(default = "ConcurrencyLimit::default_headers")]
    pub headers: bool,
}

impl ConcurrencyLimit {
    /// ElevenLabs' short queue.
    pub const DEFAULT_QUEUE: ConfigDuration = ConfigDuration::from_millis(50);
    /// The longest queue a limit may set.
    pub const QUEUE_CAP: Duration = Duration::from_secs(60);

    /// `max_concurrent` at once, with the default queue.
    pub fn new(max_concurrent: u32) -> Self {
        Self {
            max_concurrent,
            queue: Self::DEFAULT_QUEUE,
            headers: true,
        }
    }

    /// The same limit, not announced: answers carry no concurrency header.
    #[must_use]
    pub fn without_headers(self) -> Self {
        Self {
            headers: false,
            ..self
        }
    }

    fn default_queue() -> ConfigDuration {
        Self::DEFAULT_QUEUE
    }

    fn default_headers() -> bool {
        true
    }

    /// Checks the values; keys are relative (`max_concurrent`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        at_least("max_concurrent", self.max_concurrent, 1)?;
        if self.queue.get() > Self::QUEUE_CAP {
            return Err(ValidationError::new(
                "queue",
                self.queue,
                format!("at most {}", ConfigDuration::new(Self::QUEUE_CAP)),
            ));
        }
        Ok(())
    }
}

/// The LLM's rate limit: `{"requests_per_minute": 60}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRate {
    /// Requests per minute (`x-ratelimit-limit-requests`), at least 1.
    pub requests_per_minute: u32,
}

impl RequestRate {
    /// Checks the value; the key is relative (`requests_per_minute`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        at_least("requests_per_minute", self.requests_per_minute, 1)
    }
}

/// The limits of the mock server's config (`[limits.elevenlabs]`,
/// `[limits.llm]`); none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockLimits {
    /// ElevenLabs' concurrency limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elevenlabs: Option<ConcurrencyLimit>,
    /// The LLM's requests per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<RequestRate>,
}

impl MockLimits {
    /// Checks both; keys are relative (`elevenlabs.max_concurrent`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(limit) = &self.elevenlabs {
            limit.validate().map_err(|e| e.in_section("elevenlabs"))?;
        }
        if let Some(rate) = &self.llm {
            rate.validate().map_err(|e| e.in_section("llm"))?;
        }
        Ok(())
    }
}

/// The limits as they stand, as `GET /_control/limits` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsState {
    /// ElevenLabs' limit and the requests it serves now.
    pub elevenlabs: Option<ConcurrencyState>,
    /// The LLM's rate and the requests left in it.
    pub llm: Option<RateState>,
}

/// ElevenLabs' limit and its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyState {
    /// The limit.
    #[serde(flatten)]
    pub limit: ConcurrencyLimit,
    /// API requests being served.
    pub in_flight: u32,
}

/// The LLM's rate and what is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateState {
    /// The rate.
    #[serde(flatten)]
    pub rate: RequestRate,
    /// Requests that may be made now.
    pub remaining: u32,
}

/// The limits' state, shared by every request.
pub(crate) struct Limits {
    concurrency: Mutex<Concurrency>,
    /// Signalled whenever a slot comes free or the limit changes.
    freed: Notify,
    rate: Mutex<Bucket>,
}

struct Concurrency {
    limit: Option<ConcurrencyLimit>,
    in_flight: u32,
}

struct Bucket {
    rate: Option<RequestRate>,
    /// Requests in the bucket, fractional: it refills continuously.
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    /// Refills for the time since the last look; the rate and the tokens.
    fn refill(&mut self, now: Instant) -> Option<(u32, f64)> {
        let rate = self.rate?.requests_per_minute;
        let per_second = f64::from(rate) / 60.0;
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(f64::from(rate));
        self.refilled_at = now;
        Some((rate, self.tokens))
    }
}

/// A served ElevenLabs request's slot; given back when dropped.
struct Slot<'a>(&'a Limits);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut concurrency = self.0.concurrency.lock();
        concurrency.in_flight = concurrency.in_flight.saturating_sub(1);
        drop(concurrency);
        self.0.freed.notify_waiters();
    }
}

impl Limits {
    pub(crate) fn new(config: MockLimits) -> Self {
        Self {
            concurrency: Mutex::new(Concurrency {
                limit: config.elevenlabs,
                in_flight: 0,
            }),
            freed: Notify::new(),
            rate: Mutex::new(Bucket {
                rate: config.llm,
                tokens: config.llm.map_or(0.0, |r| f64::from(r.requests_per_minute)),
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Sets or removes ElevenLabs' limit; requests in flight keep their slots.
    pub(crate) fn set_concurrency(&self, limit: Option<ConcurrencyLimit>) {
        self.concurrency.lock().limit = limit;
        self.freed.notify_waiters();
    }

    /// Sets or removes the LLM's rate; a new rate starts with a full bucket.
    pub(crate) fn set_rate(&self, rate: Option<RequestRate>) {
        let mut bucket = self.rate.lock();
        bucket.rate = rate;
        bucket.tokens = rate.map_or(0.0, |r| f64::from(r.requests_per_minute));
        bucket.refilled_at = Instant::now();
    }

    pub(crate) fn state(&self) -> LimitsState {
        let concurrency = self.concurrency.lock();
        let elevenlabs = concurrency.limit.map(|limit| ConcurrencyState {
            limit,
            in_flight: concurrency.in_flight,
        });
        drop(concurrency);
        let mut bucket = self.rate.lock();
        let llm = bucket
            .rate
            .zip(bucket.refill(Instant::now()))
            .map(|(rate, (_, tokens))| RateState {
                rate,
                remaining: tokens as u32,
            });
        LimitsState { elevenlabs, llm }
    }

    /// A slot, waiting up to the limit's queue for one; the limit when none
    /// came free. `Ok(None)`: no limit is set.
    async fn enter(&self) -> Result<Option<(Slot<'_>, ConcurrencyLimit)>, (u32, ConcurrencyLimit)> {
        let mut deadline = None;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let (limit, in_flight) = {
                let mut concurrency = self.concurrency.lock();
                let Some(limit) = concurrency.limit else {
                    return Ok(None);
                };
                if concurrency.in_flight < limit.max_concurrent {
                    concurrency.in_flight += 1;
                    return Ok(Some((Slot(self), limit)));
                }
                (limit, concurrency.in_flight)
            };
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + limit.queue.get());
            if timeout_at(deadline, freed).await.is_err() {
                return Err((in_flight, limit));
            }
        }
    }

    fn in_flight(&self) -> u32 {
        self.concurrency.lock().in_flight
    }

    /// Takes one request from the LLM's bucket: `Ok` with the headers to
    /// send, `Err` with them and the wait for the next request when it is
    /// empty. `Ok(None)`: no rate is set.
    fn take(&self) -> Result<Option<RateHeaders>, (RateHeaders, Duration)> {
        let mut bucket = self.rate.lock();
        let Some((rate, tokens)) = bucket.refill(Instant::now()) else {
            return Ok(None);
        };
        let per_second = f64::from(rate) / 60.0;
        let full_in =
            |tokens: f64| Duration::from_secs_f64((f64::from(rate) - tokens) / per_second);
        if tokens < 1.0 {
            let next_in = Duration::from_secs_f64((1.0 - tokens) / per_second);
            let headers = RateHeaders {
                limit: rate,
                remaining: 0,
                reset: full_in(tokens),
            };
            return Err((headers, next_in));
        }
        bucket.tokens -= 1.0;
        Ok(Some(RateHeaders {
            limit: rate,
            remaining: bucket.tokens as u32,
            reset: full_in(bucket.tokens),
        }))
    }
}

/// The `x-ratelimit-*-requests` headers of one LLM answer.
#[derive(Debug)]
struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

impl RateHeaders {
    fn apply(&self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static(LIMIT_REQUESTS),
            HeaderValue::from(self.limit),
        );
        headers.insert(
            HeaderName::from_static(REMAINING_REQUESTS),
            HeaderValue::from(self.remaining),
        );
        if let Ok(reset) = HeaderValue::from_str(&go_duration(self.reset)) {
            headers.insert(HeaderName::from_static(RESET_REQUESTS), reset);
        }
    }
}

/// A duration as Go prints it, which is how OpenAI's reset headers read:
/// `20ms`, `1.5s`, `6m0s`, `1h2m3.5s` (milliseconds at most).
pub(crate) fn go_duration(wait: Duration) -> String {
    let millis = wait.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = format!("{}.{:03}", rest / 1000, rest % 1000);
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// The concurrency headers, unless `limit` keeps itself to itself.
fn set_concurrency_headers(response: &mut Response, current: u32, limit: ConcurrencyLimit) {
    if !limit.headers {
        return;
    }
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static(CURRENT_CONCURRENT_REQUESTS),
        HeaderValue::from(current),
    );
    headers.insert(
        HeaderName::from_static(MAXIMUM_CONCURRENT_REQUESTS),
        HeaderValue::from(limit.max_concurrent),
    );
}

/// Middleware in front of a service's fault gate: ElevenLabs' concurrency
/// limit, the LLM's rate; other services and `/health` pass untouched. Its
/// state is the limits, the counts its refusals go to, and the service.
pub(crate) async fn enforce(
    State((limits, stats, service)): State<(Arc<Limits>, Arc<StatsBook>, Service)>,
    request: Request,
    next: Next,
) -> Response {
    if EndpointKind::of(&request) == EndpointKind::Health {
        return next.run(request).await;
    }
    match service {
        Service::Elevenlabs => concurrency(&limits, &stats, request, next).await,
        Service::Llm => rate(&limits, &stats, request, next).await,
        Service::Crm => next.run(request).await,
    }
}

async fn concurrency(limits: &Limits, stats: &StatsBook, request: Request, next: Next) -> Response {
    match limits.enter().await {
        Ok(None) => next.run(request).await,
        Ok(Some((slot, limit))) => {
            let mut response = next.run(request).await;
            set_concurrency_headers(&mut response, limits.in_flight(), limit);
            drop(slot);
            response
        }
        Err((in_flight, limit)) => {
            let mut response = Service::Elevenlabs.error(
                StatusCode::TOO_MANY_REQUESTS,
                TOO_MANY_CONCURRENT_REQUESTS,
                &format!(
                    "Too many concurrent requests: your plan allows {} at a time",
                    limit.max_concurrent
                ),
            );
            set_concurrency_headers(&mut response, in_flight, limit);
            stats.record(Service::Elevenlabs, EndpointKind::Api, "429");
            response
        }
    }
}

async fn rate(limits: &Limits, stats: &StatsBook, request: Request, next: Next) -> Response {
    match limits.take() {
        Ok(None) => next.run(request).await,
        Ok(Some(headers)) => {
            let mut response = next.run(request).await;
            headers.apply(&mut response);
            response
        }
        Err((headers, next_in)) => {
            let mut response = Service::Llm.error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                &format!(
                    "Rate limit reached for requests per min (RPM): Limit {}, Used {}, \
                     Requested 1. Please try again in {}.",
                    headers.limit,
                    headers.limit,
                    go_duration(next_in.max(Duration::from_millis(1))),
                ),
            );
            headers.apply(&mut response);
            stats.record(Service::Llm, EndpointKind::Api, "429");
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        let ms = Duration::from_millis;
        for (wait, text) in [
            (ms(0), "0ms"),
            (ms(20), "20ms"),
            (ms(1_000), "1s"),
            (ms(1_500), "1.5s"),
            (ms(59_856), "59.856s"),
            (ms(360_000), "6m0s"),
            (ms(3_723_500), "1h2m3.5s"),
        ] {
            assert_eq!(go_duration(wait), text, "{wait:?}");
        }
    }

    #[test]
    fn limits_are_validated_with_their_keys() {
        let limits = MockLimits {
            elevenlabs: Some(ConcurrencyLimit::new(0)),
            llm: None,
        };
        assert_eq!(
            limits.validate().unwrap_err().to_string(),
            "elevenlabs.max_concurrent must be ≥ 1, got 0"
        );
        let limits = MockLimits {
            elevenlabs: None,
            llm: Some(RequestRate {
                requests_per_minute: 0,
            }),
        };
        assert_eq!(
            limits.validate().unwrap_err().key,
            "llm.requests_per_minute"
        );
        let limit = ConcurrencyLimit {
            queue: ConfigDuration::from_secs(120),
            ..ConcurrencyLimit::new(2)
        };
        assert_eq!(limit.validate().unwrap_err().key, "queue");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_continuously() {
        let limits = Limits::new(MockLimits {
            elevenlabs: None,
            llm: Some(RequestRate {
                requests_per_minute: 3,
            }),
        });
        for remaining in [2, 1, 0] {
            let headers = limits.take().unwrap().unwrap();
            assert_eq!((headers.limit, headers.remaining), (3, remaining));
        }
        let (headers, next_in) = limits.take().unwrap_err();
        assert_eq!(headers.remaining, 0);
        assert_eq!(
            headers.reset,
            Duration::from_secs(60),
            "empty: a minute to full"
        );
        assert_eq!(next_in, Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(20)).await;
        let headers = limits.take().unwrap().unwrap();
        assert_eq!(headers.remaining, 0);
        assert_eq!(headers.reset, Duration::from_secs(60));
        assert_eq!(limits.state().llm.unwrap().remaining, 0);
    }
}
