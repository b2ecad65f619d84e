#!/usr/bin/env bash
# The main job end to end on this machine: lsinit activates a license against the reference
# license server on loopback, runs the real LocalStack runtime, restarts it through the health
# endpoint, stops it, starts again from the cached license, then shows ACTIVATE_PRO at work.
# Everything it starts, it stops. Nothing leaves the machine: API_ENDPOINT is loopback.
set -euo pipefail

cd "$(dirname "$0")/.."
# A well-formed demo token (the signature test vector's), known only to the local server.
token=ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e
work=$(mktemp -d /tmp/lsinit-demo.XXXXXX)
pids=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  # TERM first: lsinit then stops the runtime it supervises; KILL only what is still there.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # FILE PATTERN COUNT SECONDS [PID]: until FILE holds COUNT lines matching PATTERN
  local deadline=$((SECONDS + $4))
  until (($(grep -c -- "$2" "$1" 2>/dev/null || true) >= $3)); do
    ((SECONDS < deadline)) || { echo "timed out waiting for '$2' in $1" >&2; tail -20 "$1" >&2; return 1; }
    if [[ -n ${5:-} ]] && ! kill -0 "$5" 2>/dev/null; then
      echo "process $5 exited before '$2' appeared in $1" >&2
      tail -20 "${1%.out}.err" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
}
health() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()[:300])' "http://127.0.0.1:$1/_localstack/health"; }
restart_via_health() {
  python3 - "$1" <<'PY' || true
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/_localstack/health", data=b'{"action":"restart"}', method="POST")
try:
    print(urllib.request.urlopen(req, timeout=10).read().decode())
except Exception as e:  # the restart may cut the reply short
    print(f"(reply cut short by the restart: {e})")
PY
}

step "build lsinit and the reference license server (release)"
t0=$SECONDS
cargo build --release --bin lsinit -p lsinit
cargo build --release -p license-server
lsinit=$PWD/target/release/lsinit
ls -l "$lsinit"

step "install the LocalStack runtime if missing"
venv=$(scripts/install-runtime.sh)

step "start the reference license server on loopback"
target/release/license-server --auth-token "$token" --port-file "$work/port" >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
wait_for "$work/server.out" listening 1 10
cat "$work/server.out"
endpoint="http://127.0.0.1:$(cat "$work/port")/v1"

run_lsinit() { # NAME [VAR=VALUE...]: lsinit with the real runtime, in the background
  local name=$1; shift
  port=$(free_port)
  env -i PATH=/usr/bin:/bin HOME="$HOME" API_ENDPOINT="$endpoint" \
    LSINIT_VENV_DIR="$venv" LSINIT_VOLUME_DIR="$work/volume" LSINIT_CONFIG_DIR="$work/etc" \
    LSINIT_STATIC_DIR="$work/static" DNS_ADDRESS=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
    GATEWAY_LISTEN="127.0.0.1:$port" SHUTDOWN_TIMEOUT=30 "$@" \
    "$lsinit" >"$work/$name.out" 2>"$work/$name.err" &
  lsinit_pid=$!
  pids+=("$lsinit_pid")
}

step "start LocalStack under lsinit with LOCALSTACK_AUTH_TOKEN"
t=$SECONDS
run_lsinit first LOCALSTACK_AUTH_TOKEN="$token"
wait_for "$work/first.out" '^Ready\.' 1 180 "$lsinit_pid"
echo "Ready. after $((SECONDS - t)) s (lsinit PID $lsinit_pid)"
grep -h 'lsinit.licensing' "$work/first.err"
echo "health: $(health "$port")"

step "restart through the health endpoint"
t=$SECONDS
restart_via_health "$port"
wait_for "$work/first.out" '^Ready\.' 2 180 "$lsinit_pid"
echo "second Ready. after $((SECONDS - t)) s; lsinit PID still $lsinit_pid: $(ps -o pid=,comm= -p "$lsinit_pid")"
grep -h 'lsinit.supervision' "$work/first.err"

step "stop with TERM"
t=$SECONDS
kill -TERM "$lsinit_pid"
status=0; wait "$lsinit_pid" || status=$?
echo "lsinit exited with status $status after $((SECONDS - t)) s"
requests_before=$(grep -c 'POST /v1/license' "$work/server.log" || true)

step "start again: the cached license is used, no request"
run_lsinit second LOCALSTACK_AUTH_TOKEN="$token"
wait_for "$work/second.out" '^Ready\.' 1 180 "$lsinit_pid"
grep -h 'activated' "$work/second.err"
requests_after=$(grep -c 'POST /v1/license' "$work/server.log" || true)
echo "license requests: $requests_before before, $requests_after after (no new request)"
ls -l "$work/volume/cache/license.json"
kill -TERM "$lsinit_pid"; wait "$lsinit_pid" || true

step "ACTIVATE_PRO=1 with a bad token: exit 55, LocalStack never starts"
status=0
env -i PATH=/usr/bin:/bin API_ENDPOINT="$endpoint" LSINIT_VENV_DIR="$venv" \
  LSINIT_VOLUME_DIR="$work/volume2" LSINIT_CONFIG_DIR="$work/etc" LSINIT_STATIC_DIR="$work/static" \
  ACTIVATE_PRO=1 \
  LOCALSTACK_AUTH_TOKEN=ls-Abcd9876-aaaa-bbbb-cccc-dddddddd9d61 "$lsinit" || status=$?
echo "lsinit exited with status $status"

step "ACTIVATE_PRO=0 with a bad token: LocalStack starts in community mode"
run_lsinit third ACTIVATE_PRO=0 LOCALSTACK_AUTH_TOKEN=ls-Abcd9876-aaaa-bbbb-cccc-dddddddd9d61 \
  LSINIT_VOLUME_DIR="$work/volume3"
wait_for "$work/third.out" '^Ready\.' 1 180 "$lsinit_pid"
grep -h 'lsinit\.' "$work/third.err" | grep -v DEBUG
echo "health: $(health "$port")"
kill -TERM "$lsinit_pid"; status=0; wait "$lsinit_pid" || status=$?
echo "lsinit exited with status $status"

step "done in $((SECONDS - t0)) s; stopping the license server"
