//! The limiter of one service: admission, bounded waiting, and what the
//! service's answers teach the limit.
//!
//! Admission under the limit reads two atomics (the provider's pause, the
//! generation), takes a slot with one compare-and-swap ([`crate::slots`]) and
//! counts it; with a `rate` it also reads the clock and takes a GCRA cell
//! (one more compare-and-swap). Nothing is allocated, no lock is taken, and
//! — but for the rate — the clock is not read: the caller, who times the
//! attempt anyway, hands its latency in with the outcome; `acquire` reads
//! one atomic more (whether a step's slot is to open late). A caller that finds no slot waits in
//! line, first come first served, bounded by `queue_length` and
//! `queue_timeout`; one that cannot get in is refused with a
//! [`LimitError`] that says when to try again.
//!
//! A step up opens its new slots late: the first caller through each waits
//! an eighth of the mean time a slot is held (in [`Limiter::acquire`], after
//! it took the slot; only after a step, so admission under a limit that
//! stays put does not wait). The callers whose slots came back send again at
//! once, with the answers; the step's request comes after them and is the
//! one that waits in the provider's queue, refused if there is no room — so
//! the `429` of a step over a shared limit falls on the client that took it
//! ([`crate::aimd`]). Where requests take varying times the wait is a small
//! share of one request, paid once per step.
//!
//! A [`Permit`] lives here beside the limiter whose slot it holds: it gives
//! the slot back on drop and hands the answer to the limiter's learning.
//!
//! Answers are learnt from when the permit is completed: the provider's
//! headers (checked without a lock; a changed limit takes the state lock),
//! then, for an adaptive limit, the outcome, under the state lock — off the
//! admission path, and never held across an await. Every lower limit starts
//! a new generation, and a permit remembers the one it was admitted in:
//! overload met by an attempt admitted before the limit went down says
//! nothing about the new limit, and is not counted again — a burst of
//! `429`s from calls sent before the provider's limit was known shrinks the
//! limit once, not once per call (TCP's one decrease per window).

use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use callguard_core::{ServiceName, ValidationError};
use tokio::time::{Instant, sleep, timeout_at};

use crate::aimd::Aimd;
use crate::config::{LimitConfig, LimitMode};
use crate::error::LimitError;
use crate::headers::ProviderHeaders;
use crate::outcome::Outcome;
use crate::rate::{Gcra, Pause};
use crate::share::{Reading, Share};
use crate::slots::{Slots, UNLIMITED};

/// The weight of one slot's holding time in the running mean used to
/// suggest when to try again.
const HELD_WEIGHT: f64 = 0.2;
/// The first call through a step's new slot waits the mean time a slot is
/// held divided by this.
const LATE_DIVISOR: u64 = 8;

/// Limits the calls to one service: how many are in flight, how many start
/// per interval, and how long a call may wait for its turn. Share it as
/// `Arc<Limiter>` between every caller of the service.
pub struct Limiter {
    service: ServiceName,
    config: LimitConfig,
    slots: Slots,
    gcra: Option<Gcra>,
    pause: Pause,
    state: Mutex<State>,
    /// The limit the provider announced, 0 if none; read without the lock.
    provider_limit: AtomicU32,
    /// Bumped whenever the limit goes down (under the state lock).
    generation: AtomicU32,
    /// The running mean time a slot is held, in nanoseconds; 0: unknown.
    held_nanos: AtomicU64,
    /// Whether a garbage header was logged (once per limiter).
    garbage_logged: AtomicBool,
    /// Mode `off` following headers, until the first attempt completes: one
    /// request at a time, until an answer says whether the provider
    /// announces a limit.
    first_answer_pending: AtomicBool,
    /// Slots added by a step up whose first call is still to wait before it
    /// goes (a share of the time a slot is held, [`LATE_DIVISOR`]).
    late: AtomicU32,
}

/// What changes under the lock.
struct State {
    /// The limit of mode `adaptive`.
    aimd: Option<Aimd>,
    /// The limit of mode `off` once the provider announced one.
    share: Option<Share>,
}

/// The limiter of one service, as `/metrics` and `callguard status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitSnapshot {
    /// The service.
    pub service: ServiceName,
    /// The configured mode.
    pub mode: LimitMode,
    /// Calls that may be in flight now; `None`: no limit.
    pub limit: Option<u32>,
    /// The limit the provider announced last, if it did.
    pub provider_limit: Option<u32>,
    /// Calls holding a slot.
    pub in_flight: u32,
    /// Calls waiting for a slot.
    pub waiting: u32,
    /// How long admission is still paused because the provider said its rate
    /// is used up.
    pub paused_for: Option<Duration>,
}

impl Limiter {
    /// A limiter for `service`; fails when `config` breaks a rule (keys
    /// relative to the section, as `max_concurrency`).
    pub fn new(service: ServiceName, config: LimitConfig) -> Result<Self, ValidationError> {
        config.validate()?;
        let first_answer_pending = config.mode == LimitMode::Off && config.follow_headers;
        let (aimd, limit) = match config.mode {
            LimitMode::Off if first_answer_pending => (None, 1),
            LimitMode::Off => (None, UNLIMITED),
            LimitMode::Static => (None, config.max_concurrency.unwrap_or(UNLIMITED)),
            LimitMode::Adaptive => {
                let aimd = Aimd::new(
                    config.initial,
                    config.min,
                    config.max,
                    Some(config.latency_tolerance),
                );
                let limit = aimd.limit();
                (Some(aimd), limit)
            }
        };
        Ok(Self {
            gcra: config.rate.as_ref().and_then(Gcra::new),
            service,
            slots: Slots::new(limit),
            pause: Pause::new(),
            state: Mutex::new(State { aimd, share: None }),
            provider_limit: AtomicU32::new(0),
            generation: AtomicU32::new(0),
            held_nanos: AtomicU64::new(0),
            garbage_logged: AtomicBool::new(false),
            first_answer_pending: AtomicBool::new(first_answer_pending),
            late: AtomicU32::new(0),
            config,
        })
    }

    /// The service limited.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The settings.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// A slot now, if one is free and the rate allows a call; `None` otherwise
    /// (nothing is waited for).
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        if self.pause.remaining().is_some() {
            return None;
        }
        if !self.slots.try_take() {
            return None;
        }
        let permit = self.permit();
        match &self.gcra {
            // Dropping the permit gives the slot back.
            Some(gcra) if gcra.take().is_err() => None,
            _ => Some(permit),
        }
    }

    /// A slot, waiting for one in line if none is free — at most
    /// `queue_timeout`, behind at most `queue_length` others — and for the
    /// rate to allow a call. A refused call gets a [`LimitError`] saying when
    /// to try again. The first call through a slot that a step up added
    /// waits a little more (the module's docs).
    pub async fn acquire(&self) -> Result<Permit<'_>, LimitError> {
        let permit = match self.try_acquire() {
            Some(permit) => permit,
            None => self.wait().await?,
        };
        if self.late.load(Ordering::Relaxed) > 0 && self.take_late() {
            sleep(self.late_by()).await;
        }
        Ok(permit)
    }

    /// Takes one of the late slots, if one is left.
    fn take_late(&self) -> bool {
        self.late
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// How late a step's slot opens.
    fn late_by(&self) -> Duration {
        Duration::from_nanos(self.held_nanos.load(Ordering::Relaxed) / LATE_DIVISOR)
    }

    async fn wait(&self) -> Result<Permit<'_>, LimitError> {
        let started = Instant::now();
        let deadline = started + self.config.queue_timeout.get();
        let _queued = self
            .slots
            .enqueue(self.config.queue_length)
            .ok_or_else(|| LimitError::QueueFull {
                service: self.service.clone(),
                queue_length: self.config.queue_length,
                retry_after: self.drain_estimate(),
            })?;
        // A pause that outlasts the wait allowed is refused before it takes a slot.
        if let Some(wait) = self.pause.remaining() {
            if started + wait > deadline {
                return Err(self.rate_exhausted(wait));
            }
        }
        if timeout_at(deadline, self.slots.take()).await.is_err() {
            return Err(LimitError::TimedOut {
                service: self.service.clone(),
                limit: self.slots.limit(),
                waited: started.elapsed(),
                retry_after: self.drain_estimate(),
            });
        }
        let permit = self.permit();
        self.wait_for_rate(deadline).await?;
        Ok(permit)
    }

    /// A permit for a slot just taken.
    fn permit(&self) -> Permit<'_> {
        Permit::new(self, self.generation.load(Ordering::Relaxed))
    }

    /// Waits out the provider's pause and callguard's own rate, or refuses
    /// when they outlast `deadline`.
    async fn wait_for_rate(&self, deadline: Instant) -> Result<(), LimitError> {
        loop {
            let wait = match (self.pause.remaining(), &self.gcra) {
                (Some(wait), _) => wait,
                (None, Some(gcra)) => match gcra.take() {
                    Ok(()) => return Ok(()),
                    Err(wait) => wait,
                },
                (None, None) => return Ok(()),
            };
            if Instant::now() + wait > deadline {
                return Err(self.rate_exhausted(wait));
            }
            sleep(wait).await;
        }
    }

    fn rate_exhausted(&self, wait: Duration) -> LimitError {
        LimitError::RateExhausted {
            service: self.service.clone(),
            retry_after: wait,
        }
    }

    /// When the calls waiting now are likely through: the mean time a slot
    /// is held for each round of `limit` of them, or `queue_timeout` while
    /// that mean is unknown.
    fn drain_estimate(&self) -> Duration {
        let held = self.held_nanos.load(Ordering::Relaxed);
        if held == 0 {
            return self.config.queue_timeout.get();
        }
        let limit = u64::from(self.slots.limit().max(1));
        let rounds = (u64::from(self.slots.waiting()) + limit) / limit;
        Duration::from_nanos(held.saturating_mul(rounds))
    }

    /// A permit gives its slot back.
    pub(crate) fn release(&self) {
        self.slots.release();
    }

    /// What one completed attempt teaches: the provider's headers, then the
    /// outcome (`generation`: the one the attempt was admitted in).
    pub(crate) fn learn(&self, outcome: Outcome, generation: u32, headers: &ProviderHeaders) {
        let in_flight = self.slots.in_flight();
        let waiting = self.slots.waiting() > 0;
        let limit = self.slots.limit();
        // While callers wait, a slot given back is already promised to the
        // next one: ours are the whole limit.
        let ours = if waiting {
            in_flight.max(limit)
        } else {
            in_flight
        };
        let mut announced = None;
        let mut current = None;
        if self.config.follow_headers {
            if let Some(name) = headers.garbage() {
                self.log_garbage_once(name);
            }
            let known = self.provider_limit.load(Ordering::Relaxed);
            if let Some(max) = headers.maximum_concurrent.value() {
                announced = (max != known).then_some(max);
            }
            current = headers.current_concurrent.value();
            if let Some(wait) = headers.exhausted_for() {
                tracing::debug!(
                    service = %self.service,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "{}: the provider's rate is used up; admission pauses",
                    self.service,
                );
                self.pause.pause_for(wait);
            }
        }
        if let Outcome::Success { latency } = outcome {
            self.note_held(latency);
        }
        let first_answer = self.first_answer_pending.load(Ordering::Relaxed)
            && self.first_answer_pending.swap(false, Ordering::Relaxed);
        let learns = match self.config.mode {
            LimitMode::Static => false,
            LimitMode::Adaptive => true,
            LimitMode::Off => first_answer || self.provider_limit.load(Ordering::Relaxed) != 0,
        };
        if announced.is_none() && !learns {
            return;
        }
        let mut state = self.state.lock();
        if let Some(max) = announced {
            self.announce(&mut state, max);
        }
        let current_generation = generation == self.generation.load(Ordering::Relaxed);
        let saturated = in_flight >= limit || waiting;
        if let Some(aimd) = &mut state.aimd {
            let max = self.provider_limit.load(Ordering::Relaxed);
            if current.is_some_and(|current| max > 0 && current >= max && current > ours) {
                aimd.on_crowded();
            }
            match outcome {
                Outcome::Success { latency } => aimd.on_success(latency, saturated),
                Outcome::ConcurrencyLimited | Outcome::Timeout if current_generation => {
                    aimd.on_overload();
                }
                _ => {}
            }
        }
        if let Some(share) = &mut state.share {
            match outcome {
                Outcome::Success { .. } => share.on_answer(Reading {
                    current,
                    ours,
                    saturated,
                }),
                Outcome::ConcurrencyLimited if current_generation => share.on_refused(),
                _ => {}
            }
        }
        self.publish(&state);
    }

    /// The provider announced `max` (under the state lock).
    fn announce(&self, state: &mut State, max: u32) {
        if self.provider_limit.swap(max, Ordering::Relaxed) == max {
            return; // another answer told the same just before
        }
        match self.config.mode {
            LimitMode::Off => match &mut state.share {
                Some(share) => share.set_provider_limit(max),
                // From the one request sent while nothing was known.
                None => state.share = Some(Share::new(max, 1)),
            },
            LimitMode::Adaptive => {
                if let Some(aimd) = &mut state.aimd {
                    aimd.set_provider_limit(Some(max));
                }
            }
            LimitMode::Static => {}
        }
        tracing::info!(
            service = %self.service,
            provider_limit = max,
            "{} allows {max} concurrent requests",
            self.service,
        );
    }

    /// Moves the slots to the limit `state` calls for (under the state lock).
    fn publish(&self, state: &State) {
        let limit = match self.config.mode {
            LimitMode::Static => {
                let max = self.config.max_concurrency.unwrap_or(UNLIMITED);
                match self.provider_limit.load(Ordering::Relaxed) {
                    0 => max,
                    provider => max.min(provider),
                }
            }
            LimitMode::Adaptive => state.aimd.as_ref().map_or(UNLIMITED, Aimd::limit),
            LimitMode::Off => match &state.share {
                Some(share) => share.limit(),
                None if self.first_answer_pending.load(Ordering::Relaxed) => 1,
                None => UNLIMITED,
            },
        };
        let old = self.slots.limit();
        if limit < old {
            self.generation.fetch_add(1, Ordering::Relaxed);
            self.late.store(0, Ordering::Relaxed);
        } else if limit > old && old != UNLIMITED && limit != UNLIMITED {
            // A step up: its slots open late (the module's docs).
            self.late.store(limit - old, Ordering::Relaxed);
        }
        if limit != old {
            self.slots.resize(limit);
            tracing::debug!(
                service = %self.service,
                limit,
                "{} concurrency limit {} → {}",
                self.service,
                Shown(old),
                Shown(limit),
            );
        }
    }

    fn note_held(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        // A lost update between two answers only skips one sample.
        let mean = match self.held_nanos.load(Ordering::Relaxed) {
            0 => sample,
            mean => (mean as f64 + HELD_WEIGHT * (sample as f64 - mean as f64)) as u64,
        };
        self.held_nanos.store(mean.max(1), Ordering::Relaxed);
    }

    fn log_garbage_once(&self, header: &'static str) {
        if !self.garbage_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                service = %self.service,
                header,
                "{} sent a {header} header that is not a value it can take; the limiter \
                 keeps its last good limit (logged once)",
                self.service,
            );
        }
    }

    /// The limiter now.
    pub fn snapshot(&self) -> LimitSnapshot {
        let limit = self.slots.limit();
        let provider = self.provider_limit.load(Ordering::Relaxed);
        LimitSnapshot {
            service: self.service.clone(),
            mode: self.config.mode,
            limit: (limit != UNLIMITED).then_some(limit),
            provider_limit: (provider != 0).then_some(provider),
            in_flight: self.slots.in_flight(),
            waiting: self.slots.waiting(),
            paused_for: self.pause.remaining(),
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config)
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// A limit as logs show it: a number, or `none`.
struct Shown(u32);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            UNLIMITED => f.write_str("none"),
            limit => limit.fmt(f),
        }
    }
}

/// A slot held for one attempt. [`complete`](Self::complete) it with how the
/// attempt ended and the headers of the answer; dropping it without that (a
/// cancelled attempt) gives the slot back and teaches the limit nothing.
#[must_use = "a permit holds a slot until it is completed or dropped"]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    /// The limiter's generation when the slot was taken.
    generation: u32,
}

impl<'a> Permit<'a> {
    fn new(limiter: &'a Limiter, generation: u32) -> Self {
        Self {
            limiter,
            generation,
        }
    }

    /// The attempt ended with `outcome`, and its answer carried `headers`
    /// ([`ProviderHeaders::NONE`] when there was no answer). Gives the slot back.
    pub fn complete(self, outcome: Outcome, headers: &ProviderHeaders) {
        self.limiter.learn(outcome, self.generation, headers);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("service", self.limiter.service())
            .field("generation", &self.generation)
            .finish()
    }
}
