// Microsoft's JavaScript SDK (@azure/arm-network, modular client) against mock-arm: the
// NSG / route-table / subnet round trip that asenet itself relies on (issue 11 item 3).
// Writes go through the SDK's own long-running-operation poller (`begin...AndWait`).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { admin, LOCATION, networkClient, RG, startMock, SUB } from "./mock.mjs";

// The api-version @azure/arm-network 39.0.0 puts on every Microsoft.Network call.
const JS_SDK_API_VERSION = "2026-01-01";

const nsgId = (name) =>
  `/subscriptions/${SUB}/resourceGroups/${RG}/providers/Microsoft.Network/networkSecurityGroups/${name}`;
const rtId = (name) =>
  `/subscriptions/${SUB}/resourceGroups/${RG}/providers/Microsoft.Network/routeTables/${name}`;
const vnetId = (name) =>
  `/subscriptions/${SUB}/resourceGroups/${RG}/providers/Microsoft.Network/virtualNetworks/${name}`;

const rule = (name, priority, port, direction = "Inbound") => ({
  name,
  protocol: "Tcp",
  sourceAddressPrefix: "AppServiceManagement",
  sourcePortRange: "*",
  destinationAddressPrefix: "VirtualNetwork",
  destinationPortRange: port,
  access: "Allow",
  priority,
  direction,
});

const route = (name, addressPrefix, nextHopType = "Internet") => ({ name, addressPrefix, nextHopType });

async function collect(iterable) {
  const items = [];
  for await (const item of iterable) items.push(item);
  return items;
}

// The SDK throws a RestError; the mock's ARM error code is in `code`.
async function rejectsWith(promise, statusCode, code) {
  await assert.rejects(promise, (error) => {
    assert.equal(error.statusCode, statusCode, `status of ${error.message}`);
    assert.equal(error.code, code, `code of ${error.message}`);
    return true;
  });
}

async function versions(mock, id) {
  return (await admin(mock, `history?id=${encodeURIComponent(id)}`)).versions.length;
}

describe("@azure/arm-network against mock-arm", () => {
  let mock;
  let client;
  let sent;

  before(async () => {
    mock = await startMock();
    ({ client, sent } = networkClient(mock));
  });

  after(async () => {
    await mock?.stop();
  });

  test("an NSG is created, read, listed, updated with If-Match and a stale etag is refused", async () => {
    const created = await client.networkSecurityGroups.beginCreateOrUpdateAndWait(RG, "js-nsg", {
      location: LOCATION,
      securityRules: [rule("AllowManagement", 100, "454-455"), rule("AllowLoadBalancer", 110, "16001")],
    });
    assert.equal(created.provisioningState, "Succeeded");
    assert.equal(created.id, nsgId("js-nsg"));
    assert.deepEqual(
      created.securityRules.map((r) => [r.name, r.priority, r.destinationPortRange, r.access]),
      [
        ["AllowManagement", 100, "454-455", "Allow"],
        ["AllowLoadBalancer", 110, "16001", "Allow"],
      ],
    );
    assert.equal(created.defaultSecurityRules.length, 6);
    assert.match(created.etag, /^W\/"/);

    const got = await client.networkSecurityGroups.get(RG, "js-nsg");
    assert.equal(got.etag, created.etag);
    assert.equal(got.securityRules[0].sourceAddressPrefix, "AppServiceManagement");

    // fast.yaml pages lists by one item, so these follow nextLinks to the end.
    const inGroup = (await collect(client.networkSecurityGroups.list(RG))).map((n) => n.name).sort();
    assert.deepEqual(inGroup, ["js-nsg", "spare-nsg", "sql-nsg"]);
    const inSubscription = (await collect(client.networkSecurityGroups.listAll())).map((n) => n.name);
    assert.ok(inSubscription.includes("js-nsg"), `listAll: ${inSubscription}`);

    const updated = await client.networkSecurityGroups.beginCreateOrUpdateAndWait(
      RG,
      "js-nsg",
      { ...got, securityRules: [...got.securityRules, rule("AllowOutbound443", 120, "443", "Outbound")] },
      { requestOptions: { headers: { "If-Match": got.etag } } },
    );
    assert.equal(updated.provisioningState, "Succeeded");
    assert.notEqual(updated.etag, got.etag);
    assert.deepEqual(updated.securityRules.map((r) => r.name), ["AllowManagement", "AllowLoadBalancer", "AllowOutbound443"]);

    const before412 = await versions(mock, nsgId("js-nsg"));
    await rejectsWith(
      client.networkSecurityGroups.beginCreateOrUpdateAndWait(
        RG,
        "js-nsg",
        { location: LOCATION, securityRules: [] },
        { requestOptions: { headers: { "If-Match": got.etag } } },
      ),
      412,
      "PreconditionFailed",
    );
    assert.equal(await versions(mock, nsgId("js-nsg")), before412, "the refused write stored a version");
    const afterStale = await client.networkSecurityGroups.get(RG, "js-nsg");
    assert.equal(afterStale.etag, updated.etag);
    assert.equal(afterStale.securityRules.length, 3);
  });

  test("a route table is created, read, listed, updated with If-Match and a stale etag is refused", async () => {
    const created = await client.routeTables.beginCreateOrUpdateAndWait(RG, "js-rt", {
      location: LOCATION,
      disableBgpRoutePropagation: false,
      routes: [route("mgmt-1", "13.66.140.0/32"), route("to-nva", "10.50.0.0/16", "VirtualAppliance")].map((r) =>
        r.nextHopType === "VirtualAppliance" ? { ...r, nextHopIpAddress: "10.0.9.4" } : r,
      ),
    });
    assert.equal(created.provisioningState, "Succeeded");
    assert.equal(created.id, rtId("js-rt"));
    assert.deepEqual(
      created.routes.map((r) => [r.name, r.addressPrefix, r.nextHopType, r.nextHopIpAddress]),
      [
        ["mgmt-1", "13.66.140.0/32", "Internet", undefined],
        ["to-nva", "10.50.0.0/16", "VirtualAppliance", "10.0.9.4"],
      ],
    );

    const got = await client.routeTables.get(RG, "js-rt");
    assert.equal(got.etag, created.etag);
    const names = (await collect(client.routeTables.list(RG))).map((t) => t.name).sort();
    assert.deepEqual(names, ["ase-one-rt", "js-rt"]);
    const routes = (await collect(client.routes.list(RG, "js-rt"))).map((r) => r.name);
    assert.deepEqual(routes, ["mgmt-1", "to-nva"]);

    const updated = await client.routeTables.beginCreateOrUpdateAndWait(
      RG,
      "js-rt",
      { ...got, routes: [...got.routes, route("default", "0.0.0.0/0")] },
      { requestOptions: { headers: { "If-Match": got.etag } } },
    );
    assert.notEqual(updated.etag, got.etag);
    assert.deepEqual(updated.routes.map((r) => r.name), ["mgmt-1", "to-nva", "default"]);

    // A single route through the child API, conditional on the table's route etag.
    const single = await client.routes.beginCreateOrUpdateAndWait(RG, "js-rt", "mgmt-2", {
      addressPrefix: "13.66.141.176/32",
      nextHopType: "Internet",
    });
    assert.equal(single.provisioningState, "Succeeded");
    assert.equal(single.id, `${rtId("js-rt")}/routes/mgmt-2`);

    const before412 = await versions(mock, rtId("js-rt"));
    await rejectsWith(
      client.routeTables.beginCreateOrUpdateAndWait(
        RG,
        "js-rt",
        { location: LOCATION, routes: [] },
        { requestOptions: { headers: { "If-Match": updated.etag } } },
      ),
      412,
      "PreconditionFailed",
    );
    assert.equal(await versions(mock, rtId("js-rt")), before412, "the refused write stored a version");
    assert.equal((await client.routeTables.get(RG, "js-rt")).routes.length, 4);
  });

  test("the NSG and route table are associated with a subnet through the VNet and subnet APIs, then deleted", async () => {
    const vnet = await client.virtualNetworks.beginCreateOrUpdateAndWait(RG, "js-vnet", {
      location: LOCATION,
      addressSpace: { addressPrefixes: ["10.20.0.0/16"] },
      subnets: [{ name: "ase", addressPrefix: "10.20.1.0/24", networkSecurityGroup: { id: nsgId("js-nsg") } }],
    });
    assert.equal(vnet.provisioningState, "Succeeded");
    assert.equal(vnet.subnets[0].networkSecurityGroup.id, nsgId("js-nsg"));

    const subnet = await client.subnets.get(RG, "js-vnet", "ase");
    assert.equal(subnet.routeTable, undefined);
    const associated = await client.subnets.beginCreateOrUpdateAndWait(
      RG,
      "js-vnet",
      "ase",
      { ...subnet, routeTable: { id: rtId("js-rt") } },
      { requestOptions: { headers: { "If-Match": subnet.etag } } },
    );
    assert.equal(associated.networkSecurityGroup.id, nsgId("js-nsg"));
    assert.equal(associated.routeTable.id, rtId("js-rt"));
    assert.notEqual(associated.etag, subnet.etag);

    // The back-references ARM maintains on the associated resources.
    const subnetId = `${vnetId("js-vnet")}/subnets/ase`;
    assert.deepEqual((await client.networkSecurityGroups.get(RG, "js-nsg")).subnets.map((s) => s.id), [subnetId]);
    assert.deepEqual((await client.routeTables.get(RG, "js-rt")).subnets.map((s) => s.id), [subnetId]);
    const listed = await collect(client.subnets.list(RG, "js-vnet"));
    assert.deepEqual(listed.map((s) => [s.name, s.routeTable?.id]), [["ase", rtId("js-rt")]]);

    // The stale subnet etag no longer matches: the dissociation is refused and nothing changes.
    await rejectsWith(
      client.subnets.beginCreateOrUpdateAndWait(
        RG,
        "js-vnet",
        "ase",
        { addressPrefix: "10.20.1.0/24" },
        { requestOptions: { headers: { "If-Match": subnet.etag } } },
      ),
      412,
      "PreconditionFailed",
    );
    assert.equal((await client.subnets.get(RG, "js-vnet", "ase")).routeTable.id, rtId("js-rt"));

    // An NSG in use cannot be deleted.
    await rejectsWith(
      client.networkSecurityGroups.beginDeleteAndWait(RG, "js-nsg"),
      400,
      "InUseNetworkSecurityGroupCannotBeDeleted",
    );

    await client.virtualNetworks.beginDeleteAndWait(RG, "js-vnet");
    await client.networkSecurityGroups.beginDeleteAndWait(RG, "js-nsg");
    await client.routeTables.beginDeleteAndWait(RG, "js-rt");
    await rejectsWith(client.networkSecurityGroups.get(RG, "js-nsg"), 404, "ResourceNotFound");
    await rejectsWith(client.routeTables.get(RG, "js-rt"), 404, "ResourceNotFound");
    await rejectsWith(client.virtualNetworks.get(RG, "js-vnet"), 404, "ResourceNotFound");
  });

  test("a write whose operation fails is reported by the SDK's poller and leaves nothing behind", async () => {
    await admin(mock, "faults", {
      method: "POST",
      body: { method: "PUT", path: "*/routeTables/js-failing", kind: "lroFailed", code: "InternalServerError", message: "injected by the JS SDK test" },
    });
    await assert.rejects(
      client.routeTables.beginCreateOrUpdateAndWait(RG, "js-failing", { location: LOCATION, routes: [] }),
      /long-running operation has failed.*InternalServerError.*injected by the JS SDK test/,
    );
    // A failed create is rolled back (mock-server/README.md, Faults).
    await rejectsWith(client.routeTables.get(RG, "js-failing"), 404, "ResourceNotFound");
  });

  test("every request carried the SDK's api-version and writes were polled to completion", () => {
    assert.ok(sent.length > 0, "no request was logged");
    const versionsSent = new Set(sent.map((r) => new URL(r.url).searchParams.get("api-version")));
    assert.deepEqual([...versionsSent], [JS_SDK_API_VERSION]);
    const polls = sent.filter((r) => r.method === "GET" && /\/providers\/Microsoft\.Network\/locations\/[^/]+\/(operations|operationResults)\//.test(r.url));
    const writes = sent.filter((r) => r.method === "PUT" && r.status < 300);
    const deletes = sent.filter((r) => r.method === "DELETE" && r.status < 300);
    assert.ok(writes.length >= 7 && deletes.length === 3, `writes ${writes.length}, deletes ${deletes.length}`);
    // Each accepted write and delete was followed to its end through the operation URLs.
    assert.ok(polls.length >= writes.length + deletes.length, `${polls.length} polls for ${writes.length + deletes.length} operations`);
  });
});
