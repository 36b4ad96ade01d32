# shellcheck shell=bash
# Observability end to end (issue 19), sourced by tests/e2e/run.sh after its step 7 (it uses that
# script's helpers, namespace and router). A real Prometheus (Debian's package) on this machine
# scrapes the pods that carry the conventional prometheus.io/* annotations: the operator's pods
# (chart) and the router pods (the operator's). Debian builds Prometheus without kubernetes_sd,
# so the run discovers those pods through the API server itself (kubectl, every 2 s) into a
# file_sd target file with the same labels a kubernetes_sd pod job gives (namespace, pod). Its
# rules are the chart's files/alerts.yaml with each `for:` cut to seconds.
#   - after traffic, the HTTP API returns the dashboard's routed-share query and the decision
#     latency quantile for the e2e router, and the operator's leader and policy-condition series;
#   - a member that fails every request (`broken`, a replay member with --failure-rate 1, what a
#     crashed model behind a live proxy looks like) is ejected by the router and the
#     LookaheadMemberEjected alert fires for it, and for no other member.

PROM_DIR="$STATE/prometheus"
PROM_ADDR=127.0.0.1:19090
command -v prometheus >/dev/null || {
  log "apt-get install prometheus"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}
rm -rf "$PROM_DIR" && mkdir -p "$PROM_DIR"
sed -E 's/^( +for: )[0-9]+m$/\13s/' charts/lookahead/files/alerts.yaml > "$PROM_DIR/alerts.yaml"
cat > "$PROM_DIR/prometheus.yml" <<EOF
global: { scrape_interval: 2s, evaluation_interval: 2s }
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: kubernetes-pods
    file_sd_configs:
      - files: [targets.json]
        refresh_interval: 2s
EOF
promtool check config "$PROM_DIR/prometheus.yml" >/dev/null || fail "promtool check config"
# Pod discovery: annotated, running pods of the two namespaces, as kubernetes_sd would find them.
discover_pods() {
  while true; do
    kubectl get pods -A -o json 2>/dev/null | jq --arg ns "$NS" --arg sys "$SYS" '[.items[]
      | select(.metadata.namespace == $ns or .metadata.namespace == $sys)
      | select(.metadata.annotations["prometheus.io/scrape"] == "true")
      | select(.status.phase == "Running" and .status.podIP != null)
      | {targets: ["\(.status.podIP):\(.metadata.annotations["prometheus.io/port"])"],
         labels: {namespace: .metadata.namespace, pod: .metadata.name,
                  __metrics_path__: (.metadata.annotations["prometheus.io/path"] // "/metrics")}}]' \
      > "$PROM_DIR/targets.json.new" && mv "$PROM_DIR/targets.json.new" "$PROM_DIR/targets.json"
    sleep 2
  done
}
echo '[]' > "$PROM_DIR/targets.json"
discover_pods &
DISCOVER_PID=$!
prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
  --web.listen-address="$PROM_ADDR" >"$PROM_DIR/log" 2>&1 &
PROM_PID=$!
stop_prometheus() { kill "$PROM_PID" "$DISCOVER_PID" 2>/dev/null || true; }
trap 'stop_prometheus; cleanup' EXIT

promql() { # query -> the API's JSON result vector
  curl -fsS --max-time 5 "http://$PROM_ADDR/api/v1/query" --data-urlencode "query=$1" | jq -c '.data.result'
}
targets_up() { # pod-name prefix -> number of healthy targets
  curl -fsS --max-time 5 "http://$PROM_ADDR/api/v1/targets?state=active" \
    | jq --arg p "$1" '[.data.activeTargets[] | select(.labels.pod | startswith($p)) | select(.health == "up")] | length'
}
wait_for "Prometheus ready" 60 "curl -fsS http://$PROM_ADDR/-/ready"
wait_for "the e2e router and the operator scraped" 60 \
  '[ "$(targets_up e2e-router)" -ge 1 ] && [ "$(targets_up lookahead)" -ge 1 ]'
step "Prometheus (pods discovered through the API server) scrapes router $(targets_up e2e-router) and operator $(targets_up lookahead) pods"

# Traffic over two scrape intervals at least, then the dashboard's queries.
routed=$(ask_each < <(prompts GSM8K 4; prompts MBPP 4))
sleep 5
share_query='sum by (member) (rate(lookahead_router_routed_total{namespace="'$NS'"}[1m])) / ignoring(member) group_left sum(rate(lookahead_router_routed_total{namespace="'$NS'"}[1m]))'
wait_for "the routed share" 30 '[ "$(promql "$share_query" | jq "[.[] | .value[1] | tonumber] | add > 0.99")" = true ]'
share=$(promql "$share_query" | jq -r '[.[] | "\(.metric.member)=\(.value[1] | tonumber * 100 | round)%"] | join(" ")')
latency_query='histogram_quantile(0.5, sum by (le) (rate(lookahead_router_decision_seconds_bucket{namespace="'$NS'"}[1m])))'
latency=$(promql "$latency_query" | jq -r '.[0].value[1] // empty')
{ [ -n "$latency" ] && [ "$latency" != NaN ]; } || fail "no decision latency from Prometheus: $(promql "$latency_query")"
[ "$(promql 'max(lookahead_operator_leader)' | jq -r '.[0].value[1]')" = 1 ] || fail "no operator leader series"
promql 'lookahead_operator_policy_condition{policy="e2e",condition="RouterAccepted"}' | jq -e 'length == 1' >/dev/null \
  || fail "no policy condition series: $(promql 'lookahead_operator_policy_condition')"
step "after traffic ([$routed]): routed share $share, decision p50 ${latency}s, operator leader and conditions, from Prometheus' API"

# A member failing every request: ejected, and the alert fires for it alone.
kubectl apply -f - >/dev/null <<EOF
$(printf 'apiVersion: lookahead.dev/v1alpha1\nkind: LLMPool\nmetadata: { name: flaky, namespace: %s }\nspec:\n  members:\n' "$NS")
$(member broken Yi-1.5-34B-Chat --failure-rate 1)
$(member good gemma-2-9b-it)
---
apiVersion: lookahead.dev/v1alpha1
kind: RoutingPolicy
metadata: { name: flaky, namespace: $NS }
spec:
  poolRef: { name: flaky }
  router: { method: fixed }
  objective: { defaultModel: broken }
EOF
wait_for "the flaky pool and its router" 300 \
  '[ "$(kubectl -n $NS get deploy flaky-broken flaky-good flaky-router -o jsonpath="{.items[*].status.availableReplicas}")" = "1 1 1" ]'
FLAKY_IP=$(kubectl -n "$NS" get svc flaky-router -o jsonpath='{.spec.clusterIP}')
firing() { # alert name -> the members it fires for
  curl -fsS --max-time 5 "http://$PROM_ADDR/api/v1/alerts" \
    | jq -r --arg a "$1" '[.data.alerts[] | select(.labels.alertname == $a and .state == "firing") | .labels.member] | unique | join(" ")'
}
deadline=$(( $(date +%s) + 90 ))
until [ "$(firing LookaheadMemberEjected)" = broken ]; do
  # Every request is answered (by `good`, after `broken` fails or while it is ejected). The body
  # goes to a real file: on a retried 5xx, curl 7.88 truncates its output and fails with exit 23
  # when that output is /dev/null (curl/curl#17371).
  code=$(curl -sS --max-time 10 --retry 5 --retry-connrefused --retry-delay 1 -o "$PROM_DIR/flaky.json" -w '%{http_code}' \
    -H 'content-type: application/json' \
    -d '{"model":"auto","messages":[{"role":"user","content":"What is 2+2?"}]}' \
    "http://$FLAKY_IP:8080/v1/chat/completions")
  [ "$code" = 200 ] || fail "the flaky router answered $code: $(head -c 500 "$PROM_DIR/flaky.json")"
  [ "$(date +%s)" -lt "$deadline" ] || { diagnose; fail "LookaheadMemberEjected did not fire for broken (firing for: '$(firing LookaheadMemberEjected)'; ejected: $(promql 'lookahead_router_member_ejected'))"; }
  sleep 1
done
ejections=$(promql 'sum(lookahead_router_ejections_total{member="broken"})' | jq -r '.[0].value[1]')
step "member broken failing every request: ejected ($ejections ejections), LookaheadMemberEjected firing for it alone, every request answered"
kubectl -n "$NS" delete rp flaky --wait=false >/dev/null
kubectl -n "$NS" delete llmpool flaky --wait=false >/dev/null
stop_prometheus
trap cleanup EXIT
