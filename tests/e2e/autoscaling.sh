# Autoscaling end to end (issue 17), sourced by tests/e2e/run.sh after its step 7 (it uses that
# script's helpers and namespace). A second pool routed by a `fixed` policy whose default model
# `sleepy` has `min: 0`:
#   - sleepy goes to zero after idleAfter without requests (the operator, not the HPA);
#   - a request ranking sleepy first is answered by the next member (`x-lookahead-fallback:
#     cold:sleepy`, no client error), its wanted demand wakes sleepy 0 -> 1, and routing returns
#     to sleepy once it is ready;
#   - load pinned to `busy` (a replay member answering after 1.5 s) drives the controller-manager's
#     real HPA, through the operator's external metrics API, from 1 to >= 3 replicas, and back to 1
#     after the load stops; every request of the run is answered 200;
#   - sleepy goes back to zero once idle.
# Prints the timings (docs/results.md "Autoscaling (issue 17)").

as_pool() { # run.sh's member(), with each member's replica range after it
  printf 'apiVersion: lookahead.dev/v1alpha1\nkind: LLMPool\nmetadata: { name: scale, namespace: %s }\nspec:\n  members:\n' "$NS"
  member sleepy Qwen2.5-Coder-7B-Instruct
  echo "      replicas: { min: 0, max: 1, idleAfter: 20s }"
  member steady gemma-2-9b-it
  member busy Yi-1.5-34B-Chat --latency-ms 1500
  echo "      replicas: { min: 1, max: 4, target: { inFlightPerReplica: 4 } }"
}
as_pool | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<EOF2
apiVersion: lookahead.dev/v1alpha1
kind: RoutingPolicy
metadata: { name: scale, namespace: $NS }
spec:
  poolRef: { name: scale }
  router: { method: fixed }
  objective: { defaultModel: sleepy }
  serving: { autoscaling: { maxReplicas: 3, inFlightPerReplica: 64 } }
EOF2
replicas_of() { kubectl -n "$NS" get deploy "scale-$1" -o jsonpath='{.spec.replicas}'; }
ready_of() { local r; r=$(kubectl -n "$NS" get deploy "scale-$1" -o jsonpath='{.status.readyReplicas}'); echo "${r:-0}"; }
wait_for "steady and busy available" 300 '[ "$(ready_of steady)" = 1 ] && [ "$(ready_of busy)" -ge 1 ]'
wait_for "the scale router" 300 \
  '[ "$(kubectl -n $NS get deploy scale-router -o jsonpath="{.status.availableReplicas}")" = 1 ]'
SCALE_IP=$(kubectl -n "$NS" get svc scale-router -o jsonpath='{.spec.clusterIP}')
wait_for "the scale router Service to answer" 60 'curl -fsS --max-time 5 http://$SCALE_IP:8080/readyz'
wait_for "APIService v1beta1.external.metrics.k8s.io Available" 120 \
  '[ "$(kubectl get apiservice v1beta1.external.metrics.k8s.io -o jsonpath="{.status.conditions[?(@.type==\"Available\")].status}")" = True ]'
# The router itself: an autoscaler on its own in-flight requests, and a disruption budget.
wait_for "the router's autoscaler and PodDisruptionBudget" 60 \
  'kubectl -n $NS get hpa scale-router && kubectl -n $NS get pdb scale-router'
router_metric=$(kubectl get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/lookahead_router_in_flight?labelSelector=policy%3Dscale" \
  | jq -r '.items[0].metricName')
[ "$router_metric" = lookahead_router_in_flight ] || fail "router in-flight metric not served: $router_metric"
step "autoscaling pool: steady, busy and the fixed router up (HPA on lookahead_router_in_flight, PDB); external metrics API available"

# A. sleepy starts with one replica and goes to zero after idleAfter (20 s) without requests.
t0=$(date +%s)
wait_for "sleepy scaled to zero" 180 '[ "$(replicas_of sleepy)" = 0 ]'
kubectl -n "$NS" get events --field-selector reason=ScaledToZero -o name | grep -q . \
  || fail "no ScaledToZero event"
step "sleepy idle -> 0 replicas after $(( $(date +%s) - t0 ))s (idleAfter 20s)"

# B. Requests while sleepy is at zero go to the next member; their wanted demand wakes it.
scale_ask() { # model prompt -> "status member fallback"
  local tmp; tmp=$(mktemp -d)
  jq -n --arg m "$1" --arg p "$2" '{model: $m, messages: [{role: "user", content: $p}]}' > "$tmp/req.json"
  touch "$tmp/h"
  curl -sS --max-time 120 -D "$tmp/h" -o "$tmp/b" -H 'content-type: application/json' \
    --data-binary @"$tmp/req.json" "http://$SCALE_IP:8080/v1/chat/completions" 2>"$tmp/err" >/dev/null \
    || log "curl: $(cat "$tmp/err")"
  local status member fallback
  status=$(head -1 "$tmp/h" | awk '{print $2}' || true)
  member=$(grep -i '^x-lookahead-model:' "$tmp/h" | awk '{print $2}' | tr -d '\r' || true)
  fallback=$(grep -i '^x-lookahead-fallback:' "$tmp/h" | awk '{print $2}' | tr -d '\r' || true)
  [ "${status:-none}" = 200 ] || log "answer: $(head -c 300 "$tmp/b" 2>/dev/null || true)"
  rm -rf "$tmp"
  echo "${status:-none} ${member:--} ${fallback:--}"
}
PROMPT="$(jq -r . <<<"$(prompts GSM8K 1)")"
t0=$(date +%s)
first=$(scale_ask auto "$PROMPT")
read -r status member fallback <<<"$first"
[ "$status" = 200 ] || fail "request while sleepy is at zero: $first"
[ "$member" = steady ] || fail "expected the next-best member steady, got: $first"
grep -q "cold:sleepy" <<<"$fallback" || fail "no cold:sleepy in x-lookahead-fallback: $first"
answered=1 woke_at="" back_at=""
while [ -z "$back_at" ]; do
  [ $(( $(date +%s) - t0 )) -lt 240 ] || { diagnose; fail "routing never returned to sleepy"; }
  sleep 1
  read -r status member fallback <<<"$(scale_ask auto "$PROMPT")"
  [ "$status" = 200 ] || { diagnose; fail "request $answered while sleepy wakes: $status $member $fallback"; }
  answered=$((answered + 1))
  [ -z "$woke_at" ] && [ "$(replicas_of sleepy)" = 1 ] && woke_at=$(date +%s)
  [ "$member" = sleepy ] && back_at=$(date +%s)
done
[ -n "$woke_at" ] || woke_at=$back_at
kubectl -n "$NS" get events --field-selector reason=Waking -o name | grep -q . || fail "no Waking event"
step "sleepy 0 -> 1: woken $(( woke_at - t0 ))s after the first request, serving after $(( back_at - t0 ))s; $answered requests, all 200 (first by steady, cold:sleepy)"

# C. In-flight load on busy: the real HPA scales it up on lookahead_member_in_flight and back.
LOAD="$STATE/e2e-load"; rm -rf "$LOAD"; mkdir -p "$LOAD"
jq -n --arg p "$PROMPT" '{model: "busy", messages: [{role: "user", content: $p}]}' > "$LOAD/req.json"
touch "$LOAD/run"
loaders=()
for i in $(seq 1 16); do
  ( while [ -f "$LOAD/run" ]; do
      curl -sS --max-time 120 -o /dev/null -w '%{http_code}\n' -H 'content-type: application/json' \
        --data-binary @"$LOAD/req.json" "http://$SCALE_IP:8080/v1/chat/completions" >> "$LOAD/codes.$i" || echo fail >> "$LOAD/codes.$i"
    done ) &
  loaders+=($!)
done
t0=$(date +%s)
wait_for "the HPA to ask for >= 3 busy replicas" 180 '[ "$(replicas_of busy)" -ge 3 ]'
decided=$(( $(date +%s) - t0 ))
wait_for ">= 3 busy replicas ready" 180 '[ "$(ready_of busy)" -ge 3 ]'
ready=$(( $(date +%s) - t0 ))
metric=$(kubectl get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/lookahead_member_in_flight?labelSelector=pool%3Dscale,member%3Dbusy" \
  | jq -r '.items[0].value')
peak=$(replicas_of busy)
rm -f "$LOAD/run"; wait "${loaders[@]}"
t1=$(date +%s)
wait_for "busy back to 1 replica" 240 '[ "$(replicas_of busy)" = 1 ]'
down=$(( $(date +%s) - t1 ))
codes=$(cat "$LOAD"/codes.* | sort | uniq -c | tr -s ' ' | tr '\n' ';')
[ -z "$(cat "$LOAD"/codes.* | grep -v '^200$')" ] || fail "load requests not answered 200: $codes"
step "busy 1 -> $peak replicas by the HPA: >= 3 asked ${decided}s after 16 clients began, ready after ${ready}s (in-flight metric $metric); back to 1 ${down}s after the load stopped; requests: $codes"

# D. sleepy idles back to zero (idleAfter after its last request, the end of B).
wait_for "sleepy back to zero" 180 '[ "$(replicas_of sleepy)" = 0 ]'
step "sleepy idle again -> 0 replicas $(( $(date +%s) - back_at ))s after its last request (idleAfter 20s)"
