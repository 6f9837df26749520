//! Escaping of user-controlled strings for each output format (issue 13, defect 4).
//!
//! Spec names, field values, error messages, rule and route names (also foreign ones read
//! from Azure) reach reports that people trust: a pull-request comment, a terminal. Each
//! such string is escaped for its format at the point it is written, so that it shows as
//! what it is and can add no structure: no heading, link, image or HTML in Markdown, no
//! second line and no escape sequence on a terminal. Ordinary names and values (letters,
//! digits, `-./:,*` and spaces) come out unchanged. JSON needs nothing here: serde_json
//! escapes quotes and every control character.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters a terminal would act on: C0 controls (ESC, BEL, CR, LF, TAB, ...), DEL, C1
/// controls, and the Unicode bidirectional overrides and isolates, which reorder what is
/// shown ("Trojan Source").
fn is_terminal_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every terminal control character shown as a visible escape (`\n`, `\r`,
/// `\t`, `\u{1b}`), so a value prints on one line and sends no escape sequence.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_terminal_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_terminal_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` as Markdown text inside a table cell or a list item: control characters as visible
/// escapes (no line break, so nothing can start a heading, quote or fence), and the
/// characters that make structure inline backslash-escaped: `` ` `` (code spans), `*` `_`
/// (emphasis), `[` `]` (links and images; without them `!`, `(` and `)` are inert), `<` `>`
/// (HTML, comments, autolinks), `|` (table cells), `#`, `&` (entities) and `\` itself.
/// A lone `*` (the "any" address or port) cannot open emphasis and stays as it is.
pub fn markdown(s: &str) -> Cow<'_, str> {
    const SPECIAL: &[char] = &['\\', '`', '*', '_', '[', ']', '<', '>', '|', '#', '&'];
    let visible = terminal(s);
    if visible == "*" || !visible.contains(SPECIAL) {
        return visible;
    }
    let mut out = String::with_capacity(visible.len() + 8);
    for c in visible.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if SPECIAL.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` as a Markdown code span, safe in a table cell: delimited by one backtick more than
/// the longest run of backticks inside (padded with a space when `s` starts or ends with
/// one, CommonMark 6.1), control characters as visible escapes, `|` escaped (GFM splits
/// table cells on `|` even inside code spans).
pub fn code(s: &str) -> String {
    let visible = terminal(s).replace('|', "\\|");
    let fence = "`".repeat(longest_backtick_run(&visible) + 1);
    let pad = if visible.starts_with('`') || visible.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{visible}{pad}{fence}")
}

/// A fenced code block of `lines` (each escaped with [`terminal`], so none can hold a line
/// break), its fence longer than any backtick run inside so no line can close it.
pub fn code_block(info: &str, lines: &[String]) -> String {
    let lines: Vec<Cow<'_, str>> = lines.iter().map(|l| terminal(l)).collect();
    let longest = lines
        .iter()
        .map(|l| longest_backtick_run(l))
        .max()
        .unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let mut out = format!("{fence}{info}\n");
    for l in &lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&fence);
    out.push('\n');
    out
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_and_values_are_unchanged_in_every_format() {
        for s in [
            "asenet-ase-two-in-web",
            "network/ase-two",
            "spec.inbound[1].from[0].cidr",
            "web (Http, Https) from network/ase-one",
            "*",
            "10.0.0.0/8",
        ] {
            assert_eq!(terminal(s), s);
        }
        assert_eq!(
            markdown("web (Http, Https) from network/ase-one"),
            "web (Http, Https) from network/ase-one"
        );
        assert_eq!(markdown("*"), "*");
        assert_eq!(code("asenet-ase-two-in-web"), "`asenet-ase-two-in-web`");
    }

    #[test]
    fn terminal_control_characters_become_visible_escapes() {
        assert_eq!(terminal("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(terminal("\x1b]0;pwned\x07x"), "\\u{1b}]0;pwned\\u{7}x");
        assert_eq!(terminal("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(terminal("\u{9b}31m"), "\\u{9b}31m");
    }

    #[test]
    fn markdown_structure_in_a_value_is_escaped() {
        let hostile =
            "Http`\n\n### ✅ no changes\n![x](http://e/x.png) [a](http://e) <!-- c --> *b* _i_ | c";
        let out = markdown(hostile);
        assert!(!out.contains('\n'));
        for needle in ["![", "](", "<!--", "*b*", "_i_", "| c", "`"] {
            assert!(
                !out.contains(needle) || out.contains(&format!("\\{needle}")),
                "{needle} in {out}"
            );
        }
        assert!(out.contains(r"\`\\n\\n\#\#\# ✅"), "{out}");
        assert!(out.contains("!\\[x\\](http://e/x.png)"), "{out}");
        assert!(out.contains("&lt;!-- c --&gt;"), "{out}");
    }

    #[test]
    fn a_code_span_outlasts_the_backticks_inside() {
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(code("a|b\nc"), "`a\\|b\\nc`");
    }

    #[test]
    fn a_code_block_fence_outlasts_any_line() {
        let block = code_block("text", &["```".to_string(), "x\n```".to_string()]);
        assert!(block.starts_with("````text\n"), "{block}");
        assert!(block.ends_with("\n````\n"), "{block}");
        assert_eq!(block.lines().count(), 4, "{block}");
    }
}
