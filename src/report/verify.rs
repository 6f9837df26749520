//! The text of `asenet verify`: a table of required flows (verdict and deciding rule), a
//! table of required destinations under forced tunneling, the errors and the verdict line.
//! The report comes from `evaluate::verify`; JSON is its serde form.

use crate::evaluate::verify::VerifyReport;
use crate::model::Access;

use super::escape::terminal;

/// A table of flows, verdict and deciding rule; then routes, errors and the verdict.
pub fn render_verify(r: &VerifyReport) -> String {
    let mut out = flow_table(r);
    if !r.routes.is_empty() {
        out.push('\n');
        out.push_str(&route_table(r));
    }
    for e in &r.errors {
        out.push_str(&format!("Error: {}\n", terminal(&e.to_string())));
    }
    out.push('\n');
    out.push_str(&verdict(r));
    out
}

/// Left-aligned columns separated by two spaces, trailing spaces trimmed; the column
/// `unpadded` (if any) is written as is.
fn columns<const N: usize>(rows: &[[String; N]], unpadded: Option<usize>) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if Some(i) == unpadded {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Every required flow; cells hold names and reasons from specs, shown escaped (issue 13).
fn flow_table(r: &VerifyReport) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "SPEC".into(),
        "NSG".into(),
        "FLOW".into(),
        "VERDICT".into(),
        "DECIDED BY".into(),
        "REQUIRED BECAUSE".into(),
    ]];
    for f in &r.flows {
        rows.push([
            f.spec.to_string(),
            f.flow.network_security_group.name().to_string(),
            format!(
                "{:?} {} {} -> {}:{}",
                f.flow.direction, f.flow.protocol, f.flow.source, f.flow.destination, f.flow.port
            ),
            match f.verdict.access {
                Access::Allow => "allowed".into(),
                Access::Deny => "DENIED".into(),
            },
            if f.nsg_exists {
                format!("{} ({})", f.verdict.rule, f.verdict.priority)
            } else {
                f.verdict.rule.clone()
            },
            f.flow.reason.to_string(),
        ]);
    }
    for row in rows.iter_mut() {
        for c in row.iter_mut() {
            *c = terminal(c).into_owned();
        }
    }
    columns(&rows, Some(5))
}

/// Every required destination under forced tunneling and the route that takes it.
fn route_table(r: &VerifyReport) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "SPEC".into(),
        "DESTINATION".into(),
        "NEXT HOP".into(),
        "VERDICT".into(),
        "ROUTE (first wrong address, else first checked)".into(),
    ]];
    for v in &r.routes {
        let c = &v.check;
        let (hop, via) = match (&c.route, c.address) {
            (Some(route), Some(ip)) => (
                format!("{:?}", route.next_hop),
                format!(
                    "{ip} via {} {:?} ({})",
                    route.prefix, route.origin, route.source
                ),
            ),
            _ => ("-".into(), "no address to check".into()),
        };
        rows.push([
            v.spec.to_string(),
            c.destination.clone(),
            hop,
            if c.ok {
                "ok".into()
            } else {
                format!("WRONG (want {:?})", c.expected)
            },
            via,
        ]);
    }
    columns(&rows, None)
}

fn verdict(r: &VerifyReport) -> String {
    if r.passed() {
        format!(
            "Verify passed: all {} required flows are allowed, all {} required destinations take the promised next hop.\n",
            r.flows.len(),
            r.routes.len()
        )
    } else {
        format!(
            "Verify FAILED: {} of {} required flows denied, {} of {} required destinations misrouted, {} spec error(s).\n",
            r.denied().count(),
            r.flows.len(),
            r.misrouted().count(),
            r.routes.len(),
            r.errors.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{SpecError, SpecErrorKind};
    use crate::model::SpecKey;

    #[test]
    fn an_empty_report_is_the_header_and_the_passed_line() {
        assert_eq!(
            render_verify(&VerifyReport::default()),
            "SPEC  NSG  FLOW  VERDICT  DECIDED BY  REQUIRED BECAUSE\n\nVerify passed: all 0 required flows are allowed, all 0 required destinations take the promised next hop.\n"
        );
    }

    #[test]
    fn a_spec_error_is_shown_escaped_and_fails_the_verdict() {
        let key = SpecKey::new("t", "a");
        let report = VerifyReport {
            errors: vec![SpecError::new(
                &key,
                SpecErrorKind::InvalidField,
                "spec.subnet",
                "x",
                "bad \u{1b}[31m value",
            )],
            ..VerifyReport::default()
        };
        let text = render_verify(&report);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            text.contains("\nError: spec t/a: spec.subnet: bad "),
            "{text}"
        );
        assert!(
            text.ends_with("\nVerify FAILED: 0 of 0 required flows denied, 0 of 0 required destinations misrouted, 1 spec error(s).\n"),
            "{text}"
        );
    }
}
