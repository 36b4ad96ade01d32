# shellcheck shell=bash
# A router rollout under a request loop (issue 20, item 5), sourced by tests/e2e/run.sh after its
# step 7 (it uses that script's helpers and namespace). Two copies of the e2e router Deployment,
# outside the operator's hands, differ only in `--drain-delay`: 0s (the router stops accepting
# the moment it is told to stop, as before) and the default 5s (unready at once, but accepting
# until the endpoint change has spread). Each is rolled (`kubectl rollout restart`: the new pod
# is up before the old one is stopped) while a loop sends a chat completion every 0.1 s, without
# retries, through the copy's Service. The 5s copy must answer every request; the 0s copy's
# failures are the race the delay closes (counts in docs/results.md).

race_copy() { # name drain-delay: the e2e router's Deployment, renamed, with --drain-delay, and a Service
  kubectl -n "$NS" get deploy e2e-router -o json | jq --arg n "$1" --arg d "$2" '
    [{apiVersion, kind, metadata: {name: $n, namespace: .metadata.namespace},
      spec: (.spec | del(.replicas) | .selector = {matchLabels: {app: $n}}
        | .template.metadata.labels = {app: $n}
        | .template.spec.containers |= map(if .name == "router"
            then .args += ["--drain-delay", $d] else . end))},
     {apiVersion: "v1", kind: "Service", metadata: {name: $n, namespace: .metadata.namespace},
      spec: {selector: {app: $n}, ports: [{name: "http", port: 8080, targetPort: 8080}]}}]'
}

race() { # name -> "<requests> <failed>" for a rollout of that copy under a request loop
  local ip log pid failed code
  ip=$(kubectl -n "$NS" get svc "$1" -o jsonpath='{.spec.clusterIP}')
  log="$STATE/race-$1.log"
  : > "$log"
  ( while true; do
      # 000: no HTTP answer (connection refused or reset).
      code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
        -d '{"model":"yi","messages":[{"role":"user","content":"What is 2+2?"}]}' \
        "http://$ip:8080/v1/chat/completions") || true
      echo "${code:-000}" >>"$log"
      sleep 0.1
    done ) &
  pid=$!
  sleep 3
  kubectl -n "$NS" rollout restart "deploy/$1" >/dev/null
  kubectl -n "$NS" rollout status "deploy/$1" --timeout=180s >/dev/null || { kill "$pid"; fail "$1 did not roll"; }
  wait_for "$1's Service on its new pod" 60 "service_on_new_pods $1 $1"
  # The old pod drains for up to delay + grace: keep sending until it is gone.
  wait_for "$1's old pod to end" 120 "[ \$(kubectl -n $NS get pods -l app=$1 -o name | wc -l) = 1 ]"
  sleep 2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  failed=$(grep -cvx 200 "$log" || true)
  echo "$(wc -l <"$log") $failed"
}

{ race_copy race-nodelay 0s; race_copy race-delay 5s; } | jq -s '{apiVersion: "v1", kind: "List", items: add}' \
  | kubectl apply -f - >/dev/null
wait_for "the two router copies" 180 \
  '[ "$(kubectl -n $NS get deploy race-nodelay race-delay -o jsonpath="{.items[*].status.availableReplicas}")" = "1 1" ]'
wait_for "their Services" 60 'service_on_new_pods race-nodelay race-nodelay && service_on_new_pods race-delay race-delay'
read -r sent_0 failed_0 <<<"$(race race-nodelay)"
read -r sent_5 failed_5 <<<"$(race race-delay)"
[ "$failed_5" = 0 ] || fail "router with a 5s drain delay: $failed_5 of $sent_5 requests failed during its rollout ($(sort "$STATE/race-race-delay.log" | uniq -c | tr '\n' ' '))"
kubectl -n "$NS" delete deploy,svc race-nodelay race-delay --wait=false >/dev/null
step "router rollout under a request loop: --drain-delay 0s $failed_0/$sent_0 failed, 5s $failed_5/$sent_5 failed"
