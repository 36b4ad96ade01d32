# shellcheck shell=bash
# A real OCI registry for the end-to-end run (sourced by tests/e2e/run.sh, after its log/fail
# helpers and $STATE): Debian's docker-registry on 127.0.0.1:5000, the address the node's
# containerd pulls from over plain HTTP (../shared/k8s/README.md, $K8S_REGISTRY). The image and
# both charts are pushed there, so the run installs the chart the way a user does:
#   helm install lookahead "$CHART_REF" --version "$CHART_VERSION" --plain-http \
#     --set image.repository=127.0.0.1:5000/lookahead --set image.digest="$IMAGE_DIGEST"
#
#   registry_start     install docker-registry if missing, start it (state under $STATE/registry)
#   registry_publish   push the image scripts/build-image.sh built ($IMAGE) and both charts;
#                      exports IMAGE_REF, IMAGE_DIGEST, CHART_REF, CRDS_CHART_REF, CHART_VERSION
#   registry_stop      stop it (for run.sh's cleanup; the state directory goes with $STATE)

REGISTRY_ADDR="${K8S_REGISTRY:-127.0.0.1:5000}"
REGISTRY_DIR="$STATE/registry"

registry_start() {
  if ! command -v docker-registry >/dev/null; then
    log "apt-get install docker-registry"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
  fi
  mkdir -p "$REGISTRY_DIR/storage"
  cat > "$REGISTRY_DIR/config.yml" <<EOC
version: 0.1
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/storage
http:
  addr: $REGISTRY_ADDR
EOC
  docker-registry serve "$REGISTRY_DIR/config.yml" >"$REGISTRY_DIR/log" 2>&1 &
  echo $! >"$REGISTRY_DIR/pid"
  local deadline=$(( $(date +%s) + 30 ))
  until curl -fsS --max-time 2 "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { tail -5 "$REGISTRY_DIR/log" >&2; fail "docker-registry on $REGISTRY_ADDR did not answer"; }
    sleep 0.5
  done
}

registry_publish() {
  local vars
  vars=$(IMAGE="$IMAGE" scripts/push-image.sh "$REGISTRY_ADDR" --plain-http) || fail "podman push to $REGISTRY_ADDR"
  eval "$vars"
  vars=$(IMAGE_DIGEST="$IMAGE_DIGEST" LOOKAHEAD_HELM="$HELM" CHART_DIST="$REGISTRY_DIR/dist" \
    scripts/publish-chart.sh "$REGISTRY_ADDR" --plain-http) || fail "helm push to $REGISTRY_ADDR"
  eval "$vars"
  export IMAGE_REF IMAGE_DIGEST CHART_REF CRDS_CHART_REF CHART_VERSION
}

registry_stop() {
  local pid
  pid=$(cat "$REGISTRY_DIR/pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  rm -f "$REGISTRY_DIR/pid"
}
