#!/usr/bin/env bash
# Builds the `lookahead` container image with podman, offline: a statically linked release binary
# plus the backbone from the set-up's cache, FROM scratch. Prints the image name.
#
#   IMAGE (default localhost/lookahead:0.1.0)
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-localhost/lookahead:0.1.0}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lookahead-target}"
backbone="${LOOKAHEAD_HOME:-$HOME/.cache/lookahead}/backbones/minilm-l6"
[ -f "$backbone/model.safetensors" ] || { echo "no backbone at $backbone: run scripts/setup.sh" >&2; exit 1; }
command -v podman >/dev/null || { echo "podman missing: WITH_KUBELET=1 ../shared/k8s/cluster.sh install" >&2; exit 1; }

target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p lookahead-cli --target "$target" >&2

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# Line tables stay in the build (backtraces in tests); the image ships the stripped binary.
objcopy --strip-debug "$CARGO_TARGET_DIR/$target/release/lookahead" "$ctx/lookahead"
mkdir -p "$ctx/backbones/minilm-l6" "$ctx/etc"
cp "$backbone"/{config.json,model.safetensors,tokenizer.json} "$ctx/backbones/minilm-l6/"
echo 'lookahead:x:65532:65532:lookahead:/tmp:/sbin/nologin' > "$ctx/etc/passwd"
echo 'lookahead:x:65532:' > "$ctx/etc/group"
# The system roots for https:// members (rustls-native-certs finds them at this Debian path).
roots=/etc/ssl/certs/ca-certificates.crt
[ -s "$roots" ] || { echo "no CA bundle at $roots: install ca-certificates" >&2; exit 1; }
mkdir -p "$ctx/etc/ssl/certs"
cp "$roots" "$ctx/etc/ssl/certs/"
podman build -q --network=none -f Containerfile -t "$IMAGE" "$ctx" >&2
echo "$IMAGE"
