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
  echo "fuzz: installing cargo-fuzz (once)" >&2
  cargo install cargo-fuzz --locked
fi
for target in license_document configuration; do
  echo "fuzz: $target for ${seconds} s" >&2
  mkdir -p "fuzz/corpus/$target"
  cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 2>&1 | tail -n 12
done
