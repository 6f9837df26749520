//! The terminal rendering of a plan, in the style of `terraform plan`.
//!
//! ```text
//! asenet will perform the following actions:
//!
//!   # networkSecurityGroups/ase-two-nsg (network) will be updated in-place
//!     + asenet-ase-two-web  Inbound 110 Allow Tcp from 192.23.1.2 to * ports 80,443  # web (Http) from ase-one
//!     ~ asenet-ase-two-mgmt  # management ports (ASE V1, required)
//!         ~ destinationPorts: 454 -> 454-455
//!     - asenet-ase-two-old  Inbound 130 Allow Tcp from 1.2.3.4 to * ports 21  # no longer wanted by spec network/ase-two
//!       (2 owned rules unchanged, 1 foreign rule carried unchanged)
//!
//! Plan: 1 to add, 1 to change, 1 to destroy.
//! ```
//!
//! Colours (ANSI) only when the caller says so (`std::io::IsTerminal` on stdout).
//! Every string from a spec or from Azure goes through `escape::terminal`: it prints on
//! its own line and sends no control character (issue 13).

use std::fmt::Write;

use super::escape::terminal;
use super::{
    action_phrase, association_reason, association_target, describe_route, describe_rule,
    entry_words, plural, resource_title, route_field, rule_field, summary_line, unchanged_counts,
};
use crate::diff::{Change, EntryChanges, ParentAction, Plan, ResourcePlan};
use crate::model::ResourceId;

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    }
}

/// Renders a plan for a terminal. `color` adds ANSI colours (pass `stdout().is_terminal()`).
pub fn render_text(plan: &Plan, color: bool) -> String {
    let st = Style { color };
    let mut out = String::new();
    if plan.has_changes() {
        out.push_str("asenet will perform the following actions:\n");
        for r in plan.changed() {
            out.push('\n');
            render_resource(&mut out, r, &st);
        }
        out.push('\n');
    }
    let warnings: Vec<_> = plan.conflicts().collect();
    if !warnings.is_empty() {
        for (r, c) in warnings {
            let _ = writeln!(
                out,
                "{} {}: {}",
                st.paint(&format!("{BOLD}{YELLOW}"), "Warning:"),
                terminal(&resource_title(&r.id)),
                terminal(&c.message)
            );
        }
        out.push('\n');
    }
    for e in &plan.errors {
        let _ = writeln!(
            out,
            "{} spec {}: {}: {} (value `{}`, {})",
            st.paint(&format!("{BOLD}{RED}"), "Error:"),
            terminal(&e.spec.to_string()),
            terminal(&e.field),
            terminal(&e.message),
            terminal(&e.value),
            e.kind.as_str()
        );
    }
    if !plan.errors.is_empty() {
        out.push_str(
            "The specs above were not planned; what they own in Azure is left as it is.\n\n",
        );
    }
    out.push_str(&st.paint(BOLD, &summary_line(plan)));
    out.push('\n');
    out
}

fn render_resource(out: &mut String, r: &ResourcePlan, st: &Style) {
    let head_color = match r.action {
        ParentAction::Create => GREEN,
        ParentAction::Update => YELLOW,
        ParentAction::NoChange => DIM,
        ParentAction::Delete => RED,
    };
    let _ = writeln!(
        out,
        "  {}",
        st.paint(
            &format!("{BOLD}{head_color}"),
            &format!(
                "# {} {}",
                terminal(&resource_title(&r.id)),
                action_phrase(r.action)
            )
        )
    );
    if let Some(loc) = r
        .location
        .as_deref()
        .filter(|_| r.action == ParentAction::Create)
    {
        let loc = terminal(loc);
        let _ = writeln!(out, "      {}", st.paint(DIM, &format!("location: {loc}")));
    }
    render_entries(out, &r.rules, describe_rule, |e| &e.name, rule_field, st);
    render_entries(out, &r.routes, describe_route, |e| &e.name, route_field, st);
    if let Some(a) = &r.association {
        let reason = association_reason(r);
        association_line(
            out,
            "networkSecurityGroup",
            a.network_security_group.as_ref(),
            &reason,
            st,
        );
        association_line(out, "routeTable", a.route_table.as_ref(), &reason, st);
    }
    let (keep, foreign) = unchanged_counts(r);
    if keep + foreign > 0 {
        let (one, many) = entry_words(r.kind);
        let _ = writeln!(
            out,
            "      {}",
            st.paint(
                DIM,
                &format!(
                    "({} unchanged, {} carried unchanged)",
                    plural(keep, &format!("owned {one}"), &format!("owned {many}")),
                    plural(
                        foreign,
                        &format!("foreign {one}"),
                        &format!("foreign {many}")
                    ),
                )
            )
        );
    }
}

fn render_entries<T>(
    out: &mut String,
    ch: &EntryChanges<T>,
    describe: fn(&T) -> String,
    name: fn(&T) -> &String,
    field: fn(&T, &str) -> String,
    st: &Style,
) {
    for p in &ch.create {
        let _ = writeln!(
            out,
            "    {} {}  {}  {}",
            st.paint(GREEN, "+"),
            terminal(name(&p.entry)),
            terminal(&describe(&p.entry)),
            st.paint(DIM, &format!("# {}", terminal(&p.reason)))
        );
    }
    for u in &ch.update {
        let _ = writeln!(
            out,
            "    {} {}  {}",
            st.paint(YELLOW, "~"),
            terminal(name(&u.before)),
            st.paint(DIM, &format!("# {}", terminal(&u.reason)))
        );
        for f in &u.fields {
            let _ = writeln!(
                out,
                "        {} {f}: {} -> {}",
                st.paint(YELLOW, "~"),
                quote_empty(field(&u.before, f)),
                quote_empty(field(&u.after, f))
            );
        }
    }
    for p in &ch.delete {
        let _ = writeln!(
            out,
            "    {} {}  {}  {}",
            st.paint(RED, "-"),
            terminal(name(&p.entry)),
            terminal(&describe(&p.entry)),
            st.paint(DIM, &format!("# {}", terminal(&p.reason)))
        );
    }
}

fn quote_empty(s: String) -> String {
    let s = terminal(&s).into_owned();
    if s.is_empty() {
        "(none)".to_string()
    } else if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s
    }
}

fn association_line(
    out: &mut String,
    what: &str,
    change: Option<&Change<Option<ResourceId>>>,
    reason: &str,
    st: &Style,
) {
    let Some(c) = change else { return };
    let (sign, color) = if c.from.is_none() {
        ("+", GREEN)
    } else {
        ("~", YELLOW)
    };
    let _ = writeln!(
        out,
        "    {} {what}: {} -> {}  {}",
        st.paint(color, sign),
        terminal(&association_target(c.from.as_ref())),
        terminal(&association_target(c.to.as_ref())),
        st.paint(DIM, &format!("# {}", terminal(reason)))
    );
}
