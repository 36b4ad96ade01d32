//! Delegated authentication: who sent a request. The API server's aggregator proxies with a
//! front-proxy client certificate and the user in request headers
//! ([`RequestHeaderAuthenticator`](super::requestheader::RequestHeaderAuthenticator)); a client
//! calling this server directly sends a bearer token, which the API server reviews
//! ([`TokenReviewAuthenticator`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use kube::api::{Api, PostParams};
use kube::Client;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::cache::TtlCache;

/// An authenticated user, as `SubjectAccessReview` names one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request presents to prove who sent it.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The TLS client's end-entity certificate; present only when it verified against the
    /// request-header CA (the TLS layer trusts no other CA for client certificates).
    pub client_cert: Option<&'a CertificateDer<'static>>,
    pub headers: &'a HeaderMap,
}

/// Why credentials were refused; answered 401 either way.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("{0}")]
    Rejected(String),
    #[error("TokenReview failed: {0}")]
    TokenReview(#[from] kube::Error),
}

/// Tells who sent a request. `Ok(None)`: these are no credentials this authenticator knows
/// (another may); `Err`: they are, and they are refused.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Option<User>, AuthnError>>;
}

/// Tries authenticators in order: the first that knows the credentials decides.
pub struct Union {
    members: Vec<Arc<dyn Authenticator>>,
}

impl Union {
    pub fn new(members: Vec<Arc<dyn Authenticator>>) -> Self {
        Self { members }
    }
}

impl Authenticator for Union {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Option<User>, AuthnError>> {
        Box::pin(async move {
            for member in &self.members {
                if let Some(user) = member.authenticate(credentials).await? {
                    return Ok(Some(user));
                }
            }
            Ok(None)
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Bearer tokens reviewed by the API server (`TokenReview`, authentication.k8s.io/v1), answers
/// cached for [`TOKEN_CACHE_TTL`] under the token's SHA-256 (the token itself is not kept).
pub struct TokenReviewAuthenticator {
    client: Client,
    cache: TtlCache<[u8; 32], Option<User>>,
}

/// How long a TokenReview answer (either way) is reused, as k8s.io/apiserver does.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

impl TokenReviewAuthenticator {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: TtlCache::new(TOKEN_CACHE_TTL, 4096),
        }
    }

    async fn review(&self, token: &str) -> Result<Option<User>, AuthnError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(cached) = self.cache.get(&key) {
            return Ok(cached);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(info)) => Some(user_of(info)),
            _ => {
                let why = status.error.unwrap_or_default();
                tracing::debug!(reason = %why, "TokenReview did not authenticate the token");
                None
            }
        };
        self.cache.insert(key, user.clone());
        Ok(user)
    }
}

fn user_of(info: UserInfo) -> User {
    User {
        name: info.username.unwrap_or_default(),
        uid: info.uid.unwrap_or_default(),
        groups: info.groups.unwrap_or_default(),
        extra: info.extra.unwrap_or_default().into_iter().collect(),
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Option<User>, AuthnError>> {
        Box::pin(async move {
            let Some(token) = bearer_token(credentials.headers) else {
                return Ok(None);
            };
            match self.review(token).await? {
                Some(user) => Ok(Some(user)),
                None => Err(AuthnError::Rejected("invalid bearer token".to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&headers("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic dXNlcjpw")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    struct Fixed(Option<&'static str>);

    impl Authenticator for Fixed {
        fn authenticate<'a>(
            &'a self,
            _: Credentials<'a>,
        ) -> BoxFuture<'a, Result<Option<User>, AuthnError>> {
            let user = self.0.map(|n| User {
                name: n.to_string(),
                ..User::default()
            });
            Box::pin(async move { Ok(user) })
        }
    }

    #[tokio::test]
    async fn union_takes_the_first_authenticator_that_knows_the_credentials() {
        let h = HeaderMap::new();
        let creds = Credentials {
            client_cert: None,
            headers: &h,
        };
        let union = Union::new(vec![
            Arc::new(Fixed(None)),
            Arc::new(Fixed(Some("second"))),
            Arc::new(Fixed(Some("third"))),
        ]);
        let user = union.authenticate(creds).await.unwrap().unwrap();
        assert_eq!(user.name, "second");
        let none = Union::new(vec![Arc::new(Fixed(None))]);
        assert!(none.authenticate(creds).await.unwrap().is_none());
    }
}
