//! The Markdown rendering of a plan, for pull-request comments: a summary line, a table
//! of changes per changed resource, a collapsible `<details>` block with the complete list
//! each resource will hold, warnings for conflicts and the spec errors.
//!
//! Every string that comes from a spec or from Azure goes through `escape` (`text` for
//! prose, `code` for names and values shown as code): a hostile value cannot add a
//! heading, link, image, HTML or table cell to a pull-request comment (issue 13).

use std::fmt::Write;

use super::escape::{code, code_block};
use super::{
    action_phrase, association_reason, association_target, describe_route, describe_rule,
    entry_words, resource_title, route_field, rule_field, summary_line,
};
use crate::diff::{EntryChanges, Plan, ResourceKind, ResourcePlan};
use crate::model::{Route, SecurityRule};

/// Renders a plan as GitHub-flavoured Markdown.
pub fn render_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### asenet plan\n");
    let _ = writeln!(out, "**{}**\n", summary_line(plan));

    let changed: Vec<&ResourcePlan> = plan.changed().collect();
    if !changed.is_empty() {
        out.push_str("| Resource | Action | Add | Change | Destroy |\n");
        out.push_str("| --- | --- | ---: | ---: | ---: |\n");
        for r in &changed {
            let (c, u, d) = r.counts();
            let _ = writeln!(
                out,
                "| {} | {} | {c} | {u} | {d} |",
                code(&resource_title(&r.id)),
                action_phrase(r.action)
            );
        }
        out.push('\n');
    }

    for r in &changed {
        let _ = writeln!(
            out,
            "#### {} {}\n",
            code(&resource_title(&r.id)),
            action_phrase(r.action)
        );
        match r.kind {
            ResourceKind::NetworkSecurityGroup => rule_table(&mut out, &r.rules),
            ResourceKind::RouteTable => route_table(&mut out, &r.routes),
            ResourceKind::Subnet => association_table(&mut out, r),
        }
        details(&mut out, r);
    }

    let conflicts: Vec<_> = plan.conflicts().collect();
    if !conflicts.is_empty() {
        out.push_str("> [!WARNING]\n> Foreign entries asenet reports but never changes:\n");
        for (r, c) in conflicts {
            let _ = writeln!(
                out,
                "> - {} ({}): {}",
                code(&resource_title(&r.id)),
                c.kind.as_str(),
                message(&c.message)
            );
        }
        out.push('\n');
    }
    if !plan.errors.is_empty() {
        out.push_str("> [!CAUTION]\n> Specs that could not be planned (what they own in Azure is left as it is):\n");
        for e in &plan.errors {
            let _ = writeln!(
                out,
                "> - {} {}: {} (value {}, {})",
                code(&e.spec.to_string()),
                code(&e.field),
                message(&e.message),
                code(&e.value),
                e.kind.as_str()
            );
        }
        out.push('\n');
    }
    out
}

/// A message of asenet's (a conflict, a spec error) as Markdown. Messages quote names
/// and values in backticks: each pair of backticks becomes a code span (`escape::code`,
/// safe whatever it holds), everything else is escaped prose, and an unpaired backtick is
/// prose too. A value with backticks of its own may pair up differently than meant, but
/// every piece is escaped for where it lands, so it can only render oddly, never add
/// structure.
fn message(s: &str) -> String {
    let pieces: Vec<&str> = s.split('`').collect();
    let paired = if pieces.len() % 2 == 1 {
        pieces.len()
    } else {
        pieces.len() - 1
    };
    let mut out = String::new();
    for (i, piece) in pieces[..paired].iter().enumerate() {
        if i % 2 == 0 {
            out.push_str(&cell(piece));
        } else {
            out.push_str(&code(piece));
        }
    }
    if paired < pieces.len() {
        out.push_str(&cell(&format!("`{}", pieces[paired])));
    }
    out
}

/// Prose from a spec or from Azure in a table cell or list item (`escape::markdown`).
fn cell(s: &str) -> String {
    super::escape::markdown(s).into_owned()
}

fn rule_cells(r: &SecurityRule) -> String {
    format!(
        "{} | {:?} | {} | {:?} | {} | {} | {} | {}",
        code(&r.name),
        r.direction,
        r.priority,
        r.access,
        r.protocol,
        cell(&r.source.to_string()),
        cell(&r.destination.to_string()),
        cell(&r.destination_ports.to_string()),
    )
}

fn rule_table(out: &mut String, ch: &EntryChanges<SecurityRule>) {
    entry_table(
        out,
        "| | Rule | Direction | Priority | Access | Protocol | Source | Destination | Ports | Reason |\n| --- | --- | --- | ---: | --- | --- | --- | --- | --- | --- |\n",
        ch,
        rule_cells,
        rule_field,
    );
}

fn route_table(out: &mut String, ch: &EntryChanges<Route>) {
    entry_table(
        out,
        "| | Route | Address prefix | Next hop | Next hop IP | Reason |\n| --- | --- | --- | --- | --- | --- |\n",
        ch,
        route_cells,
        route_field,
    );
}

/// One table of the creates, updates (with the fields that change) and deletes of rules or
/// routes: `cells` renders an entry's columns, `field` one field's value by name.
fn entry_table<T>(
    out: &mut String,
    header: &str,
    ch: &EntryChanges<T>,
    cells: fn(&T) -> String,
    field: fn(&T, &str) -> String,
) {
    out.push_str(header);
    for p in &ch.create {
        let _ = writeln!(out, "| + | {} | {} |", cells(&p.entry), cell(&p.reason));
    }
    for u in &ch.update {
        let changes = u
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{f}: {} → {}",
                    code(&field(&u.before, f)),
                    code(&field(&u.after, f))
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = writeln!(
            out,
            "| ~ | {} | {}<br>{} |",
            cells(&u.after),
            changes,
            cell(&u.reason)
        );
    }
    for p in &ch.delete {
        let _ = writeln!(out, "| - | {} | {} |", cells(&p.entry), cell(&p.reason));
    }
    out.push('\n');
}

fn route_cells(r: &Route) -> String {
    format!(
        "{} | {} | {:?} | {}",
        code(&r.name),
        r.address_prefix,
        r.next_hop_type,
        r.next_hop_ip_address
            .map(|i| i.to_string())
            .unwrap_or_default()
    )
}

fn association_table(out: &mut String, r: &ResourcePlan) {
    let Some(a) = &r.association else { return };
    out.push_str("| | Association | From | To | Reason |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    let reason = association_reason(r);
    for (what, ch) in [
        ("networkSecurityGroup", &a.network_security_group),
        ("routeTable", &a.route_table),
    ] {
        if let Some(c) = ch {
            let sign = if c.from.is_none() { "+" } else { "~" };
            let _ = writeln!(
                out,
                "| {sign} | {what} | {} | {} | {} |",
                cell(&association_target(c.from.as_ref())),
                cell(&association_target(c.to.as_ref())),
                cell(&reason)
            );
        }
    }
    out.push('\n');
}

/// The complete list the resource will hold after apply, owned and foreign.
fn details(out: &mut String, r: &ResourcePlan) {
    let lines: Vec<String> = match r.kind {
        ResourceKind::NetworkSecurityGroup => r
            .target_rules()
            .iter()
            .map(|e| format!("{}  {}", e.name, describe_rule(e)))
            .collect(),
        ResourceKind::RouteTable => r
            .target_routes()
            .iter()
            .map(|e| format!("{}  {}", e.name, describe_route(e)))
            .collect(),
        ResourceKind::Subnet => return,
    };
    let (_, many) = entry_words(r.kind);
    let _ = writeln!(
        out,
        "<details><summary>All {} after apply ({}, of which {} foreign)</summary>\n",
        many,
        lines.len(),
        r.rules.foreign.len() + r.routes.foreign.len()
    );
    out.push_str(&code_block("text", &lines));
    out.push_str("\n</details>\n\n");
}
