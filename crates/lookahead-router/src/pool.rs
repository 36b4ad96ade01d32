//! The pool as the request path sees it: members with their resolved URLs and ready-made header
//! values, the routing alias, and which member (if any) a request's `model` names.

use std::sync::Arc;

use http::{HeaderValue, StatusCode, Uri};
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
    chat_url: Uri,
    completions_url: Uri,
}

impl Member {
    pub fn url(&self, endpoint: Endpoint) -> &Uri {
        match endpoint {
            Endpoint::Chat => &self.chat_url,
            Endpoint::Completions => &self.completions_url,
        }
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
                Ok(Member {
                    name: Arc::from(m.name.as_str()),
                    key,
                    model_id: m.model_id.clone(),
                    name_header: HeaderValue::from_str(&m.name).ok(),
                    chat_url: url(Endpoint::Chat)?,
                    completions_url: url(Endpoint::Completions)?,
                })
            })
            .collect::<Result<Vec<_>, RouterError>>()?;
        Ok(Self {
            members,
            alias: config.policy.alias.clone(),
        })
    }

    /// Whether any member is reached over `https://`.
    pub fn any_https(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.chat_url.scheme_str() == Some("https"))
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
