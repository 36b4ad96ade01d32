#!/usr/bin/env bash
# Pushes the image scripts/build-image.sh built to a registry and prints, on stdout, lines for
# `eval`:
#   IMAGE_REF=REGISTRY/lookahead:TAG
#   IMAGE_DIGEST=sha256:...          the pushed manifest's digest (chart value image.digest)
#
#   scripts/push-image.sh REGISTRY [--plain-http]
#     REGISTRY      host[:port][/path], e.g. 127.0.0.1:5000 or ghcr.io/acme
#     --plain-http  HTTP, no TLS verification (a throwaway local registry)
#   IMAGE           local image (default localhost/lookahead:0.1.0, what build-image.sh builds)
set -euo pipefail
usage() { echo "usage: $0 REGISTRY [--plain-http]" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
registry="${1%/}"
tls_verify=true
case "${2:-}" in
  "") ;;
  --plain-http) tls_verify=false ;;
  *) usage ;;
esac
IMAGE="${IMAGE:-localhost/lookahead:0.1.0}"
command -v podman >/dev/null || { echo "podman missing" >&2; exit 1; }
podman image exists "$IMAGE" || { echo "no local image $IMAGE: run scripts/build-image.sh" >&2; exit 1; }

name="${IMAGE##*/}"          # lookahead:0.1.0
ref="$registry/$name"
digestfile=$(mktemp)
trap 'rm -f "$digestfile"' EXIT
# Pushed by image id under the target name: no extra local tag is left behind.
podman push -q --tls-verify="$tls_verify" --digestfile "$digestfile" "$IMAGE" "docker://$ref" >&2
digest=$(cat "$digestfile")
case "$digest" in
  sha256:*) ;;
  *) echo "podman push wrote no digest for $ref" >&2; exit 1 ;;
esac
echo "IMAGE_REF=$ref"
echo "IMAGE_DIGEST=$digest"
