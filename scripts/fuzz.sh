#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for SECONDS (default 600), one after the other, niced.
# Benchmark-style, not CI: plain `cargo test` runs property tests of the same parsers instead.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Only a stable toolchain is installed here, so RUSTC_BOOTSTRAP=1 lets stable rustc take the
# -Zsanitizer/-Cpasses flags cargo-fuzz passes (libFuzzer itself is C++, built by libfuzzer-sys).
# FUZZ_SANITIZER=address (default: none) adds AddressSanitizer, which needs the toolchain's ASan
# runtime. A crash leaves its input under fuzz/artifacts/<target>/: turn it into a regression test
# (see docs/reliability.md) before fixing it.
set -euo pipefail

secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(openai_request router_config dataset_reader)

cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/lookahead-fuzz-target}
sanitizer=${FUZZ_SANITIZER:-none}

nice -n 10 cargo fuzz build -O -s "$sanitizer"
printf '%-16s %8s %12s %10s %8s %s\n' target seconds executions exec/s corpus result
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log=$(mktemp "/tmp/fuzz-$t.XXXX.log")
  status=ok
  nice -n 10 cargo fuzz run -O -s "$sanitizer" "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || status="CRASH (see $log, fuzz/artifacts/$t)"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "corpus/$t" -type f | wc -l)
  printf '%-16s %8s %12s %10s %8s %s\n' "$t" "$secs" "$execs" "$rate" "$corpus" "$status"
done
