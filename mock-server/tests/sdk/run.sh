#!/usr/bin/env bash
# Drive the mock ARM server with the official Python SDK and validate its bodies against
# Microsoft's swagger. Usage (from anywhere): bash mock-server/tests/sdk/run.sh [pytest args]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cd "$repo"

venv="${ASENET_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q -r mock-server/tests/sdk/requirements.txt

cargo build -q -p mock-server --bin mock-arm
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$repo/$target_dir" ;;
esac
export MOCK_ARM_BIN="$target_dir/debug/mock-arm"
export ASENET_AZURE_SPECS="${ASENET_AZURE_SPECS:-$repo/../shared/azure-specs}"

exec "$venv/bin/python" -m pytest -q "$here" "$@"
