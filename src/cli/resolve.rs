//! `asenet resolve -f PATH [--snapshot FILE] [--output text|json]`: validate and resolve
//! specs against a snapshot file, print the desired rules and routes per Azure resource.
//! No Azure access. Exit 1, with one line per error on stderr, when a spec is invalid or
//! fails to resolve; the resolvable part is printed anyway.

use std::process::ExitCode;

use anyhow::Context;

use super::{OutputFormat, ResolveArgs};
use crate::load::{load_snapshot, load_specs};
use crate::report::desired::{render_json, render_text};
use crate::resolver::{resolve, SpecOutcome};
use crate::snapshot::Snapshot;
use crate::validate::validate_all;

pub fn run(args: ResolveArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_specs(&args.files)?;
    let snapshot = match &args.snapshot {
        Some(p) => load_snapshot(p)?,
        None => Snapshot::default(),
    };
    let specs: Vec<_> = loaded.into_iter().map(|l| l.spec).collect();
    let refused = super::policy_of(&args.policy)?.refusals(&specs);
    let (mut valid, mut invalid) = validate_all(&specs);
    // Refused specs (tenancy) are treated as invalid ones, as `plan` treats them.
    valid.retain(|v| !refused.contains_key(&v.key));
    invalid.splice(0..0, refused.into_values().flatten());
    let mut desired = resolve(&valid, &snapshot);
    // Invalid specs are reported next to the ones that failed to resolve.
    for e in &invalid {
        if let Some(SpecOutcome::Failed { errors }) = desired.specs.get_mut(&e.spec) {
            errors.push(e.clone());
        } else {
            desired.specs.insert(
                e.spec.clone(),
                SpecOutcome::Failed {
                    errors: vec![e.clone()],
                },
            );
        }
    }
    let errors = desired.errors();

    let text = match args.output {
        OutputFormat::Json => render_json(&desired).context("rendering JSON")?,
        OutputFormat::Text => render_text(&desired),
        OutputFormat::Markdown => {
            let text = render_text(&desired);
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            crate::report::escape::code_block("text", &lines)
        }
    };
    print!("{text}");
    for e in &errors {
        eprintln!("error: {}", crate::report::escape::terminal(&e.to_string()));
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
