#!/usr/bin/env bash
# The project's test command: formatting, lints, every test of the workspace.
# Tests that need a Kubernetes API server use $KUBECONFIG (`.ci/run` starts a real one first);
# tests that need the routing dataset read $LOOKAHEAD_DATA (default ../shared/data/routing).
# Either missing: those tests print why they skip (LOOKAHEAD_REQUIRE_CLUSTER=1 makes it fatal).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lookahead-target}"
export LOOKAHEAD_DATA="${LOOKAHEAD_DATA:-$(cd .. && pwd)/shared/data/routing}"

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== structure (functions over 80 lines, import and crate circles)"
python3 scripts/structure.py
echo "== cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/lookahead-test.log"
