#!/usr/bin/env bash
# Packages charts/lookahead and charts/lookahead-crds and pushes both to an OCI registry under
# REGISTRY/charts, so that
#   helm install lookahead oci://REGISTRY/charts/lookahead --version VERSION
# works without a checkout. The packaged lookahead chart's defaults name the registry's image
# (image.repository=REGISTRY/lookahead) and, when IMAGE_DIGEST is set (scripts/push-image.sh
# prints it), pin it by digest; the checkout's values.yaml is not touched. Prints, on stdout,
# lines for `eval`:
#   CHART_REF=oci://REGISTRY/charts/lookahead
#   CRDS_CHART_REF=oci://REGISTRY/charts/lookahead-crds
#   CHART_VERSION=0.2.0
#   CHART_DIGEST=sha256:...          digest of the pushed lookahead chart
#   CRDS_CHART_DIGEST=sha256:...
#
#   scripts/publish-chart.sh REGISTRY [--plain-http]
#     --plain-http      HTTP (a throwaway local registry)
#   IMAGE_DIGEST        sha256:... of REGISTRY/lookahead to pin (default: none, the tag is used)
#   IMAGE_REPOSITORY    image repository to stamp (default REGISTRY/lookahead)
#   LOOKAHEAD_HELM      helm binary (default: helm on PATH)
#   CHART_DIST          where the .tgz packages go (default dist/charts)
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 REGISTRY [--plain-http]" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
registry="${1%/}"
plain=()
case "${2:-}" in
  "") ;;
  --plain-http) plain=(--plain-http) ;;
  *) usage ;;
esac
helm="${LOOKAHEAD_HELM:-$(command -v helm || true)}"
[ -x "$helm" ] || { echo "no helm: set LOOKAHEAD_HELM (../shared/k8s/helm.sh installs one)" >&2; exit 1; }
repository="${IMAGE_REPOSITORY:-$registry/lookahead}"
digest="${IMAGE_DIGEST:-}"
case "$digest" in
  ""|sha256:*) ;;
  *) echo "IMAGE_DIGEST must be sha256:..., got $digest" >&2; exit 1 ;;
esac
dist="${CHART_DIST:-dist/charts}"
mkdir -p "$dist"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r charts/lookahead charts/lookahead-crds "$stage/"
# Stamp the image into the packaged defaults: exactly one line each, or fail.
values="$stage/lookahead/values.yaml"
stamp() {
  local key="$1" value="$2"
  [ "$(grep -c "^  $key: " "$values")" = 1 ] || { echo "values.yaml: no single image.$key line" >&2; exit 1; }
  sed -i "s|^  $key: .*|  $key: \"$value\"|" "$values"
}
stamp repository "$repository"
[ -z "$digest" ] || stamp digest "$digest"

for chart in lookahead lookahead-crds; do
  "$helm" lint --strict "$stage/$chart" >/dev/null
  "$helm" package "$stage/$chart" -d "$dist" >&2
done
version=$(sed -n 's/^version: *//p' charts/lookahead/Chart.yaml)

push() {
  local tgz="$1" out
  out=$("$helm" push "$tgz" "oci://$registry/charts" "${plain[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
  echo "$out" >&2
  sed -n 's/^Digest: *//p' <<<"$out"
}
chart_digest=$(push "$dist/lookahead-$version.tgz")
crds_digest=$(push "$dist/lookahead-crds-$version.tgz")
echo "CHART_REF=oci://$registry/charts/lookahead"
echo "CRDS_CHART_REF=oci://$registry/charts/lookahead-crds"
echo "CHART_VERSION=$version"
echo "CHART_DIGEST=$chart_digest"
echo "CRDS_CHART_DIGEST=$crds_digest"
