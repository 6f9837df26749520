#!/usr/bin/env python3
"""Chart, CRD and example checks for asenet (called by tests/chart/run.sh).

1. Lints charts/asenet with the real Helm engine (PyPI `helm-python-sdk`, Helm v4 as a
   library: no helm binary) for the default values and each file in charts/asenet/ci/.
2. Renders the chart for the same values and validates every rendered manifest, and the
   CRD, with `kubernetes-validate --strict` against a pinned Kubernetes version.
3. Checks properties of the rendered manifests the operator relies on (restrictive
   securityContext, workload identity wiring, leader election with >1 replica, RBAC
   without wildcards, the chart's CRD equal to crds/).
4. Validates every AseConnectivity document in examples/ against the generated CRD's
   openAPIV3Schema with `jsonschema` (unknown fields rejected, as `kubectl apply` does by
   default). Documents under examples/invalid/ are semantically invalid on purpose: they
   are reported, and the ones listed in EXPECTED_SCHEMA_REJECTIONS must be rejected.
5. Checks what a user `kubectl apply`s: every YAML document of the spec folders
   (KUBECTL_FOLDERS), examples/namespaces.yaml and every path the README's "Install in a
   cluster" section applies is a Kubernetes object (apiVersion, kind, metadata.name), each
   AseConnectivity validates against the CRD schema, every other object passes
   `kubernetes-validate --strict`, and every namespace a spec uses is created by a Namespace
   document. Also: every `format` in the CRD is one the API server knows (an unknown one
   makes each `kubectl apply` of the CRD warn).

Exits non-zero on the first failing group, after printing every failure of that group.
"""

from __future__ import annotations

import copy
import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm
import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "asenet"
CRD = ROOT / "crds" / "aseconnectivities.asenet.io.yaml"
# The tenancy CRDs (src/tenancy/api.rs), checked like the spec CRD.
TENANCY_CRDS = [ROOT / "crds" / "asetenancypolicies.asenet.io.yaml",
                ROOT / "crds" / "asebackendgrants.asenet.io.yaml"]
KUBE_VERSION = "1.31.0"
RELEASE = "asenet"
NAMESPACE = "asenet-system"
# Kinds kubernetes-validate has no schema for (CRDs of other projects).
FOREIGN_KINDS = {"ServiceMonitor"}
# examples/invalid documents the CRD schema itself must reject (API server side).
EXPECTED_SCHEMA_REJECTIONS = {"invalid/bad-band.yaml"}

# Folders of examples/ a user applies with `kubectl apply -f` (not recursive): they must
# hold only Kubernetes objects. What Azure holds for each example is under examples/azure/.
KUBECTL_FOLDERS = ["seed", "layered", "v3", "invalid"]
NAMESPACES = ROOT / "examples" / "namespaces.yaml"
README = ROOT / "README.md"
# apiextensions-apiserver pkg/apiserver/validation/formats.go (compared with "-" removed),
# and the OpenAPI integer and number formats.
STRING_FORMATS = {
    "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid",
    "uuid3", "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor",
    "rgbcolor", "byte", "password", "date", "duration", "datetime",
}
NUMERIC_FORMATS = {"integer": {"int32", "int64"}, "number": {"float", "double"}}

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"  FAIL {message}")


def ok(message: str) -> None:
    print(f"  ok   {message}")


def end_group(name: str) -> None:
    if failures:
        print(f"\n{len(failures)} failure(s) in: {name}")
        sys.exit(1)


def value_sets() -> list[tuple[str, dict]]:
    sets = [("default values", {})]
    for path in sorted((CHART / "ci").glob("*.yaml")):
        sets.append((f"ci/{path.name}", yaml.safe_load(path.read_text()) or {}))
    return sets


def lint() -> None:
    print(f"== helm lint (helm-python-sdk {helm.__version__}, Helm {helm.helm_sdk_version()})")
    for label, values in value_sets():
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                           kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += [{"error": e} for e in report.get("errors", []) or []]
        if problems:
            for p in problems:
                fail(f"lint {label}: {p.get('path', '')} {p.get('error')}")
        else:
            ok(f"lint {label} ({report.get('total_charts_linted')} chart)")


def render(values: dict) -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["_source"] = path
                docs.append(doc)
    return docs


def kubernetes_validate(docs: list[dict], label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, doc in enumerate(docs):
            if doc["kind"] in FOREIGN_KINDS:
                ok(f"{label}: {doc['kind']}/{doc['metadata']['name']} (no schema in kubernetes-validate; checked below)")
                continue
            clean = {k: v for k, v in doc.items() if k != "_source"}
            if not clean["metadata"].get("annotations"):
                clean["metadata"].pop("annotations", None)
            path = pathlib.Path(tmp) / f"{i:02d}-{doc['kind']}.yaml"
            path.write_text(yaml.safe_dump(clean))
            files.append(path)
        proc = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "-k", KUBE_VERSION, "--strict",
             "--no-warn", *map(str, files)],
            capture_output=True, text=True)
        for line in (proc.stdout + proc.stderr).splitlines():
            if line.strip():
                (ok if line.startswith("INFO") else fail)(f"{label}: {line.strip()}")
        if proc.returncode != 0 and not failures:
            fail(f"{label}: kubernetes-validate exited {proc.returncode}")


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def check_properties(label: str, values: dict, docs: list[dict]) -> None:
    [deploy] = by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]
    spec = pod["spec"]
    [container] = spec["containers"]
    sc = container.get("securityContext", {})
    psc = spec.get("securityContext", {})
    checks = {
        "runAsNonRoot": sc.get("runAsNonRoot") is True and psc.get("runAsNonRoot") is True,
        "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
        "capabilities drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
        "allowPrivilegeEscalation false": sc.get("allowPrivilegeEscalation") is False,
        "seccompProfile RuntimeDefault": sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        "probes on /healthz and /readyz": container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        and container["readinessProbe"]["httpGet"]["path"] == "/readyz",
    }
    args = container["args"]
    reconciles = values.get("controller", {}).get("maxConcurrentReconciles", 8)
    checks["--max-concurrent-reconciles from values"] = (
        f"--max-concurrent-reconciles={reconciles}" in args)
    parts = values.get("controller", {}).get("planPartSpecs", 0)
    checks["--plan-part-specs from values"] = f"--plan-part-specs={parts}" in args
    flags = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    shutdown = int(flags.get("--shutdown-timeout", 20))
    checks["--shutdown-timeout well inside terminationGracePeriodSeconds"] = shutdown + 5 <= grace
    lease = [int(flags.get(f"--lease-{f}-seconds", 0)) for f in ("duration", "renew-deadline", "retry-period")]
    checks["lease duration > renew deadline > retry period > 0"] = lease[0] > lease[1] > lease[2] > 0
    replicas = deploy["spec"]["replicas"]
    if replicas > 1:
        checks["leader election on with >1 replica"] = "--leader-election=true" in args
    cred = values.get("azure", {}).get("credential", "workloadIdentity")
    env = {e["name"]: e for e in container.get("env", [])}
    if cred == "workloadIdentity":
        [sa] = by_kind(docs, "ServiceAccount")
        client_id = values.get("azure", {}).get("workloadIdentity", {}).get("clientId")
        checks["pod label azure.workload.identity/use"] = (
            pod["metadata"]["labels"].get("azure.workload.identity/use") == "true")
        if client_id:
            checks["ServiceAccount client-id annotation"] = (
                sa["metadata"]["annotations"].get("azure.workload.identity/client-id") == client_id)
        checks["--credential workload-identity"] = env["ASENET_CREDENTIAL"]["value"] == "workload-identity"
    if cred == "static":
        checks["static token from a Secret"] = "secretKeyRef" in env["ASENET_TOKEN"]["valueFrom"]
    namespaces = values.get("controller", {}).get("watchNamespaces", [])
    tenancy = values.get("tenancy", {}).get("mode", "enforce")
    tenancy = "off" if tenancy is False else tenancy
    checks[f"--tenancy={tenancy}"] = f"--tenancy={tenancy}" in args
    tenancy_roles = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-tenancy")]
    if tenancy == "enforce":
        checks["tenancy ClusterRole only reads the tenancy kinds and namespaces"] = (
            len(tenancy_roles) == 1
            and tenancy_roles[0]["rules"] == [{
                "apiGroups": ["asenet.io"],
                "resources": ["asetenancypolicies", "asebackendgrants"],
                "verbs": ["get", "list", "watch"]}, {
                "apiGroups": [""],
                "resources": ["namespaces"],
                "verbs": ["get", "list", "watch"]}]
            and any(b["roleRef"]["name"] == tenancy_roles[0]["metadata"]["name"]
                    for b in by_kind(docs, "ClusterRoleBinding")))
    else:
        checks["no tenancy ClusterRole with tenancy off"] = not tenancy_roles
    roles = by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
    rules = [r for role in roles for r in role["rules"]]
    checks["RBAC without wildcards"] = all(
        "*" not in r.get("verbs", []) and "*" not in r.get("resources", []) for r in rules)
    checks["RBAC never deletes"] = all("delete" not in r.get("verbs", []) for r in rules)
    if namespaces:
        checks["one spec Role per watched namespace, no ClusterRole but the tenancy one"] = (
            all(r in tenancy_roles for r in by_kind(docs, "ClusterRole"))
            and sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")
                       if not r["metadata"]["name"].endswith("leader-election")) == sorted(namespaces))
        checks["--namespace flags"] = all(f"--namespace={ns}" in args for ns in namespaces)
    lease_roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("leader-election")]
    if "--leader-election=true" in args:
        checks["Lease Role in the release namespace"] = (
            len(lease_roles) == 1 and lease_roles[0]["metadata"]["namespace"] == NAMESPACE)
        # What src/controller/leader.rs sends: GET, POST (create), PUT (update).
        checks["Lease Role allows get, create, update"] = len(lease_roles) == 1 and any(
            "leases" in r.get("resources", []) and {"get", "create", "update"} <= set(r.get("verbs", []))
            for r in lease_roles[0]["rules"])
    controller = values.get("controller", {})
    metrics_port = controller.get("metricsPort", 8080)
    probe_port = controller.get("probePort", 8081)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    checks["metrics port from values"] = ports.get("metrics") == metrics_port and any(
        a.startswith("--metrics-bind=") and a.endswith(f":{metrics_port}") for a in args)
    if probe_port != metrics_port:
        checks["probes on their own listener"] = (
            f"--probe-bind=0.0.0.0:{probe_port}" in args and ports.get("probes") == probe_port
            and container["livenessProbe"]["httpGet"]["port"] == "probes"
            and container["readinessProbe"]["httpGet"]["port"] == "probes")
    level = controller.get("logLevel", "info")
    checks["RUST_LOG from the enumerated logLevel"] = env["RUST_LOG"]["value"].split(",")[0] == level
    purge = controller.get("allocatorPurgeDelayMs", 0)
    checks["MIMALLOC_PURGE_DELAY from allocatorPurgeDelayMs"] = (
        env.get("MIMALLOC_PURGE_DELAY", {}).get("value") == str(purge))
    huge = controller.get("allocatorHugePages", False)
    checks["MIMALLOC_ALLOW_THP from allocatorHugePages"] = (
        env.get("MIMALLOC_ALLOW_THP", {}).get("value") == ("1" if huge else "0"))
    policies = by_kind(docs, "NetworkPolicy")
    policy = values.get("networkPolicy", {})
    if policy.get("enabled"):
        selector = deploy["spec"]["selector"]["matchLabels"]
        ingress = policies[0]["spec"]["ingress"] if len(policies) == 1 else []
        metrics_rules = [r for r in ingress if {p["port"] for p in r["ports"]} == {metrics_port}]
        checks["NetworkPolicy selects the controller's pods"] = (
            len(policies) == 1 and policies[0]["spec"]["podSelector"]["matchLabels"] == selector)
        checks["NetworkPolicy: metrics only from metricsFrom"] = (
            len(metrics_rules) == 1 and metrics_rules[0].get("from") == policy.get("metricsFrom"))
        checks["NetworkPolicy: no other port open"] = all(
            p["port"] in (metrics_port, probe_port) for r in ingress for p in r["ports"])
    else:
        checks["no NetworkPolicy unless enabled"] = not policies
    for sm in by_kind(docs, "ServiceMonitor"):
        checks["ServiceMonitor scrapes the metrics port"] = sm["spec"]["endpoints"][0]["port"] == "metrics"
    for name, passed in checks.items():
        (ok if passed else fail)(f"{label}: {name}")


def chart_checks() -> None:
    print(f"== render and kubernetes-validate --strict (Kubernetes {KUBE_VERSION})")
    for label, values in value_sets():
        docs = render(values)
        kinds = ", ".join(sorted({d["kind"] for d in docs}))
        ok(f"render {label}: {len(docs)} manifests ({kinds})")
        kubernetes_validate(docs, label)
        check_properties(label, values, docs)
    chart = helm.Chart.load(str(CHART))
    crds = sorted(c["data"] for c in chart.crds)
    same = crds == sorted(p.read_text() for p in [CRD, *TENANCY_CRDS])
    (ok if same else fail)("charts/asenet/crds/ holds the same CRDs as crds/")
    for path in [CRD, *TENANCY_CRDS]:
        kubernetes_validate([dict(yaml.safe_load(path.read_text()), _source="crds")], path.name)


# values.schema.json (issue 13): what it must refuse, and the edge cases it must accept.
SCHEMA_REJECTS = [
    ("plain http ARM endpoint off loopback", {"azure": {"endpoint": "http://10.0.0.5:8080"}}),
    ("plain http ARM endpoint by name", {"azure": {"endpoint": "http://management.azure.com"}}),
    ("http on 127.* look-alike host", {"azure": {"endpoint": "http://127.0.0.1.evil.example:80"}}),
    ("non-http scheme", {"azure": {"endpoint": "ftp://127.0.0.1"}}),
    ("free-form logLevel", {"controller": {"logLevel": "debug,azure_core=trace"}}),
    ("unknown controller key", {"controller": {"metricsAddr": "0.0.0.0:8080"}}),
    ("unknown credential", {"azure": {"credential": "password"}}),
    ("allocatorPurgeDelayMs below -1", {"controller": {"allocatorPurgeDelayMs": -5}}),
    ("allocatorPurgeDelayMs as text", {"controller": {"allocatorPurgeDelayMs": "0"}}),
    ("allocatorHugePages as text", {"controller": {"allocatorHugePages": "false"}}),
]
SCHEMA_ACCEPTS = [
    ("https endpoint", {"azure": {"endpoint": "https://management.usgovcloudapi.net"}}),
    ("loopback http (the mock)", {"azure": {"endpoint": "http://127.0.0.1:8443"}}),
    ("localhost http (the mock)", {"azure": {"endpoint": "http://localhost:8443/"}}),
    ("logLevel trace", {"controller": {"logLevel": "trace"}}),
    ("allocatorPurgeDelayMs -1 (never purge)", {"controller": {"allocatorPurgeDelayMs": -1}}),
]


def schema_checks() -> None:
    print("== values.schema.json")
    chart = helm.Chart.load(str(CHART))
    for label, values in SCHEMA_REJECTS:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            fail(f"schema accepted {label}: {values}")
        except Exception as e:  # the SDK raises the Go error text
            message = str(e)
            (ok if "schema" in message else fail)(f"schema rejects {label}: {message.splitlines()[-1].strip()}")
    for label, values in SCHEMA_ACCEPTS:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            ok(f"schema accepts {label}")
        except Exception as e:
            fail(f"schema refused {label}: {e}")
    try:
        chart.render({"controller": {"metricsBindAddress": "127.0.0.1", "probePort": 8080}},
                     name=RELEASE, namespace=NAMESPACE, is_install=True)
        fail("metrics bound to loopback with the probes on the same listener rendered")
    except Exception as e:
        (ok if "probePort" in str(e) else fail)("probes sharing a loopback-bound metrics listener refused")


def openapi_to_jsonschema(node):
    """Kubernetes structural schema → JSON Schema: `nullable`, int-or-string, and unknown
    fields rejected like kubectl's default strict field validation."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: openapi_to_jsonschema(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", False)
    return node


def examples() -> None:
    print("== examples/ against the CRD's openAPIV3Schema (jsonschema)")
    crd = yaml.safe_load(CRD.read_text())
    [version] = crd["spec"]["versions"]
    schema = openapi_to_jsonschema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"].update({
        "apiVersion": {"const": f"{crd['spec']['group']}/{version['name']}"},
        "kind": {"const": crd["spec"]["names"]["kind"]},
        "metadata": {"type": "object"},
    })
    validator = jsonschema.Draft7Validator(schema)
    count = 0
    rejected = set()
    for path in sorted((ROOT / "examples").rglob("*.y*ml")):
        rel = path.relative_to(ROOT / "examples").as_posix()
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not doc or doc.get("kind") != "AseConnectivity":
                continue
            count += 1
            name = f"{rel}#{i} ({doc['metadata'].get('name')})"
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            if rel.startswith("invalid/"):
                if errors:
                    rejected.add(rel)
                    ok(f"{name}: rejected by the schema as intended: {errors[0].message}")
                else:
                    ok(f"{name}: schema-valid (asenet's validate rejects it)")
            elif errors:
                for e in errors:
                    fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
            else:
                ok(name)
    for rel in sorted(EXPECTED_SCHEMA_REJECTIONS):
        if (ROOT / "examples" / rel).exists() and rel not in rejected:
            fail(f"{rel}: the CRD schema should reject it")
    if count == 0:
        fail("no AseConnectivity documents found under examples/")
    else:
        ok(f"{count} AseConnectivity documents checked")


def tenancy_examples() -> None:
    print("== tenancy documents in examples/ against their CRDs' openAPIV3Schema (jsonschema)")
    validators = {}
    for path in TENANCY_CRDS:
        crd = yaml.safe_load(path.read_text())
        [version] = crd["spec"]["versions"]
        schema = openapi_to_jsonschema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        schema["properties"].update({
            "apiVersion": {"const": f"{crd['spec']['group']}/{version['name']}"},
            "kind": {"const": crd["spec"]["names"]["kind"]},
            "metadata": {"type": "object"},
        })
        validators[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    count = 0
    for path in sorted((ROOT / "examples").rglob("*.y*ml")):
        rel = path.relative_to(ROOT / "examples").as_posix()
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not doc or doc.get("kind") not in validators:
                continue
            count += 1
            name = f"{rel}#{i} ({doc['kind']} {doc['metadata'].get('name')})"
            errors = list(validators[doc["kind"]].iter_errors(doc))
            for e in errors:
                fail(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
            if not errors:
                ok(name)
    if count == 0:
        fail("no AseTenancyPolicy or AseBackendGrant documents found under examples/")


def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    [version] = crd["spec"]["versions"]
    schema = openapi_to_jsonschema(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"].update({
        "apiVersion": {"const": f"{crd['spec']['group']}/{version['name']}"},
        "kind": {"const": crd["spec"]["names"]["kind"]},
        "metadata": {"type": "object"},
    })
    return jsonschema.Draft7Validator(schema)


def kubectl_files(path: pathlib.Path) -> list[pathlib.Path]:
    """The files `kubectl apply -f PATH` reads (a folder: its .json/.yaml/.yml, not recursive)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir()
                      if p.is_file() and p.suffix in (".json", ".yaml", ".yml"))
    return [path]


def readme_applied_paths() -> list[pathlib.Path]:
    """Paths the README's "Install in a cluster" section passes to `kubectl apply -f`."""
    text = README.read_text()
    start = text.index("## Install in a cluster")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    paths = []
    for line in section.splitlines():
        words = line.split()
        if words[:2] == ["kubectl", "apply"] and "-f" in words:
            target = words[words.index("-f") + 1]
            if target.startswith("examples/") or target.startswith("charts/"):
                paths.append(ROOT / target)
    return paths


def kubectl_applied() -> None:
    print("== what a user kubectl-applies: Kubernetes objects only, valid, namespaces created")
    validator = crd_validator()
    readme_paths = readme_applied_paths()
    if not any(p.resolve() == (ROOT / "examples" / "seed").resolve() for p in readme_paths):
        fail("README 'Install in a cluster' does not kubectl apply examples/seed/")
    paths = [NAMESPACES] + [ROOT / "examples" / f for f in KUBECTL_FOLDERS] + readme_paths
    created: set[str] = set()
    used: dict[str, str] = {}
    others: list[dict] = []
    seen: set[pathlib.Path] = set()
    for path in paths:
        if not path.exists():
            fail(f"{path.relative_to(ROOT)}: does not exist")
            continue
        for file in kubectl_files(path):
            if file in seen:
                continue
            seen.add(file)
            rel = file.relative_to(ROOT).as_posix()
            for i, doc in enumerate(yaml.safe_load_all(file.read_text())):
                if doc is None:
                    continue
                name = f"{rel}#{i}"
                if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                    fail(f"{name}: not a Kubernetes object (apiVersion and kind are required)")
                    continue
                if not (doc.get("metadata") or {}).get("name"):
                    fail(f"{name}: metadata.name is missing")
                    continue
                kind = doc["kind"]
                if kind == "Namespace":
                    created.add(doc["metadata"]["name"])
                if kind == "AseConnectivity":
                    used.setdefault(doc["metadata"].get("namespace", "default"), name)
                    errors = list(validator.iter_errors(doc))
                    invalid_on_purpose = rel.startswith("examples/invalid/")
                    if errors and not invalid_on_purpose:
                        fail(f"{name}: {errors[0].message}")
                        continue
                else:
                    others.append(dict(doc, _source=rel))
                ok(f"{name}: {doc['apiVersion']} {kind} {doc['metadata']['name']}")
    if others:
        kubernetes_validate(others, "kubectl-applied objects")
    for namespace, where in sorted(used.items()):
        if namespace == "default" or namespace in created:
            ok(f"namespace {namespace} (used by {where}) is created by {NAMESPACES.relative_to(ROOT)}")
        else:
            fail(f"namespace {namespace} (used by {where}) is not created by any applied Namespace")
    readme = README.read_text()
    applies_namespaces = any(p.resolve() == NAMESPACES.resolve() for p in readme_paths)
    (ok if applies_namespaces else fail)(
        "README 'Install in a cluster' applies examples/namespaces.yaml before the specs")
    if applies_namespaces:
        first_ns = readme.index("kubectl apply -f examples/namespaces.yaml")
        first_specs = readme.index("kubectl apply -f examples/seed/")
        (ok if first_ns < first_specs else fail)("the namespaces are applied before the specs")


def crd_formats() -> None:
    print("== every format in the CRD is one the API server knows")
    crd = yaml.safe_load(CRD.read_text())
    found: list[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            fmt = node.get("format")
            if isinstance(fmt, str):
                kind = node.get("type")
                known = (fmt in NUMERIC_FORMATS[kind] if kind in NUMERIC_FORMATS
                         else fmt.replace("-", "") in STRING_FORMATS)
                found.append(fmt)
                if not known:
                    fail(f"{path}: format {fmt!r} (type {kind}) is unknown to the API server")
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(crd, "crd")
    ok(f"{len(found)} formats checked: {', '.join(sorted(set(found)))}")


def main() -> None:
    lint()
    end_group("helm lint")
    chart_checks()
    end_group("rendered manifests")
    schema_checks()
    end_group("values schema")
    examples()
    tenancy_examples()
    end_group("examples")
    kubectl_applied()
    end_group("kubectl-applied files")
    crd_formats()
    end_group("CRD formats")
    print("\nchart, CRD and example checks passed")


if __name__ == "__main__":
    main()
