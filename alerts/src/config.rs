//! The `[alerts]` config section and one sub-section per channel; a channel is
//! on when its section is present. Secrets are [`Secret`]s and never print.
//!
//! ```toml
//! [alerts]
//! cooldown = "5m"          # one alert per (service, kind) per cooldown
//! queue_capacity = 256     # alerts waiting per channel; more are dropped (and counted)
//!
//! [alerts.email]
//! smtp_host = "smtp.example.com"
//! smtp_port = 587          # default: 25 (none), 587 (starttls), 465 (tls)
//! tls = "starttls"         # "none" | "starttls" | "tls"
//! username = "alerts@example.com"
//! password = "…"           # CALLGUARD_ALERTS__EMAIL__PASSWORD
//! from = "callguard <alerts@example.com>"
//! to = ["oncall@example.com"]
//!
//! [alerts.telegram]
//! api_base = "https://api.telegram.org"
//! bot_token = "…"          # CALLGUARD_ALERTS__TELEGRAM__BOT_TOKEN
//! chat_id = "-1001234567890"
//!
//! [alerts.webhook]
//! url = "https://hooks.example.com/callguard"
//! secret = "…"             # CALLGUARD_ALERTS__WEBHOOK__SECRET
//! ```
//!
//! Every channel section also takes `timeout` (per request, default `10s`),
//! `retry` (a `[retry]` table, default the seed's 3 retries after 5 s, 10 s,
//! 20 s) and `circuit_breaker` (a `[circuit_breaker]` table, default 5
//! consecutive failures, 30 s recovery). Keys left out of a `retry` or
//! `circuit_breaker` table that is written take the seed defaults of
//! `[retry]` / `[circuit_breaker]`.

use std::fmt;
use std::time::Duration;

use callguard_breaker::BreakerConfig;
use callguard_core::config::{nonzero_duration, within};
use callguard_core::{ConfigDuration, Secret, ValidationError};
use callguard_retry::RetryPolicy;
use lettre::message::Mailbox;

/// The Bot API's address, used when `api_base` is not set.
pub const TELEGRAM_API_BASE: &str = "https://api.telegram.org";

/// Shortest webhook secret accepted, in bytes.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;

/// `[alerts]`: dedup, queueing and the channels.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Within this long after an alert of one (service, kind), further ones
    /// are suppressed and counted; the next alert sent reports the count.
    pub cooldown: ConfigDuration,
    /// Alerts that may wait per channel; a full queue drops (and counts) new ones.
    pub queue_capacity: usize,
    /// `[alerts.email]`: on when present.
    pub email: Option<EmailConfig>,
    /// `[alerts.telegram]`: on when present.
    pub telegram: Option<TelegramConfig>,
    /// `[alerts.webhook]`: on when present.
    pub webhook: Option<WebhookConfig>,
}

impl AlertsConfig {
    /// Default cooldown: 5 minutes.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
    /// Default queue capacity per channel.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

    /// Checks every key; errors name the full key (`alerts.email.to`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let in_alerts = |e: ValidationError| e.in_section("alerts");
        nonzero_duration("cooldown", self.cooldown.get()).map_err(in_alerts)?;
        within("queue_capacity", self.queue_capacity, 1, 100_000).map_err(in_alerts)?;
        if let Some(email) = &self.email {
            email.validate().map_err(|e| e.in_section("alerts.email"))?;
        }
        if let Some(telegram) = &self.telegram {
            telegram
                .validate()
                .map_err(|e| e.in_section("alerts.telegram"))?;
        }
        if let Some(webhook) = &self.webhook {
            webhook
                .validate()
                .map_err(|e| e.in_section("alerts.webhook"))?;
        }
        Ok(())
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            cooldown: ConfigDuration::new(Self::DEFAULT_COOLDOWN),
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            email: None,
            telegram: None,
            webhook: None,
        }
    }
}

/// How a channel delivers: request timeout, retry and breaker, read from the
/// keys `timeout`, `retry` and `circuit_breaker` of its section.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Longest wait for one request (SMTP session or HTTP request).
    pub timeout: ConfigDuration,
    /// The channel's own retry policy.
    pub retry: RetryPolicy,
    /// The channel's own circuit breaker.
    pub circuit_breaker: BreakerConfig,
}

impl Delivery {
    /// Default request timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn default_timeout() -> ConfigDuration {
        ConfigDuration::new(Self::DEFAULT_TIMEOUT)
    }

    /// A channel's breaker: more patient than a service's, since an alert is
    /// worth a few more tries and nobody waits for it.
    fn default_breaker() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            recovery_timeout: ConfigDuration::from_secs(30),
            ..BreakerConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        nonzero_duration("timeout", self.timeout.get())?;
        self.retry.validate()?;
        self.circuit_breaker
            .validate()
            .map_err(|e| e.in_section("circuit_breaker"))
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            timeout: Self::default_timeout(),
            retry: RetryPolicy::default(),
            circuit_breaker: Self::default_breaker(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SmtpTls {
    /// Plain text (a local relay only).
    None,
    /// Plain connection upgraded with `STARTTLS`, which is required.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS").
    Tls,
}

impl SmtpTls {
    /// The usual port: 25, 587 or 465.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::Starttls => 587,
            Self::Tls => 465,
        }
    }
}

impl fmt::Display for SmtpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Starttls => "starttls",
            Self::Tls => "tls",
        })
    }
}

/// `[alerts.email]`: plain-text mail through an SMTP server.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (also checked against its certificate).
    pub smtp_host: String,
    /// The SMTP port; by default the usual one for `tls`.
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP user name; set together with `password`, or neither.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, `alerts@example.com` or `Name <alerts@example.com>`.
    pub from: String,
    /// One or more recipients.
    pub to: Vec<String>,
    /// Longest SMTP session.
    #[serde(default = "Delivery::default_timeout")]
    pub timeout: ConfigDuration,
    /// Retry of this channel.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Breaker of this channel.
    #[serde(default = "Delivery::default_breaker")]
    pub circuit_breaker: BreakerConfig,
}

impl EmailConfig {
    /// A config for `smtp_host`, sending from `from` to `to`, other keys default.
    pub fn new(smtp_host: impl Into<String>, from: impl Into<String>, to: Vec<String>) -> Self {
        let delivery = Delivery::default();
        Self {
            smtp_host: smtp_host.into(),
            smtp_port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: from.into(),
            to,
            timeout: delivery.timeout,
            retry: delivery.retry,
            circuit_breaker: delivery.circuit_breaker,
        }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or_else(|| self.tls.default_port())
    }

    /// Timeout, retry and breaker.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            timeout: self.timeout,
            retry: self.retry.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
        }
    }

    pub(crate) fn sender(&self) -> Result<Mailbox, ValidationError> {
        parse_mailbox("from", &self.from)
    }

    pub(crate) fn recipients(&self) -> Result<Vec<Mailbox>, ValidationError> {
        if self.to.is_empty() {
            return Err(ValidationError::new("to", "[]", "at least one address"));
        }
        self.to
            .iter()
            .enumerate()
            .map(|(i, address)| parse_mailbox(&format!("to[{i}]"), address))
            .collect()
    }

    fn validate(&self) -> Result<(), ValidationError> {
        if self.smtp_host.trim().is_empty() {
            return Err(ValidationError::new(
                "smtp_host",
                "\"\"",
                "a host name or address",
            ));
        }
        if self.smtp_port == Some(0) {
            return Err(ValidationError::new("smtp_port", 0, "between 1 and 65535"));
        }
        match (&self.username, &self.password) {
            (Some(_), None) => {
                return Err(ValidationError::new(
                    "password",
                    "(unset)",
                    "set when username is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ValidationError::new(
                    "username",
                    "(unset)",
                    "set when password is set",
                ));
            }
            _ => {}
        }
        self.sender()?;
        self.recipients()?;
        self.delivery().validate()
    }
}

fn parse_mailbox(key: &str, address: &str) -> Result<Mailbox, ValidationError> {
    address
        .parse()
        .map_err(|_| ValidationError::new(key, format!("{address:?}"), "an e-mail address"))
}

/// `[alerts.telegram]`: messages from a bot to one chat.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The Bot API's base URL; requests go to `{api_base}/bot{token}/sendMessage`.
    #[serde(default = "TelegramConfig::default_api_base")]
    pub api_base: String,
    /// The bot's token (`123456:ABC…`), from `@BotFather`.
    pub bot_token: Secret,
    /// The chat to write to: a numeric id (`-1001234567890`) or `@channelname`.
    #[serde(deserialize_with = "string_or_integer")]
    pub chat_id: String,
    /// Longest HTTP request.
    #[serde(default = "Delivery::default_timeout")]
    pub timeout: ConfigDuration,
    /// Retry of this channel.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Breaker of this channel.
    #[serde(default = "Delivery::default_breaker")]
    pub circuit_breaker: BreakerConfig,
}

impl TelegramConfig {
    /// A config for `bot_token` and `chat_id`, other keys default.
    pub fn new(bot_token: Secret, chat_id: impl Into<String>) -> Self {
        let delivery = Delivery::default();
        Self {
            api_base: Self::default_api_base(),
            bot_token,
            chat_id: chat_id.into(),
            timeout: delivery.timeout,
            retry: delivery.retry,
            circuit_breaker: delivery.circuit_breaker,
        }
    }

    fn default_api_base() -> String {
        TELEGRAM_API_BASE.to_owned()
    }

    /// Timeout, retry and breaker.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            timeout: self.timeout,
            retry: self.retry.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        http_url(&self.api_base).map_err(|rule| {
            ValidationError::new("api_base", format!("{:?}", self.api_base), rule)
        })?;
        let token = self.bot_token.expose();
        if token.is_empty()
            || token
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c == '?' || c == '#')
        {
            return Err(ValidationError::new(
                "bot_token",
                self.bot_token.to_string(),
                "a bot token such as 123456:ABC-DEF (no spaces, '/', '?' or '#')",
            ));
        }
        if self.chat_id.trim().is_empty() {
            return Err(ValidationError::new(
                "chat_id",
                "\"\"",
                "a chat id such as -1001234567890 or @channelname",
            ));
        }
        self.delivery().validate()
    }
}

/// `[alerts.webhook]`: a signed JSON POST.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where the payload is posted (`http://` or `https://`). Only its host is
    /// ever logged, since such URLs often carry a token in their path.
    pub url: String,
    /// The shared secret of the HMAC-SHA256 signature, at least 16 bytes.
    pub secret: Secret,
    /// Longest HTTP request.
    #[serde(default = "Delivery::default_timeout")]
    pub timeout: ConfigDuration,
    /// Retry of this channel.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Breaker of this channel.
    #[serde(default = "Delivery::default_breaker")]
    pub circuit_breaker: BreakerConfig,
}

impl WebhookConfig {
    /// A config posting to `url`, signed with `secret`, other keys default.
    pub fn new(url: impl Into<String>, secret: Secret) -> Self {
        let delivery = Delivery::default();
        Self {
            url: url.into(),
            secret,
            timeout: delivery.timeout,
            retry: delivery.retry,
            circuit_breaker: delivery.circuit_breaker,
        }
    }

    /// Timeout, retry and breaker.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            timeout: self.timeout,
            retry: self.retry.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        // The URL may carry a token: an error shows what it is, not what it says.
        http_url(&self.url).map_err(|rule| ValidationError::new("url", "(not shown)", rule))?;
        let len = self.secret.expose().len();
        if len < MIN_WEBHOOK_SECRET_LEN {
            return Err(ValidationError::new(
                "secret",
                format!("a secret of {len} bytes"),
                format!("at least {MIN_WEBHOOK_SECRET_LEN} bytes long"),
            ));
        }
        self.delivery().validate()
    }
}

/// Checks that `url` is an absolute `http(s)` URL; the error is the rule.
fn http_url(url: &str) -> Result<reqwest::Url, &'static str> {
    const RULE: &str = "an absolute http:// or https:// URL";
    let parsed = reqwest::Url::parse(url).map_err(|_| RULE)?;
    match parsed.scheme() {
        "http" | "https" if parsed.host().is_some() => Ok(parsed),
        _ => Err(RULE),
    }
}

fn string_or_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(i64),
    }
    Ok(match <Id as serde::Deserialize>::deserialize(d)? {
        Id::Text(text) => text,
        Id::Number(n) => n.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        cooldown = "2m"
        queue_capacity = 16

        [email]
        smtp_host = "smtp.example.com"
        tls = "tls"
        username = "alerts"
        password = "smtp-pass-123"
        from = "callguard <alerts@example.com>"
        to = ["oncall@example.com", "ops@example.com"]

        [telegram]
        bot_token = "123456:tg-token-xyz"
        chat_id = -1001234567890

        [webhook]
        url = "https://hooks.example.com/callguard"
        secret = "a-shared-secret-of-some-length"
        timeout = "3s"
        retry = { max_retries = 5, initial_delay = "1s" }
        circuit_breaker = { failure_threshold = 3 }
    "#;

    #[test]
    fn defaults_when_empty() {
        let config: AlertsConfig = toml::from_str("").unwrap();
        assert_eq!(config, AlertsConfig::default());
        assert_eq!(config.cooldown.get(), Duration::from_secs(300));
        assert!(config.email.is_none() && config.telegram.is_none() && config.webhook.is_none());
        config.validate().unwrap();
    }

    #[test]
    fn parses_every_section() {
        let config: AlertsConfig = toml::from_str(FULL).unwrap();
        config.validate().unwrap();
        assert_eq!(config.cooldown.get(), Duration::from_secs(120));
        let email = config.email.unwrap();
        assert_eq!(email.port(), 465, "the usual port for tls");
        assert_eq!(email.recipients().unwrap().len(), 2);
        assert_eq!(
            email.circuit_breaker.failure_threshold, 5,
            "channel default"
        );
        let telegram = config.telegram.unwrap();
        assert_eq!(telegram.api_base, TELEGRAM_API_BASE);
        assert_eq!(
            telegram.chat_id, "-1001234567890",
            "numbers are taken as ids"
        );
        assert_eq!(telegram.timeout.get(), Delivery::DEFAULT_TIMEOUT);
        let webhook = config.webhook.unwrap();
        assert_eq!(webhook.timeout.get(), Duration::from_secs(3));
        assert_eq!(webhook.retry.max_retries, 5);
        assert_eq!(webhook.circuit_breaker.failure_threshold, 3);
    }

    #[test]
    fn debug_hides_the_secrets() {
        let config: AlertsConfig = toml::from_str(FULL).unwrap();
        let shown = format!("{config:?}");
        for secret in ["smtp-pass-123", "tg-token-xyz", "a-shared-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<AlertsConfig>(
            "[telegram]\nbot_token = \"t\"\nchat_id = \"1\"\nchat = 2",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("chat"), "{err}");
        let err = toml::from_str::<AlertsConfig>("cooldwn = \"1m\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cooldwn"), "{err}");
    }

    #[test]
    fn validation_names_key_value_and_rule() {
        let check = |toml_text: &str| {
            toml::from_str::<AlertsConfig>(toml_text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            check("cooldown = \"0s\""),
            "alerts.cooldown must be greater than 0s, got 0s"
        );
        assert_eq!(
            check("[email]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = []"),
            "alerts.email.to must be at least one address, got []"
        );
        assert_eq!(
            check("[email]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"nobody\"]"),
            "alerts.email.to[0] must be an e-mail address, got \"nobody\""
        );
        assert_eq!(
            check(
                "[email]\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"x@y.z\"]\nusername = \"u\""
            ),
            "alerts.email.password must be set when username is set, got (unset)"
        );
        let err = check("[telegram]\nbot_token = \"12 34/5\"\nchat_id = \"1\"");
        assert!(
            err.starts_with("alerts.telegram.bot_token must be"),
            "{err}"
        );
        assert!(!err.contains("12 34/5"), "the token is not shown: {err}");
        assert_eq!(
            check("[telegram]\napi_base = \"ftp://x\"\nbot_token = \"1:a\"\nchat_id = \"1\""),
            "alerts.telegram.api_base must be an absolute http:// or https:// URL, got \"ftp://x\""
        );
        assert_eq!(
            check("[webhook]\nurl = \"https://h/p\"\nsecret = \"short\""),
            "alerts.webhook.secret must be at least 16 bytes long, got a secret of 5 bytes"
        );
        let err = check("[webhook]\nurl = \"not a url/with-token\"\nsecret = \"0123456789abcdef\"");
        assert!(err.starts_with("alerts.webhook.url must be"), "{err}");
        assert!(!err.contains("with-token"), "{err}");
        assert_eq!(
            check(
                "[webhook]\nurl = \"http://h\"\nsecret = \"0123456789abcdef\"\nretry = { backoff_factor = 0.5 }"
            ),
            "alerts.webhook.retry.backoff_factor must be ≥ 1.0, got 0.5"
        );
        assert_eq!(
            check(
                "[webhook]\nurl = \"http://h\"\nsecret = \"0123456789abcdef\"\ncircuit_breaker = { failure_threshold = 0 }"
            ),
            "alerts.webhook.circuit_breaker.failure_threshold must be ≥ 1, got 0"
        );
    }
}
