//! Per-key series (the key's id, never the key: [`crate::auth`]): requests, tokens, spend and
//! unmetered answers by key and member, and per-key rate-limit refusals.
//!
//! A request resolves its key's [`KeySeries`] once, when it is admitted; each series in it is
//! looked up in its family on first use and kept, so counting an answer is an atomic add rather
//! than a label hash and a lock per event. Series still appear only once something is counted in
//! them, as before.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{MemberName, NO_MEMBER};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyMemberLabels {
    pub key: MemberName,
    pub member: MemberName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub key: MemberName,
    pub member: MemberName,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub key: MemberName,
    /// `requests` or `tokens`.
    pub limit: &'static str,
}

type SpendCounter = Counter<f64, AtomicU64>;

/// The tenant families ([`crate::usage`], [`crate::limits`]); cloning shares them.
#[derive(Debug, Default, Clone)]
struct Families {
    requests: Family<KeyMemberLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    spend: Family<KeyMemberLabels, SpendCounter>,
    unmetered: Family<KeyMemberLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
}

/// Tenants' usage, spend and rate limiting, with each key's series cached.
#[derive(Debug)]
pub(super) struct TenantMetrics {
    families: Families,
    /// The members' names by pool index, then [`NO_MEMBER`].
    members: Arc<[Arc<str>]>,
    keys: RwLock<HashMap<Arc<str>, Arc<KeySeries>>>,
}

impl TenantMetrics {
    pub(super) fn new(members: &[Arc<str>]) -> Self {
        let members: Vec<Arc<str>> = members
            .iter()
            .cloned()
            .chain([Arc::from(NO_MEMBER)])
            .collect();
        Self {
            families: Families::default(),
            members: members.into(),
            keys: RwLock::default(),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        let f = &self.families;
        r.register(
            "requests_by_key",
            "Requests a member answered, by key id and member (none: no member answered)",
            f.requests.clone(),
        );
        r.register(
            "tokens",
            "Tokens the members reported in `usage`, by key id, member and kind (prompt, completion)",
            f.tokens.clone(),
        );
        r.register(
            "spend",
            "Spend (tokens times the member's price per million tokens, in the price's currency), by key id and member",
            f.spend.clone(),
        );
        r.register(
            "unmetered",
            "Successful answers without a `usage` to meter (or streams the client left early), by key id and member",
            f.unmetered.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused with 429 by a per-key limit, by key id and limit (requests, tokens)",
            f.rate_limited.clone(),
        );
    }

    /// `key`'s series (made on the key's first request; a key removed from the key set keeps
    /// its series, as Prometheus expects of a counter).
    pub(super) fn key(&self, key: &Arc<str>) -> Arc<KeySeries> {
        let cached = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        if let Some(series) = cached {
            return series;
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.entry(key.clone())
            .or_insert_with(|| Arc::new(KeySeries::new(key, self)))
            .clone()
    }

    pub(super) fn rate_limited(&self, key: &Arc<str>, limit: &'static str) {
        self.families
            .rate_limited
            .get_or_create(&LimitLabels {
                key: MemberName(key.clone()),
                limit,
            })
            .inc();
    }
}

/// One key's series by member index (the last index: no member answered), each taken from its
/// family on first use.
#[derive(Debug)]
pub struct KeySeries {
    key: Arc<str>,
    members: Arc<[Arc<str>]>,
    families: Families,
    requests: Box<[OnceLock<Counter>]>,
    prompt_tokens: Box<[OnceLock<Counter>]>,
    completion_tokens: Box<[OnceLock<Counter>]>,
    spend: Box<[OnceLock<SpendCounter>]>,
    unmetered: Box<[OnceLock<Counter>]>,
}

fn slots<T>(n: usize) -> Box<[OnceLock<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

impl KeySeries {
    fn new(key: &Arc<str>, tenants: &TenantMetrics) -> Self {
        let n = tenants.members.len();
        Self {
            key: key.clone(),
            members: tenants.members.clone(),
            families: tenants.families.clone(),
            requests: slots(n),
            prompt_tokens: slots(n),
            completion_tokens: slots(n),
            spend: slots(n),
            unmetered: slots(n),
        }
    }

    /// The key's id.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// The slot of member `member` (`None`, or an index out of the pool: no member).
    fn slot(&self, member: Option<usize>) -> usize {
        let none = self.members.len() - 1;
        member.filter(|&i| i < none).unwrap_or(none)
    }

    fn labels(&self, slot: usize) -> KeyMemberLabels {
        KeyMemberLabels {
            key: MemberName(self.key.clone()),
            member: MemberName(self.members[slot].clone()),
        }
    }

    fn tokens(&self, slot: usize, kind: &'static str) -> Counter {
        let labels = TokenLabels {
            key: MemberName(self.key.clone()),
            member: MemberName(self.members[slot].clone()),
            kind,
        };
        self.families.tokens.get_or_create(&labels).clone()
    }

    /// A request of this key answered by `member` (`None`: no member answered).
    pub fn answered(&self, member: Option<usize>) {
        let s = self.slot(member);
        self.requests[s]
            .get_or_init(|| {
                self.families
                    .requests
                    .get_or_create(&self.labels(s))
                    .clone()
            })
            .inc();
    }

    /// An answer's usage (`[prompt, completion]` tokens) from `member`, and what it cost.
    pub fn used(&self, member: usize, tokens: [u64; 2], spend: f64) {
        let s = self.slot(Some(member));
        self.prompt_tokens[s]
            .get_or_init(|| self.tokens(s, "prompt"))
            .inc_by(tokens[0]);
        self.completion_tokens[s]
            .get_or_init(|| self.tokens(s, "completion"))
            .inc_by(tokens[1]);
        if spend.is_finite() && spend > 0.0 {
            self.spend[s]
                .get_or_init(|| self.families.spend.get_or_create(&self.labels(s)).clone())
                .inc_by(spend);
        }
    }

    /// A successful answer from `member` with no usage to meter.
    pub fn usage_missing(&self, member: usize) {
        let s = self.slot(Some(member));
        self.unmetered[s]
            .get_or_init(|| {
                self.families
                    .unmetered
                    .get_or_create(&self.labels(s))
                    .clone()
            })
            .inc();
    }
}
