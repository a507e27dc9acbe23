//! `[services.NAME]`: one section per external service, every key typed and
//! checked with the rest of the config, so a typo or a bad value is refused by
//! every command that reads the file.
//!
//! A section holds three sets of keys side by side: the resilience layer's
//! ([`ServiceResilience`]), the HTTP keys every client reads
//! ([`HttpServiceConfig`]: `base_url`, the API key, timeouts, the response
//! cap), and those of the service's kind — [`LlmSettings`] (`model`,
//! `max_completion_tokens`, `token_limit_param`, `chat_path`, `api_version`,
//! `auth`) for an LLM, [`TtsSettings`] (`voice_id`, `model_id`) for TTS,
//! none for a CRM. The kind is not written in the section: it is the
//! `[pipeline]` stage whose chain (the stage's service, then each `fallback`
//! in turn) names the service, so a section is read in two steps — the
//! resilience keys of every section first, for their fallbacks; then, each
//! service's stage known, the rest, split between the HTTP keys and those of
//! the kind. A service no stage names gets the HTTP keys only (`health-server`
//! probes it). A key in none of the sets is refused with its full path
//! (`services.elevenlabs.voice_idd`), a value with its key; a key that was
//! renamed says what it is called now.
//!
//! Why split the table by the keys each struct declares rather than
//! `#[serde(flatten)]` the structs into one: serde reads a flattened struct
//! from a buffered copy of the map, so an error inside it loses its key
//! (`services.llm` instead of `services.llm.request_timeout`), and unknown
//! keys are no longer named where they stand. Why an enum of kinds rather than
//! one struct with every kind's keys optional: a `voice_id` in the CRM's
//! section is a mistake to report, not a value to ignore, and each client is
//! built from exactly the settings of its kind.

use std::collections::BTreeMap;
use std::fmt;

use callguard_breaker::BreakerConfig;
use callguard_clients::{HttpServiceConfig, LlmSettings, TtsSettings};
use callguard_core::{ServiceName, ValidationError};
use callguard_limit::LimitConfig;
use serde::de::{DeserializeOwned, Visitor};

use super::{ConfigError, PipelineConfig, deserialize_at, set_by};

/// `[services.NAME]`: how one external service is reached and guarded.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSection {
    /// The keys callguard's resilience layer reads.
    pub resilience: ServiceResilience,
    /// Base URL, key, timeouts and response cap.
    pub http: HttpServiceConfig,
    /// The keys of the service's kind, which its `[pipeline]` stage decides.
    pub kind: ServiceKind,
}

/// The keys of a service's section that callguard reads itself.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceResilience {
    /// Breaker settings for this service, replacing `[circuit_breaker]`.
    pub circuit_breaker: Option<BreakerConfig>,
    /// Limiter settings for this service, replacing `[limits]`.
    pub limits: Option<LimitConfig>,
    /// A service of the same kind to use while this one is unavailable.
    pub fallback: Option<ServiceName>,
    /// The URL the health checker probes; default `{base_url}/health`.
    pub health_url: Option<String>,
    /// Whether the health checker probes this service at all (default true).
    /// Turn it off for APIs without an unauthenticated health endpoint: their
    /// breaker then recovers through HALF_OPEN probes of real calls.
    pub health_probe: bool,
}

impl Default for ServiceResilience {
    fn default() -> Self {
        Self {
            circuit_breaker: None,
            limits: None,
            fallback: None,
            health_url: None,
            health_probe: true,
        }
    }
}

/// The work `[pipeline]` gives a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageKind {
    /// Writes the call script (`pipeline.llm`).
    Llm,
    /// Speaks it (`pipeline.tts`).
    Tts,
    /// Records the call (`pipeline.crm`).
    Crm,
}

impl StageKind {
    /// Every stage, in the order a call runs them.
    pub const ALL: [Self; 3] = [Self::Llm, Self::Tts, Self::Crm];

    /// The stage's key under `[pipeline]`: `llm`, `tts` or `crm`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Tts => "tts",
            Self::Crm => "crm",
        }
    }

    /// The service `pipeline` names for this stage.
    pub fn service(self, pipeline: &PipelineConfig) -> &ServiceName {
        match self {
            Self::Llm => &pipeline.llm,
            Self::Tts => &pipeline.tts,
            Self::Crm => &pipeline.crm,
        }
    }

    /// The keys a service of this kind has beside the HTTP ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Llm => keys_of::<LlmSettings>(),
            Self::Tts => keys_of::<TtsSettings>(),
            Self::Crm => &[],
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's settings beyond the HTTP keys, by the stage it works for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServiceKind {
    /// In the LLM stage's chain.
    Llm(LlmSettings),
    /// In the TTS stage's chain.
    Tts(TtsSettings),
    /// In the CRM stage's chain: no keys of its own.
    Crm,
    /// Named by no stage: the HTTP keys only.
    Unstaged,
}

impl ServiceKind {
    /// The stage the service works for, if any.
    pub fn stage(&self) -> Option<StageKind> {
        match self {
            Self::Llm(_) => Some(StageKind::Llm),
            Self::Tts(_) => Some(StageKind::Tts),
            Self::Crm => Some(StageKind::Crm),
            Self::Unstaged => None,
        }
    }

    /// The error for service `name`, of this kind, where `[pipeline]` makes
    /// it a service of `stage` (`None`: of no stage).
    pub fn mismatch(&self, name: &ServiceName, stage: Option<StageKind>) -> ValidationError {
        let of = |stage: Option<StageKind>| match stage {
            Some(stage) => format!("the {stage} stage"),
            None => "no stage".to_owned(),
        };
        ValidationError::new(
            format!("services.{name}"),
            format!("settings for {}", of(self.stage())),
            format!("settings for the stage [pipeline] gives it ({})", of(stage)),
        )
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Self::Llm(settings) => settings.validate(),
            Self::Tts(settings) => settings.validate(),
            Self::Crm | Self::Unstaged => Ok(()),
        }
    }
}

/// Reads `[services]` from the merged TOML (`None` when there is none): the
/// resilience keys of every section, then each service's stage, then the
/// HTTP keys and those of its kind. Errors name the full key (and the
/// environment variable that set it).
pub(super) fn parse(
    services: Option<toml::Value>,
    pipeline: &PipelineConfig,
    from_env: &[(String, String)],
) -> Result<BTreeMap<ServiceName, ServiceSection>, ConfigError> {
    let Some(services) = services else {
        return Ok(BTreeMap::new());
    };
    let tables: BTreeMap<ServiceName, toml::Table> =
        deserialize_at(services, "services", from_env)?;
    let mut read = BTreeMap::new();
    for (name, mut table) in tables {
        let resilience = take_keys(&mut table, keys_of::<ServiceResilience>());
        let resilience: ServiceResilience =
            deserialize_at(resilience, &format!("services.{name}"), from_env)?;
        read.insert(name, (resilience, table));
    }
    let stages = stages(pipeline, |name| {
        read.get(name).and_then(|(r, _)| r.fallback.as_ref())
    })
    .map_err(ConfigError::Invalid)?;
    read.into_iter()
        .map(|(name, (resilience, mut rest))| {
            let section = format!("services.{name}");
            let stage = stages.get(&name).copied();
            let http = take_keys(&mut rest, keys_of::<HttpServiceConfig>());
            let own = take_keys(&mut rest, stage.map_or(&[], StageKind::keys));
            if let Some(key) = rest.keys().next() {
                return Err(unknown_key(&section, key, &name, stage, from_env));
            }
            let kind = match stage {
                Some(StageKind::Llm) => ServiceKind::Llm(deserialize_at(own, &section, from_env)?),
                Some(StageKind::Tts) => ServiceKind::Tts(deserialize_at(own, &section, from_env)?),
                Some(StageKind::Crm) => ServiceKind::Crm,
                None => ServiceKind::Unstaged,
            };
            let http = deserialize_at(http, &section, from_env)?;
            Ok((
                name,
                ServiceSection {
                    resilience,
                    http,
                    kind,
                },
            ))
        })
        .collect()
}

/// Checks every section's values, that each has the kind its stage gives it,
/// and that fallbacks name other services (that each stage's service is
/// configured is [`AgentConfig::check_pipeline`](super::AgentConfig::check_pipeline)'s).
/// Keys are named in full.
pub(super) fn validate(
    services: &BTreeMap<ServiceName, ServiceSection>,
    pipeline: &PipelineConfig,
) -> Result<(), ValidationError> {
    let stages = stages(pipeline, fallback_in(services))?;
    for (name, section) in services {
        let key = format!("services.{name}");
        section.http.validate().map_err(|e| e.in_section(&key))?;
        section.kind.validate().map_err(|e| e.in_section(&key))?;
        let stage = stages.get(name).copied();
        if section.kind.stage() != stage {
            return Err(section.kind.mismatch(name, stage));
        }
        let resilience = &section.resilience;
        if let Some(breaker) = &resilience.circuit_breaker {
            breaker
                .validate()
                .map_err(|e| e.in_section(&format!("{key}.circuit_breaker")))?;
        }
        if let Some(limits) = &resilience.limits {
            limits
                .validate()
                .map_err(|e| e.in_section(&format!("{key}.{}", LimitConfig::SECTION)))?;
        }
        if let Some(fallback) = &resilience.fallback {
            if fallback == name || !services.contains_key(fallback) {
                return Err(ValidationError::new(
                    format!("{key}.fallback"),
                    fallback,
                    "the name of another configured service",
                ));
            }
        }
        if let Some(url) = &resilience.health_url {
            let http =
                reqwest::Url::parse(url).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
            if !http {
                return Err(ValidationError::new(
                    format!("{key}.health_url"),
                    url,
                    "an absolute http(s) URL",
                ));
            }
        }
    }
    Ok(())
}

/// The services of `stage`'s chain, in the order a call tries them: its
/// `[pipeline]` service, then each `fallback_of` in turn, until a service
/// with no fallback or one already in the chain.
pub(super) fn chain<'a>(
    stage: StageKind,
    pipeline: &'a PipelineConfig,
    fallback_of: impl Fn(&ServiceName) -> Option<&'a ServiceName>,
) -> Vec<&'a ServiceName> {
    let mut chain = vec![stage.service(pipeline)];
    while let Some(next) = chain.last().and_then(|service| fallback_of(service)) {
        if chain.contains(&next) {
            break;
        }
        chain.push(next);
    }
    chain
}

/// The fallback each of `services` names.
pub(super) fn fallback_in<'a>(
    services: &'a BTreeMap<ServiceName, ServiceSection>,
) -> impl Fn(&ServiceName) -> Option<&'a ServiceName> {
    move |name| {
        services
            .get(name)
            .and_then(|section| section.resilience.fallback.as_ref())
    }
}

/// The stage each service works for: the one whose [`chain`] names it. A
/// service in the chains of two stages is refused, at the key that names it
/// in the second.
fn stages<'a>(
    pipeline: &'a PipelineConfig,
    fallback_of: impl Fn(&ServiceName) -> Option<&'a ServiceName>,
) -> Result<BTreeMap<ServiceName, StageKind>, ValidationError> {
    let mut stages = BTreeMap::new();
    for stage in StageKind::ALL {
        let chain = chain(stage, pipeline, &fallback_of);
        for (at, service) in chain.iter().enumerate() {
            if let Some(other) = stages.insert((*service).clone(), stage) {
                let key = match at.checked_sub(1) {
                    None => format!("pipeline.{stage}"),
                    Some(before) => format!("services.{}.fallback", chain[before]),
                };
                return Err(ValidationError::new(
                    key,
                    service,
                    format!(
                        "a service no other stage uses ({service} is in the {other} stage's chain)"
                    ),
                ));
            }
        }
    }
    Ok(stages)
}

/// Keys an LLM section once took, with what to write instead.
const RENAMED_LLM_KEYS: &[(&str, &str)] = &[(
    "max_tokens",
    "renamed max_completion_tokens (the script's length, sent in the request's \
     max_completion_tokens field, which current OpenAI models require); add \
     token_limit_param = \"max_tokens\" only for a server that needs the old field",
)];

/// The error for `key`, in `section` (`services.NAME`) of a service working
/// for `stage`: what a renamed key is called now, which kind's key it is, or
/// which keys the section takes.
fn unknown_key(
    section: &str,
    key: &str,
    name: &ServiceName,
    stage: Option<StageKind>,
    from_env: &[(String, String)],
) -> ConfigError {
    let role = match stage {
        Some(stage) => format!("{name} is in the {stage} stage's chain"),
        None => format!("no [pipeline] stage names {name}"),
    };
    let renamed = RENAMED_LLM_KEYS
        .iter()
        .find(|(old, _)| stage == Some(StageKind::Llm) && *old == key);
    let owner = StageKind::ALL.into_iter().find(|s| s.keys().contains(&key));
    let message = match (renamed, owner) {
        (Some((_, now)), _) => (*now).to_owned(),
        (None, Some(owner)) => format!("a key of {owner} services, and {role}"),
        (None, None) => {
            let keys = [
                keys_of::<ServiceResilience>(),
                keys_of::<HttpServiceConfig>(),
                stage.map_or(&[], StageKind::keys),
            ]
            .concat()
            .join(", ");
            format!("unknown key ({role}; its section takes {keys})")
        }
    };
    let key = format!("{section}.{key}");
    ConfigError::Key {
        env_var: set_by(&key, from_env),
        key,
        message,
    }
}

/// Removes `keys` from `table`, as a table of their own.
fn take_keys(table: &mut toml::Table, keys: &[&str]) -> toml::Value {
    toml::Value::Table(
        keys.iter()
            .filter_map(|key| table.remove_entry(*key))
            .collect(),
    )
}

/// The keys a struct deriving `Deserialize` reads: serde names them when it
/// asks its deserializer for a struct, and this one only listens.
fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Listener<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Listener<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("only the keys were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut keys: &'static [&'static str] = &[];
    // The error is the point: the keys were taken before it.
    let _ = T::deserialize(Listener(&mut keys));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    /// The three stages' services, each with `extra` lines in its section,
    /// and `more` sections after them.
    fn load(extra: [&str; 3], more: &str) -> Result<AgentConfig, ConfigError> {
        let mut text = String::new();
        for (name, extra) in ["llm", "elevenlabs", "crm"].into_iter().zip(extra) {
            text.push_str(&format!(
                "[services.{name}]\nbase_url = \"http://127.0.0.1:1/{name}\"\n{extra}\n"
            ));
        }
        text.push_str(more);
        AgentConfig::load(&text, None, [])
    }

    fn error(extra: [&str; 3], more: &str) -> String {
        load(extra, more).unwrap_err().to_string()
    }

    fn name(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    #[test]
    fn each_section_gets_the_settings_of_its_stage() {
        let config = load(
            [
                "model = \"gpt-4.1\"",
                "voice_id = \"v1\"\nfallback = \"backup\"",
                "",
            ],
            "[services.backup]\nbase_url = \"http://127.0.0.1:1/b\"\nmodel_id = \"m2\"\n\
             [services.spare]\nbase_url = \"http://127.0.0.1:1/s\"\n",
        )
        .unwrap();
        let kind = |n: &str| config.services[&name(n)].kind.clone();
        assert_eq!(
            kind("llm"),
            ServiceKind::Llm(LlmSettings {
                model: "gpt-4.1".into(),
                ..LlmSettings::default()
            })
        );
        assert_eq!(
            kind("elevenlabs"),
            ServiceKind::Tts(TtsSettings {
                voice_id: "v1".into(),
                ..TtsSettings::default()
            })
        );
        assert_eq!(
            kind("backup"),
            ServiceKind::Tts(TtsSettings {
                model_id: "m2".into(),
                ..TtsSettings::default()
            }),
            "a fallback is of its stage's kind"
        );
        assert_eq!(kind("crm"), ServiceKind::Crm);
        assert_eq!(kind("spare"), ServiceKind::Unstaged);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_full_path() {
        let err = error(["", "voice_idd = \"v1\"", ""], "");
        assert!(
            err.starts_with("config key services.elevenlabs.voice_idd: unknown key"),
            "{err}"
        );
        assert!(
            err.contains("voice_id, model_id"),
            "the keys it takes: {err}"
        );
    }

    #[test]
    fn a_key_of_another_kind_says_whose_it_is() {
        let err = error(["", "", "voice_id = \"v1\""], "");
        assert_eq!(
            err,
            "config key services.crm.voice_id: a key of tts services, and crm is in the crm stage's chain"
        );
        let err = error(
            ["", "", ""],
            "[services.spare]\nbase_url = \"http://127.0.0.1:1/s\"\nchat_path = \"/v1\"\n",
        );
        assert_eq!(
            err,
            "config key services.spare.chat_path: a key of llm services, and no [pipeline] stage names spare"
        );
    }

    #[test]
    fn the_old_length_key_says_what_it_is_called_now() {
        let err = error(["max_tokens = 300", "", ""], "");
        assert!(
            err.starts_with("config key services.llm.max_tokens: renamed max_completion_tokens")
                && err.contains("token_limit_param = \"max_tokens\""),
            "{err}"
        );
        let config = load(
            [
                "max_completion_tokens = 200\ntoken_limit_param = \"max_tokens\"\n\
                 chat_path = \"/openai/deployments/d/chat/completions\"\n\
                 api_version = \"2024-10-21\"\nauth = \"api-key\"",
                "",
                "",
            ],
            "",
        )
        .unwrap();
        let ServiceKind::Llm(settings) = &config.services[&name("llm")].kind else {
            panic!("an llm section");
        };
        assert_eq!(settings.max_completion_tokens, 200);
        assert_eq!(settings.api_version.as_deref(), Some("2024-10-21"));
    }

    #[test]
    fn a_bad_value_is_refused_with_key_value_and_rule() {
        for (extra, expected) in [
            (
                ["max_completion_tokens = 0", "", ""],
                "invalid config: services.llm.max_completion_tokens must be ≥ 1, got 0",
            ),
            (
                ["chat_path = \"v1/chat\"", "", ""],
                "invalid config: services.llm.chat_path must be a path starting with '/'",
            ),
            (
                ["token_limit_param = \"max_length\"", "", ""],
                "config key services.llm.token_limit_param: unknown variant `max_length`",
            ),
            (
                ["", "voice_id = \"../admin\"", ""],
                "invalid config: services.elevenlabs.voice_id must be a non-empty id of \
                 letters, digits, '-' and '_', got \"../admin\"",
            ),
            (
                ["", "", "request_timeout = \"soon\""],
                "config key services.crm.request_timeout: ",
            ),
            (
                ["", "", "connect_timeout = \"0s\""],
                "invalid config: services.crm.connect_timeout must be greater than 0s, got 0s",
            ),
            (
                ["health_url = \"/health\"", "", ""],
                "invalid config: services.llm.health_url must be an absolute http(s) URL, \
                 got /health",
            ),
            (
                ["api_key = \"sk-1\"\napi_key_env = \"K\"", "", ""],
                "invalid config: services.llm.api_key must be unset when api_key_env is set \
                 (give the key one way), got [redacted]",
            ),
        ] {
            let err = error(extra, "");
            assert!(err.starts_with(expected), "{err}");
        }
    }

    #[test]
    fn a_section_without_a_base_url_is_refused() {
        let err = AgentConfig::load("[services.llm]\nmodel = \"m\"\n", None, [])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config key services.llm: missing field `base_url`"),
            "{err}"
        );
    }

    #[test]
    fn a_key_is_not_needed_to_load_but_to_build_a_client() {
        let config = load(["", "", ""], "").unwrap();
        assert_eq!(config.services[&name("llm")].http.api_key, None);
    }

    #[test]
    fn environment_overrides_are_typed_and_checked_too() {
        let var = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let text = "[services.llm]\nbase_url = \"http://127.0.0.1:1/llm\"\n\
                    [services.elevenlabs]\nbase_url = \"http://127.0.0.1:1/e\"\n\
                    [services.crm]\nbase_url = \"http://127.0.0.1:1/crm\"\n";
        let config = AgentConfig::load(
            text,
            None,
            [var("CALLGUARD_SERVICES__ELEVENLABS__VOICE_ID", "v9")],
        )
        .unwrap();
        assert!(matches!(
            &config.services[&name("elevenlabs")].kind,
            ServiceKind::Tts(settings) if settings.voice_id == "v9"
        ));
        let err = AgentConfig::load(text, None, [var("CALLGUARD_SERVICES__LLM__VOICE_ID", "v9")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config key services.llm.voice_id: a key of tts services")
                && err.ends_with("(set by environment variable CALLGUARD_SERVICES__LLM__VOICE_ID)"),
            "{err}"
        );
    }

    #[test]
    fn a_service_works_for_one_stage() {
        let err = error(["fallback = \"elevenlabs\"", "", ""], "");
        assert_eq!(
            err,
            "invalid config: pipeline.tts must be a service no other stage uses \
             (elevenlabs is in the llm stage's chain), got elevenlabs"
        );
        // A loop of fallbacks within one stage is no conflict: the chain
        // ends where it repeats.
        let backup =
            "[services.backup]\nbase_url = \"http://127.0.0.1:1/b\"\nfallback = \"elevenlabs\"\n";
        let config = load(["", "fallback = \"backup\"", ""], backup).unwrap();
        assert_eq!(
            config.chain(StageKind::Tts),
            [&name("elevenlabs"), &name("backup")]
        );
        assert_eq!(config.chain(StageKind::Llm), [&name("llm")]);
        // A fallback into another stage's chain is refused where it is named.
        let err = error(
            ["", "fallback = \"backup\"", "fallback = \"backup\""],
            backup,
        );
        assert_eq!(
            err,
            "invalid config: services.crm.fallback must be a service no other stage uses \
             (backup is in the tts stage's chain), got backup"
        );
    }

    #[test]
    fn a_section_edited_into_another_kind_fails_validation() {
        let mut config = load(["", "", ""], "").unwrap();
        config.services.get_mut(&name("crm")).unwrap().kind = ServiceKind::Unstaged;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "services.crm must be settings for the stage [pipeline] gives it (the crm stage), got settings for no stage"
        );
    }

    #[test]
    fn the_keys_of_a_struct_are_the_ones_it_reads() {
        assert_eq!(
            keys_of::<HttpServiceConfig>(),
            [
                "base_url",
                "api_key",
                "api_key_env",
                "connect_timeout",
                "request_timeout",
                "max_response_bytes"
            ]
        );
        assert_eq!(keys_of::<TtsSettings>(), ["voice_id", "model_id"]);
        assert_eq!(
            keys_of::<ServiceResilience>(),
            [
                "circuit_breaker",
                "limits",
                "fallback",
                "health_url",
                "health_probe"
            ]
        );
    }
}
