#!/usr/bin/env bash
# Footprint and latency of lsinit next to its peers (tini, dumb-init, catatonit), measured in
# the same run and reported as ratios: binary size, time from start to the child's exit for a
# trivial child, and the init's resident memory while it idles. Loopback only: lsinit runs with
# ACTIVATE_PRO=0, no credentials and API_ENDPOINT on a closed loopback port.
set -euo pipefail

cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-200}

# The static musl build is what an image ships, and what compares with tini-static and
# catatonit; the glibc build is the fallback when the musl target cannot be had.
musl=x86_64-unknown-linux-musl
if rustup target add "$musl" >/dev/null 2>&1 &&
  { command -v musl-gcc >/dev/null || apt-get install -y -qq musl-tools >/dev/null; }; then
  echo "bench: building lsinit (release, static musl)" >&2
  cargo build --release --quiet --target "$musl" --bin lsinit
  lsinit=$PWD/target/$musl/release/lsinit
else
  echo "bench: building lsinit (release, glibc; the musl target is not available)" >&2
  cargo build --release --quiet --bin lsinit
  lsinit=$PWD/target/release/lsinit
fi
missing=()
for tool in tini dumb-init catatonit; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]} from Debian" >&2
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export ACTIVATE_PRO=0 API_ENDPOINT=http://127.0.0.1:9/v1 LS_LOG=error LSINIT_VOLUME_DIR
LSINIT_VOLUME_DIR=$(mktemp -d)
unset LOCALSTACK_AUTH_TOKEN LOCALSTACK_API_KEY
trap 'rm -rf "$LSINIT_VOLUME_DIR"' EXIT

declare -A cmd=(
  [lsinit]="$lsinit --"
  # The static build, comparable with lsinit's static binary.
  [tini]="$(command -v tini-static || command -v tini) -s --"
  [dumb-init]="$(command -v dumb-init)"
  [catatonit]="$(command -v catatonit) --"
)
names=(lsinit tini dumb-init catatonit)

# Milliseconds per start-run-exit of `INIT true`, averaged over $runs runs.
start_to_exit_ms() {
  local -a init
  read -r -a init <<<"$1"
  local t0 t1
  t0=$(date +%s%N)
  for ((i = 0; i < runs; i++)); do "${init[@]}" true; done
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" -v n="$runs" 'BEGIN { printf "%.3f", (b - a) / n / 1000000 }'
}

# Resident memory (KiB) of the init while its child sleeps.
idle_rss_kib() {
  local -a init
  read -r -a init <<<"$1"
  "${init[@]}" sleep 30 &
  local pid=$!
  # Wait until the child exists: then the init has finished its start-up.
  until [[ -n $(cat "/proc/$pid/task/$pid/children" 2>/dev/null) ]]; do sleep 0.01; done
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
}

printf '%-10s %12s %14s %12s\n' init "size (KiB)" "start→exit ms" "idle RSS KiB"
declare -A size ms rss
for name in "${names[@]}"; do
  read -r -a words <<<"${cmd[$name]}"
  size[$name]=$(($(stat -L -c %s "${words[0]}") / 1024))
  ms[$name]=$(start_to_exit_ms "${cmd[$name]}")
  rss[$name]=$(idle_rss_kib "${cmd[$name]}")
  printf '%-10s %12s %14s %12s\n' "$name" "${size[$name]}" "${ms[$name]}" "${rss[$name]}"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
for peer in tini dumb-init catatonit; do
  printf 'lsinit / %-10s size %6sx   start->exit %6sx   idle RSS %6sx\n' "$peer" \
    "$(ratio "${size[lsinit]}" "${size[$peer]}")" \
    "$(ratio "${ms[lsinit]}" "${ms[$peer]}")" \
    "$(ratio "${rss[lsinit]}" "${rss[$peer]}")"
done
