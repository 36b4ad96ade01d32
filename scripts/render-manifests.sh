#!/usr/bin/env bash
# Renders manifests/install.yaml from charts/lookahead: the same install for `kubectl apply`
# users as `helm install lookahead charts/lookahead -n lookahead-system` with default values (the
# `helm test` pod left out).
# `cargo test -p lookahead-cli --test chart` fails when the file and a fresh render differ.
#
#   LOOKAHEAD_HELM  helm binary (default: helm on PATH; ../shared/k8s/helm.sh installs one)
set -euo pipefail
cd "$(dirname "$0")/.."
helm="${LOOKAHEAD_HELM:-$(command -v helm || true)}"
[ -x "$helm" ] || { echo "no helm: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs one)" >&2; exit 1; }
out=manifests/install.yaml
{
  echo "# Rendered from charts/lookahead by scripts/render-manifests.sh: do not edit, change the chart."
  echo "#   kubectl create namespace lookahead-system"
  echo "#   kubectl apply --server-side -f manifests/install.yaml"
  "$helm" template lookahead charts/lookahead --namespace lookahead-system --include-crds --skip-tests
} > "$out"
echo "$out"
