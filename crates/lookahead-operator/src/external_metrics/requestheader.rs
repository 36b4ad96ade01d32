//! Request-header authentication, as k8s.io/apiserver does it: the API server's aggregator
//! connects with a front-proxy client certificate (signed by the `requestheader-client-ca-file`
//! CA, its CN one of `requestheader-allowed-names`) and names the user it authenticated in
//! headers (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-*`). The settings come from
//! ConfigMap `kube-system/extension-apiserver-authentication`, which the API server publishes.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use http::HeaderMap;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::Client;
use percent_encoding::percent_decode_str;
use rustls::pki_types::CertificateDer;

use super::authn::{Authenticator, AuthnError, Credentials, User};
use super::shared::Shared;
use super::tls;
use super::Error;

/// Namespace of the ConfigMap the API server publishes its authentication settings in.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// Its name.
pub const CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";

/// The request-header settings of the API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestHeaderConfig {
    /// CAs a front proxy's client certificate must chain to; empty: no front proxy (request
    /// headers are then never trusted).
    pub client_ca: Vec<CertificateDer<'static>>,
    /// CNs a front proxy's certificate may carry; empty: any certificate the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_header_prefixes: Vec<String>,
}

impl RequestHeaderConfig {
    /// Reads the settings from the ConfigMap's data (keys as the API server writes them: the CA
    /// as PEM, the lists as JSON arrays).
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, Error> {
        let client_ca = match data.get("requestheader-client-ca-file") {
            Some(pem) if !pem.trim().is_empty() => {
                tls::parse_certificates(pem.as_bytes(), "requestheader-client-ca-file")?
            }
            _ => Vec::new(),
        };
        let list = |key: &str| -> Result<Vec<String>, Error> {
            match data.get(key) {
                None => Ok(Vec::new()),
                Some(json) if json.trim().is_empty() => Ok(Vec::new()),
                Some(json) => serde_json::from_str(json).map_err(|e| {
                    Error::AuthConfig(format!("{key} is not a JSON string array: {e}"))
                }),
            }
        };
        Ok(Self {
            client_ca,
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: list("requestheader-username-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_header_prefixes: list("requestheader-extra-headers-prefix")?,
        })
    }

    /// Reads ConfigMap `kube-system/extension-apiserver-authentication`; its absence is an
    /// error (the API server has no aggregation layer, or this service account may not read it).
    pub async fn load(client: &Client) -> Result<Self, Error> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIG_MAP_NAMESPACE);
        let cm = api
            .get_opt(CONFIG_MAP_NAME)
            .await
            .map_err(Error::AuthConfigMap)?;
        let Some(cm) = cm else {
            return Err(Error::AuthConfig(
                "not found: the API server publishes it when its aggregation layer is on \
                 (--requestheader-client-ca-file)"
                    .to_string(),
            ));
        };
        let config = Self::from_data(&cm.data.unwrap_or_default())?;
        if config.client_ca.is_empty() {
            tracing::warn!(
                "no requestheader-client-ca-file: requests through the API server's aggregator \
                 cannot be authenticated; only bearer tokens are"
            );
        }
        Ok(config)
    }

    /// Whether a front proxy's certificate CN may assert users.
    pub fn allows(&self, common_name: Option<&str>) -> bool {
        self.allowed_names.is_empty()
            || common_name.is_some_and(|cn| self.allowed_names.iter().any(|n| n == cn))
    }

    /// The user the front proxy names: the first non-empty username header, every value of the
    /// group headers (repeated headers included, not split), `extra` from the prefixed headers
    /// (key lower-cased and percent-decoded). `None` when no username header is set.
    pub fn user_from_headers(&self, headers: &HeaderMap) -> Option<User> {
        let name = self
            .username_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .find(|v| !v.is_empty())?
            .to_string();
        let groups = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        Some(User {
            name,
            uid: String::new(),
            groups,
            extra: self.extra_from_headers(headers),
        })
    }

    fn extra_from_headers(&self, headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &self.extra_header_prefixes {
            let prefix = prefix.to_ascii_lowercase();
            for (name, value) in headers {
                // Header names are lower case in `http`.
                let Some(key) = name.as_str().strip_prefix(prefix.as_str()) else {
                    continue;
                };
                let Ok(value) = value.to_str() else { continue };
                let key = percent_decode_str(key).decode_utf8_lossy().into_owned();
                extra.entry(key).or_default().push(value.trim().to_string());
            }
        }
        extra
    }
}

/// Trusts the user headers of a request whose client certificate verified against the
/// request-header CA and carries an allowed CN.
pub struct RequestHeaderAuthenticator {
    config: Shared<RequestHeaderConfig>,
}

impl RequestHeaderAuthenticator {
    pub fn new(config: Shared<RequestHeaderConfig>) -> Self {
        Self { config }
    }

    fn check(&self, credentials: Credentials<'_>) -> Result<Option<User>, AuthnError> {
        // The TLS layer verified this certificate against the request-header CA and no other
        // (tls::server_config), so a certificate here is a front proxy's.
        let Some(cert) = credentials.client_cert else {
            return Ok(None);
        };
        let config = self.config.get();
        if config.client_ca.is_empty() {
            return Ok(None);
        }
        let cn = tls::common_name(cert);
        if !config.allows(cn.as_deref()) {
            return Err(AuthnError::Rejected(format!(
                "client certificate CN {:?} is not one of requestheader-allowed-names",
                cn.unwrap_or_default()
            )));
        }
        Ok(config.user_from_headers(credentials.headers))
    }
}

impl Authenticator for RequestHeaderAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Option<User>, AuthnError>> {
        let outcome = self.check(credentials);
        Box::pin(async move { outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn config() -> RequestHeaderConfig {
        RequestHeaderConfig {
            client_ca: Vec::new(),
            allowed_names: vec!["front-proxy-client".into()],
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_header_prefixes: vec!["X-Remote-Extra-".into()],
        }
    }

    #[test]
    fn reads_the_configmap_data_the_api_server_publishes() {
        let data = BTreeMap::from([
            (
                "requestheader-allowed-names".to_string(),
                r#"["front-proxy-client"]"#.to_string(),
            ),
            (
                "requestheader-username-headers".to_string(),
                r#"["X-Remote-User"]"#.to_string(),
            ),
            (
                "requestheader-group-headers".to_string(),
                r#"["X-Remote-Group"]"#.to_string(),
            ),
            (
                "requestheader-extra-headers-prefix".to_string(),
                r#"["X-Remote-Extra-"]"#.to_string(),
            ),
            ("client-ca-file".to_string(), "ignored".to_string()),
        ]);
        assert_eq!(RequestHeaderConfig::from_data(&data).unwrap(), config());
        let bad = BTreeMap::from([(
            "requestheader-allowed-names".to_string(),
            "front-proxy-client".to_string(),
        )]);
        let err = RequestHeaderConfig::from_data(&bad).unwrap_err();
        assert!(
            err.to_string().contains("requestheader-allowed-names"),
            "{err}"
        );
    }

    #[test]
    fn user_groups_and_extra_come_from_the_configured_headers() {
        let mut h = HeaderMap::new();
        h.append(
            "x-remote-user",
            HeaderValue::from_static("system:kube-controller-manager"),
        );
        h.append(
            "x-remote-group",
            HeaderValue::from_static("system:authenticated"),
        );
        h.append("x-remote-group", HeaderValue::from_static("a,b"));
        h.append("x-remote-extra-scopes", HeaderValue::from_static("view"));
        h.append("x-remote-extra-scopes", HeaderValue::from_static("edit"));
        h.append(
            "x-remote-extra-example.com%2fteam",
            HeaderValue::from_static("ml"),
        );
        h.append("x-other", HeaderValue::from_static("ignored"));
        let user = config().user_from_headers(&h).unwrap();
        assert_eq!(user.name, "system:kube-controller-manager");
        assert_eq!(user.groups, ["system:authenticated", "a,b"]);
        assert_eq!(
            user.extra,
            BTreeMap::from([
                ("example.com/team".to_string(), vec!["ml".to_string()]),
                (
                    "scopes".to_string(),
                    vec!["view".to_string(), "edit".to_string()]
                ),
            ])
        );
    }

    #[test]
    fn no_username_header_is_no_user() {
        let mut h = HeaderMap::new();
        h.append("x-remote-group", HeaderValue::from_static("system:masters"));
        h.append("x-remote-user", HeaderValue::from_static(" "));
        assert_eq!(config().user_from_headers(&h), None);
    }

    #[test]
    fn allowed_names_empty_allows_any_cn() {
        let mut c = config();
        assert!(c.allows(Some("front-proxy-client")));
        assert!(!c.allows(Some("someone-else")));
        assert!(!c.allows(None));
        c.allowed_names.clear();
        assert!(c.allows(Some("someone-else")) && c.allows(None));
    }
}
