#!/usr/bin/env bash
# End-to-end run on a cluster whose pods really run (../shared/k8s/cluster.sh with
# WITH_KUBELET=1), with the real helm and kubectl:
#   image built offline and loaded into the node -> helm install -> an LLMPool of replay members
#   (templates: `lookahead replay` pods serving the routing dataset's recorded answers) and a
#   RoutingPolicy -> training Job (acceptance verdict in status and the RouterAccepted
#   condition) -> router with the artifact -> chat completions through the
#   router Service (from this machine and from a pod) -> gemma-2-9b-it added: one new Job, new
#   artifact in status, router rolled -> a real Prometheus scrapes router and operator pods and
#   fires the chart's member-ejected alert (prometheus.sh) -> a router rollout under a request
#   loop (rollout-race.sh) -> autoscaling (autoscaling.sh) -> a member slow to start held back
#   by its startup probe -> helm upgrade -> everything deleted, helm uninstall: nothing left
#   behind. The image and chart come from a real OCI registry on loopback (registry.sh), and
#   `helm test` checks a chat completion through the router.
#
#   KUBECONFIG        the WITH_KUBELET=1 cluster (its directory is cluster.sh's state dir)
#   LOOKAHEAD_HELM    helm binary (../shared/k8s/helm.sh)
#   LOOKAHEAD_DATA    routing dataset (default ../shared/data/routing)
#
# Prints one line per step with its duration; exits non-zero at the first failed check.
set -euo pipefail
# A failing check inside $(...) must fail the run too (bash does not pass -e into command
# substitutions by default).
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."
SHARED="$(cd .. && pwd)/shared"
: "${KUBECONFIG:?KUBECONFIG of a WITH_KUBELET=1 cluster}"
STATE="$(dirname "$KUBECONFIG")"
HELM="${LOOKAHEAD_HELM:?LOOKAHEAD_HELM: ../shared/k8s/helm.sh installs helm}"
DATA="$(cd "${LOOKAHEAD_DATA:-$SHARED/data/routing}" && pwd)"
IMAGE="${IMAGE:-localhost/lookahead:0.1.0}"
NS=lookahead-e2e
SYS=lookahead-system
ARTIFACTS="$STATE/e2e-artifacts"
started=$(date +%s)
step_started=$started

log() { echo "[e2e +$(( $(date +%s) - started ))s] $*" >&2; }
step() { local now; now=$(date +%s); log "ok ($(( now - step_started ))s): $*"; step_started=$now; }
fail() { log "FAILED: $*"; exit 1; }

# Polls `cmd` (a shell snippet) until it succeeds, or fails after `secs` with `what`.
wait_for() {
  local what="$1" secs="$2" cmd="$3" deadline=$(( $(date +%s) + $2 ))
  until eval "$cmd" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { diagnose; fail "timed out after ${secs}s waiting for $what"; }
    sleep 2
  done
}

diagnose() {
  kubectl get pods,jobs,deploy -A -o wide >&2 || true
  kubectl -n "$NS" get rp e2e -o jsonpath='{.status}' >&2 || true; echo >&2
  local f
  for f in /var/log/pods/"$NS"_*/*/0.log /var/log/pods/"$SYS"_*/*/0.log; do
    [ -f "$f" ] && { echo "== $f" >&2; tail -5 "$f" >&2; }
  done
}

cleanup() {
  registry_stop
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  "$HELM" uninstall lookahead -n "$SYS" >/dev/null 2>&1 || true
  kubectl delete pv e2e-routing-data e2e-artifacts >/dev/null 2>&1 || true
  tests/e2e/netshim.sh stop "$STATE/netshim" || true
}
trap cleanup EXIT
# shellcheck source=tests/e2e/registry.sh
source tests/e2e/registry.sh

# 0. Tools the run needs beyond the cluster's own (Debian packages).
missing=()
for t in socat:socat dnsmasq:dnsmasq-base iptables:iptables jq:jq curl:curl objcopy:binutils \
    docker-registry:docker-registry prometheus:prometheus; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 1. Image: built offline, pushed with both charts to a real OCI registry on loopback (the node
#    pulls from it over plain HTTP), and loaded into the node for the pool's replay members.
scripts/build-image.sh >/dev/null
K8S_STATE_DIR="$STATE" "$SHARED/k8s/cluster.sh" load-image "$IMAGE"
registry_start
registry_publish
step "image $IMAGE built and loaded; pushed $IMAGE_REF@$IMAGE_DIGEST, chart $CHART_REF $CHART_VERSION"

# 2. Service routing and DNS for a cluster without kube-proxy and CoreDNS.
tests/e2e/netshim.sh start "$STATE/netshim"
step "netshim (Service NAT, DNS) started"

# 3. Helm install. The test API server's certificate names kubernetes.default.svc, not the
#    Service's ClusterIP, so the operator addresses it by name.
# Client-side apply: a 1.20 API server panics on a server-side apply of an APIService ("FieldManager
# must be installed to run apply", fixed in 1.21), and helm 4 applies server-side by default.
# Installed from the registry, the image pinned by digest, as a user installs it; `helm test`
# (after step 6) checks a chat completion through the e2e policy's router.
"$HELM" install lookahead "$CHART_REF" --version "$CHART_VERSION" --plain-http \
  -n "$SYS" --create-namespace --server-side=false \
  --set image.repository="$REGISTRY_ADDR/lookahead" --set image.digest="$IMAGE_DIGEST" \
  --set tests.policy.namespace="$NS" --set tests.policy.name=e2e \
  --set 'operator.extraEnv[0].name=KUBERNETES_SERVICE_HOST' \
  --set 'operator.extraEnv[0].value=kubernetes.default.svc' \
  --wait --timeout 5m >/dev/null || { diagnose; fail "helm install"; }
lease_holder() { kubectl -n "$SYS" get lease lookahead -o jsonpath='{.spec.holderIdentity}'; }
operator_pods() { kubectl -n "$SYS" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[*].metadata.name}'; }
wait_for "one of the operator pods to hold the lease" 120 \
  '[ -n "$(lease_holder)" ] && grep -qw -- "$(lease_holder)" <<<"$(operator_pods)"'
step "helm install: operator Deployment available, leader $(lease_holder)"

# 4. Storage: the dataset (read-only) and an artifacts volume, as hostPath PersistentVolumes.
rm -rf "$ARTIFACTS" && mkdir -p "$ARTIFACTS" && chmod 0777 "$ARTIFACTS"
kubectl create namespace "$NS" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: { name: e2e-routing-data }
spec:
  capacity: { storage: 1Gi }
  accessModes: [ReadOnlyMany]
  storageClassName: manual
  hostPath: { path: "$(dirname "$DATA")" }
  claimRef: { namespace: $NS, name: routing-data }
---
apiVersion: v1
kind: PersistentVolume
metadata: { name: e2e-artifacts }
spec:
  capacity: { storage: 1Gi }
  accessModes: [ReadWriteMany]
  storageClassName: manual
  hostPath: { path: "$ARTIFACTS" }
  claimRef: { namespace: $NS, name: artifacts }
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: routing-data, namespace: $NS }
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: manual
  resources: { requests: { storage: 1Gi } }
  volumeName: e2e-routing-data
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: artifacts, namespace: $NS }
spec:
  accessModes: [ReadWriteMany]
  storageClassName: manual
  resources: { requests: { storage: 1Gi } }
  volumeName: e2e-artifacts
EOF
wait_for "PVCs bound" 60 '[ "$(kubectl -n $NS get pvc -o jsonpath="{.items[*].status.phase}")" = "Bound Bound" ]'
step "dataset and artifact volumes bound"

# 5. The pool (replay members) and the policy.
member() { # name modelId [more replay args...]
  local name="$1" model="$2" extra="" a; shift 2
  for a in "$@"; do extra+=", \"$a\""; done
  cat <<EOF
    - name: $name
      modelId: $model
      template:
        image: $IMAGE
        args: [replay, --data, /data/$(basename "$DATA"), --model, "$model", --listen, "0.0.0.0:8000"$extra]
        port: 8000
        mounts: [{ claimName: routing-data, mountPath: /data }]
EOF
}
pool() { # name:modelId ...
  printf 'apiVersion: lookahead.dev/v1alpha1\nkind: LLMPool\nmetadata: { name: e2e, namespace: %s }\nspec:\n  members:\n' "$NS"
  local m; for m in "$@"; do member "${m%%:*}" "${m#*:}"; done
}
pool yi:Yi-1.5-34B-Chat qwen-coder:Qwen2.5-Coder-7B-Instruct | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: lookahead.dev/v1alpha1
kind: RoutingPolicy
metadata: { name: e2e, namespace: $NS }
spec:
  poolRef: { name: e2e }
  router: { method: lookahead-lite }
  objective: { defaultModel: yi }
  training:
    dataset: { pvc: { claimName: routing-data, path: $(basename "$DATA") } }
    artifacts: { claimName: artifacts, path: routers/e2e }
    maxExamples: 300
    epochs: 1
EOF
wait_for "member Deployments available" 300 \
  '[ "$(kubectl -n $NS get deploy e2e-yi e2e-qwen-coder -o jsonpath="{.items[*].status.availableReplicas}")" = "1 1" ]'
step "pool: replay members running and ready"

artifact() { kubectl -n "$NS" get rp e2e -o jsonpath='{.status.artifact.version}'; }
jobs() { kubectl -n "$NS" get jobs -l lookahead.dev/policy=e2e -o jsonpath='{.items[*].metadata.name}'; }
wait_for "the first artifact" 1200 '[ -n "$(artifact)" ]'
first=$(artifact)
[ "$(jobs | wc -w)" = 1 ] || fail "expected one training Job, got: $(jobs)"
# Validation scores travel from the Job's termination message into the policy's status.
validation=$(kubectl -n "$NS" get rp e2e -o jsonpath='{.status.artifact.validation}')
jq -e '.router > 0 and .oracle >= .router and .examples > 0' <<<"$validation" >/dev/null \
  || fail "no validation scores in status: '$validation'"
step "training Job $(jobs) finished: artifact $first, validation $validation"
# The acceptance gate's verdict travels the same way; the RouterAccepted condition says it, with
# the figures (a few hundred records, one epoch: either verdict is possible, both must agree).
acceptance=$(kubectl -n "$NS" get rp e2e -o jsonpath='{.status.artifact.acceptance}')
jq -e '(.accepted | type) == "boolean" and (.gain | type) == "number"
       and (.lowerBound | type) == "number" and (.fallbackModel | length) > 0' <<<"$acceptance" >/dev/null \
  || fail "no acceptance verdict in status: '$acceptance'"
accepted_condition=$(kubectl -n "$NS" get rp e2e -o json | jq -c '.status.conditions[] | select(.type == "RouterAccepted")')
jq -e --argjson a "$acceptance" '
  .status == (if $a.accepted then "True" else "False" end)
  and .reason == (if $a.accepted then "Accepted" else "BelowBaseline" end)
  and (.message | contains($a.fallbackModel))' <<<"$accepted_condition" >/dev/null \
  || fail "RouterAccepted condition '$accepted_condition' does not match the verdict '$acceptance'"
step "acceptance gate: $(jq -r '"RouterAccepted=" + .status + " (" + .reason + "): " + .message' <<<"$accepted_condition")"

router_on() { # artifact version: the router Deployment runs it and is available
  kubectl -n "$NS" get deploy e2e-router -o json | jq -e --arg v "$1" '
    (.spec.template.spec.containers | map(.args // [] | join(" ")) | join(" ") | contains($v))
    and .status.updatedReplicas == .status.replicas and .status.availableReplicas == .status.replicas
    and (.status.unavailableReplicas // 0) == 0'
}
# The Service answers from the new ReplicaSet: its NAT (netshim) points at a ready pod of the
# Deployment's newest ReplicaSet. router_on only says the Deployment is available; the Service
# follows the endpoint change a moment later, and a request in between would meet the old pod.
new_pod_ips() { # deployment -> IPs of the ready pods of its newest ReplicaSet
  local rev hash
  rev=$(kubectl -n "$NS" get deploy "$1" -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision}')
  hash=$(kubectl -n "$NS" get rs -o json | jq -r --arg d "$1" --arg r "$rev" '.items[]
    | select(any(.metadata.ownerReferences[]?; .name == $d))
    | select(.metadata.annotations["deployment.kubernetes.io/revision"] == $r)
    | .metadata.labels["pod-template-hash"]')
  [ -n "$hash" ] || return 1
  kubectl -n "$NS" get pods -l "pod-template-hash=$hash" -o json \
    | jq -r '.items[] | select(.metadata.deletionTimestamp == null)
      | select(any(.status.conditions[]?; .type == "Ready" and .status == "True")) | .status.podIP'
}
service_on_new_pods() { # service deployment
  local ip target
  ip=$(kubectl -n "$NS" get svc "$1" -o jsonpath='{.spec.clusterIP}')
  target=$(tests/e2e/netshim.sh target "$STATE/netshim" "$ip" 8080)
  [ -n "$target" ] && grep -qxF "${target%:*}" <<<"$(new_pod_ips "$2")"
}
wait_for "the router on artifact $first" 300 "router_on $first"
wait_for "the router Service on the new router pod" 60 "service_on_new_pods e2e-router e2e-router"
step "router rolled out with artifact $first"

# 6. Requests through the router Service. The answer must be the recorded response of the
#    member the router names.
ROUTER_IP=$(kubectl -n "$NS" get svc e2e-router -o jsonpath='{.spec.clusterIP}')
check_answer() { # response headers file, body file, prompt
  python3 - "$1" "$2" "$3" "$DATA" <<'PY'
import gzip, json, pathlib, sys
headers, body, prompt, data = sys.argv[1:]
h = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip()
     for l in open(headers, encoding="utf-8", errors="replace") if ":" in l}
member = h.get("x-lookahead-model")
assert member, f"no x-lookahead-model header: {h}"
answer = json.load(open(body))["choices"][0]["message"]["content"]
models = {"yi": "Yi-1.5-34B-Chat", "qwen-coder": "Qwen2.5-Coder-7B-Instruct", "gemma": "gemma-2-9b-it"}
seen = []
for f in sorted(pathlib.Path(data).glob("*.jsonl.gz")):
    for line in gzip.open(f, "rt", encoding="utf-8"):
        r = json.loads(line)
        if r["prompt"].strip() == prompt.strip():
            seen.append(r["responses"].get(models[member], {}).get("text"))
assert seen, f"prompt not in the dataset: {prompt[:60]!r}"
assert answer in seen, f"{member}: the answer is not its recorded response"
print(member)
PY
}
ask() { # prompt -> prints the member that answered
  local tmp; tmp=$(mktemp -d)
  jq -n --arg p "$1" '{model: "auto", messages: [{role: "user", content: $p}]}' > "$tmp/req.json"
  # Retried on refused connections: Service NAT follows a rollout within a second or two.
  curl -sS --max-time 60 --retry 10 --retry-connrefused --retry-delay 1 -D "$tmp/h" -o "$tmp/b" -H 'content-type: application/json' \
    --data-binary @"$tmp/req.json" "http://$ROUTER_IP:8080/v1/chat/completions" >/dev/null
  grep -q '^HTTP/1.1 200' "$tmp/h" || { cat "$tmp/h" "$tmp/b" >&2; fail "router answered $(head -1 "$tmp/h")"; }
  check_answer "$tmp/h" "$tmp/b" "$1"
  rm -rf "$tmp"
}
ask_each() { # prompts on stdin (JSON strings) -> the members that answered, space-separated
  local p out=""
  while read -r p; do out+="$(ask "$(jq -r . <<<"$p")") "; done
  echo "${out% }"
}
prompts() { # n prompts of a source
  python3 - "$DATA/$1.jsonl.gz" "$2" <<'PY'
import gzip, json, sys
for i, line in enumerate(gzip.open(sys.argv[1], "rt", encoding="utf-8")):
    if i >= int(sys.argv[2]): break
    print(json.dumps(json.loads(line)["prompt"]))
PY
}
wait_for "the router Service to answer" 60 'curl -fsS --max-time 5 http://$ROUTER_IP:8080/readyz'
routed=$(ask_each < <(prompts GSM8K 3; prompts MBPP 3))
step "6 chat completions via the router Service ($ROUTER_IP): answered by [$routed], each the member's recorded answer"

# The same from a pod, by the Service's DNS name (retried: netshim gives a new pod its default
# route within a second of its start).
kubectl -n "$NS" run e2e-client --image=localhost/busybox:local --image-pull-policy=Never --restart=Never \
  --command -- sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -S -O - --header "content-type: application/json" --post-data "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"}]}" http://e2e-router.'"$NS"'.svc:8080/v1/chat/completions 2>&1 && exit 0; sleep 1; done; exit 1' >/dev/null
wait_for "the client pod" 120 '[ "$(kubectl -n $NS get pod e2e-client -o jsonpath="{.status.phase}")" = Succeeded ]'
client_log=$(cat /var/log/pods/"$NS"_e2e-client_*/e2e-client/0.log)
grep -qi "x-lookahead-model" <<<"$client_log" || fail "no x-lookahead-model in the pod's answer: $client_log"
grep -q '"choices"' <<<"$client_log" || fail "no completion in the pod's answer: $client_log"
step "chat completion from a pod via e2e-router.$NS.svc: $(grep -io 'x-lookahead-model: [a-z-]*' <<<"$client_log" | head -1)"
# `helm test --logs` needs pod logs through the API, which this cluster cannot serve.
"$HELM" test lookahead -n "$SYS" --timeout 2m >/dev/null \
  || { diagnose; cat /var/log/pods/"$SYS"_lookahead-test*/*/0.log >&2 || true; fail "helm test"; }
step "helm test: a chat completion through e2e-router from the chart's test pod"

# 7. Add gemma-2-9b-it: one new Job, a new artifact naming it, the router rolled to it.
pool yi:Yi-1.5-34B-Chat qwen-coder:Qwen2.5-Coder-7B-Instruct gemma:gemma-2-9b-it | kubectl apply -f - >/dev/null
wait_for "gemma's Deployment" 300 '[ "$(kubectl -n $NS get deploy e2e-gemma -o jsonpath="{.status.availableReplicas}")" = 1 ]'
wait_for "a second artifact" 1200 '[ -n "$(artifact)" ] && [ "$(artifact)" != "$first" ]'
second=$(artifact)
members=$(kubectl -n "$NS" get rp e2e -o jsonpath='{.status.artifact.members}')
grep -q gemma <<<"$members" || fail "artifact $second members $members lack gemma"
[ "$(jobs | wc -w)" = 2 ] || fail "expected two training Jobs in all, got: $(jobs)"
wait_for "the router on artifact $second" 300 "router_on $second"
wait_for "the router Service on the new router pod" 60 "service_on_new_pods e2e-router e2e-router"
routed=$(ask_each < <(prompts GSM8K 3))
kubectl -n "$NS" get job "e2e-train-$second" >/dev/null || fail "no Job e2e-train-$second"
step "gemma added: Job e2e-train-$second, artifact $second for $members, router rolled; answered by [$routed]"

# 7a. A real Prometheus scraping the router and operator pods; the chart's alerts evaluated.
# shellcheck source=tests/e2e/prometheus.sh
source tests/e2e/prometheus.sh

# 7b. A router rollout under a request loop: the race between a stopping router and the Service.
# shellcheck source=tests/e2e/rollout-race.sh
source tests/e2e/rollout-race.sh

# 7c. Autoscaling on router-observed demand: scale to zero and back, the real HPA on in-flight.
# shellcheck source=tests/e2e/autoscaling.sh
source tests/e2e/autoscaling.sh

# 7d. A member slow to start (a model server loading its weights): the startup probe (HTTP on
#     /v1/models) holds it back, unready, without restarts, until it serves.
{ printf 'apiVersion: lookahead.dev/v1alpha1\nkind: LLMPool\nmetadata: { name: slowstart, namespace: %s }\nspec:\n  members:\n' "$NS"
  member slow gemma-2-9b-it --start-after 30s
  echo "        probes: { startupTimeout: 3m }"
} | kubectl apply -f - >/dev/null
slow_pod() { kubectl -n "$NS" get pods -o json | jq -c '[.items[] | select(.metadata.name | startswith("slowstart-slow-"))][0] // {}'; }
slow_ready() { slow_pod | jq -r '[.status.conditions[]? | select(.type == "Ready")][0].status // "None"'; }
wait_for "slow's container running" 120 '[ "$(slow_pod | jq -r .status.phase)" = Running ]'
running_at=$(date +%s)
sleep 15
[ "$(slow_ready)" = False ] || fail "slow ready ($(slow_ready)) 15 s after start, before it listens"
wait_for "slow ready" 180 '[ "$(slow_ready)" = True ]'
ready_after=$(( $(date +%s) - running_at ))
restarts=$(slow_pod | jq '[.status.containerStatuses[].restartCount] | add')
[ "$restarts" = 0 ] || fail "slow restarted $restarts times while loading"
kubectl -n "$NS" delete llmpool slowstart --wait=false >/dev/null
step "slow-starting member (listens after 30 s): unready at +15 s, ready at +${ready_after} s, $restarts restarts (startup probe)"

# 8. Helm upgrade: the operator rolls, the policy keeps its artifact and the router keeps serving.
"$HELM" upgrade lookahead charts/lookahead -n "$SYS" --reuse-values --set operator.logLevel=debug \
  --wait --timeout 5m >/dev/null || { diagnose; fail "helm upgrade"; }
[ "$(artifact)" = "$second" ] || fail "artifact changed on upgrade"
ask "$(jq -r . <<<"$(prompts GSM8K 1)")" >/dev/null
step "helm upgrade: operator rolled, artifact kept, router serving"

# 9. Delete everything: nothing left behind.
kubectl delete namespace "$NS" --timeout=180s >/dev/null
"$HELM" uninstall lookahead -n "$SYS" --wait --timeout 3m >/dev/null
kubectl delete pv e2e-routing-data e2e-artifacts >/dev/null
leftovers() {
  kubectl get deploy,rs,pods,svc,cm,sa,role,rolebinding,lease,jobs -n "$SYS" -o name 2>/dev/null \
    | grep -v -e '^serviceaccount/default$' -e '^configmap/kube-root-ca.crt$' || true
  kubectl get clusterrole,clusterrolebinding -o name | grep -i lookahead || true
}
# Pods of deleted ReplicaSets go after their grace period; anything else must go at once.
wait_for "nothing left in $SYS" 120 '[ -z "$(leftovers)" ]'
[ -z "$(kubectl get ns "$NS" -o name 2>/dev/null)" ] || fail "namespace $NS still there"
step "namespace deleted, helm uninstall: nothing left (CRDs stay, as Helm keeps crds/)"
log "end-to-end passed in $(( $(date +%s) - started ))s"
