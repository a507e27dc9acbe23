//! A retry budget shared by every call to one service, so that retries cannot
//! multiply the load on a service that is already failing.
//!
//! The algorithm is gRPC's retry throttling (gRFC A6): a bucket holds up to
//! `max_tokens` tokens and starts full. Every failed attempt with a transient
//! error takes one token, every successful call puts back `token_ratio`. Retries
//! are allowed only while the bucket holds *more than half* of `max_tokens`; first
//! attempts are never held back. With the defaults (10 tokens, ratio 0.1) a
//! healthy service keeps a full bucket, five failures in a row with no success in
//! between stop retrying, and each success afterwards earns back a tenth of a
//! retry — so retries stay below roughly 10 % of successful traffic during an
//! outage.
//!
//! Tokens are counted in thousandths in one `AtomicU32` (gRPC also limits the
//! ratio to three decimals), updated with compare-and-swap loops: lock-free, and
//! a success on a full bucket costs one relaxed load.

use std::sync::atomic::{AtomicU32, Ordering};

use callguard_core::ValidationError;
use callguard_core::config::within;

/// Milli-tokens per token.
const SCALE: u32 = 1000;

/// Settings of a [`RetryBudget`]: the `budget` key of the `[retry]` section.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Capacity of the bucket, 1 to 1000 (default 10). Retries stop at half of it.
    pub max_tokens: u32,
    /// Tokens a successful call puts back, 0.001 to 1000, three decimals (default 0.1).
    pub token_ratio: f64,
}

impl BudgetConfig {
    /// Default `max_tokens` (gRPC's example value).
    pub const DEFAULT_MAX_TOKENS: u32 = 10;
    /// Default `token_ratio`.
    pub const DEFAULT_TOKEN_RATIO: f64 = 0.1;

    /// Checks the ranges; keys are relative (`max_tokens`), callers add the section.
    pub fn validate(&self) -> Result<(), ValidationError> {
        within("max_tokens", self.max_tokens, 1, 1000)?;
        within("token_ratio", self.token_ratio, 0.001, 1000.0)
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_tokens: Self::DEFAULT_MAX_TOKENS,
            token_ratio: Self::DEFAULT_TOKEN_RATIO,
        }
    }
}

/// A lock-free token bucket that decides whether a retry may be made; share it
/// as `Arc<RetryBudget>` between every executor of one service.
#[derive(Debug)]
pub struct RetryBudget {
    /// Current tokens × 1000.
    milli_tokens: AtomicU32,
    /// `max_tokens` × 1000.
    max: u32,
    /// `token_ratio` × 1000, rounded.
    refill: u32,
    config: BudgetConfig,
}

impl RetryBudget {
    /// A full bucket; fails when the config breaks a rule (keys as `budget.…`).
    pub fn new(config: BudgetConfig) -> Result<Self, ValidationError> {
        config.validate().map_err(|e| e.in_section("budget"))?;
        let max = config.max_tokens * SCALE;
        Ok(Self {
            milli_tokens: AtomicU32::new(max),
            max,
            // Validated to lie in [1, 1_000_000] after scaling.
            refill: (config.token_ratio * f64::from(SCALE)).round() as u32,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// Tokens in the bucket now.
    pub fn tokens(&self) -> f64 {
        f64::from(self.milli_tokens.load(Ordering::Relaxed)) / f64::from(SCALE)
    }

    /// Whether a retry may be made now: more than half of `max_tokens` remain.
    pub fn can_retry(&self) -> bool {
        self.milli_tokens.load(Ordering::Relaxed) > self.max / 2
    }

    /// A failed attempt (transient error): takes one token, down to zero.
    pub fn record_failure(&self) {
        // `fetch_update` only fails when the closure returns None, which it never does.
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(SCALE))
            });
    }

    /// A successful call: puts back `token_ratio` tokens, up to `max_tokens`.
    pub fn record_success(&self) {
        if self.milli_tokens.load(Ordering::Relaxed) >= self.max {
            return;
        }
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(self.refill).min(self.max))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn budget(max_tokens: u32, token_ratio: f64) -> RetryBudget {
        RetryBudget::new(BudgetConfig {
            max_tokens,
            token_ratio,
        })
        .unwrap()
    }

    #[test]
    fn starts_full_and_stops_retries_at_half() {
        let b = budget(10, 0.1);
        assert_eq!(b.tokens(), 10.0);
        for failures in 1..=4 {
            b.record_failure();
            assert!(b.can_retry(), "after {failures} failures");
        }
        b.record_failure();
        assert_eq!(b.tokens(), 5.0);
        assert!(!b.can_retry(), "5 of 10 tokens is not more than half");
    }

    #[test]
    fn successes_earn_retries_back() {
        let b = budget(10, 0.1);
        for _ in 0..20 {
            b.record_failure();
        }
        assert_eq!(b.tokens(), 0.0, "never below zero");
        for _ in 0..50 {
            b.record_success();
        }
        assert_eq!(b.tokens(), 5.0);
        assert!(!b.can_retry());
        b.record_success();
        assert!(b.can_retry());
        for _ in 0..100 {
            b.record_success();
        }
        assert_eq!(b.tokens(), 10.0, "never above max_tokens");
    }

    #[test]
    fn config_is_validated_with_the_key() {
        let err = RetryBudget::new(BudgetConfig {
            max_tokens: 0,
            token_ratio: 0.1,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "budget.max_tokens must be between 1 and 1000, got 0"
        );
        let err = RetryBudget::new(BudgetConfig {
            max_tokens: 10,
            token_ratio: 0.0,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "budget.token_ratio must be between 0.001 and 1000.0, got 0.0"
        );
    }

    #[test]
    fn deserializes_with_defaults() {
        let c: BudgetConfig = toml::from_str("max_tokens = 20").unwrap();
        assert_eq!(c.max_tokens, 20);
        assert_eq!(c.token_ratio, BudgetConfig::DEFAULT_TOKEN_RATIO);
        assert!(toml::from_str::<BudgetConfig>("tokens = 20").is_err());
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let b = Arc::new(budget(1000, 1.0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        b.record_failure();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.tokens(), 600.0);
    }

    proptest! {
        /// Against a plain floating-point model of the bucket.
        #[test]
        fn matches_the_reference_model(
            max_tokens in 1u32..=100,
            ratio_milli in 1u32..=5000,
            outcomes in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let ratio = f64::from(ratio_milli) / 1000.0;
            let b = budget(max_tokens, ratio);
            let max = f64::from(max_tokens);
            let mut model = max;
            for success in outcomes {
                if success {
                    b.record_success();
                    model = (model + ratio).min(max);
                } else {
                    b.record_failure();
                    model = (model - 1.0).max(0.0);
                }
                prop_assert!((b.tokens() - model).abs() < 1e-6, "{} vs {}", b.tokens(), model);
                if (model - max / 2.0).abs() > 1e-6 {
                    prop_assert_eq!(b.can_retry(), model > max / 2.0);
                }
            }
        }
    }
}
