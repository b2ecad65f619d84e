#!/usr/bin/env bash
# Installs the real LocalStack runtime (localstack-core 4.14.0) into a venv kept outside the
# work tree, and reuses it when it is already complete. Prints the venv's path last.
set -euo pipefail

venv="${LSINIT_RUNTIME_VENV:-$HOME/.cache/lsinit/runtime-4.14.0}"
python="${PYTHON:-python3}"
marker="$venv/.lsinit-complete"
# Without these pins, 4.14.0 fails to start on a fresh install today.
packages=(
  'localstack-core[runtime]==4.14.0'
  cbor2==5.6.5 cryptography==43.0.3 pyopenssl==24.2.1 service_identity==24.1.0
)

if [[ -f $marker ]]; then
  echo "runtime: reusing $venv" >&2
  echo "$venv"
  exit 0
fi

echo "runtime: creating the venv $venv with $("$python" --version)" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
echo "runtime: installing ${packages[*]} (a few minutes the first time)" >&2
# One line per package instead of pip's progress bars, which flood a log that is not a terminal.
"$venv/bin/pip" install --disable-pip-version-check --progress-bar off "${packages[@]}" 2>&1 |
  awk '/^(Collecting|Installing|Successfully|ERROR)/ { print "runtime: " substr($0, 1, 110); fflush() }' >&2
"$venv/bin/python" -c 'import localstack.runtime.main' >&2
touch "$marker"
echo "runtime: ready in $venv" >&2
echo "$venv"
