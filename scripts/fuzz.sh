#!/usr/bin/env bash
# A short fuzz run (FUZZ_SECONDS per target, 20 by default) of the license document parser and
# verifier and of the configuration reader. Needs the nightly toolchain; installs cargo-fuzz
# once. A crash fails the run and leaves its input in fuzz/artifacts/ to become a regression test.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain on this machine, skipping the fuzz run" >&2
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once, about 2 minutes)" >&2
  cargo install cargo-fuzz --locked
fi
echo "fuzz: building the targets with nightly and sanitizers (about 3 minutes the first time)" >&2
cargo +nightly fuzz build 2>&1 | tail -n 2 >&2
for target in license_document configuration; do
  echo "fuzz: $target for ${seconds} s" >&2
  mkdir -p "fuzz/corpus/$target"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
  echo "fuzz: $target passed: ${runs:-?} inputs, no crash" >&2
  rm -f "$log"
done
