"""Bodies the mock returns at api-version 2024-03-01 checked against Microsoft's swagger.

Two checks per body: JSON-schema validation of the swagger definition (with every `$ref`
resolved across the spec files), and a stricter walk that rejects any property the swagger
does not declare, so extra or misspelled fields are caught too. Negative controls prove both
checks can fail. The specs are found at $ASENET_AZURE_SPECS or <repo>/../shared/azure-specs.
"""

import json
import os
import pathlib
import ssl
import urllib.error
import urllib.request

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SUB = "00000000-0000-0000-0000-000000000001"
RG = f"/subscriptions/{SUB}/resourceGroups/network"
NET = f"{RG}/providers/Microsoft.Network"
REPO = pathlib.Path(__file__).resolve().parents[3]
SPEC_DIR = "specification/network/resource-manager/Microsoft.Network/stable/2024-03-01"


def spec_dir() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("ASENET_AZURE_SPECS") or REPO.parent / "shared" / "azure-specs")
    path = root / SPEC_DIR
    if not path.is_dir():
        pytest.fail(f"swagger not found at {path}; set ASENET_AZURE_SPECS")
    return path


class Swagger:
    def __init__(self, directory: pathlib.Path):
        self.docs = {}
        resources = []
        for file in sorted(directory.glob("*.json")):
            uri = file.resolve().as_uri()
            doc = json.loads(file.read_text())
            self.docs[uri] = doc
            resources.append((uri, Resource.from_contents(doc, default_specification=DRAFT4)))
        self.registry = Registry().with_resources(resources)
        self.directory = directory

    def ref(self, file: str, definition: str) -> str:
        return f"{(self.directory / file).resolve().as_uri()}#/definitions/{definition}"

    def validate(self, body, file: str, definition: str):
        """Raise if `body` does not match the definition or has undeclared properties."""
        ref = self.ref(file, definition)
        jsonschema.Draft4Validator({"$ref": ref}, registry=self.registry).validate(body)
        undeclared = list(self.undeclared(body, ref, "$"))
        if undeclared:
            raise AssertionError(f"{definition}: properties not in the swagger: {undeclared}")

    def resolve(self, ref: str):
        resolver = self.registry.resolver()
        resolved = resolver.lookup(ref)
        return resolved.contents, resolved.resolver

    def declared(self, schema, resolver, seen=()):
        """Properties of a schema, following $ref and allOf; also the item/value schemas."""
        props = {}
        if "$ref" in schema:
            target = resolver.lookup(schema["$ref"])
            return self.declared(target.contents, target.resolver, seen)
        for part in schema.get("allOf", []):
            props.update(self.declared(part, resolver, seen))
        for name, sub in schema.get("properties", {}).items():
            props[name] = (sub, resolver)
        return props

    def undeclared(self, value, ref, where):
        schema, resolver = self.resolve(ref)
        yield from self._walk(value, schema, resolver, where)

    def _walk(self, value, schema, resolver, where):
        if "$ref" in schema:
            target = resolver.lookup(schema["$ref"])
            schema, resolver = target.contents, target.resolver
        if schema.get("x-placeholder-stub"):
            return  # permissive placeholder (azure-specs/SOURCES.md)
        if isinstance(value, dict):
            props = self.declared(schema, resolver)
            if not props:
                return  # free-form object (tags, additionalProperties)
            for key, item in value.items():
                if key not in props:
                    yield f"{where}.{key}"
                else:
                    sub, sub_resolver = props[key]
                    yield from self._walk(item, sub, sub_resolver, f"{where}.{key}")
        elif isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                yield from self._walk(item, schema["items"], resolver, f"{where}[{i}]")


@pytest.fixture(scope="module")
def swagger():
    return Swagger(spec_dir())


def call(mock, method, path, body=None, version="2024-03-01"):
    context = ssl.create_default_context(cafile=mock.ca)
    sep = "&" if "?" in path else "?"
    url = path if path.startswith("https") else f"{mock.url}{path}{sep}api-version={version}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "authorization": "Bearer t", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null"), err.headers


def test_resource_bodies_match_the_2024_03_01_swagger(mock, swagger):
    rule = {"properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRanges": ["80", "443"],
                           "sourceAddressPrefixes": ["10.1.0.0/16"], "destinationAddressPrefix": "*",
                           "access": "Allow", "priority": 200, "direction": "Inbound", "description": "web"}}
    status, put, headers = call(mock, "PUT", f"{NET}/networkSecurityGroups/sql-nsg/securityRules/web", rule)
    assert status == 201
    swagger.validate(put, "networkSecurityGroup.json", "SecurityRule")
    _, op, _ = call(mock, "GET", headers["Azure-AsyncOperation"])
    swagger.validate(op, "network.json", "AzureAsyncOperationResult")

    checks = [
        (f"{NET}/networkSecurityGroups/sql-nsg", "networkSecurityGroup.json", "NetworkSecurityGroup"),
        (f"{NET}/networkSecurityGroups", "networkSecurityGroup.json", "NetworkSecurityGroupListResult"),
        (f"{NET}/networkSecurityGroups/sql-nsg/securityRules/web", "networkSecurityGroup.json", "SecurityRule"),
        (f"{NET}/networkSecurityGroups/sql-nsg/securityRules", "networkSecurityGroup.json", "SecurityRuleListResult"),
        (f"{NET}/networkSecurityGroups/sql-nsg/defaultSecurityRules/DenyAllInBound", "networkSecurityGroup.json", "SecurityRule"),
        (f"{NET}/routeTables/ase-one-rt", "routeTable.json", "RouteTable"),
        (f"{NET}/routeTables", "routeTable.json", "RouteTableListResult"),
        (f"{NET}/routeTables/ase-one-rt/routes/onprem", "routeTable.json", "Route"),
        (f"{NET}/routeTables/ase-one-rt/routes", "routeTable.json", "RouteListResult"),
        (f"{NET}/virtualNetworks/vnet", "virtualNetwork.json", "VirtualNetwork"),
        (f"{NET}/virtualNetworks", "virtualNetwork.json", "VirtualNetworkListResult"),
        (f"{NET}/virtualNetworks/vnet/subnets/sql", "virtualNetwork.json", "Subnet"),
        (f"{NET}/virtualNetworks/vnet/subnets", "virtualNetwork.json", "SubnetListResult"),
        (f"{NET}/networkSecurityGroups/missing", "network.json", "CloudError"),
        (f"{NET}/networkSecurityGroups/sql-nsg/securityRules/missing", "network.json", "CloudError"),
    ]
    for path, file, definition in checks:
        _, body, _ = call(mock, "GET", path)
        swagger.validate(body, file, definition)

    # Validation errors and the subnet / route writes.
    status, error, _ = call(mock, "PUT", f"{NET}/routeTables/ase-one-rt/routes/nva",
                            {"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance"}})
    assert status == 400
    swagger.validate(error, "network.json", "CloudError")
    status, route, _ = call(mock, "PUT", f"{NET}/routeTables/ase-one-rt/routes/nva",
                            {"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance",
                                            "nextHopIpAddress": "10.0.0.4"}})
    assert status == 201
    swagger.validate(route, "routeTable.json", "Route")
    status, subnet, _ = call(mock, "PUT", f"{NET}/virtualNetworks/vnet/subnets/free",
                             {"properties": {"addressPrefix": "10.0.3.0/24",
                                             "networkSecurityGroup": {"id": f"{NET}/networkSecurityGroups/spare-nsg"},
                                             "delegations": [{"name": "ase", "properties": {"serviceName": "Microsoft.Web/hostingEnvironments"}}]}})
    assert status == 200
    swagger.validate(subnet, "virtualNetwork.json", "Subnet")


def test_the_checks_reject_wrong_bodies(mock, swagger):
    """Negative controls: a wrong type, a missing required field and an undeclared field."""
    _, nsg, _ = call(mock, "GET", f"{NET}/networkSecurityGroups/sql-nsg")
    wrong_type = json.loads(json.dumps(nsg))
    wrong_type["properties"]["securityRules"][0]["properties"]["priority"] = "high"
    with pytest.raises(jsonschema.ValidationError):
        swagger.validate(wrong_type, "networkSecurityGroup.json", "NetworkSecurityGroup")

    missing = json.loads(json.dumps(nsg))
    del missing["properties"]["securityRules"][0]["properties"]["direction"]
    with pytest.raises(jsonschema.ValidationError):
        swagger.validate(missing, "networkSecurityGroup.json", "NetworkSecurityGroup")

    extra = json.loads(json.dumps(nsg))
    extra["properties"]["securityRules"][0]["properties"]["sourcePort"] = "*"
    with pytest.raises(AssertionError, match="sourcePort"):
        swagger.validate(extra, "networkSecurityGroup.json", "NetworkSecurityGroup")

    with pytest.raises(jsonschema.ValidationError):
        swagger.validate({"error": {"code": 400, "message": "x"}}, "network.json", "CloudError")
