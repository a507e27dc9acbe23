//! Property test: the breaker, driven by random sequences of call results, clock
//! advances, health-check signals and manual commands, behaves like a small
//! sequential reference model of DESIGN.md's rules.

use std::time::Duration;

use callguard_breaker::{BreakerConfig, CircuitBreaker, Permit};
use callguard_core::{CircuitState, ConfigDuration, ServiceName};
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
    ]
}

/// The reference model: plain fields, time in milliseconds, one rule per branch.
struct Model {
    failure_threshold: u32,
    recovery_ms: u64,
    max_probes: usize,
    success_threshold: u32,
    now: u64,
    state: CircuitState,
    generation: u64,
    consecutive: u32,
    open_until: u64,
    /// (probe id, started at)
    probes: Vec<(u64, u64)>,
    next_probe: u64,
    successes: u32,
}

/// What the model remembers about a permit it handed out.
#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    generation: u64,
    probe: Option<u64>,
}

impl Model {
    fn goto(&mut self, to: CircuitState) {
        self.generation += 1;
        self.state = to;
        match to {
            CircuitState::Open => self.open_until = self.now + self.recovery_ms,
            CircuitState::Closed => self.consecutive = 0,
            CircuitState::HalfOpen => {
                self.probes.clear();
                self.successes = 0;
            }
            CircuitState::ForcedOpen => {}
        }
    }

    fn acquire(&mut self) -> Option<ModelPermit> {
        if self.state == CircuitState::Open && self.now >= self.open_until {
            self.goto(CircuitState::HalfOpen);
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

    fn closed_failure(&mut self) {
        self.consecutive += 1;
        if self.consecutive >= self.failure_threshold {
            self.goto(CircuitState::Open);
        }
    }

    fn report(&mut self, permit: ModelPermit, report: Report) {
        if permit.generation != self.generation {
            return;
        }
        match (self.state, permit.probe) {
            (CircuitState::Closed, None) => match report {
                Report::Success => self.consecutive = 0,
                Report::Failure => self.closed_failure(),
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
                            self.goto(CircuitState::Closed);
                        }
                    }
                    Report::Failure => self.goto(CircuitState::Open),
                    Report::Ignore | Report::Drop => {}
                }
            }
            _ => {}
        }
    }

    fn record_failure(&mut self) {
        match self.state {
            CircuitState::Closed => self.closed_failure(),
            CircuitState::HalfOpen => self.goto(CircuitState::Open),
            _ => {}
        }
    }

    fn manual_to(&mut self, to: CircuitState) {
        if self.state != to {
            self.goto(to);
        } else if to == CircuitState::Closed {
            // A new generation without a transition.
            self.generation += 1;
            self.consecutive = 0;
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
        let mut model = Model {
            failure_threshold: config.failure_threshold,
            recovery_ms: config.recovery_timeout.get().as_millis() as u64,
            max_probes: config.half_open_max_calls as usize,
            success_threshold: config.success_threshold,
            now: 0,
            state: CircuitState::Closed,
            generation: 0,
            consecutive: 0,
            open_until: 0,
            probes: Vec::new(),
            next_probe: 0,
            successes: 0,
        };
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
                        model.goto(CircuitState::Closed);
                    }
                }
                Op::HalfOpenOnRecovery => {
                    breaker.half_open_on_recovery();
                    if model.state == CircuitState::Open {
                        model.goto(CircuitState::HalfOpen);
                    }
                }
                Op::ForceOpen => {
                    breaker.force_open("model");
                    model.manual_to(CircuitState::ForcedOpen);
                }
                Op::ForceClose => {
                    breaker.force_close("model");
                    model.manual_to(CircuitState::Closed);
                }
                Op::Reset => {
                    breaker.reset("model");
                    model.manual_to(CircuitState::Closed);
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
            if model.state == CircuitState::Closed {
                prop_assert_eq!(snapshot.consecutive_failures, model.consecutive);
            }
        }
        Ok(())
    })
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (1u32..4, 1u64..8, 1u32..4, 1u32..4).prop_map(
        |(failure_threshold, recovery_secs, half_open_max_calls, success_threshold)| {
            BreakerConfig {
                failure_threshold,
                recovery_timeout: ConfigDuration::from_secs(recovery_secs),
                half_open_max_calls,
                success_threshold,
                failure_rate: None,
            }
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
