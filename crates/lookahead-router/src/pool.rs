//! The pool as the request path sees it: members with their resolved URLs and ready-made header
//! values, the routing alias, and which member (if any) a request's `model` names.

use std::sync::Arc;

use http::{HeaderValue, StatusCode, Uri};
use lookahead_api::pool::Capability;
use lookahead_api::RouterConfig;
use serde_json::json;

use crate::body::{json_response, RespBody};
use crate::member_key::MemberKey;
use crate::openai::Endpoint;
use crate::upstream::join_url;
use crate::RouterError;

/// One pool member with its resolved URLs.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: Arc<str>,
    pub model_id: String,
    /// `name` as the `x-lookahead-model` value (built once, cloned per answer).
    pub name_header: Option<HeaderValue>,
    /// The member's own API key (`apiKeyFile`), sent to it in place of the client's.
    pub key: Option<Arc<MemberKey>>,
    /// One URL per endpoint, in [`Endpoint::ALL`]'s order.
    urls: [Uri; 4],
    /// Context window in tokens (unknown: `None`).
    pub context_window: Option<u32>,
    /// Longest answer in tokens (unknown: `None`).
    pub max_output_tokens: Option<u32>,
    /// Declared capabilities (`None`: every chat capability).
    pub supports: Option<Vec<Capability>>,
}

impl Member {
    pub fn url(&self, endpoint: Endpoint) -> &Uri {
        &self.urls[endpoint as usize]
    }

    pub fn supports(&self, capability: Capability) -> bool {
        capability.supported_by(self.supports.as_deref())
    }

    /// Whether the member declares a limit or its capabilities (requests must then be checked).
    fn declares_limits(&self) -> bool {
        self.context_window.is_some() || self.max_output_tokens.is_some() || self.supports.is_some()
    }
}

/// Where a request goes: scored across the pool, or to one named member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Routed,
    Member(usize),
}

/// The members and the alias that routes across them.
#[derive(Debug, Clone)]
pub struct Pool {
    pub members: Vec<Member>,
    pub alias: String,
    /// Whether any member declares a context window, an answer bound or its capabilities: only
    /// then is a request's [`crate::openai::needs::Needs`] worked out.
    pub constrained: bool,
}

impl Pool {
    pub fn from_config(config: &RouterConfig) -> Result<Self, RouterError> {
        let members = config
            .members
            .iter()
            .map(|m| {
                let url = |endpoint: Endpoint| {
                    join_url(&m.base_url, endpoint.upstream_path()).map_err(|reason| {
                        RouterError::BaseUrl {
                            member: m.name.clone(),
                            url: m.base_url.clone(),
                            reason,
                        }
                    })
                };
                let key = match &m.api_key_file {
                    Some(path) => Some(Arc::new(MemberKey::load(path).map_err(|source| {
                        RouterError::MemberKey {
                            member: m.name.clone(),
                            source,
                        }
                    })?)),
                    None => None,
                };
                let [a, b, c, d] = Endpoint::ALL;
                Ok(Member {
                    name: Arc::from(m.name.as_str()),
                    key,
                    model_id: m.model_id.clone(),
                    name_header: HeaderValue::from_str(&m.name).ok(),
                    urls: [url(a)?, url(b)?, url(c)?, url(d)?],
                    context_window: m.context_window,
                    max_output_tokens: m.max_output_tokens,
                    supports: m.supports.clone(),
                })
            })
            .collect::<Result<Vec<_>, RouterError>>()?;
        let constrained = members.iter().any(Member::declares_limits);
        Ok(Self {
            members,
            alias: config.policy.alias.clone(),
            constrained,
        })
    }

    /// Whether any member is reached over `https://`.
    pub fn any_https(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.urls[0].scheme_str() == Some("https"))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The alias routes; a member is named by its name, else by its `modelId`.
    pub fn resolve(&self, model: &str) -> Option<Target> {
        if model == self.alias {
            return Some(Target::Routed);
        }
        self.members
            .iter()
            .position(|m| *m.name == *model)
            .or_else(|| self.members.iter().position(|m| m.model_id == model))
            .map(Target::Member)
    }

    /// The names a client may send, for error messages.
    pub fn known_models(&self) -> String {
        let mut names = vec![self.alias.as_str()];
        names.extend(self.members.iter().map(|m| &*m.name));
        names.join(", ")
    }

    /// `GET /v1/models`: the alias, then every member.
    pub fn list_models(&self) -> http::Response<RespBody> {
        let mut data = vec![
            json!({"id": self.alias, "object": "model", "created": 0, "owned_by": "lookahead"}),
        ];
        data.extend(self.members.iter().map(|m| {
            json!({"id": &*m.name, "object": "model", "created": 0, "owned_by": "lookahead", "root": m.model_id})
        }));
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    }
}
