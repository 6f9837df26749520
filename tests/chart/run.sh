#!/usr/bin/env bash
# CRD, Helm chart and example checks. CI calls `bash tests/chart/run.sh`.
#
# 1. `asenet crd` (built from this tree) must equal crds/aseconnectivities.asenet.io.yaml
#    and charts/asenet/crds/aseconnectivities.asenet.io.yaml. To regenerate both:
#      cargo run -q -- crd > crds/aseconnectivities.asenet.io.yaml
#      cp crds/aseconnectivities.asenet.io.yaml charts/asenet/crds/
# 2. tests/chart/check.py: helm lint + render (helm-python-sdk, no helm binary),
#    kubernetes-validate --strict, rendered-manifest properties, examples/ vs the CRD schema.
#
# The virtual environment is created or reused at ${ASENET_VENV:-.venv} (repo root).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
venv="${ASENET_VENV:-$repo/.venv}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/chart/requirements.txt

echo "== asenet crd vs the committed CRDs"
generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
if [ -n "${ASENET_BIN:-}" ]; then
  "$ASENET_BIN" crd > "$generated"
else
  cargo run --quiet --bin asenet -- crd > "$generated"
fi
status=0
for committed in crds/aseconnectivities.asenet.io.yaml charts/asenet/crds/aseconnectivities.asenet.io.yaml; do
  if diff -u "$committed" "$generated"; then
    echo "  ok   $committed is up to date"
  else
    echo "  FAIL $committed differs from \`asenet crd\`; regenerate: cargo run -q -- crd > crds/aseconnectivities.asenet.io.yaml && cp crds/aseconnectivities.asenet.io.yaml charts/asenet/crds/"
    status=1
  fi
done
[ "$status" -eq 0 ] || exit 1

"$venv/bin/python" tests/chart/check.py
