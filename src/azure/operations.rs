//! The one table of ARM operations asenet performs (issue 13, defect 7).
//!
//! Every call in `azure/mod.rs` names its entry ([`Op`]): the generated-builder reads, the
//! raw writes, the list, the ASE lookup and the long-running-operation polls. A write to a
//! resource type that is not in the table is refused before anything is sent.
//! `docs/azure-permissions.md` holds [`markdown`]'s output between markers, and a test
//! (`tests/it/permissions.rs`) checks that the two are equal and that every request an
//! apply makes against the mock has an entry here.

use crate::model::ResourceId;

/// One entry of [`OPERATIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    GetNetworkSecurityGroup,
    GetRouteTable,
    GetVirtualNetwork,
    GetSubnet,
    ListNetworkSecurityGroups,
    ListRouteTables,
    GetAseAddresses,
    ListServiceTags,
    PutNetworkSecurityGroup,
    PutRouteTable,
    PutSubnet,
    DeleteNetworkSecurityGroup,
    DeleteRouteTable,
    PollAsyncOperation,
    PollLocation,
}

/// What one operation is, who calls it, and the Azure RBAC actions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmOperation {
    pub op: Op,
    /// `observe`, `apply`, `removal`.
    pub step: &'static str,
    pub method: &'static str,
    /// The URL path after the subscription's resource group (or subscription), with
    /// placeholders.
    pub path: &'static str,
    /// The last collection segment of the path, as the request observer labels it.
    pub resource_type: &'static str,
    /// When asenet makes the call.
    pub when: &'static str,
    /// The RBAC actions the call needs.
    pub actions: &'static [&'static str],
    /// Needed by read-only use (`plan`, `verify`, modes `Plan`/`Observe`) too.
    pub read_only: bool,
}

/// Every ARM operation asenet performs, in the order the documentation lists them.
pub const OPERATIONS: &[ArmOperation] = &[
    ArmOperation {
        op: Op::GetNetworkSecurityGroup,
        step: "observe",
        method: "GET",
        path: "…/networkSecurityGroups/{nsg}",
        resource_type: "networkSecurityGroups",
        when: "each NSG a spec names, when fewer than four targets share its resource group; again after a 412 on it, and to read back a write answered without a body",
        actions: &["Microsoft.Network/networkSecurityGroups/read"],
        read_only: true,
    },
    ArmOperation {
        op: Op::ListNetworkSecurityGroups,
        step: "observe",
        method: "GET",
        path: "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups",
        resource_type: "networkSecurityGroups",
        when: "instead of single GETs when four or more target NSGs share a resource group (`nextLink` followed on the endpoint's origin only, until every target was seen)",
        actions: &["Microsoft.Network/networkSecurityGroups/read"],
        read_only: true,
    },
    ArmOperation {
        op: Op::GetRouteTable,
        step: "observe",
        method: "GET",
        path: "…/routeTables/{rt}",
        resource_type: "routeTables",
        when: "each route table a spec names, when fewer than four targets share its resource group; again after a 412 on it, and to read back a write answered without a body",
        actions: &["Microsoft.Network/routeTables/read"],
        read_only: true,
    },
    ArmOperation {
        op: Op::ListRouteTables,
        step: "observe",
        method: "GET",
        path: "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/routeTables",
        resource_type: "routeTables",
        when: "instead of single GETs when four or more target route tables share a resource group",
        actions: &["Microsoft.Network/routeTables/read"],
        read_only: true,
    },
    ArmOperation {
        op: Op::GetVirtualNetwork,
        step: "observe",
        method: "GET",
        path: "…/virtualNetworks/{vnet}",
        resource_type: "virtualNetworks",
        when: "each VNet holding an ASE subnet: the address space and every subnet inline",
        actions: &["Microsoft.Network/virtualNetworks/read"],
        read_only: true,
    },
    ArmOperation {
        op: Op::GetSubnet,
        step: "apply",
        method: "GET",
        path: "…/virtualNetworks/{vnet}/subnets/{subnet}",
        resource_type: "subnets",
        when: "after a 412 on a subnet, and to read back a write answered without a body (associations and dissociations use the subnet as read inline with its VNet)",
        actions: &["Microsoft.Network/virtualNetworks/subnets/read"],
        read_only: false,
    },
    ArmOperation {
        op: Op::GetAseAddresses,
        step: "observe",
        method: "GET",
        path: "…/Microsoft.Web/hostingEnvironments/{ase}/capacities/virtualip",
        resource_type: "capacities",
        when: "each ASE: its VIP and outbound addresses (docs/domain.md 1.5)",
        actions: &["Microsoft.Web/hostingEnvironments/capacities/read"],
        read_only: true,
    },
    ArmOperation {
        op: Op::ListServiceTags,
        step: "observe",
        method: "GET",
        path: "/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/serviceTags",
        resource_type: "serviceTags",
        when: "`ServiceTags_List` (the SDK's api-version), once per location holding a spec whose forced tunneling needs tags, per run; the operator reuses it for half its resync interval; not made with `--service-tags FILE` (docs/domain.md 5.1)",
        actions: &["Microsoft.Network/locations/serviceTags/read"],
        read_only: true,
    },
    ArmOperation {
        op: Op::PutNetworkSecurityGroup,
        step: "apply",
        method: "PUT",
        path: "…/networkSecurityGroups/{nsg}",
        resource_type: "networkSecurityGroups",
        when: "each changed NSG: the complete rule list inline, with `If-Match` (`If-None-Match: *` to create)",
        actions: &["Microsoft.Network/networkSecurityGroups/write"],
        read_only: false,
    },
    ArmOperation {
        op: Op::PutRouteTable,
        step: "apply",
        method: "PUT",
        path: "…/routeTables/{rt}",
        resource_type: "routeTables",
        when: "each changed route table: the complete route list inline, with `If-Match` (`If-None-Match: *` to create)",
        actions: &["Microsoft.Network/routeTables/write"],
        read_only: false,
    },
    ArmOperation {
        op: Op::PutSubnet,
        step: "apply",
        method: "PUT",
        path: "…/virtualNetworks/{vnet}/subnets/{subnet}",
        resource_type: "subnets",
        when: "each association or dissociation of an NSG or route table, every other property sent back as read, with `If-Match`",
        actions: &[
            "Microsoft.Network/virtualNetworks/subnets/write",
            "Microsoft.Network/networkSecurityGroups/join/action",
            "Microsoft.Network/routeTables/join/action",
        ],
        read_only: false,
    },
    ArmOperation {
        op: Op::DeleteNetworkSecurityGroup,
        step: "removal",
        method: "DELETE",
        path: "…/networkSecurityGroups/{nsg}",
        resource_type: "networkSecurityGroups",
        when: "an NSG asenet created, once it holds nothing and no subnet uses it (`deletionPolicy: Delete`), with `If-Match`",
        actions: &["Microsoft.Network/networkSecurityGroups/delete"],
        read_only: false,
    },
    ArmOperation {
        op: Op::DeleteRouteTable,
        step: "removal",
        method: "DELETE",
        path: "…/routeTables/{rt}",
        resource_type: "routeTables",
        when: "a route table asenet created, once it holds nothing and no subnet uses it (`deletionPolicy: Delete`), with `If-Match`",
        actions: &["Microsoft.Network/routeTables/delete"],
        read_only: false,
    },
    ArmOperation {
        op: Op::PollAsyncOperation,
        step: "apply",
        method: "GET",
        path: "/subscriptions/{sub}/providers/Microsoft.Network/locations/{region}/operations/{id}",
        resource_type: "operations",
        when: "the `Azure-AsyncOperation` URL of a PUT or DELETE, until it ends (only on the endpoint's origin)",
        actions: &["Microsoft.Network/locations/operations/read"],
        read_only: false,
    },
    ArmOperation {
        op: Op::PollLocation,
        step: "removal",
        method: "GET",
        path: "/subscriptions/{sub}/providers/Microsoft.Network/locations/{region}/operationResults/{id}",
        resource_type: "operationResults",
        when: "the `Location` URL of a DELETE answered without `Azure-AsyncOperation` (only on the endpoint's origin)",
        actions: &["Microsoft.Network/locations/operationResults/read"],
        read_only: false,
    },
];

impl Op {
    /// This operation's entry.
    pub fn entry(self) -> &'static ArmOperation {
        OPERATIONS
            .iter()
            .find(|o| o.op == self)
            // Every variant has an entry: `every_op_has_one_entry` below checks it.
            .expect("every Op has an entry in OPERATIONS")
    }

    /// The read of `id`'s type, if asenet reads that type.
    pub fn get(id: &ResourceId) -> Option<Op> {
        Self::by_type(id, Op::GetNetworkSecurityGroup, Op::GetRouteTable).or_else(|| {
            id.is_type("Microsoft.Network/virtualNetworks/subnets")
                .then_some(Op::GetSubnet)
        })
    }

    /// The write of `id`'s type, if asenet writes that type.
    pub fn put(id: &ResourceId) -> Option<Op> {
        Self::by_type(id, Op::PutNetworkSecurityGroup, Op::PutRouteTable).or_else(|| {
            id.is_type("Microsoft.Network/virtualNetworks/subnets")
                .then_some(Op::PutSubnet)
        })
    }

    /// The delete of `id`'s type, if asenet deletes that type.
    pub fn delete(id: &ResourceId) -> Option<Op> {
        Self::by_type(id, Op::DeleteNetworkSecurityGroup, Op::DeleteRouteTable)
    }

    /// The list of a `Microsoft.Network` collection, if asenet lists it.
    pub fn list(collection: &str) -> Option<Op> {
        match collection {
            "networkSecurityGroups" => Some(Op::ListNetworkSecurityGroups),
            "routeTables" => Some(Op::ListRouteTables),
            _ => None,
        }
    }

    fn by_type(id: &ResourceId, nsg: Op, rt: Op) -> Option<Op> {
        if id.is_type("Microsoft.Network/networkSecurityGroups") {
            Some(nsg)
        } else if id.is_type("Microsoft.Network/routeTables") {
            Some(rt)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::GetNetworkSecurityGroup => "GetNetworkSecurityGroup",
            Op::GetRouteTable => "GetRouteTable",
            Op::GetVirtualNetwork => "GetVirtualNetwork",
            Op::GetSubnet => "GetSubnet",
            Op::ListNetworkSecurityGroups => "ListNetworkSecurityGroups",
            Op::ListRouteTables => "ListRouteTables",
            Op::GetAseAddresses => "GetAseAddresses",
            Op::ListServiceTags => "ListServiceTags",
            Op::PutNetworkSecurityGroup => "PutNetworkSecurityGroup",
            Op::PutRouteTable => "PutRouteTable",
            Op::PutSubnet => "PutSubnet",
            Op::DeleteNetworkSecurityGroup => "DeleteNetworkSecurityGroup",
            Op::DeleteRouteTable => "DeleteRouteTable",
            Op::PollAsyncOperation => "PollAsyncOperation",
            Op::PollLocation => "PollLocation",
        }
    }
}

/// The entry an observed request (method, resource type as `policy::resource_type`
/// labels it) belongs to, if any.
pub fn find(method: &str, resource_type: &str) -> Option<&'static ArmOperation> {
    OPERATIONS
        .iter()
        .find(|o| o.method.eq_ignore_ascii_case(method) && o.resource_type == resource_type)
}

/// The RBAC actions needed: read-only use (`read_only: true`), or everything.
pub fn actions(read_only: bool) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = OPERATIONS
        .iter()
        .filter(|o| o.read_only || !read_only)
        .flat_map(|o| o.actions.iter().copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The generated part of `docs/azure-permissions.md`: the table of calls and the role.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("| Step | Operation | Call | When | RBAC actions |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for o in OPERATIONS {
        let actions = o
            .actions
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {} | {} | `{} {}` | {} | {actions} |\n",
            o.step,
            o.op.name(),
            o.method,
            o.path,
            o.when
        ));
    }
    out.push_str("\n`…` is `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network` (`Microsoft.Web` for the ASE).\n");
    out.push_str(
        "\nRole for read-only use (`plan`, `verify`, specs in mode `Plan` or `Observe`):\n\n",
    );
    for a in actions(true) {
        out.push_str(&format!("- `{a}`\n"));
    }
    let read_only = actions(true);
    out.push_str("\nFor `apply` and the operator in mode `Apply`, add:\n\n");
    for a in actions(false)
        .into_iter()
        .filter(|a| !read_only.contains(a))
    {
        out.push_str(&format!("- `{a}`\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_one_entry() {
        let all = [
            Op::GetNetworkSecurityGroup,
            Op::GetRouteTable,
            Op::GetVirtualNetwork,
            Op::GetSubnet,
            Op::ListNetworkSecurityGroups,
            Op::ListRouteTables,
            Op::GetAseAddresses,
            Op::ListServiceTags,
            Op::PutNetworkSecurityGroup,
            Op::PutRouteTable,
            Op::PutSubnet,
            Op::DeleteNetworkSecurityGroup,
            Op::DeleteRouteTable,
            Op::PollAsyncOperation,
            Op::PollLocation,
        ];
        assert_eq!(all.len(), OPERATIONS.len());
        for op in all {
            assert_eq!(
                OPERATIONS.iter().filter(|o| o.op == op).count(),
                1,
                "{op:?}"
            );
            assert_eq!(op.entry().op, op);
        }
    }

    #[test]
    fn asenet_writes_only_nsgs_route_tables_and_subnets() {
        let vnet = ResourceId::parse(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",
        )
        .unwrap();
        assert_eq!(Op::put(&vnet), None);
        assert_eq!(Op::delete(&vnet), None);
        let subnet = ResourceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a").unwrap();
        assert_eq!(Op::put(&subnet), Some(Op::PutSubnet));
        assert_eq!(Op::delete(&subnet), None, "asenet never deletes a subnet");
    }
}
