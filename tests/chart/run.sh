#!/usr/bin/env bash
# CRD, Helm chart and example checks. CI calls `bash tests/chart/run.sh`.
#
# 1. `asenet crd --kind K` (built from this tree) must equal crds/<plural>.asenet.io.yaml
#    and charts/asenet/crds/<plural>.asenet.io.yaml for each kind (AseConnectivity,
#    AseTenancyPolicy, AseBackendGrant). To regenerate, e.g.:
#      cargo run -q -- crd --kind AseTenancyPolicy > crds/asetenancypolicies.asenet.io.yaml
#      cp crds/asetenancypolicies.asenet.io.yaml charts/asenet/crds/
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
status=0
for kind_file in AseConnectivity:aseconnectivities AseTenancyPolicy:asetenancypolicies AseBackendGrant:asebackendgrants; do
  kind=${kind_file%%:*}
  file=${kind_file#*:}.asenet.io.yaml
  if [ -n "${ASENET_BIN:-}" ]; then
    "$ASENET_BIN" crd --kind "$kind" > "$generated"
  else
    cargo run --quiet --bin asenet -- crd --kind "$kind" > "$generated"
  fi
  for committed in "crds/$file" "charts/asenet/crds/$file"; do
    if diff -u "$committed" "$generated"; then
      echo "  ok   $committed is up to date"
    else
      echo "  FAIL $committed differs from \`asenet crd --kind $kind\`; regenerate: cargo run -q -- crd --kind $kind > crds/$file && cp crds/$file charts/asenet/crds/"
      status=1
    fi
  done
done
[ "$status" -eq 0 ] || exit 1

"$venv/bin/python" tests/chart/check.py
