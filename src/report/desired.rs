//! Rendering of the resolver's desired state for `asenet resolve`: an aligned text table
//! per Azure resource for people, and the serde JSON of `Desired` for machines (stable:
//! every collection in it is ordered).

use std::fmt::Write as _;

use crate::model::{Direction, ResourceId, RouteDestination};
use crate::resolver::{Desired, DesiredNsg, DesiredRouteTable, SpecOutcome};

/// Pretty JSON of the desired state, ending with a newline.
pub fn render_json(desired: &Desired) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(desired)?;
    s.push('\n');
    Ok(s)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    // Cells hold names, reasons and addresses from specs: shown escaped (issue 13).
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| super::escape::terminal(c).into_owned())
                .collect()
        })
        .collect();
    let rows = rows.as_slice();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::from(indent);
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i < last {
                l.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// A readable report: per NSG its owned rules, per route table its routes, the subnet
/// associations, and per spec its addresses or its failure.
pub fn render_text(desired: &Desired) -> String {
    let mut out = String::new();
    for nsg in desired.network_security_groups.values() {
        nsg_section(&mut out, nsg);
    }
    for rt in desired.route_tables.values() {
        route_table_section(&mut out, rt);
    }
    if !desired.subnets.is_empty() {
        subnets_section(&mut out, desired);
    }
    specs_section(&mut out, desired);
    out
}

/// A section's heading: the resource and its location, escaped.
fn heading(out: &mut String, what: &str, id: &ResourceId, location: Option<&str>) {
    let loc = location.map(|l| format!(" ({l})")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{}",
        super::escape::terminal(&format!("{what} {id}{loc}"))
    );
}

fn nsg_section(out: &mut String, nsg: &DesiredNsg) {
    heading(
        out,
        "network security group",
        &nsg.id,
        nsg.location.as_deref(),
    );
    let rows: Vec<Vec<String>> = nsg
        .rules
        .iter()
        .map(|o| {
            let r = &o.rule;
            vec![
                r.priority.to_string(),
                match r.direction {
                    Direction::Inbound => "In".into(),
                    Direction::Outbound => "Out".into(),
                },
                format!("{:?}", r.access),
                r.protocol.to_string(),
                r.source.to_string(),
                r.destination_ports.to_string(),
                r.destination.to_string(),
                r.name.clone(),
                o.reason.to_string(),
            ]
        })
        .collect();
    table(
        out,
        "  ",
        &[
            "PRIO",
            "DIR",
            "ACCESS",
            "PROTO",
            "SOURCE",
            "PORTS",
            "DESTINATION",
            "NAME",
            "REASON",
        ],
        &rows,
    );
    out.push('\n');
}

fn route_table_section(out: &mut String, rt: &DesiredRouteTable) {
    heading(out, "route table", &rt.id, rt.location.as_deref());
    let rows: Vec<Vec<String>> = rt
        .routes
        .iter()
        .map(|o| {
            let r = &o.route;
            vec![
                match &r.address_prefix {
                    RouteDestination::Prefix(p) => p.to_string(),
                    RouteDestination::Tag(t) => t.clone(),
                },
                format!("{:?}", r.next_hop_type),
                r.name.clone(),
                o.reason.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        let _ = writeln!(out, "  (no owned routes)");
    } else {
        table(out, "  ", &["PREFIX", "NEXT HOP", "NAME", "REASON"], &rows);
    }
    out.push('\n');
}

fn subnets_section(out: &mut String, desired: &Desired) {
    let _ = writeln!(out, "subnet associations");
    let rows: Vec<Vec<String>> = desired
        .subnets
        .values()
        .map(|s| {
            vec![
                s.id.name().to_string(),
                s.network_security_group.name().to_string(),
                s.route_table
                    .as_ref()
                    .map(|r| r.name().to_string())
                    .unwrap_or_else(|| "-".into()),
                s.owner.to_string(),
            ]
        })
        .collect();
    table(out, "  ", &["SUBNET", "NSG", "ROUTE TABLE", "SPEC"], &rows);
    out.push('\n');
}

fn specs_section(out: &mut String, desired: &Desired) {
    let _ = writeln!(out, "specs");
    let rows: Vec<Vec<String>> = desired
        .specs
        .iter()
        .map(|(k, o)| match o {
            SpecOutcome::Resolved(r) => {
                let internet: Vec<String> =
                    r.internet_addresses.iter().map(|a| a.to_string()).collect();
                vec![
                    k.to_string(),
                    "resolved".into(),
                    if internet.is_empty() {
                        "-".into()
                    } else {
                        internet.join(",")
                    },
                    r.virtual_network_range.to_string(),
                    desired.required_flows(k).len().to_string(),
                ]
            }
            SpecOutcome::Failed { errors } => vec![
                k.to_string(),
                format!(
                    "FAILED ({} error{})",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                ),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        })
        .collect();
    table(
        out,
        "  ",
        &[
            "SPEC",
            "OUTCOME",
            "INTERNET ADDRESSES",
            "SUBNET RANGE",
            "REQUIRED FLOWS",
        ],
        &rows,
    );
}
