//! Property test: the breaker, driven by random sequences of call results, clock
//! advances, health-check signals and manual commands (an operator's and the
//! remote's), behaves like a small sequential reference model of DESIGN.md's
//! rules: state, generation, failure streak, failure-rate window, who holds a
//! forced-open, and why it last moved.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use callguard_breaker::{BreakerConfig, CircuitBreaker, FailureRateConfig, ForcedBy, Permit};
use callguard_core::{CircuitState, ConfigDuration, ManualAction, ServiceName, TransitionReason};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Report { index: usize, report: Report },
    Advance { millis: u64 },
    RecordFailure,
    CloseOnRecovery,
    HalfOpenOnRecovery,
    ForceOpen,
    ForceClose,
    Reset,
    RemoteForceOpen,
    RemoteRelease,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Report {
    Success,
    Failure,
    Ignore,
    Drop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Acquire),
        6 => (any::<usize>(), prop_oneof![
            Just(Report::Success),
            Just(Report::Failure),
            Just(Report::Ignore),
            Just(Report::Drop),
        ])
            .prop_map(|(index, report)| Op::Report { index, report }),
        3 => (0u64..6_000).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::RecordFailure),
        1 => Just(Op::CloseOnRecovery),
        1 => Just(Op::HalfOpenOnRecovery),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::ForceClose),
        1 => Just(Op::Reset),
        1 => Just(Op::RemoteForceOpen),
        1 => Just(Op::RemoteRelease),
    ]
}

const OPERATOR_NOTE: &str = "model";
const REMOTE_NOTE: &str = "remote";

/// The reference model: plain fields, time in milliseconds, one rule per branch.
struct Model {
    failure_threshold: u32,
    recovery_ms: u64,
    max_probes: usize,
    success_threshold: u32,
    /// threshold, window size, minimum calls
    rate: Option<(f64, usize, usize)>,
    now: u64,
    state: CircuitState,
    generation: u64,
    consecutive: u32,
    /// The last `window size` call outcomes, `true` for a failure.
    window: VecDeque<bool>,
    open_until: u64,
    /// (probe id, started at)
    probes: Vec<(u64, u64)>,
    next_probe: u64,
    successes: u32,
    forced_by: Option<ForcedBy>,
    last_reason: Option<TransitionReason>,
}

/// What the model remembers about a permit it handed out.
#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    generation: u64,
    probe: Option<u64>,
}

fn manual(action: ManualAction, note: &str) -> TransitionReason {
    TransitionReason::Manual {
        action,
        note: Arc::from(note),
    }
}

impl Model {
    fn new(config: &BreakerConfig) -> Self {
        Self {
            failure_threshold: config.failure_threshold,
            recovery_ms: config.recovery_timeout.get().as_millis() as u64,
            max_probes: config.half_open_max_calls as usize,
            success_threshold: config.success_threshold,
            rate: config.failure_rate.as_ref().map(|rate| {
                (
                    rate.threshold,
                    rate.window_size as usize,
                    rate.minimum_calls as usize,
                )
            }),
            now: 0,
            state: CircuitState::Closed,
            generation: 0,
            consecutive: 0,
            window: VecDeque::new(),
            open_until: 0,
            probes: Vec::new(),
            next_probe: 0,
            successes: 0,
            forced_by: None,
            last_reason: None,
        }
    }

    fn goto(&mut self, to: CircuitState, reason: TransitionReason) {
        self.generation += 1;
        self.state = to;
        self.forced_by = None;
        self.last_reason = Some(reason);
        match to {
            CircuitState::Open => self.open_until = self.now + self.recovery_ms,
            CircuitState::Closed => self.start_counts_afresh(),
            CircuitState::HalfOpen => {
                self.probes.clear();
                self.successes = 0;
            }
            CircuitState::ForcedOpen => {}
        }
    }

    fn start_counts_afresh(&mut self) {
        self.consecutive = 0;
        self.window.clear();
    }

    fn failure_rate(&self) -> Option<f64> {
        self.rate?;
        let calls = self.window.len();
        let failures = self.window.iter().filter(|&&failed| failed).count();
        (calls > 0).then(|| failures as f64 / calls as f64)
    }

    /// Records a call's outcome in the window; the counts if a failure
    /// brought the rate to the threshold.
    fn record_call(&mut self, failed: bool) -> Option<(u32, u32)> {
        let (threshold, size, minimum) = self.rate?;
        if self.window.len() == size {
            self.window.pop_front();
        }
        self.window.push_back(failed);
        let calls = self.window.len();
        let failures = self.window.iter().filter(|&&failed| failed).count();
        (failed && calls >= minimum && failures as f64 >= threshold * calls as f64)
            .then_some((failures as u32, calls as u32))
    }

    fn acquire(&mut self) -> Option<ModelPermit> {
        if self.state == CircuitState::Open && self.now >= self.open_until {
            self.goto(
                CircuitState::HalfOpen,
                TransitionReason::RecoveryTimeoutElapsed,
            );
        }
        match self.state {
            CircuitState::Closed => Some(ModelPermit {
                generation: self.generation,
                probe: None,
            }),
            CircuitState::HalfOpen => {
                let (now, timeout) = (self.now, self.recovery_ms);
                self.probes.retain(|&(_, started)| now - started < timeout);
                (self.probes.len() < self.max_probes).then(|| {
                    let id = self.next_probe;
                    self.next_probe += 1;
                    self.probes.push((id, self.now));
                    ModelPermit {
                        generation: self.generation,
                        probe: Some(id),
                    }
                })
            }
            CircuitState::Open | CircuitState::ForcedOpen => None,
        }
    }

    /// A failure in CLOSED: a call's counts in the window too, a health
    /// probe's only in the streak.
    fn closed_failure(&mut self, a_call: bool) {
        self.consecutive += 1;
        let rate_trip = if a_call { self.record_call(true) } else { None };
        if self.consecutive >= self.failure_threshold {
            let count = self.consecutive;
            self.goto(
                CircuitState::Open,
                TransitionReason::ConsecutiveFailures { count },
            );
        } else if let Some((failures, calls)) = rate_trip {
            self.goto(
                CircuitState::Open,
                TransitionReason::FailureRate { failures, calls },
            );
        }
    }

    fn report(&mut self, permit: ModelPermit, report: Report) {
        if permit.generation != self.generation {
            return;
        }
        match (self.state, permit.probe) {
            (CircuitState::Closed, None) => match report {
                Report::Success => {
                    self.consecutive = 0;
                    self.record_call(false);
                }
                Report::Failure => self.closed_failure(true),
                Report::Ignore | Report::Drop => {}
            },
            (CircuitState::HalfOpen, Some(id)) => {
                let Some(position) = self.probes.iter().position(|&(p, _)| p == id) else {
                    return;
                };
                self.probes.remove(position);
                match report {
                    Report::Success => {
                        self.successes += 1;
                        if self.successes >= self.success_threshold {
                            let count = self.successes;
                            self.goto(
                                CircuitState::Closed,
                                TransitionReason::ProbesSucceeded { count },
                            );
                        }
                    }
                    Report::Failure => {
                        self.goto(CircuitState::Open, TransitionReason::ProbeFailed);
                    }
                    Report::Ignore | Report::Drop => {}
                }
            }
            _ => {}
        }
    }

    fn record_failure(&mut self) {
        match self.state {
            CircuitState::Closed => self.closed_failure(false),
            CircuitState::HalfOpen => self.goto(CircuitState::Open, TransitionReason::ProbeFailed),
            _ => {}
        }
    }

    fn force_open(&mut self, by: ForcedBy, note: &str) {
        if self.state != CircuitState::ForcedOpen {
            self.goto(
                CircuitState::ForcedOpen,
                manual(ManualAction::ForceOpen, note),
            );
            self.forced_by = Some(by);
        } else if by == ForcedBy::Operator {
            // The operator takes over what the remote forced: no transition.
            self.forced_by = Some(by);
        }
    }

    fn release(&mut self, by: ForcedBy, note: &str) {
        if self.state == CircuitState::ForcedOpen && self.forced_by == Some(by) {
            self.goto(CircuitState::Closed, manual(ManualAction::ForceClose, note));
        }
    }

    fn manual_close(&mut self, action: ManualAction) {
        if self.state != CircuitState::Closed {
            self.goto(CircuitState::Closed, manual(action, OPERATOR_NOTE));
        } else {
            // A new generation without a transition.
            self.generation += 1;
            self.start_counts_afresh();
        }
    }
}

fn run(config: BreakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let breaker = CircuitBreaker::new(ServiceName::new("svc").unwrap(), config.clone());
        let mut model = Model::new(&config);
        let mut held: Vec<(Permit<'_>, ModelPermit)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Acquire => {
                    let real = breaker.try_acquire();
                    let expected = model.acquire();
                    prop_assert_eq!(
                        real.is_ok(),
                        expected.is_some(),
                        "step {}: admission differs (model state {:?})",
                        step,
                        model.state
                    );
                    if let (Ok(permit), Some(model_permit)) = (real, expected) {
                        held.push((permit, model_permit));
                    }
                }
                Op::Report { index, report } => {
                    if held.is_empty() {
                        continue;
                    }
                    let (permit, model_permit) = held.swap_remove(index % held.len());
                    match report {
                        Report::Success => permit.success(),
                        Report::Failure => permit.failure(),
                        Report::Ignore => permit.ignore(),
                        Report::Drop => drop(permit),
                    }
                    model.report(model_permit, report);
                }
                Op::Advance { millis } => {
                    tokio::time::advance(Duration::from_millis(millis)).await;
                    model.now += millis;
                }
                Op::RecordFailure => {
                    breaker.record_failure();
                    model.record_failure();
                }
                Op::CloseOnRecovery => {
                    breaker.close_on_recovery();
                    if matches!(model.state, CircuitState::Open | CircuitState::HalfOpen) {
                        model.goto(CircuitState::Closed, TransitionReason::HealthCheckRecovered);
                    }
                }
                Op::HalfOpenOnRecovery => {
                    breaker.half_open_on_recovery();
                    if model.state == CircuitState::Open {
                        model.goto(
                            CircuitState::HalfOpen,
                            TransitionReason::HealthCheckRecovered,
                        );
                    }
                }
                Op::ForceOpen => {
                    breaker.force_open(OPERATOR_NOTE);
                    model.force_open(ForcedBy::Operator, OPERATOR_NOTE);
                }
                Op::ForceClose => {
                    breaker.force_close(OPERATOR_NOTE);
                    model.manual_close(ManualAction::ForceClose);
                }
                Op::Reset => {
                    breaker.reset(OPERATOR_NOTE);
                    model.manual_close(ManualAction::Reset);
                }
                Op::RemoteForceOpen => {
                    breaker.force_open_by(ForcedBy::Remote, REMOTE_NOTE);
                    model.force_open(ForcedBy::Remote, REMOTE_NOTE);
                }
                Op::RemoteRelease => {
                    breaker.release(ForcedBy::Remote, REMOTE_NOTE);
                    model.release(ForcedBy::Remote, REMOTE_NOTE);
                }
            }
            let snapshot = breaker.snapshot();
            prop_assert_eq!(snapshot.state, model.state, "step {}: state differs", step);
            prop_assert_eq!(
                snapshot.generation,
                model.generation,
                "step {}: generation differs",
                step
            );
            prop_assert_eq!(
                snapshot.consecutive_failures,
                model.consecutive,
                "step {}: streak differs",
                step
            );
            prop_assert_eq!(
                snapshot.failure_rate,
                model.failure_rate(),
                "step {}: failure rate differs",
                step
            );
            prop_assert_eq!(
                snapshot.forced_by,
                model.forced_by,
                "step {}: owner differs",
                step
            );
            prop_assert_eq!(
                snapshot.last_transition.map(|t| t.reason),
                model.last_reason.clone(),
                "step {}: last reason differs",
                step
            );
        }
        Ok(())
    })
}

fn failure_rate() -> impl Strategy<Value = Option<FailureRateConfig>> {
    proptest::option::of(
        (1u32..=20, 1u32..6).prop_flat_map(|(twentieths, window_size)| {
            (1..=window_size).prop_map(move |minimum_calls| FailureRateConfig {
                threshold: f64::from(twentieths) / 20.0,
                window_size,
                minimum_calls,
            })
        }),
    )
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (1u32..6, 1u64..8, 1u32..4, 1u32..4, failure_rate()).prop_map(
        |(
            failure_threshold,
            recovery_secs,
            half_open_max_calls,
            success_threshold,
            failure_rate,
        )| BreakerConfig {
            failure_threshold,
            recovery_timeout: ConfigDuration::from_secs(recovery_secs),
            half_open_max_calls,
            success_threshold,
            failure_rate,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_the_reference_model(
        config in config(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(config, ops)?;
    }
}
