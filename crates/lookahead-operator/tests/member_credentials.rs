//! Member credentials against a real Kubernetes API server (`../shared/k8s/cluster.sh`), the
//! controllers in-process: a pool with a hosted `https://` member whose key is in a Secret and a
//! CA bundle in a ConfigMap gets a router ConfigMap naming the mounted files and a router
//! Deployment mounting them read-only. Without a reachable server the test prints why and passes.
#![cfg(test)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use lookahead_api::{LLMPool, RoutingPolicy};
use serde_json::json;

#[tokio::test]
async fn apiserver_member_keys_and_ca_bundle_reach_the_router_config_and_pod() -> anyhow::Result<()>
{
    let Some(client) = client_or_skip("member_credentials").await else {
        return Ok(());
    };
    let ns = TestNamespace::create(&client, "creds").await?;
    let (op, _) = start_operator(&client, &ns.name).await?;
    dataset(&client, &ns.name, &["a", "hosted"]).await?;
    let pool: LLMPool = serde_json::from_value(json!({
        "apiVersion": "lookahead.dev/v1alpha1", "kind": "LLMPool",
        "metadata": { "name": "pool" },
        "spec": {
            "members": [
                { "name": "a", "modelId": "a-model",
                  "template": { "image": "vllm/vllm-openai:v0.6.0", "args": ["--model", "a"] } },
                { "name": "hosted", "modelId": "hosted-model",
                  "endpoint": "https://api.example.com/v1",
                  "apiKeySecretRef": { "name": "hosted-api", "key": "token" } },
            ],
            "tls": { "caBundle": { "configMapRef": { "name": "private-ca", "key": "ca.crt" } } },
        },
    }))?;
    let pools: Api<LLMPool> = Api::namespaced(client.clone(), &ns.name);
    let policies: Api<RoutingPolicy> = Api::namespaced(client.clone(), &ns.name);
    apply(&pools, &pool).await?;
    apply(&policies, &policy_yaml("rp", "pool", "a")?).await?;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let cm = wait_for("router ConfigMap", || async {
        Ok(cms.get_opt("rp-router").await?)
    })
    .await?;
    let config: lookahead_api::RouterConfig =
        serde_yaml::from_str(&cm.data.unwrap_or_default()["config.yaml"])?;
    config.validate()?;
    let hosted = &config.members[1];
    assert_eq!(hosted.base_url, "https://api.example.com/v1");
    assert_eq!(
        hosted.api_key_file.as_deref(),
        Some(std::path::Path::new(
            "/etc/lookahead-member-keys/hosted/key"
        ))
    );
    assert_eq!(config.members[0].api_key_file, None);
    assert_eq!(
        config.tls.ca_bundle_file.as_deref(),
        Some(std::path::Path::new("/etc/lookahead-member-ca/ca.pem"))
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let router = wait_for("router Deployment", || async {
        Ok(deployments.get_opt("rp-router").await?)
    })
    .await?;
    let pod = router.spec.and_then(|s| s.template.spec).expect("pod spec");
    let volumes = pod.volumes.unwrap_or_default();
    let key = volumes
        .iter()
        .find(|v| v.name == "member-key-hosted")
        .and_then(|v| v.secret.as_ref())
        .expect("the member key volume");
    assert_eq!(key.secret_name.as_deref(), Some("hosted-api"));
    let ca = volumes
        .iter()
        .find(|v| v.name == "member-ca")
        .and_then(|v| v.config_map.as_ref())
        .expect("the CA volume");
    assert_eq!(ca.name, "private-ca");
    let router = pod.containers.iter().find(|c| c.name == "router").unwrap();
    let mounts = router.volume_mounts.clone().unwrap_or_default();
    for (volume, path) in [
        ("member-key-hosted", "/etc/lookahead-member-keys/hosted"),
        ("member-ca", "/etc/lookahead-member-ca"),
    ] {
        assert!(
            mounts
                .iter()
                .any(|m| m.name == volume && m.mount_path == path && m.read_only == Some(true)),
            "{volume} at {path}: {mounts:?}"
        );
    }
    op.abort();
    Ok(())
}
