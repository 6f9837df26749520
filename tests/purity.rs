//! The resolver is pure (docs/style.md rule 2): no async, no clock, no randomness, no
//! environment, no I/O, no kube or Azure SDK types. This test reads every source file under
//! `src/resolver/` and fails when code (not comments) names one of them.

use std::path::{Path, PathBuf};

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
    "azure_",
    "reqwest",
    "hyper",
    "thread_rng",
    "getrandom",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The line without a trailing `//` comment (a `//` inside a string literal is kept).
fn code_part(line: &str) -> &str {
    let mut in_str = false;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '/' if !in_str && prev == '/' => return &line[..i - 1],
            _ => {}
        }
        prev = c;
    }
    line
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

#[test]
fn the_resolver_imports_nothing_impure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/resolver");
    let mut list = Vec::new();
    files(&root, &mut list);
    assert!(!list.is_empty(), "no sources under {}", root.display());
    let mut found = Vec::new();
    for f in list {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = code_part(line.trim_start());
            if code.trim().is_empty() {
                continue;
            }
            for t in FORBIDDEN {
                if find_token(code, t) {
                    found.push(format!(
                        "{}:{}: `{t}` in `{}`",
                        f.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "impure code under src/resolver:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_code_and_ignores_comments() {
    assert!(find_token(code_part("use tokio::sync;"), "tokio"));
    assert!(find_token(
        code_part("let t = std::time::Instant::now();"),
        "std::time"
    ));
    assert!(find_token(code_part("async fn x() {}"), "async"));
    assert!(find_token(code_part("use azure_core::Url;"), "azure_"));
    assert!(!find_token(code_part("// no async here"), "async"));
    assert!(!find_token(code_part("let x = 1; // tokio"), "tokio"));
    assert!(!find_token(code_part("check_azure_name(n)"), "azure_"));
    assert!(!find_token(code_part("let operand = 1;"), "rand"));
    assert!(!find_token(
        code_part("let s = \"https://x\"; // rand"),
        "rand"
    ));
}
