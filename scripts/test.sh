#!/usr/bin/env bash
# The test command: formatting and lint gates, the real LocalStack runtime (installed once and
# reused), then every test of the workspace, then a short fuzz run. .ci/run calls exactly this.
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf '\n== %s\n' "$*" >&2; }

say "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 ||
  echo "note: rustup could not add rustfmt/clippy; using what is installed" >&2

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "LocalStack runtime for the end-to-end test"
LSINIT_RUNTIME_VENV=$(scripts/install-runtime.sh)
export LSINIT_RUNTIME_VENV

say "cargo test --workspace"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --workspace 2>&1 | tee "$results"

if [[ -x scripts/fuzz.sh ]]; then
  say "short fuzz run"
  scripts/fuzz.sh
fi

# One closing line for the whole run, counted from cargo's own result lines.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$results"
