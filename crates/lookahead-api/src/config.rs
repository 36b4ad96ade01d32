//! The router sidecar's configuration file. The operator renders it into a ConfigMap from an
//! `LLMPool` + `RoutingPolicy`; users running the router by hand write it themselves.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::duration::{format_duration, parse_duration, parse_seconds};
use crate::policy::{KeyLimits, KeyLimitsOverride, RouterMethod};
use crate::pool::{Capability, Price};

/// Errors in a router configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Top-level router configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterConfig {
    /// Address the OpenAI-compatible front listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    pub members: Vec<MemberConfig>,
    pub policy: PolicyConfig,
    /// The `LLMPool` the members come from (reported with the router's demand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// How the router verifies `https://` members.
    #[serde(default, skip_serializing_if = "MemberTls::is_default")]
    pub tls: MemberTls,
}

/// TLS to `https://` members: the system's root certificates, plus the CAs of a PEM bundle.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberTls {
    /// PEM file of extra CA certificates (a private CA of self-hosted members), trusted in
    /// addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_file: Option<PathBuf>,
}

impl MemberTls {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl MemberConfig {
    /// A window and an answer bound that a request could fit.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, why: &str| {
            ConfigError::Invalid(format!("members.{}.{field}: {why}", self.name))
        };
        if self.context_window == Some(0) {
            return Err(invalid("contextWindow", "must be > 0"));
        }
        if self.max_output_tokens == Some(0) {
            return Err(invalid("maxOutputTokens", "must be > 0"));
        }
        if let (Some(w), Some(o)) = (self.context_window, self.max_output_tokens) {
            if o >= w {
                return Err(invalid(
                    "maxOutputTokens",
                    "must be below contextWindow (the prompt needs room too)",
                ));
            }
        }
        Ok(())
    }

    /// Whether the member takes requests using `capability` ([`Capability::supported_by`]).
    pub fn supports(&self, capability: Capability) -> bool {
        capability.supported_by(self.supports.as_deref())
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".to_string()
}

/// One routable member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberConfig {
    pub name: String,
    pub model_id: String,
    /// OpenAI-compatible base URL, including the `/v1` prefix.
    pub base_url: String,
    #[serde(default)]
    pub price: Price,
    /// Context window in tokens (see `LLMPool`'s member field); absent: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Longest answer in tokens; absent: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Supported request features; absent: chat with every chat capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports: Option<Vec<Capability>>,
    /// File holding this member's API key (a mounted Secret): sent to this member only, as
    /// `Authorization: Bearer <key>`, in place of the client's credentials. Re-read when the
    /// file changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
}

/// Routing policy as the router applies it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    pub method: RouterMethod,
    /// Trained artifact directory (methods that need training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<PathBuf>,
    /// gRPC address of the scoring sidecar; absent means scoring in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<String>,
    #[serde(default)]
    pub cost_weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// The `model` value that asks for routing.
    #[serde(default = "default_alias")]
    pub alias: String,
    #[serde(default = "default_request_timeout", with = "duration_str")]
    pub request_timeout: Duration,
    #[serde(default = "default_first_token_timeout", with = "duration_str")]
    pub first_token_timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// File holding accepted API keys, one per line (key ids `key-1`, `key-2`, … in line
    /// order; re-read while running); absent, and no `auth.keysDir`: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<PathBuf>,
    /// Longest a routing decision may take before the router fails open to `defaultModel`.
    #[serde(default = "default_score_timeout", with = "duration_str")]
    pub score_timeout: Duration,
    /// Largest accepted request body, in bytes (larger: 413).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// How long a request waits when no member has a ready replica (members scaled to zero
    /// are waking up) before the router answers 503 with `Retry-After`.
    #[serde(default = "default_cold_start_timeout", with = "duration_str")]
    pub cold_start_timeout: Duration,
    /// Named cost profiles, name -> costWeight: `model: "<alias>:NAME"` is ranked with that
    /// weight (DNS-label names; see `RoutingPolicy.spec.objective.profiles`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub profiles: std::collections::BTreeMap<String, f64>,
    /// Largest costWeight the `x-lookahead-cost-weight` request header may set; absent: the
    /// header is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_weight: Option<f64>,
    /// Tenants: keys with ids (a directory, re-read while running) and per-key limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

/// The router's tenants: who may call (keys with ids) and how much (per-key limits).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Directory of keys (a mounted Secret): each file's name is a key id, its content the key.
    /// Hidden entries (Kubernetes' `..data` links) are skipped. Re-read every few seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_dir: Option<PathBuf>,
    /// Limits of every key (`anonymous` included, when the router has no keys).
    #[serde(default, skip_serializing_if = "KeyLimits::is_unlimited")]
    pub limits: KeyLimits,
    /// Per-key-id overrides of `limits`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyLimitsOverride>,
}

impl AuthConfig {
    /// The limits of key `id`: its override's fields, else the defaults.
    pub fn limits_of(&self, id: &str) -> KeyLimits {
        let o = self.keys.iter().find(|k| k.id == id);
        KeyLimits {
            requests_per_minute: o
                .and_then(|o| o.requests_per_minute)
                .or(self.limits.requests_per_minute),
            tokens_per_minute: o
                .and_then(|o| o.tokens_per_minute)
                .or(self.limits.tokens_per_minute),
        }
    }

    fn validate(&self, api_keys_file: bool) -> Result<(), ConfigError> {
        if api_keys_file && self.keys_dir.is_some() {
            return Err(ConfigError::Invalid(
                "policy.auth.keysDir: set either it or policy.apiKeysFile, not both".into(),
            ));
        }
        let zero =
            |l: &KeyLimits| l.requests_per_minute == Some(0) || l.tokens_per_minute == Some(0);
        if zero(&self.limits) {
            return Err(ConfigError::Invalid(
                "policy.auth.limits: a limit must be > 0".into(),
            ));
        }
        let mut ids = HashSet::new();
        for k in &self.keys {
            if !ids.insert(k.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "policy.auth.keys: duplicate id {:?}",
                    k.id
                )));
            }
            if zero(&self.limits_of(&k.id)) {
                return Err(ConfigError::Invalid(format!(
                    "policy.auth.keys.{}: a limit must be > 0",
                    k.id
                )));
            }
        }
        Ok(())
    }
}

fn default_alias() -> String {
    "auto".to_string()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_first_token_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retries() -> u32 {
    2
}
fn default_score_timeout() -> Duration {
    Duration::from_millis(250)
}
fn default_cold_start_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_body_bytes() -> u64 {
    4 << 20
}

impl RouterConfig {
    /// Reads and validates a YAML (or JSON) config file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: RouterConfig =
            serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: unique names, a known default model, a usable method.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.members.is_empty() {
            return Err(ConfigError::Invalid(
                "members: at least one member is required".into(),
            ));
        }
        let mut seen = HashSet::new();
        for m in &self.members {
            if !seen.insert(m.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "members: duplicate name {:?}",
                    m.name
                )));
            }
            if !(m.base_url.starts_with("http://") || m.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "members.{}.baseUrl: must start with http:// or https://",
                    m.name
                )));
            }
            m.validate_limits()?;
        }
        if self.members.iter().any(|m| m.name == self.policy.alias) {
            return Err(ConfigError::Invalid(format!(
                "policy.alias: {:?} is also a member name",
                self.policy.alias
            )));
        }
        if let Some(d) = &self.policy.default_model {
            if !seen.contains(d.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "policy.defaultModel: {d:?} is not a member"
                )));
            }
        }
        if !(self.policy.cost_weight >= 0.0 && self.policy.cost_weight.is_finite()) {
            return Err(ConfigError::Invalid(
                "policy.costWeight: must be finite and >= 0".into(),
            ));
        }
        crate::policy::check_cost_profiles(
            "policy",
            &self.policy.profiles,
            self.policy.max_cost_weight,
        )
        .map_err(ConfigError::Invalid)?;
        if self.policy.max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "policy.maxBodyBytes: must be > 0".into(),
            ));
        }
        if let Some(auth) = &self.policy.auth {
            auth.validate(self.policy.api_keys_file.is_some())?;
        }
        if self.policy.method.needs_training() && self.policy.artifact.is_none() {
            return Err(ConfigError::Invalid(
                "policy.artifact: required by a trained method".into(),
            ));
        }
        if self.policy.method == RouterMethod::Fixed && self.policy.default_model.is_none() {
            return Err(ConfigError::Invalid(
                "policy.defaultModel: required by the fixed method".into(),
            ));
        }
        Ok(())
    }
}

mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: 127.0.0.1:8080
members:
  - { name: yi, modelId: Yi-1.5-34B-Chat, baseUrl: "http://127.0.0.1:9001/v1" }
  - { name: phi, modelId: Phi-3-medium-4k-instruct, baseUrl: "http://127.0.0.1:9002/v1",
      price: { inputPerMTok: 0.5, outputPerMTok: 1.5 } }
policy:
  method: lookahead-lite
  artifact: /artifacts/v1
  defaultModel: yi
  requestTimeout: 90s
  firstTokenTimeout: 500ms
"#;

    fn parse(s: &str) -> Result<RouterConfig, ConfigError> {
        let c: RouterConfig = serde_yaml::from_str(s).map_err(|source| ConfigError::Parse {
            path: "inline".into(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn parses_a_full_config() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.members[1].price.output_per_m_tok, 1.5);
        assert_eq!(c.policy.alias, "auto");
        assert_eq!(c.policy.request_timeout, Duration::from_secs(90));
        assert_eq!(c.policy.first_token_timeout, Duration::from_millis(500));
        assert_eq!(c.policy.retries, 2);
        assert_eq!(c.policy.score_timeout, Duration::from_millis(250));
        assert_eq!(c.policy.max_body_bytes, 4 << 20);
        assert!(c.policy.profiles.is_empty() && c.policy.max_cost_weight.is_none());
        let round: RouterConfig =
            serde_yaml::from_str(&serde_yaml::to_string(&c).expect("ser")).expect("de");
        assert_eq!(round, c);
    }

    #[test]
    fn rejects_what_types_cannot() {
        let dup = GOOD.replace("name: phi", "name: yi");
        assert!(parse(&dup)
            .unwrap_err()
            .to_string()
            .contains("duplicate name"));
        let unknown_default = GOOD.replace("defaultModel: yi", "defaultModel: nope");
        assert!(parse(&unknown_default)
            .unwrap_err()
            .to_string()
            .contains("defaultModel"));
        let no_artifact = GOOD.replace("artifact: /artifacts/v1", "");
        assert!(parse(&no_artifact)
            .unwrap_err()
            .to_string()
            .contains("artifact"));
        let bad_url = GOOD.replace("\"http://127.0.0.1:9001/v1\"", "ftp://x");
        assert!(parse(&bad_url).unwrap_err().to_string().contains("baseUrl"));
        let bad_field = GOOD.replace("listen:", "lisen:");
        assert!(parse(&bad_field).unwrap_err().to_string().contains("lisen"));
        let bad_duration = GOOD.replace("90s", "90 parsecs");
        assert!(parse(&bad_duration).is_err());
        let bad_profile =
            GOOD.replace("defaultModel: yi", "defaultModel: yi\n  profiles: {Eco: 1}");
        assert!(parse(&bad_profile)
            .unwrap_err()
            .to_string()
            .contains("policy.profiles"));
    }

    #[test]
    fn auth_limits_default_per_key_and_reject_conflicts() {
        let auth = "  auth:\n    keysDir: /keys\n    limits: { requestsPerMinute: 60 }\n    keys:\n      - { id: batch, tokensPerMinute: 1000 }\n";
        let c = parse(&format!("{GOOD}{auth}")).expect("valid");
        let a = c.policy.auth.as_ref().expect("auth");
        assert_eq!(a.limits_of("batch").requests_per_minute, Some(60));
        assert_eq!(a.limits_of("batch").tokens_per_minute, Some(1000));
        assert_eq!(a.limits_of("other").tokens_per_minute, None);
        let round: RouterConfig =
            serde_yaml::from_str(&serde_yaml::to_string(&c).expect("ser")).expect("de");
        assert_eq!(round, c);
        let both = format!("{GOOD}  apiKeysFile: /k\n{auth}");
        assert!(parse(&both).unwrap_err().to_string().contains("not both"));
        let dup = format!("{GOOD}{auth}      - {{ id: batch }}\n");
        assert!(parse(&dup)
            .unwrap_err()
            .to_string()
            .contains("duplicate id"));
        let zero = format!("{GOOD}{}", auth.replace("60", "0"));
        assert!(parse(&zero).unwrap_err().to_string().contains("> 0"));
    }

    #[test]
    fn durations_round_trip() {
        for s in ["300ms", "30s", "2m", "0s"] {
            let d = parse_duration(s).expect("parses");
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn whole_second_durations_take_hours_and_refuse_zero() {
        assert_eq!(parse_seconds("90s"), Ok(90));
        assert_eq!(parse_seconds("10m"), Ok(600));
        assert_eq!(parse_seconds("2h"), Ok(7200));
        for bad in [
            "0s",
            "5",
            "h",
            "300ms",
            "1d",
            "99999999999999999999h",
            "-1s",
            "",
        ] {
            assert!(parse_seconds(bad).is_err(), "{bad:?}");
        }
        let e = parse_seconds("0m").expect_err("zero");
        assert!(e.contains("at least 1s"), "{e}");
    }

    #[test]
    fn member_limits_and_capabilities_parse_and_are_checked() {
        let limited = GOOD.replace(
            "price: { inputPerMTok: 0.5, outputPerMTok: 1.5 } }",
            "price: { inputPerMTok: 0.5, outputPerMTok: 1.5 },\n      contextWindow: 4096, maxOutputTokens: 1024, supports: [json_schema] }",
        );
        let c = parse(&limited).expect("valid");
        let phi = &c.members[1];
        assert_eq!(
            (phi.context_window, phi.max_output_tokens),
            (Some(4096), Some(1024))
        );
        assert!(phi.supports(Capability::JsonSchema));
        assert!(phi.supports(Capability::Chat), "json_schema implies chat");
        assert!(!phi.supports(Capability::Tools));
        let yi = &c.members[0];
        assert!(yi.supports(Capability::Tools) && !yi.supports(Capability::Embeddings));
        let too_long = limited.replace("maxOutputTokens: 1024", "maxOutputTokens: 4096");
        let e = parse(&too_long).unwrap_err().to_string();
        assert!(e.contains("members.phi.maxOutputTokens"), "{e}");
        let zero = limited.replace("contextWindow: 4096", "contextWindow: 0");
        assert!(parse(&zero)
            .unwrap_err()
            .to_string()
            .contains("contextWindow"));
        let unknown = limited.replace("[json_schema]", "[telepathy]");
        assert!(parse(&unknown).is_err());
    }
}
