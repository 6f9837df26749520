#!/usr/bin/env bash
# Drive the mock ARM server with Microsoft's JavaScript SDK (@azure/arm-network, pinned in
# package-lock.json) under Node's built-in test runner. Installs the SDK with `npm ci` and
# builds mock-arm first. Usage (from anywhere): bash mock-server/tests/js/run.sh [node --test args]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cd "$repo"

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
    echo "mock-server/tests/js needs Node 20 or later (node --test, fetch); found '$(node --version 2>&1 || true)'" >&2
    exit 1
fi
# @azure/arm-network 39 declares engines ">=22" for its whole monorepo, but runs on Node 20
# (the version CI has), so npm's EBADENGINE warning is expected and harmless here.
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

cargo build -q -p mock-server --bin mock-arm
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$repo/$target_dir" ;;
esac
export MOCK_ARM_BIN="$target_dir/debug/mock-arm"

cd "$here"
exec node --test "$@" ./*.test.mjs
