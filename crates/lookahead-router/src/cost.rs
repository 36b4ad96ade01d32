//! The cost knob per request: which costWeight ranks a routed request. The alias (`auto`) uses
//! `policy.costWeight`; `auto:NAME` uses the named profile's weight (`policy.profiles`); the
//! `x-lookahead-cost-weight` request header, when `policy.maxCostWeight` allows overrides, wins
//! over either, so a client can tune one request without a profile of its own. The weight only
//! matters when the scorer gives scores: fail-open, not-accepted and the `fixed`/`random` methods
//! route as before. Answers to routed requests say what was used (`x-lookahead-profile`,
//! `x-lookahead-cost-weight`), and `lookahead_router_cost_profile_total{profile, weight}` counts
//! them: profile names come from the config, so the label set stays bounded.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use lookahead_api::config::PolicyConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::RouterMetrics;
use crate::ApiError;

/// Request header: the costWeight for this request (`0 ..= policy.maxCostWeight`); answer
/// header: the costWeight the request was ranked with.
pub const HEADER_COST_WEIGHT: HeaderName = HeaderName::from_static("x-lookahead-cost-weight");
/// Answer header: the profile a routed request asked for (`default` for the plain alias).
pub const HEADER_PROFILE: HeaderName = HeaderName::from_static("x-lookahead-profile");
/// The profile name of the plain alias (`policy.costWeight`).
pub const DEFAULT_PROFILE: &str = "default";

/// One named costWeight, with what a request routed with it needs ready-made (the answer
/// headers, its two counters), so the request path neither formats nor looks up labels.
#[derive(Debug, Clone)]
struct Profile {
    name: Arc<str>,
    weight: f64,
    name_header: Option<HeaderValue>,
    weight_header: Option<HeaderValue>,
    /// Requests ranked with the profile's weight, and with the header's.
    by_profile: Counter,
    by_header: Counter,
}

impl Profile {
    fn new(name: &str, weight: f64, counts: &Family<CostLabels, Counter>) -> Self {
        let counter = |source: &'static str| {
            counts
                .get_or_create(&CostLabels {
                    profile: name.to_string(),
                    weight: source,
                })
                .clone()
        };
        Profile {
            name: Arc::from(name),
            weight,
            name_header: HeaderValue::from_str(name).ok(),
            weight_header: HeaderValue::from_str(&format_weight(weight)).ok(),
            by_profile: counter("profile"),
            by_header: counter("header"),
        }
    }
}

/// The weight a routed request is ranked with, and where it came from (borrowing the profile
/// it was asked for: nothing of it is copied per request).
#[derive(Debug, Clone, Copy)]
pub struct CostChoice<'a> {
    profile: &'a Profile,
    pub weight: f64,
    /// Set by the `x-lookahead-cost-weight` header (over the profile's weight).
    pub overridden: bool,
}

impl CostChoice<'_> {
    /// The profile asked for: [`DEFAULT_PROFILE`] or a name from `policy.profiles`.
    pub fn profile(&self) -> &str {
        &self.profile.name
    }

    /// The answer headers: `x-lookahead-profile` and `x-lookahead-cost-weight`.
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.profile.name_header {
            headers.insert(HEADER_PROFILE, v.clone());
        }
        let weight = match (&self.profile.weight_header, self.overridden) {
            (Some(v), false) => Some(v.clone()),
            _ => HeaderValue::from_str(&format_weight(self.weight)).ok(),
        };
        if let Some(v) = weight {
            headers.insert(HEADER_COST_WEIGHT, v);
        }
    }
}

/// A weight as few digits as round-trip it (`0.5`, `2`, `0.125`).
fn format_weight(w: f64) -> String {
    format!("{w}")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    profile: String,
    /// `profile`: the profile's (or the alias's) weight; `header`: the override header's.
    weight: &'static str,
}

/// The router's cost profiles and override bound.
#[derive(Debug, Clone)]
pub struct CostProfiles {
    default: Profile,
    named: Vec<Profile>,
    max_override: Option<f64>,
    counts: Family<CostLabels, Counter>,
}

impl CostProfiles {
    /// The profiles of a (validated) policy; each profile's series exists from the start (at 0).
    pub fn from_policy(policy: &PolicyConfig) -> Self {
        let counts = Family::default();
        Self {
            default: Profile::new(DEFAULT_PROFILE, policy.cost_weight, &counts),
            named: policy
                .profiles
                .iter()
                .map(|(name, &w)| Profile::new(name, w, &counts))
                .collect(),
            max_override: policy.max_cost_weight,
            counts,
        }
    }

    /// Adds the counter family to the router's registry.
    pub fn register(&self, metrics: &mut RouterMetrics) {
        metrics.register_family(
            "cost_profile",
            "Routed requests by cost profile (default: the plain alias) and where the weight came from (profile, header)",
            self.counts.clone(),
        );
    }

    /// Whether `model` asks for a profile (`<alias>:NAME`); `Some(None)` for an unknown name.
    pub fn profile_of(&self, alias: &str, model: &str) -> Option<Option<usize>> {
        let name = model.strip_prefix(alias)?.strip_prefix(':')?;
        Some(self.named.iter().position(|p| *p.name == *name))
    }

    /// The names a client may append to the alias, for error messages.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|p| &*p.name)
    }

    /// The weight of a routed request: profile `named` (or the alias's), unless the override
    /// header sets one. A malformed, out-of-range or disallowed header is a 400 naming it.
    pub fn choose(
        &self,
        named: Option<usize>,
        headers: &HeaderMap,
    ) -> Result<CostChoice<'_>, ApiError> {
        let profile = named
            .and_then(|i| self.named.get(i))
            .unwrap_or(&self.default);
        let header = self.override_weight(headers)?;
        Ok(CostChoice {
            profile,
            weight: header.unwrap_or(profile.weight),
            overridden: header.is_some(),
        })
    }

    /// Counts a routed request by its profile and where its weight came from.
    pub fn count(&self, choice: &CostChoice) {
        let p = choice.profile;
        let counter = if choice.overridden {
            &p.by_header
        } else {
            &p.by_profile
        };
        counter.inc();
    }

    /// The `x-lookahead-cost-weight` header's weight, when sent: a plain decimal number in
    /// `[0, maxCostWeight]`. Checked on every completion request that carries it (a request
    /// naming a member ignores the weight, but bad input is still bad input).
    pub fn override_weight(&self, headers: &HeaderMap) -> Result<Option<f64>, ApiError> {
        let mut values = headers.get_all(HEADER_COST_WEIGHT).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        let invalid = |message: String| {
            Err(ApiError::bad_request("invalid_value", message)
                .with_param("x-lookahead-cost-weight"))
        };
        let Some(max) = self.max_override else {
            return invalid(
                "The x-lookahead-cost-weight header is not accepted by this router \
                 (policy.maxCostWeight / spec.objective.maxCostWeight is not set)."
                    .into(),
            );
        };
        if values.next().is_some() {
            return invalid("The x-lookahead-cost-weight header must be sent once.".into());
        }
        let text = value.to_str().unwrap_or("").trim();
        // Plain decimals only: Rust's float syntax also takes `inf`, `NaN` and `1e3`.
        let plain = !text.is_empty()
            && text.len() <= 32
            && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        match text.parse::<f64>() {
            Ok(w) if plain && (0.0..=max).contains(&w) => Ok(Some(w)),
            _ => {
                let shown: String = text.chars().take(32).collect();
                invalid(format!(
                    "The x-lookahead-cost-weight header must be a decimal number from 0 to {} \
                     (policy.maxCostWeight); got {shown:?}.",
                    format_weight(max)
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(extra: &str) -> CostProfiles {
        let config: lookahead_api::RouterConfig = serde_yaml::from_str(&format!(
            "members:\n  - {{ name: a, modelId: A, baseUrl: 'http://a/v1' }}\npolicy:\n  method: random\n  costWeight: 0.25\n{extra}"
        ))
        .unwrap();
        CostProfiles::from_policy(&config.policy)
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER_COST_WEIGHT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn profiles_resolve_after_the_alias_and_the_header_wins_within_its_bound() {
        let p = profiles("  profiles: {economy: 2, premium: 0}\n  maxCostWeight: 4\n");
        assert_eq!(p.profile_of("auto", "auto:economy"), Some(Some(0)));
        assert_eq!(p.profile_of("auto", "auto:nope"), Some(None));
        assert_eq!(p.profile_of("auto", "auto"), None);
        assert_eq!(p.profile_of("auto", "autox:economy"), None);
        let c = p.choose(Some(0), &headers(&[])).unwrap();
        assert_eq!(
            (c.profile(), c.weight, c.overridden),
            ("economy", 2.0, false)
        );
        let c = p.choose(None, &headers(&[])).unwrap();
        assert_eq!((c.profile(), c.weight), ("default", 0.25));
        let c = p.choose(Some(0), &headers(&["0.5"])).unwrap();
        assert_eq!(
            (c.profile(), c.weight, c.overridden),
            ("economy", 0.5, true)
        );
        assert_eq!(p.choose(None, &headers(&["4"])).unwrap().weight, 4.0);
        for bad in ["4.01", "-1", "", "nan", "inf", "1e0", "0x1", "1,2"] {
            let e = p.choose(None, &headers(&[bad])).expect_err(bad);
            assert_eq!(
                (e.status.as_u16(), e.param),
                (400, Some("x-lookahead-cost-weight"))
            );
            assert!(e.message.contains("from 0 to 4"), "{bad}: {}", e.message);
        }
        let e = p.choose(None, &headers(&["1", "2"])).expect_err("twice");
        assert!(e.message.contains("once"), "{}", e.message);
    }

    #[test]
    fn without_a_bound_the_header_is_refused() {
        let p = profiles("");
        let e = p.choose(None, &headers(&["0"])).expect_err("disabled");
        assert_eq!(e.param, Some("x-lookahead-cost-weight"));
        assert!(e.message.contains("maxCostWeight"), "{}", e.message);
        assert_eq!(p.choose(None, &headers(&[])).unwrap().weight, 0.25);
    }
}
