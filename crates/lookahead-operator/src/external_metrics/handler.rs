//! One request, start to end: route, authenticate, authorize, answer from the metric source.
//! Every answer but the health probes' is JSON; every error a `Status`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use super::api;
use super::authn::{Authenticator, AuthnError, Credentials};
use super::authz::{Authorizer, Decision};
use super::routes::Route;
use super::selector::Selector;
use super::MetricSource;

/// Answers requests from a metric source, behind an authenticator and an authorizer.
pub struct Handler {
    source: Arc<dyn MetricSource>,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
}

impl Handler {
    pub fn new(
        source: Arc<dyn MetricSource>,
        authenticator: Arc<dyn Authenticator>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        Self {
            source,
            authenticator,
            authorizer,
        }
    }

    /// Answers `request`; `client_cert` is the TLS client's verified end-entity certificate.
    /// The body is never read: every endpoint is a GET.
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        client_cert: Option<&CertificateDer<'static>>,
    ) -> Response<Full<Bytes>> {
        let (parts, _body) = request.into_parts();
        let path = parts.uri.path();
        let route = Route::parse(path);
        if parts.method != Method::GET {
            let message = format!("method {} is not allowed on {path}", parts.method);
            return error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message);
        }
        if route == Route::Health {
            return text(StatusCode::OK, "ok");
        }
        let credentials = Credentials {
            client_cert,
            headers: &parts.headers,
        };
        if let Err(refusal) = self.admit(&route, path, credentials).await {
            return refusal;
        }
        self.respond(route, parts.uri.query())
    }

    /// Authentication then authorization; `Err` is the refusal to send.
    async fn admit(
        &self,
        route: &Route,
        path: &str,
        credentials: Credentials<'_>,
    ) -> Result<(), Response<Full<Bytes>>> {
        let user = match self.authenticator.authenticate(credentials).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(unauthorized()),
            Err(e @ AuthnError::TokenReview(_)) => {
                tracing::warn!(path, error = %e, "could not authenticate a request");
                return Err(unauthorized());
            }
            Err(e) => {
                tracing::debug!(path, error = %e, "request not authenticated");
                return Err(unauthorized());
            }
        };
        let attributes = route.attributes(path);
        match self.authorizer.authorize(&user, &attributes).await {
            Ok(Decision::Allow) => Ok(()),
            Ok(Decision::Deny { reason }) => {
                let message = attributes.forbidden_message(&user, &reason);
                tracing::debug!(user = %user.name, %message, "request forbidden");
                Err(error(StatusCode::FORBIDDEN, "Forbidden", message))
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "could not authorize a request");
                Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!("Internal error occurred: {e}"),
                ))
            }
        }
    }

    fn respond(&self, route: Route, query: Option<&str>) -> Response<Full<Bytes>> {
        match route {
            Route::GroupList => json(StatusCode::OK, &api::group_list()),
            Route::Group => json(StatusCode::OK, &api::api_group()),
            Route::ResourceList => json(
                StatusCode::OK,
                &api::resource_list(self.source.metric_names()),
            ),
            Route::Metric { namespace, metric } => self.metric(&namespace, &metric, query),
            Route::Health | Route::Unknown => {
                not_found("the server could not find the requested resource")
            }
        }
    }

    fn metric(&self, namespace: &str, metric: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        let selector = match label_selector(query) {
            Ok(selector) => selector,
            Err(e) => return error(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
        };
        let Some(values) = self.source.values(namespace, metric, &selector) else {
            return not_found(format!("external metric {metric:?} is not served"));
        };
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        json(StatusCode::OK, &api::value_list(metric, values, &now))
    }
}

/// The `labelSelector` query parameter (URL-decoded); absent or empty: everything.
pub fn label_selector(query: Option<&str>) -> Result<Selector, super::SelectorError> {
    let text = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    Selector::parse(&text)
}

fn unauthorized() -> Response<Full<Bytes>> {
    error(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
}

fn not_found(message: impl Into<String>) -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, "NotFound", message)
}

fn error(code: StatusCode, reason: &str, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(code, &api::status(code.as_u16(), reason, message))
}

fn json(code: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(body) {
        Ok(bytes) => response(code, "application/json", bytes),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a response");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot serialize the response",
            )
        }
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(code, "text/plain; charset=utf-8", body.as_bytes().to_vec())
}

fn response(code: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::super::authn::User;
    use super::super::authz::{Attributes, AuthzError};
    use super::super::MetricValue;
    use super::*;
    use futures::future::BoxFuture;
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    /// One metric, `inflight`, with a value per model.
    struct Inflight;

    impl MetricSource for Inflight {
        fn metric_names(&self) -> Vec<String> {
            vec!["inflight".into()]
        }
        fn values(&self, _: &str, metric: &str, selector: &Selector) -> Option<Vec<MetricValue>> {
            (metric == "inflight").then(|| {
                [("llama", 2.0), ("qwen", 0.5)]
                    .into_iter()
                    .map(|(m, v)| MetricValue {
                        labels: BTreeMap::from([("model".to_string(), m.to_string())]),
                        value: v,
                    })
                    .filter(|v| selector.matches(&v.labels))
                    .collect()
            })
        }
    }

    /// The user named by header `x-test-user`; none without it.
    struct HeaderUser;

    impl Authenticator for HeaderUser {
        fn authenticate<'a>(
            &'a self,
            c: Credentials<'a>,
        ) -> BoxFuture<'a, Result<Option<User>, AuthnError>> {
            let name = c.headers.get("x-test-user").and_then(|v| v.to_str().ok());
            let user = name.map(|n| User {
                name: n.to_string(),
                ..User::default()
            });
            Box::pin(async move { Ok(user) })
        }
    }

    /// Allows everything but metric `secret`; cannot answer for user `broken`.
    struct Rules;

    impl Authorizer for Rules {
        fn authorize<'a>(
            &'a self,
            user: &'a User,
            attrs: &'a Attributes,
        ) -> BoxFuture<'a, Result<Decision, AuthzError>> {
            Box::pin(async move {
                if user.name == "broken" {
                    let e = kube::Error::Service("review backend down".into());
                    return Err(AuthzError::SubjectAccessReview(e));
                }
                Ok(match attrs {
                    Attributes::Resource { resource, .. } if resource == "secret" => {
                        Decision::Deny {
                            reason: "not for you".into(),
                        }
                    }
                    _ => Decision::Allow,
                })
            })
        }
    }

    async fn get(uri: &str, user: Option<&str>) -> (StatusCode, Value) {
        let handler = Handler::new(Arc::new(Inflight), Arc::new(HeaderUser), Arc::new(Rules));
        let mut request = Request::get(uri);
        if let Some(u) = user {
            request = request.header("x-test-user", u);
        }
        let response = handler.handle(request.body(()).unwrap(), None).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, value)
    }

    const METRIC: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/inflight";

    #[tokio::test]
    async fn handler_answers_a_metric_filtered_by_the_label_selector() {
        let (status, body) =
            get(&format!("{METRIC}?labelSelector=model%3Dqwen"), Some("hpa")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["kind"], "ExternalMetricValueList");
        assert_eq!(body["items"].as_array().unwrap().len(), 1);
        assert_eq!(body["items"][0]["metricLabels"], json!({"model": "qwen"}));
        assert_eq!(body["items"][0]["value"], "500m");
        let stamp = body["items"][0]["timestamp"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{stamp}"
        );
    }

    #[tokio::test]
    async fn handler_answers_errors_as_status_objects() {
        let cases = [
            (METRIC.to_string(), None, 401, "Unauthorized"),
            (
                METRIC.replace("inflight", "secret"),
                Some("hpa"),
                403,
                "Forbidden",
            ),
            (METRIC.to_string(), Some("broken"), 500, "InternalError"),
            (
                METRIC.replace("inflight", "unknown"),
                Some("hpa"),
                404,
                "NotFound",
            ),
            (
                format!("{METRIC}?labelSelector=model%20in%20()"),
                Some("hpa"),
                400,
                "BadRequest",
            ),
            ("/openapi/v2".to_string(), Some("hpa"), 404, "NotFound"),
        ];
        for (uri, user, code, reason) in cases {
            let (status, body) = get(&uri, user).await;
            assert_eq!(status.as_u16(), code, "{uri}: {body}");
            assert_eq!(body["kind"], "Status", "{uri}");
            assert_eq!(body["status"], "Failure");
            assert_eq!(body["reason"], reason, "{uri}");
            assert_eq!(body["code"], code);
        }
        let (_, forbidden) = get(&METRIC.replace("inflight", "secret"), Some("hpa")).await;
        let message = forbidden["message"].as_str().unwrap();
        assert!(
            message.contains("cannot list resource \"secret\""),
            "{message}"
        );
        assert!(message.ends_with("not for you"), "{message}");
    }

    #[tokio::test]
    async fn handler_serves_discovery_and_health_without_auth_only_for_health() {
        let (status, body) = get("/apis/external.metrics.k8s.io/v1beta1", Some("x")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["resources"][0]["name"], "inflight");
        let (status, body) = get("/apis", Some("x")).await;
        assert_eq!(
            (status, &body["kind"]),
            (StatusCode::OK, &json!("APIGroupList"))
        );
        let (status, body) = get("/apis/external.metrics.k8s.io", Some("x")).await;
        assert_eq!(
            (status, &body["kind"]),
            (StatusCode::OK, &json!("APIGroup"))
        );
        assert_eq!(get("/apis", None).await.0, StatusCode::UNAUTHORIZED);
        for probe in ["/healthz", "/livez", "/readyz"] {
            assert_eq!(get(probe, None).await, (StatusCode::OK, json!("ok")));
        }
    }

    #[tokio::test]
    async fn handler_refuses_other_methods() {
        let handler = Handler::new(Arc::new(Inflight), Arc::new(HeaderUser), Arc::new(Rules));
        let request = Request::post(METRIC).body(()).unwrap();
        let response = handler.handle(request, None).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn label_selector_is_url_decoded_from_the_query() {
        let s = label_selector(Some("labelSelector=model%3Dllama%2Cpool+in+(a%2Cb)&x=y")).unwrap();
        assert_eq!(s.to_string(), "model=llama,pool in (a,b)");
        assert!(label_selector(None).unwrap().is_everything());
        assert!(label_selector(Some("other=1")).unwrap().is_everything());
        let err = label_selector(Some("labelSelector=a%20in%20()")).unwrap_err();
        assert!(err.to_string().contains("a in ()"), "{err}");
    }
}
