#!/usr/bin/env bash
# K-fold cross-validation of the routers (issue 10's protocol): for each method and fold, train
# with that fold held out (by record-id hash), then score every record with the artifact that
# did not see it (`lookahead eval --artifact a0,...,aK-1 --folds K`).
#
#   scripts/cv.sh                      # knn, mlc, lite; 5 folds; the budget below
#   METHODS="lite" EXTRA="--slot-tokens 8" TAG=k8 FOLDS_RUN="0" scripts/cv.sh   # one ablation
#
# Environment: BIN (lookahead binary), DATA, OUT (artifacts + logs), FOLDS, FOLDS_RUN (the folds
# to train; default all), SALT (the id hash's salt: other folds; train and eval both get it, so
# every record is scored by an artifact that never saw it), METHODS, MAX_TRAIN, EPOCHS, EXTRA
# (more `train` flags), TAG (names the run in OUT; include the salt when you set one). Training runs at nice 19 so it yields the CPU to interactive work.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$root/target}/release/lookahead}
DATA=${DATA:-$root/../shared/data/routing}
OUT=${OUT:-/tmp/lookahead-cv}
FOLDS=${FOLDS:-5}
FOLDS_RUN=${FOLDS_RUN:-$(seq -s ' ' 0 $((FOLDS - 1)))}
SALT=${SALT:-}
METHODS=${METHODS:-knn mlc lite}
SOURCES=${SOURCES:-AlpacaEval,ArenaHard,GSM8K,HumanEval,MATH,MBPP,MT-Bench}
MAX_TRAIN=${MAX_TRAIN:-1500}
EPOCHS=${EPOCHS:-2}
EXTRA=${EXTRA:-}
TAG=${TAG:-base}

mkdir -p "$OUT"
for method in $METHODS; do
  artifacts=()
  for fold in $FOLDS_RUN; do
    art="$OUT/$TAG-$method-f$fold"
    artifacts+=("$art")
    if [[ -f $art/router.json ]]; then
      echo "$(date +%T) $method fold $fold: $art exists, kept"
      continue
    fi
    echo "$(date +%T) $method fold $fold -> $art"
    start=$(date +%s)
    # shellcheck disable=SC2086 # EXTRA holds several flags
    nice -n 19 "$BIN" train --method "$method" --data "$DATA" --sources "$SOURCES" \
      --fold "$fold" --folds "$FOLDS" --split-salt "$SALT" --max-train "$MAX_TRAIN" --epochs "$EPOCHS" --quiet \
      $EXTRA --out "$art" >"$art.log" 2>&1
    echo "$(date +%T) $method fold $fold: $(($(date +%s) - start)) s" | tee -a "$OUT/$TAG-walls.txt"
  done
  if [[ ${#artifacts[@]} -eq $FOLDS ]]; then
    list=$(IFS=,; echo "${artifacts[*]}")
    nice -n 19 "$BIN" eval --data "$DATA" --sources "$SOURCES" --artifact "$list" \
      --folds "$FOLDS" --split-salt "$SALT" --quiet >"$OUT/$TAG-$method-cv.md"
    echo "$(date +%T) $method: $OUT/$TAG-$method-cv.md"
  fi
done
