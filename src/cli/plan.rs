//! `asenet plan`, `apply` and `verify`: the pipeline from YAML files against ARM (or the
//! mock). Exit codes follow `terraform plan -detailed-exitcode`: 0 no changes, 2 changes,
//! 1 error. The plan and the verify report are rendered by `report`; apply progress and
//! results are still rendered here, because their types (`ApplyEvent`, `ApplyReport`) live
//! in the shell's `apply`, which the core's `report` may not import.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context as _;

use crate::apply::{ApplyEvent, ApplyReport, WriteAction};
use crate::diff::Plan;
use crate::pipeline::{self, Pipeline};
use crate::report;
use crate::report::escape::terminal;

use super::OutputFormat;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<crate::api::AseConnectivity>> {
    Ok(crate::load::load_specs(files)?
        .into_iter()
        .map(|l| l.spec)
        .collect())
}

/// Renders a plan in the chosen format.
pub fn render_plan(plan: &Plan, output: OutputFormat, color: bool) -> String {
    match output {
        OutputFormat::Text => report::render_text(plan, color),
        OutputFormat::Json => report::render_json(plan),
        OutputFormat::Markdown => report::render_markdown(plan),
    }
}

pub fn run_plan(args: super::PlanArgs) -> anyhow::Result<ExitCode> {
    let specs = load(&args.files)?;
    let policy = super::policy_of(&args.policy)?;
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        let p = Pipeline::from_args(&args.azure)?;
        p.plan(&specs, &pipeline::scope_under(&specs, &policy))
            .await
    })?;
    let color = std::io::stdout().is_terminal();
    print!("{}", render_plan(&outcome.plan, args.output, color));
    Ok(plan_exit_code(&outcome.plan))
}

/// 1 when a spec could not be planned, 2 when there are changes, else 0.
pub fn plan_exit_code(plan: &Plan) -> ExitCode {
    if !plan.errors.is_empty() {
        ExitCode::from(1)
    } else if plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn run_apply(args: super::ApplyArgs) -> anyhow::Result<ExitCode> {
    let specs = load(&args.files)?;
    let policy = super::policy_of(&args.policy)?;
    let rt = runtime()?;
    let color = std::io::stdout().is_terminal();
    rt.block_on(async {
        let p = Pipeline::from_args(&args.azure)?;
        let scope = pipeline::scope_under(&specs, &policy);
        let mut outcome = p.plan(&specs, &scope).await?;
        print!("{}", report::render_text(&outcome.plan, color));
        // Specs in mode Plan or Observe never cause a write, here as in the operator: a
        // changed resource one of them contributes to is withheld whole.
        let read_only = pipeline::read_only_specs(&specs);
        let (writable, withheld): (Vec<_>, Vec<_>) = outcome
            .plan
            .resources
            .drain(..)
            .partition(|r| !r.has_changes() || pipeline::withheld_by(r, &read_only).is_empty());
        outcome.plan.resources = writable;
        for r in &withheld {
            let by: Vec<String> = pipeline::withheld_by(r, &read_only)
                .iter()
                .map(|k| k.to_string())
                .collect();
            println!(
                "Not applying {}: specs in mode Plan or Observe contribute to it ({}).",
                terminal(r.id.as_str()),
                terminal(&by.join(", "))
            );
        }
        if !outcome.plan.has_changes() {
            return Ok(if withheld.is_empty() {
                plan_exit_code(&outcome.plan)
            } else {
                ExitCode::from(2)
            });
        }
        if !args.auto_approve && !confirm()? {
            println!("\nApply cancelled.");
            return Ok(ExitCode::from(1));
        }
        println!();
        let printer = ProgressPrinter::new(color);
        let report = p
            .apply(&specs, &scope, outcome.clone(), &|e| printer.event(&e))
            .await?;
        println!();
        print!("{}", render_apply_report(&report, color));
        Ok::<_, anyhow::Error>(if outcome.plan.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Asks for `yes` on a terminal; refuses to prompt without one.
fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to ask for approval without a terminal on stdin; pass --auto-approve to apply non-interactively"
        );
    }
    print!(
        "\nDo you want to perform these actions?\n  asenet will perform the actions described above.\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

/// Prints apply progress, one line per event, in the style of `terraform apply`.
pub struct ProgressPrinter {
    color: bool,
    out: Mutex<()>,
}

impl ProgressPrinter {
    pub fn new(color: bool) -> Self {
        ProgressPrinter {
            color,
            out: Mutex::new(()),
        }
    }

    pub fn event(&self, e: &ApplyEvent) {
        let line = format_event(e, self.color);
        let _guard = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        println!("{line}");
    }
}

/// One progress line.
pub fn format_event(e: &ApplyEvent, color: bool) -> String {
    // Ids, statuses and reasons come from specs and from Azure (issue 13).
    let bold = |s: &str| {
        let s = terminal(s);
        if color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    match e {
        ApplyEvent::Started { id, action } => {
            format!("{}: {}...", bold(&report::resource_title(id)), action.verb())
        }
        ApplyEvent::Polling {
            id,
            status,
            elapsed,
            ..
        } => format!(
            "{}: Still {}... [{:.1}s elapsed, {}]",
            bold(&report::resource_title(id)),
            "working",
            elapsed.as_secs_f64(),
            terminal(status)
        ),
        ApplyEvent::Replanning {
            id,
            attempt,
            reason,
        } => format!(
            "{}: changed by someone else since it was read ({}); re-reading and re-planning (attempt {attempt})",
            bold(&report::resource_title(id)),
            terminal(reason)
        ),
        ApplyEvent::Unchanged { id } => format!(
            "{}: nothing left to change after re-reading",
            bold(&report::resource_title(id))
        ),
        ApplyEvent::Done {
            id,
            action,
            elapsed,
        } => format!(
            "{}: {} after {:.1}s",
            bold(&report::resource_title(id)),
            action.done(),
            elapsed.as_secs_f64()
        ),
    }
}

/// What was done, and the closing `Apply complete! Resources: ...` line.
pub fn render_apply_report(r: &ApplyReport, color: bool) -> String {
    let mut out = String::new();
    for w in &r.written {
        let what = match w.action {
            WriteAction::Create => "created",
            WriteAction::Update => "updated",
            WriteAction::Associate => "associated",
            WriteAction::Dissociate => "dissociated",
            WriteAction::Delete => "deleted",
        };
        out.push_str(&format!(
            "  {} {what} (+{} ~{} -{})\n",
            terminal(&report::resource_title(&w.id)),
            w.counts.0,
            w.counts.1,
            w.counts.2
        ));
    }
    if r.replans > 0 {
        out.push_str(&format!(
            "  {} re-read(s) after concurrent changes in Azure\n",
            r.replans
        ));
    }
    if !r.written.is_empty() || r.replans > 0 {
        out.push('\n');
    }
    let line = r.summary_line();
    if color {
        out.push_str(&format!("\x1b[1;32m{line}\x1b[0m\n"));
    } else {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub fn run_verify(args: super::VerifyArgs) -> anyhow::Result<ExitCode> {
    let specs = load(&args.files)?;
    let policy = super::policy_of(&args.policy)?;
    let rt = runtime()?;
    let report = rt.block_on(async {
        let p = Pipeline::from_args(&args.azure)?;
        p.verify_in(&specs, &pipeline::scope_under(&specs, &policy))
            .await
    })?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => print!("{}", report::verify::render_verify(&report)),
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
