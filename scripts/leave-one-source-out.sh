#!/usr/bin/env bash
# Routing prompts of a kind the router never saw: for each source, train on the others, then
# route every record of the held-out source (`lookahead eval --split all`) and compare, record
# by record, with the model the artifact would serve without its router: its acceptance gate's
# fallback, the best single model on its training records (`eval --split all` compares a single
# artifact with it, as `--versus fixed:MODEL`). A platform's traffic drifts to tasks its routing
# data lacks; this measures what the router does then.
#
#   scripts/leave-one-source-out.sh                          # the default router (ngram)
#   TAG=raw EXTRA=--no-source-calibration scripts/leave-one-source-out.sh
#
# Environment: BIN (lookahead binary), DATA, OUT (artifacts, logs, tables), SOURCES (default: the
# benchmark sources DATA has, else all of its sources, as scripts/cv.sh), METHOD (default ngram),
# EXTRA (more `train` flags), TAG (names the run in OUT). Existing artifacts are kept.
#
# Writes OUT/TAG-SOURCE/ (the artifact trained without SOURCE), OUT/TAG-SOURCE.{md,json,jsonl}
# (its evaluation on SOURCE) and OUT/TAG-summary.md: a row per held-out source, then the
# equal-weight mean over them with a paired bootstrap interval (records resampled within
# sources).
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$root/target}/release/lookahead}
DATA=${DATA:-$root/../shared/data/routing}
OUT=${OUT:-/tmp/lookahead-loso}
METHOD=${METHOD:-ngram}
EXTRA=${EXTRA:-}
TAG=${TAG:-base}
BENCHMARKS=AlpacaEval,ArenaHard,GSM8K,HumanEval,MATH,MBPP,MT-Bench
# The seven benchmark sources where DATA has them, else all of DATA's (scripts/default_sources.py).
SOURCES=${SOURCES:-$(python3 "$root/scripts/default_sources.py" "$DATA" 2>/dev/null || echo "$BENCHMARKS")}

mkdir -p "$OUT"
evaluated=()
IFS=, read -ra all <<<"$SOURCES"
if [[ ${#all[@]} -lt 2 ]]; then
  echo "leave-one-source-out needs two sources or more, got '$SOURCES'" >&2
  exit 2
fi
for held in "${all[@]}"; do
  others=$(printf '%s\n' "${all[@]}" | grep -vxF -- "$held" | paste -sd,)
  art="$OUT/$TAG-$held"
  if [[ ! -f $art/router.json ]]; then
    echo "$(date +%T) $METHOD without $held -> $art" >&2
    # shellcheck disable=SC2086 # EXTRA holds several flags
    nice -n "${NICE:-19}" "$BIN" train --method "$METHOD" --data "$DATA" --sources "$others" \
      --quiet $EXTRA --out "$art" >"$art.log" 2>&1
  fi
  "$BIN" eval --data "$DATA" --sources "$held" --split all --artifact "$art" --quiet \
    --predictions-out "$art.jsonl" --json-out "$art.json" >"$art.md"
  echo "$(date +%T) $held: $art.md" >&2
  evaluated+=("$art.json")
done
python3 "$root/scripts/loso_summary.py" "${evaluated[@]}" >"$OUT/$TAG-summary.md"
cat "$OUT/$TAG-summary.md"
