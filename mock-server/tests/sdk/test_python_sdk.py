"""The official Python SDK (azure-mgmt-network, azure-mgmt-web) drives the mock over TLS.

Scenario (issue 3): create an NSG through its long-running operation, get it, list it page
by page, PUT a rule, associate the NSG with a subnet, and see its deletion refused while in
use; at api-version 2024-03-01 and at the SDK's default. Service tags (issue 11):
`ServiceTags_List` before and after a change published through the admin API.
"""

import time

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.network import NetworkManagementClient

SUB = "00000000-0000-0000-0000-000000000001"


class StaticToken:
    """A credential that always returns the same token (the mock accepts any)."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken("mock-token", int(time.time()) + 3600)


@pytest.mark.parametrize("api_version", ["2024-03-01", None], ids=["2024-03-01", "sdk-default"])
def test_the_python_sdk_runs_the_nsg_scenario(mock, api_version):
    client = NetworkManagementClient(StaticToken(), SUB, base_url=mock.url, connection_verify=mock.ca)
    kw = {"api_version": api_version} if api_version else {}
    seen = []
    hook = {"raw_response_hook": lambda response: seen.append(response.http_request.url)}

    nsg = client.network_security_groups.begin_create_or_update(
        "network", "py-nsg", {"location": "westeurope"}, **kw).result()
    assert nsg.name == "py-nsg"
    assert nsg.properties.provisioning_state == "Succeeded"
    assert len(nsg.properties.default_security_rules) == 6

    got = client.network_security_groups.get("network", "py-nsg", **kw, **hook)
    assert got.etag.startswith('W/"')
    expected_version = api_version or "2026-03-01"
    assert f"api-version={expected_version}" in seen[-1]

    names = sorted(n.name for n in client.network_security_groups.list("network", **kw))
    assert names == ["py-nsg", "spare-nsg", "sql-nsg"]  # three pages of one

    rule = client.security_rules.begin_create_or_update(
        "network", "py-nsg", "ase-mgmt",
        {"properties": {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "454-455",
                        "sourceAddressPrefix": "AppServiceManagement", "destinationAddressPrefix": "*",
                        "access": "Allow", "priority": 100, "direction": "Inbound"}}, **kw).result()
    assert rule.properties.priority == 100

    subnet = client.subnets.begin_create_or_update(
        "network", "vnet", "free",
        {"properties": {"addressPrefix": "10.0.3.0/24", "networkSecurityGroup": {"id": got.id}}}, **kw).result()
    assert subnet.properties.network_security_group.id == got.id
    assert client.network_security_groups.get("network", "py-nsg", **kw).properties.subnets[0].id == subnet.id

    with pytest.raises(HttpResponseError) as refused:
        client.network_security_groups.begin_delete("network", "py-nsg", **kw).result()
    assert refused.value.status_code == 400
    assert refused.value.error.code == "InUseNetworkSecurityGroupCannotBeDeleted"

    # Disassociate, then the delete goes through its LRO.
    client.subnets.begin_create_or_update(
        "network", "vnet", "free", {"properties": {"addressPrefix": "10.0.3.0/24"}}, **kw).result()
    client.network_security_groups.begin_delete("network", "py-nsg", **kw).result()
    with pytest.raises(HttpResponseError) as gone:
        client.network_security_groups.get("network", "py-nsg", **kw)
    assert gone.value.status_code == 404

    stats = mock.admin("stats")
    assert stats["byRequest"].get("GET operations 200", 0) >= 4


def test_the_python_sdk_retries_injected_throttling(mock):
    client = NetworkManagementClient(StaticToken(), SUB, base_url=mock.url, connection_verify=mock.ca)
    mock.admin("faults", "POST", {"method": "GET", "path": "*/sql-nsg", "count": 1,
                                  "kind": "error", "status": 429, "retryAfter": 0.1})
    assert client.network_security_groups.get("network", "sql-nsg").name == "sql-nsg"
    assert mock.admin("stats")["byStatus"]["429"] == 1


def test_the_web_sdk_reads_ase_addresses(mock):
    web = pytest.importorskip("azure.mgmt.web")
    client = web.WebSiteManagementClient(StaticToken(), SUB, base_url=mock.url, connection_verify=mock.ca)
    vip = client.app_service_environments.get_vip_info("network", "ase-one")
    assert vip.service_ip_address == "192.23.1.2"
    ase = client.app_service_environments.get("network", "ase-one")
    assert ase.virtual_network.id.endswith("/subnets/ase-one")


@pytest.mark.parametrize("api_version", ["2024-03-01", None], ids=["2024-03-01", "sdk-default"])
def test_the_python_sdk_lists_service_tags_and_sees_a_published_change(mock, api_version):
    client = NetworkManagementClient(StaticToken(), SUB, base_url=mock.url, connection_verify=mock.ca)
    kw = {"api_version": api_version} if api_version else {}

    def management(result):
        # The SDK's models are mappings over the wire JSON (`values` would be the mapping
        # method as an attribute), so read them by their JSON names.
        [tag] = [v for v in result["values"] if v["name"] == "AppServiceManagement"]
        return tag["properties"]

    before = client.service_tags.list("westeurope", **kw)
    assert management(before)["changeNumber"] == "69"
    assert len([p for p in management(before)["addressPrefixes"] if ":" not in p]) == 12
    published = mock.admin("service-tags", "POST",
                           {"name": "AppServiceManagement", "addressPrefixes": ["20.1.2.0/26"]})
    assert published["changeNumber"] == int(before["changeNumber"]) + 1
    after = client.service_tags.list("westeurope", **kw)
    assert management(after)["changeNumber"] == "70"
    assert list(management(after)["addressPrefixes"]) == ["20.1.2.0/26"]
