#!/usr/bin/env bash
# Issue 15's GPU run, prepared as one command: the paper's Lookahead-MLM (every encoder layer and
# the embeddings trainable, K = 64 response positions per candidate, 4 epochs, lr 1e-5, batch 64)
# against MLC on the same backbone, the same held-out fold and the same seeds, judged on the
# honest protocol (`lookahead eval`: honest bar, best single model, paired bootstrap) and paired
# with each other through `eval --versus`.
#
# MLM trains on the GPU (`--device cuda`, a `--features cuda` build: scripts/check-cuda-build.sh);
# MLC trains on the CPU (it has no CUDA path; on cached frozen lower layers it needs none) at the
# same time, so the run costs the GPU's time only. One fold of 5 (FOLD), not the whole CV: a
# device command is limited to 10 minutes and a session to 15 minutes of device time; the
# comparison is paired on the fold's ~1,130 records, seeds as SEEDS allow.
#
#   BIN=.gpu/lookahead DATA=.gpu/routing BACKBONE=.gpu/minilm-l6 OUT=$OUT scripts/gpu-mlm-vs-mlc.sh
#   DEVICE=cpu K=4 EPOCHS=1 MAX_TRAIN=40 TRAINABLE=2 BATCH=8 scripts/gpu-mlm-vs-mlc.sh   # dry run
#
# Environment: BIN, DATA, BACKBONE, OUT (artifacts, logs, the two evaluations; default
# /tmp/gpu-mlm-vs-mlc), DEVICE (cuda), SEEDS (17), FOLD (0), FOLDS (5), K (64), EPOCHS (4),
# LR (1e-5), BATCH (64), TRAINABLE (6: every layer of MiniLM-L6, and then its embeddings too),
# MAX_TRAIN (all), SOURCES (the seven benchmarks).
# What travels to the device machine (64 MiB a call, carried paths under an ignored .gpu/): the
# repository (4 MB), the routing data (20 MB) and the binary, stripped and zstd-compressed (`zstd
# -d` there). Compressed, the CPU build is 9.4 MB; the CUDA build's size, which adds its kernels,
# is not measured here.
# MiniLM's 88 MB of f32 weights do not fit one call: send them in two halves (`split -n 2`) in
# two calls on the same warm machine (its ignored files stay between calls) and `cat` them there.
# Dry run of this script on the CPU (the line above, 40 records): 2 min 9 s, both artifacts and
# both evaluations written.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$root/target}/release/lookahead}
DATA=${DATA:-$root/../shared/data/routing}
BACKBONE=${BACKBONE:-${LOOKAHEAD_BACKBONE:-$HOME/.cache/lookahead/backbones/minilm-l6}}
OUT=${OUT:-/tmp/gpu-mlm-vs-mlc}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-17}
FOLD=${FOLD:-0}
FOLDS=${FOLDS:-5}
K=${K:-64}
EPOCHS=${EPOCHS:-4}
LR=${LR:-1e-5}
BATCH=${BATCH:-64}
TRAINABLE=${TRAINABLE:-6}
MAX_TRAIN=${MAX_TRAIN:-100000}
SOURCES=${SOURCES:-AlpacaEval,ArenaHard,GSM8K,HumanEval,MATH,MBPP,MT-Bench}
mkdir -p "$OUT"
export LOOKAHEAD_BACKBONE=$BACKBONE
# The held-out fold, the same for training and both evaluations.
split=(--data "$DATA" --sources "$SOURCES" --fold "$FOLD" --folds "$FOLDS" --quiet)
common=("${split[@]}" --max-train "$MAX_TRAIN" --states "$OUT/states" --skip-test)

for seed in $SEEDS; do
  mlm="$OUT/mlm-s$seed" mlc="$OUT/mlc-s$seed"
  start=$(date +%s)
  # MLC on the CPU while MLM holds the GPU.
  "$BIN" train --method mlc --seed "$seed" "${common[@]}" --prompt-truncation head-tail \
    --out "$mlc" >"$mlc.log" 2>&1 &
  mlc_pid=$!
  "$BIN" train --method mlm --device "$DEVICE" --seed "$seed" "${common[@]}" \
    --trainable-layers "$TRAINABLE" --slot-tokens "$K" --epochs "$EPOCHS" --lr "$LR" \
    --batch-size "$BATCH" --out "$mlm" >"$mlm.log" 2>&1
  echo "seed $seed: mlm trained in $(($(date +%s) - start)) s ($mlm.log)"
  wait "$mlc_pid"
  echo "seed $seed: mlc trained in $(($(date +%s) - start)) s ($mlc.log)"
  "$BIN" eval "${split[@]}" --artifact "$mlc" --predictions-out "$mlc.jsonl" >"$mlc-eval.md"
  "$BIN" eval "${split[@]}" --artifact "$mlm" --predictions-out "$mlm.jsonl" \
    --versus "$mlc.jsonl" >"$mlm-eval.md"
  echo "seed $seed: $mlm-eval.md (MLM, with MLM − MLC), $mlc-eval.md"
  cat "$mlm-eval.md"
done
