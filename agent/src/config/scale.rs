//! The time scale (`simulate --time-scale`): which durations of the config it
//! multiplies, decided field by field where the compiler checks the list.
//!
//! The scale tells the same story faster, so it multiplies the durations that
//! pace the story: retry delays and deadlines, breaker recovery, the
//! limiters' waits and rates, health-check intervals and timeouts, the
//! shutdown grace, the alerts' cooldown and the log export's flush interval.
//! It leaves in real time the durations that bound work done for real:
//! request and connection timeouts, the store's leases and polling, the
//! remote watcher's keepalives, how long `/metrics` lingers.
//!
//! Each section below lists every one of its fields, to scale or to keep,
//! and the impl made from the list destructures the section without `..`: a
//! field added to any section, in this crate or in the crate that owns it,
//! does not compile here until it is put in one list or the other. Scaling the
//! merged TOML before deserialising could not promise that: a default the
//! file does not write would go unscaled, and every duration it does write
//! would be scaled, timeouts included, unless a list of exceptions were
//! kept — a list that goes stale the other way.

use std::collections::BTreeMap;

use callguard_alerts::{AlertsConfig, EmailConfig, TelegramConfig, WebhookConfig};
use callguard_breaker::{BreakerConfig, FailureRateConfig};
use callguard_clients::{HttpServiceConfig, LlmSettings, TtsSettings};
use callguard_core::{ConfigDuration, ServiceName};
use callguard_health::{GrpcConfig, HealthCheckConfig};
use callguard_limit::{LimitConfig, RateConfig};
use callguard_retry::{BudgetConfig, RetryPolicy};
use callguard_sheets_logger::SheetsConfig;
use callguard_telemetry::{LoggingConfig, MetricsConfig, RotationConfig};

use super::{
    AgentConfig, PipelineConfig, QueueConfig, ServiceKind, ServiceResilience, ServiceSection,
};

/// A config section whose story-pacing durations the time scale multiplies.
pub(super) trait Scale {
    /// Multiplies each duration that paces the story by `factor`.
    fn scale(&mut self, factor: f64);
}

impl Scale for ConfigDuration {
    fn scale(&mut self, factor: f64) {
        *self = ConfigDuration::new(self.get().mul_f64(factor));
    }
}

impl<T: Scale> Scale for Option<T> {
    fn scale(&mut self, factor: f64) {
        if let Some(section) = self {
            section.scale(factor);
        }
    }
}

impl Scale for BTreeMap<ServiceName, ServiceSection> {
    fn scale(&mut self, factor: f64) {
        for section in self.values_mut() {
            section.scale(factor);
        }
    }
}

impl Scale for ServiceKind {
    fn scale(&mut self, factor: f64) {
        match self {
            Self::Llm(settings) => settings.scale(factor),
            Self::Tts(settings) => settings.scale(factor),
            Self::Crm | Self::Unstaged => {}
        }
    }
}

/// `impl Scale` for each section: the fields in `scale` are scaled (a
/// duration, or a section whose own list decides), those in `keep` are
/// left as they are. The pattern names every field and has no `..`, so a
/// field in neither list does not compile; rustc, which names no field in a
/// pattern a macro made, then says "pattern requires `..` due to
/// inaccessible fields" at this macro: put the new field in its section's
/// list.
macro_rules! sections {
    ($($section:ident {
        scale: [$($scaled:ident),* $(,)?],
        keep: [$($kept:ident),* $(,)?] $(,)?
    })*) => {$(
        impl Scale for $section {
            fn scale(&mut self, factor: f64) {
                let $section { $($scaled,)* $($kept: _,)* } = self;
                $($scaled.scale(factor);)*
                let _ = factor;
            }
        }
    )*};
}

sections! {
    AgentConfig {
        scale: [
            retry, circuit_breaker, limits, health_check, grpc, queue, logging,
            metrics, alerts, sheets, pipeline, services,
        ],
        keep: [],
    }

    // === the resilience layer ===
    RetryPolicy {
        scale: [initial_delay, max_delay, concurrency_delay, deadline, budget],
        keep: [max_retries, backoff_factor, jitter, max_concurrency_retries],
    }
    BudgetConfig { scale: [], keep: [max_tokens, token_ratio] }
    BreakerConfig {
        scale: [recovery_timeout, failure_rate],
        keep: [failure_threshold, half_open_max_calls, success_threshold],
    }
    FailureRateConfig { scale: [], keep: [threshold, window_size, minimum_calls] }
    LimitConfig {
        scale: [queue_timeout, rate],
        keep: [
            mode, max_concurrency, initial, min, max, latency_tolerance, queue_length,
            follow_headers,
        ],
    }
    RateConfig { scale: [per], keep: [requests] }
    HealthCheckConfig {
        scale: [interval, timeout],
        // A connection's liveness, not the story's pace.
        keep: [
            on_recovery, remote, remote_tls_ca, remote_tls_server_name, remote_keepalive,
            remote_keepalive_timeout,
        ],
    }
    GrpcConfig { scale: [], keep: [listen, admin_token, tls_cert, tls_key] }

    // === the agent's own sections ===
    QueueConfig {
        scale: [shutdown_grace],
        // The store's own timing (leases, polling, connecting) is real.
        keep: [
            workers, max_deferrals, pending_file, url, table, lease, poll_interval,
            lease_batch, pool_size, connect_timeout, unreachable_grace,
        ],
    }
    PipelineConfig { scale: [], keep: [llm, tts, crm] }
    ServiceSection { scale: [resilience, http, kind], keep: [] }
    ServiceResilience {
        scale: [circuit_breaker, limits],
        keep: [fallback, health_url, health_probe],
    }
    HttpServiceConfig {
        scale: [],
        // A request to the service takes the time it takes.
        keep: [
            base_url, api_key, api_key_env, connect_timeout, request_timeout,
            max_response_bytes,
        ],
    }
    LlmSettings {
        scale: [],
        keep: [model, max_completion_tokens, token_limit_param, chat_path, api_version, auth],
    }
    TtsSettings { scale: [], keep: [voice_id, model_id] }

    // === telemetry, alerts and the log export ===
    LoggingConfig { scale: [rotation], keep: [path, console_level] }
    RotationConfig { scale: [], keep: [max_size, daily, keep] }
    // How long /metrics waits for a scraper's next look, in the scraper's time.
    MetricsConfig { scale: [], keep: [enabled, listen, linger] }
    AlertsConfig { scale: [cooldown, email, telegram, webhook], keep: [queue_capacity] }
    // Each channel's request timeout is real; its retries and breaker pace the story.
    EmailConfig {
        scale: [retry, circuit_breaker],
        keep: [smtp_host, smtp_port, tls, username, password, from, to, timeout],
    }
    TelegramConfig {
        scale: [retry, circuit_breaker],
        keep: [api_base, bot_token, chat_id, timeout],
    }
    WebhookConfig { scale: [retry, circuit_breaker], keep: [url, secret, timeout] }
    SheetsConfig {
        scale: [flush_interval, retry],
        keep: [
            spreadsheet_id, range, api_base, credentials_file, bearer_token, batch_size,
            buffer_capacity, min_level, request_timeout,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLoader;

    /// Every section that holds a duration, the optional ones included.
    const EVERY_SECTION: &str = r#"
        [retry]
        deadline = "60s"
        [services.llm]
        base_url = "http://127.0.0.1:1/llm"
        [services.elevenlabs]
        base_url = "http://127.0.0.1:1/elevenlabs"
        circuit_breaker = { recovery_timeout = "20s" }
        limits = { rate = { requests = 10, per = "1s" } }
        [services.crm]
        base_url = "http://127.0.0.1:1/crm"
        [alerts.email]
        smtp_host = "127.0.0.1"
        from = "callguard@example.invalid"
        to = ["ops@example.invalid"]
        [alerts.telegram]
        bot_token = "bot"
        chat_id = "1"
        [alerts.webhook]
        url = "http://127.0.0.1:1/alerts"
        secret = "webhook-secret-0123456789"
        [sheets]
        spreadsheet_id = "sheet"
        bearer_token = "token"
    "#;

    fn load(time_scale: Option<f64>) -> AgentConfig {
        let loader = ConfigLoader::new().defaults(toml::from_str(EVERY_SECTION).unwrap());
        match time_scale {
            Some(factor) => loader.time_scale(factor),
            None => loader,
        }
        .load()
        .unwrap()
    }

    #[test]
    fn the_story_runs_faster_and_real_work_keeps_its_time() {
        let (real, fast) = (load(None), load(Some(0.5)));
        let tts = ServiceName::new("elevenlabs").unwrap();
        let service = |config: &AgentConfig| config.services[&tts].clone();
        let channels = |config: &AgentConfig| {
            let alerts = &config.alerts;
            let (email, telegram, webhook) = (
                alerts.email.clone().unwrap(),
                alerts.telegram.clone().unwrap(),
                alerts.webhook.clone().unwrap(),
            );
            [
                (email.retry, email.circuit_breaker, email.timeout),
                (telegram.retry, telegram.circuit_breaker, telegram.timeout),
                (webhook.retry, webhook.circuit_breaker, webhook.timeout),
            ]
        };
        let sheets = |config: &AgentConfig| config.sheets.clone().unwrap();
        let limits = |config: &AgentConfig| service(config).resilience.limits.unwrap();

        let mut scaled = vec![
            (
                "retry.initial_delay",
                real.retry.initial_delay,
                fast.retry.initial_delay,
            ),
            (
                "retry.max_delay",
                real.retry.max_delay,
                fast.retry.max_delay,
            ),
            (
                "retry.concurrency_delay",
                real.retry.concurrency_delay,
                fast.retry.concurrency_delay,
            ),
            (
                "retry.deadline",
                real.retry.deadline.unwrap(),
                fast.retry.deadline.unwrap(),
            ),
            (
                "circuit_breaker.recovery_timeout",
                real.circuit_breaker.recovery_timeout,
                fast.circuit_breaker.recovery_timeout,
            ),
            (
                "limits.queue_timeout",
                real.limits.queue_timeout,
                fast.limits.queue_timeout,
            ),
            (
                "services.elevenlabs.circuit_breaker.recovery_timeout",
                service(&real)
                    .resilience
                    .circuit_breaker
                    .unwrap()
                    .recovery_timeout,
                service(&fast)
                    .resilience
                    .circuit_breaker
                    .unwrap()
                    .recovery_timeout,
            ),
            (
                "services.elevenlabs.limits.queue_timeout",
                limits(&real).queue_timeout,
                limits(&fast).queue_timeout,
            ),
            (
                "services.elevenlabs.limits.rate.per",
                limits(&real).rate.unwrap().per,
                limits(&fast).rate.unwrap().per,
            ),
            (
                "health_check.interval",
                real.health_check.interval,
                fast.health_check.interval,
            ),
            (
                "health_check.timeout",
                real.health_check.timeout,
                fast.health_check.timeout,
            ),
            (
                "queue.shutdown_grace",
                real.queue.shutdown_grace,
                fast.queue.shutdown_grace,
            ),
            (
                "alerts.cooldown",
                real.alerts.cooldown,
                fast.alerts.cooldown,
            ),
            (
                "sheets.flush_interval",
                sheets(&real).flush_interval,
                sheets(&fast).flush_interval,
            ),
            (
                "sheets.retry.initial_delay",
                sheets(&real).retry.initial_delay,
                sheets(&fast).retry.initial_delay,
            ),
        ];
        let mut kept = vec![
            ("queue.lease", real.queue.lease, fast.queue.lease),
            (
                "queue.poll_interval",
                real.queue.poll_interval,
                fast.queue.poll_interval,
            ),
            (
                "queue.connect_timeout",
                real.queue.connect_timeout,
                fast.queue.connect_timeout,
            ),
            (
                "queue.unreachable_grace",
                real.queue.unreachable_grace,
                fast.queue.unreachable_grace,
            ),
            (
                "health_check.remote_keepalive",
                real.health_check.remote_keepalive,
                fast.health_check.remote_keepalive,
            ),
            (
                "health_check.remote_keepalive_timeout",
                real.health_check.remote_keepalive_timeout,
                fast.health_check.remote_keepalive_timeout,
            ),
            ("metrics.linger", real.metrics.linger, fast.metrics.linger),
            (
                "services.elevenlabs.request_timeout",
                service(&real).http.request_timeout,
                service(&fast).http.request_timeout,
            ),
            (
                "services.elevenlabs.connect_timeout",
                service(&real).http.connect_timeout,
                service(&fast).http.connect_timeout,
            ),
            (
                "sheets.request_timeout",
                sheets(&real).request_timeout,
                sheets(&fast).request_timeout,
            ),
        ];
        for (channel, (real, fast)) in ["email", "telegram", "webhook"]
            .into_iter()
            .zip(channels(&real).into_iter().zip(channels(&fast)))
        {
            scaled.push((channel, real.0.initial_delay, fast.0.initial_delay));
            scaled.push((channel, real.1.recovery_timeout, fast.1.recovery_timeout));
            kept.push((channel, real.2, fast.2));
        }

        for (key, real, fast) in scaled {
            assert_eq!(fast.get(), real.get() / 2, "{key} is scaled");
        }
        for (key, real, fast) in kept {
            assert_eq!(fast, real, "{key} keeps its time");
        }
    }
}
