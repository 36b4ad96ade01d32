#!/usr/bin/env bash
# K-fold cross-validation of the routers (issue 15's protocol): for each method, seed and fold,
# train with that fold held out (by record-id hash), then score every record with the artifact
# that did not see it (`lookahead eval --artifact a0,...,aK-1 --folds K`). The evaluation reports
# the honest bar (best model per benchmark chosen on each artifact's training folds), the best
# single model chosen the same way, paired bootstrap 95% intervals of the router's gain over both,
# and writes the per-record predictions.
#
#   scripts/cv.sh                      # knn, mlc, lite; 5 folds; one seed; the budget below
#   METHODS=lite VERSUS=mlc SEEDS="17 18 19" scripts/cv.sh   # lite vs mlc, per seed, 3 seeds
#   METHODS="lite" EXTRA="--slot-tokens 8" TAG=k8 FOLDS_RUN="0" scripts/cv.sh   # one ablation
#   METHODS=ngram SALTS="- b c" scripts/cv.sh   # a deterministic router over 3 fold assignments
#
# Environment: BIN (lookahead binary), DATA, OUT (artifacts + logs), FOLDS, FOLDS_RUN (the folds
# to train; default all), SALTS (the id hash's salts, one fold assignment each, `-` for none, the
# default; train and eval both get it, so every record is scored by an artifact that never saw
# it; a salt's runs are named TAG-saltSALT; SALT=X is SALTS=X), METHODS, SEEDS (`train --seed`;
# one artifact set per seed; default 17), VERSUS (a method: trained and evaluated first, then every
# other method is compared with it per seed through `eval --versus` on its predictions), MAX_TRAIN,
# EPOCHS, SOURCES (default: the benchmark sources DATA has, else all of its sources), EXTRA (more
# `train` flags), TAG (names the run in OUT). Existing
# artifacts are kept, so a re-run only trains what is missing. Training runs at nice 19 (NICE
# overrides) so it yields the CPU to interactive work.
#
# Per method and seed: OUT/TAG-METHOD-sSEED-cv.md (the tables), -cv.json (`eval --json`),
# -cv.jsonl (per-record predictions); OUT/TAG-summary.md: per seed and fold assignment, and the
# mean over them. A router that is deterministic (ngram) has no seeds to vary: its claims under
# about a point need several fold assignments instead (docs/results.md: one assignment's interval
# resamples the records, not which records trained the router, and the small sources move).
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$root/target}/release/lookahead}
DATA=${DATA:-$root/../shared/data/routing}
OUT=${OUT:-/tmp/lookahead-cv}
FOLDS=${FOLDS:-5}
FOLDS_RUN=${FOLDS_RUN:-$(seq -s ' ' 0 $((FOLDS - 1)))}
SALTS=${SALTS:-${SALT:--}}
METHODS=${METHODS:-knn mlc lite}
SEEDS=${SEEDS:-17}
VERSUS=${VERSUS:-}
BENCHMARKS=AlpacaEval,ArenaHard,GSM8K,HumanEval,MATH,MBPP,MT-Bench
# The seven benchmark sources where DATA has them, else all of DATA's (scripts/default_sources.py).
SOURCES=${SOURCES:-$(python3 "$root/scripts/default_sources.py" "$DATA" 2>/dev/null || echo "$BENCHMARKS")}
MAX_TRAIN=${MAX_TRAIN:-1500}
EPOCHS=${EPOCHS:-2}
EXTRA=${EXTRA:-}
TAG=${TAG:-base}

# Trains the folds of one method and seed that are missing; prints the artifact list.
train_folds() {
  local method=$1 seed=$2 fold art start
  local salt=$3 tag=$4
  local artifacts=()
  for fold in $FOLDS_RUN; do
    art="$OUT/$tag-$method-s$seed-f$fold"
    artifacts+=("$art")
    if [[ -f $art/router.json ]]; then
      echo "$(date +%T) $method seed $seed fold $fold: $art exists, kept" >&2
      continue
    fi
    echo "$(date +%T) $method seed $seed fold $fold -> $art" >&2
    start=$(date +%s)
    # shellcheck disable=SC2086 # EXTRA holds several flags
    nice -n "${NICE:-19}" "$BIN" train --method "$method" --data "$DATA" --sources "$SOURCES" \
      --fold "$fold" --folds "$FOLDS" --split-salt "$salt" --max-train "$MAX_TRAIN" \
      --epochs "$EPOCHS" --seed "$seed" --quiet $EXTRA --out "$art" >"$art.log" 2>&1
    echo "$(date +%T) $tag $method seed $seed fold $fold: $(($(date +%s) - start)) s" \
      | tee -a "$OUT/$TAG-walls.txt" >&2
  done
  (IFS=,; echo "${artifacts[*]}")
}

# Scores every record with the artifact of its fold; compares with VERSUS's predictions.
evaluate() {
  local method=$1 seed=$2 list=$3 salt=$4 tag=$5
  local base="$OUT/$tag-$method-s$seed-cv" versus=()
  if [[ -n $VERSUS && $method != "$VERSUS" ]]; then
    versus=(--versus "$OUT/$tag-$VERSUS-s$seed-cv.jsonl")
  fi
  nice -n "${NICE:-19}" "$BIN" eval --data "$DATA" --sources "$SOURCES" --artifact "$list" \
    --folds "$FOLDS" --split-salt "$salt" --quiet --predictions-out "$base.jsonl" \
    --json-out "$base.json" "${versus[@]}" >"$base.md"
  echo "$(date +%T) $method seed $seed salt '$salt': $base.md"
}

mkdir -p "$OUT"
methods=$METHODS
if [[ -n $VERSUS ]]; then
  # VERSUS first: the others read its predictions.
  methods="$VERSUS $(tr ' ' '\n' <<<"$METHODS" | grep -vx -- "$VERSUS" | tr '\n' ' ')"
fi
evaluated=()
for salt in $SALTS; do
  [[ $salt == - ]] && salt=""
  tag=$TAG${salt:+-salt$salt}
  for method in $methods; do
    for seed in $SEEDS; do
      list=$(train_folds "$method" "$seed" "$salt" "$tag")
      if [[ $(tr ',' '\n' <<<"$list" | wc -l) -eq $FOLDS ]]; then
        evaluate "$method" "$seed" "$list" "$salt" "$tag"
        evaluated+=("$OUT/$tag-$method-s$seed-cv.json")
      fi
    done
  done
done

if [[ ${#evaluated[@]} -gt 0 ]]; then
  python3 "$root/scripts/cv_summary.py" "${evaluated[@]}" >"$OUT/$TAG-summary.md"
  cat "$OUT/$TAG-summary.md"
fi
