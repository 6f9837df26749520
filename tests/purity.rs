//! Two checks of the structure (docs/style.md rule 2, issue 15):
//!
//! - The core is pure: no async, no clock, no randomness, no environment, no I/O, no
//!   kube or Azure SDK types. Every source file of the core modules ([`CORE`]) is read and
//!   the test fails when code (not comments or string literals) names one of them, except
//!   for the few named, explained exceptions in [`PURITY_EXCEPTIONS`].
//! - The layering of `src/`: the `crate::…` and `super::…` paths of every file give the
//!   import graph between top-level modules; it must have no cycle, no edge from the ARM
//!   layer, the pipeline or the core to the command line, none from the core to the shell
//!   (`azure`, `observe`, `apply`, `pipeline`, `controller`, `cli`, ...), none from `azure`
//!   to `controller`, none from the core past `validate` to the CRD types (`api`), and none
//!   to the demo/test `fixture` from anything but `cli`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod common;
use common::rust_files;

/// Forbidden tokens. Those ending in `_` or `::` are prefixes (`azure_core`, `std::time::`);
/// the others must stand as whole words.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "async",
    "await",
    "std::time",
    "SystemTime",
    "Instant",
    "std::env",
    "env!",
    "std::fs",
    "std::io",
    "std::net::TcpStream",
    "rand",
    "kube",
    "k8s_openapi",
    "azure_core",
    "azure_identity",
    "azure_mgmt_",
    "reqwest",
    "hyper",
    "thread_rng",
    "getrandom",
];

/// The line without a trailing `//` comment and with the contents of its string literals
/// blanked (a `//` or a forbidden word inside a string literal is no code).
fn code_part(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut prev = ' ';
    for c in line.chars() {
        match c {
            '"' if prev != '\\' => {
                in_str = !in_str;
                out.push(c);
            }
            '/' if !in_str && prev == '/' => {
                out.pop();
                return out;
            }
            _ if in_str => out.push(' '),
            _ => out.push(c),
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Where `token` occurs in `code` at a word start (and, unless it is a prefix token, at a
/// word end).
fn find_token(code: &str, token: &str) -> bool {
    let prefix_token = token.ends_with('_') || token.ends_with("::") || token.ends_with('!');
    let mut from = 0;
    while let Some(pos) = code[from..].find(token) {
        let start = from + pos;
        let end = start + token.len();
        let before_ok = code[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c));
        let after_ok = prefix_token || code[end..].chars().next().is_none_or(|c| !is_ident(c));
        if before_ok && after_ok {
            return true;
        }
        from = end;
    }
    false
}

/// Files of the core that are not checked: the CRD definitions of the tenancy policy
/// (derived with kube's `CustomResource`, read by the controller; the decisions in
/// `tenancy/mod.rs` are checked).
const NOT_CORE_FILES: &[&str] = &["tenancy/api.rs"];

/// Files outside the core modules that are pure all the same and checked like them: the
/// controller's decision of status, conditions and events (issue 15), called by the
/// reconcile steps with everything it needs, `now` included.
const PURE_SHELL_FILES: &[&str] = &["controller/decide.rs", "controller/status.rs"];

/// Forbidden tokens a core file may name, and why that is no impurity.
const PURITY_EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "validate.rs",
        "k8s_openapi",
        "validate converts the CRD types, whose ports are k8s `IntOrString` values (data only)",
    ),
    (
        "tenancy/mod.rs",
        "kube",
        "namespace selectors are matched with kube-core's `Selector` (pure label matching, no client)",
    ),
    (
        "controller/decide.rs",
        "k8s_openapi",
        "the status it decides holds k8s `Condition`/`Time` values (data only; `now` is passed in)",
    ),
    (
        "controller/status.rs",
        "k8s_openapi",
        "the status it computes holds k8s `Condition`/`Time` values (data only)",
    ),
];

/// The source files of the core modules, relative to `src/`: `src/<m>.rs` and everything
/// under `src/<m>/`.
fn core_files(src: &Path) -> Vec<(String, PathBuf)> {
    let mut list = Vec::new();
    for m in CORE {
        let file = src.join(format!("{m}.rs"));
        if file.is_file() {
            list.push(file);
        }
        let dir = src.join(m);
        if dir.is_dir() {
            rust_files(&dir, &mut list);
        }
    }
    list.into_iter()
        .map(|f| {
            let rel = f
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, f)
        })
        .filter(|(rel, _)| !NOT_CORE_FILES.contains(&rel.as_str()))
        .collect()
}

/// Every forbidden token in the code of one file, as `file:line: ...`.
fn impurities(rel: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = code_part(line.trim_start());
        if code.trim().is_empty() {
            continue;
        }
        for t in FORBIDDEN {
            let excepted = PURITY_EXCEPTIONS
                .iter()
                .any(|(file, token, _)| *file == rel && token == t);
            if !excepted && find_token(&code, t) {
                found.push(format!("src/{rel}:{}: `{t}` in `{}`", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_core_imports_nothing_impure() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut list = core_files(&src);
    list.extend(
        PURE_SHELL_FILES
            .iter()
            .map(|rel| (rel.to_string(), src.join(rel))),
    );
    for m in [
        "controller/decide.rs",
        "resolver/mod.rs",
        "validate.rs",
        "diff.rs",
        "report/mod.rs",
        "tenancy/mod.rs",
    ] {
        assert!(
            list.iter().any(|(rel, _)| rel == m),
            "the core scan missed src/{m}: {list:?}"
        );
    }
    let mut found = Vec::new();
    for (rel, f) in &list {
        found.extend(impurities(rel, &std::fs::read_to_string(f).unwrap()));
    }
    assert!(
        found.is_empty(),
        "impure code in the core:\n{}",
        found.join("\n")
    );
}

#[test]
fn an_impure_line_in_a_core_file_is_named_and_exceptions_are_per_file() {
    let text = "//! doc\nuse std::fs::read;\nlet s = \"tokio\";\nuse kube::core::Selector;\n";
    assert_eq!(
        impurities("diff.rs", text),
        [
            "src/diff.rs:2: `std::fs` in `use std::fs::read;`",
            "src/diff.rs:4: `kube` in `use kube::core::Selector;`",
        ]
    );
    assert_eq!(
        impurities("tenancy/mod.rs", text),
        ["src/tenancy/mod.rs:2: `std::fs` in `use std::fs::read;`"]
    );
}

#[test]
fn the_checker_sees_code_and_ignores_comments() {
    assert!(find_token(&code_part("use tokio::sync;"), "tokio"));
    assert!(find_token(
        &code_part("let t = std::time::Instant::now();"),
        "std::time"
    ));
    assert!(find_token(&code_part("async fn x() {}"), "async"));
    assert!(find_token(&code_part("use azure_core::Url;"), "azure_core"));
    assert!(find_token(
        &code_part("use azure_mgmt_network::Client;"),
        "azure_mgmt_"
    ));
    assert!(!find_token(
        &code_part("let t = \"azure_core\"; // tokio"),
        "azure_core"
    ));
    assert!(!find_token(
        &code_part("fn azure_error_x() {}"),
        "azure_core"
    ));
    assert!(find_token(&code_part("let s = \"a\\\\\"; tokio"), "tokio"));
    assert!(!find_token(&code_part("// no async here"), "async"));
    assert!(!find_token(&code_part("let x = 1; // tokio"), "tokio"));
    assert!(!find_token(
        &code_part("check_azure_name(n)"),
        "azure_mgmt_"
    ));
    assert!(!find_token(&code_part("let operand = 1;"), "rand"));
    assert!(!find_token(
        &code_part("let s = \"https://x\"; // rand"),
        "rand"
    ));
}

// ---------------------------------------------------------------------------------------
// Layering
// ---------------------------------------------------------------------------------------

/// The pure core: decisions, no I/O (issue 15). One list for both checks: its files must
/// be pure, and it must not import the shell. `tenancy` is its policy decision (its CRD
/// types live in `tenancy::api`, see [`NOT_CORE_FILES`]). A module joins the core here.
const CORE: &[&str] = &[
    "model", "snapshot", "validate", "resolver", "diff", "evaluate", "report", "tenancy", "error",
];

/// Why an edge `from -> to` between top-level modules is forbidden, if it is.
fn forbidden(from: &str, to: &str) -> Option<&'static str> {
    let core = |m: &str| CORE.contains(&m);
    if to == "cli" && (from == "azure" || from == "pipeline" || core(from)) {
        return Some(
            "the ARM layer, the pipeline and the core must not depend on the command line",
        );
    }
    if core(from)
        && [
            "azure",
            "controller",
            "cli",
            "pipeline",
            "apply",
            "observe",
            "load",
            "logging",
            "fixture",
        ]
        .contains(&to)
    {
        return Some("the core must not depend on the shell (ARM, controller, CLI, pipeline, I/O)");
    }
    if from == "azure" && to == "controller" {
        return Some("the ARM layer must not depend on the controller");
    }
    if to == "api" && core(from) && from != "validate" && from != "tenancy" {
        return Some("the core must not depend on the CRD types (validate converts them)");
    }
    if to == "fixture" && from != "cli" {
        return Some("the demo/test fixture is used by the CLI's demo and by tests only");
    }
    None
}

/// One import between top-level modules, where it is written.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

/// The module path of a file under `src/` (`azure/mod.rs` -> `[azure]`,
/// `azure/wire.rs` -> `[azure, wire]`); `None` for the crate roots.
fn module_path(rel: &str) -> Option<Vec<String>> {
    let rel = rel.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.is_empty() || parts == ["lib"] || parts == ["main"] {
        return None;
    }
    Some(parts)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens of `text` that matter for paths, each with its line; comments, string and
/// character literals are dropped (a `crate::` in a doc comment or a message is no edge).
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        match ch {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if next == Some('/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            'r' if (next == Some('"') || next == Some('#')) && (i == 0 || !ident(c[i - 1])) => {
                // A raw string r"…" or r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push((Tok::Ident("r".into()), line));
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    match c.get(j) {
                        None => break,
                        Some('"') if (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) => {
                            j += 1 + hashes;
                            break;
                        }
                        Some('\n') => line += 1,
                        _ => {}
                    }
                    j += 1;
                }
                i = j;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    if c.get(i) == Some(&'\n') {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                // A char literal ('x', '\n', '\''), else a lifetime.
                if next == Some('\\') {
                    i += 2;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            ':' if next == Some(':') => {
                out.push((Tok::Colons, line));
                i += 2;
            }
            '{' => {
                out.push((Tok::Open, line));
                i += 1;
            }
            '}' => {
                out.push((Tok::Close, line));
                i += 1;
            }
            ',' => {
                out.push((Tok::Comma, line));
                i += 1;
            }
            _ if ident(ch) => {
                let start = i;
                while i < c.len() && ident(c[i]) {
                    i += 1;
                }
                out.push((Tok::Ident(c[start..i].iter().collect()), line));
            }
            _ if ch.is_whitespace() => i += 1,
            _ => {
                out.push((Tok::Other, line));
                i += 1;
            }
        }
    }
    out
}

/// The first segments a path continues with after `crate::` or `super::` at `toks[at]`:
/// one name, or the first name of each item of a `{…}` group. With their lines.
fn continuations(toks: &[(Tok, usize)], at: usize) -> Vec<(String, usize)> {
    match toks.get(at) {
        Some((Tok::Ident(name), line)) => vec![(name.clone(), *line)],
        Some((Tok::Open, _)) => {
            let mut out = Vec::new();
            let (mut depth, mut expect) = (0, true);
            for (t, line) in &toks[at..] {
                match t {
                    Tok::Open => {
                        depth += 1;
                        expect = depth == 1;
                    }
                    Tok::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Comma if depth == 1 => expect = true,
                    Tok::Ident(n) if expect && depth == 1 => {
                        out.push((n.clone(), *line));
                        expect = false;
                    }
                    _ => {}
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The imports of one file between top-level modules (`modules`), self-edges left out.
fn edges_of(rel: &str, text: &str, modules: &BTreeSet<String>) -> Vec<Edge> {
    let Some(file_path) = module_path(rel) else {
        return Vec::new();
    };
    let toks = tokens(text);
    let mut out = Vec::new();
    // Inline modules (`mod tests { … }`) nest the path `super` is relative to.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let push = |to: &str, line: usize, out: &mut Vec<Edge>| {
        if modules.contains(to) && to != file_path[0] {
            out.push(Edge {
                from: file_path[0].clone(),
                to: to.to_string(),
                file: format!("src/{rel}"),
                line,
            });
        }
    };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Open, _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Tok::Ident(k)
                if k == "crate"
                    && toks.get(i + 1).is_some_and(|t| t.0 == Tok::Colons)
                    && (i == 0 || toks[i - 1].0 != Tok::Colons) =>
            {
                for (name, line) in continuations(&toks, i + 2) {
                    push(&name, line, &mut out);
                }
            }
            Tok::Ident(k) if k == "super" && (i == 0 || toks[i - 1].0 != Tok::Colons) => {
                let mut here: Vec<String> = file_path.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut j = i;
                while matches!(&toks.get(j), Some((Tok::Ident(s), _)) if s == "super")
                    && toks.get(j + 1).is_some_and(|t| t.0 == Tok::Colons)
                {
                    here.pop();
                    j += 2;
                }
                for (name, line) in continuations(&toks, j) {
                    match here.first() {
                        Some(top) => push(top, line, &mut out),
                        None => push(&name, line, &mut out),
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The top-level modules of `src/` and the files under it (path relative to `src/`, text).
fn read_tree(src: &Path) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut list = Vec::new();
    rust_files(src, &mut list);
    let mut modules = BTreeSet::new();
    let mut texts = Vec::new();
    for f in list {
        let rel = f
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if let Some(m) = module_path(&rel) {
            modules.insert(m[0].clone());
        }
        texts.push((rel, std::fs::read_to_string(&f).unwrap()));
    }
    (modules, texts)
}

/// Every layering violation of a tree: forbidden edges, then the edges of every cycle
/// (each strongly connected set of top-level modules), each naming file, line and edge.
fn violations(modules: &BTreeSet<String>, texts: &[(String, String)]) -> Vec<String> {
    let edges: Vec<Edge> = texts
        .iter()
        .flat_map(|(rel, text)| edges_of(rel, text, modules))
        .collect();
    let mut out = Vec::new();
    for e in &edges {
        if let Some(why) = forbidden(&e.from, &e.to) {
            out.push(format!(
                "{}:{}: {} -> {}: {why}",
                e.file, e.line, e.from, e.to
            ));
        }
    }
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &edges {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    let reach = |a: &str, b: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![a];
        while let Some(m) = stack.pop() {
            if m == b {
                return true;
            }
            if seen.insert(m) {
                stack.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
        false
    };
    for e in &edges {
        // An edge lies on a cycle when its target reaches its source back.
        if reach(&e.to, &e.from) {
            out.push(format!(
                "{}:{}: {} -> {}: on an import cycle ({} reaches {} back)",
                e.file, e.line, e.from, e.to, e.to, e.from
            ));
        }
    }
    out
}

#[test]
fn the_modules_of_src_import_only_downwards_and_without_cycles() {
    let (modules, texts) = read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        modules.contains("azure") && modules.contains("model") && modules.contains("cli"),
        "the module scan found {modules:?}"
    );
    let found = violations(&modules, &texts);
    assert!(
        found.is_empty(),
        "layering violations in src/:\n{}",
        found.join("\n")
    );
}

/// The real tree with one file changed, for the checks below.
fn tree_with(rel: &str, text: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let (modules, mut texts) = read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    texts.retain(|(r, _)| r != rel);
    texts.push((rel.to_string(), text.to_string()));
    (modules, texts)
}

#[test]
fn a_back_edge_from_the_arm_layer_to_the_cli_is_named_with_file_and_line() {
    // The edge this issue removed: azure/credential.rs importing the CLI's credential kind.
    let (modules, texts) = tree_with(
        "azure/credential.rs",
        "//! x\n\nuse crate::cli::CredentialKind;\n",
    );
    let found = violations(&modules, &texts);
    assert!(
        found.iter().any(|v| v.starts_with(
            "src/azure/credential.rs:3: azure -> cli: the ARM layer, the pipeline and the core must not depend on the command line"
        )),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("src/azure/credential.rs:3: azure -> cli: on an import cycle")),
        "{found:#?}"
    );
}

#[test]
fn grouped_imports_and_super_paths_count_as_edges() {
    let modules: BTreeSet<String> = ["apply", "azure", "model", "resolver", "api"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // A fixture in the ARM layer calling apply's renderers (the other removed edge), in a
    // group, and the resolver reaching the CRD types through `super::super`.
    let texts =
        vec![
        (
            "azure/seed.rs".to_string(),
            "use crate::{\n    model::ResourceId,\n    apply::{render_rule, render_route},\n};\n"
                .to_string(),
        ),
        ("apply.rs".to_string(), "use crate::azure::ArmClient;\n".to_string()),
        (
            "resolver/build.rs".to_string(),
            "fn f() {}\nuse super::super::api::AseVersion;\n".to_string(),
        ),
    ];
    let found = violations(&modules, &texts);
    assert!(
        found.contains(
            &"src/azure/seed.rs:3: azure -> apply: on an import cycle (apply reaches azure back)"
                .to_string()
        ),
        "{found:#?}"
    );
    assert!(
        found.contains(&"src/resolver/build.rs:2: resolver -> api: the core must not depend on the CRD types (validate converts them)".to_string()),
        "{found:#?}"
    );
}

#[test]
fn paths_in_comments_strings_and_test_modules_are_read_correctly() {
    let modules: BTreeSet<String> = ["diff", "cli", "model"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let text = "//! see crate::cli::run\n\
                /* crate::cli */\n\
                const S: &str = \"crate::cli::x\";\n\
                const R: &str = r#\"crate::cli\"#;\n\
                const C: char = '\"';\n\
                fn f<'a>(x: &'a str) {}\n\
                #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::model::X;\n}\n";
    let edges = edges_of("diff.rs", text, &modules);
    let got: Vec<(String, usize)> = edges.iter().map(|e| (e.to.clone(), e.line)).collect();
    // Only the test module's `super::super::model` (diff::tests -> root -> model) is an
    // edge: `super::*` stays in `diff`, and every `crate::cli` is in a comment or literal.
    assert_eq!(got, vec![("model".to_string(), 10)]);
}
