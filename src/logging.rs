//! Log output that never carries a credential (issue 13, defect 1).
//!
//! Every log line asenet writes passes through [`RedactingWriter`], whatever the level and
//! whichever crate logged it: `azure_core` 0.21 dumps whole requests at `debug`
//! (`policies::transport`) and its `Headers` Debug impl redacts every header *except*
//! `Authorization`; a future dependency may log a token-request body. Redacting the
//! formatted text at the writer covers all of them, in the text and the JSON format.
//!
//! On top of that, [`env_filter`] keeps the transport dump off unless `RUST_LOG` names
//! `azure_core` explicitly: a plain `RUST_LOG=debug` (the chart's `controller.logLevel`)
//! should not turn every ARM request into a multi-line log record.

use std::io::{self, Write};
use std::sync::LazyLock;

use regex::Regex;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// The target of `azure_core`'s whole-request dump.
const TRANSPORT_DUMP: &str = "azure_core::policies::transport";

/// Secrets as they appear in logged text, raw or inside a JSON-escaped string:
/// - `Bearer <token>` (Authorization and WWW-Authenticate headers);
/// - form and query parameters of token requests (`client_secret=`, `client_assertion=`,
///   `assertion=`, `*_token=`, `password=`);
/// - JSON members holding tokens (`"access_token": "..."`, also `\"...\"` when the JSON
///   sits inside a JSON log line);
/// - anything shaped like a JWT (access tokens, federated service-account tokens).
static SECRETS: LazyLock<Regex> = LazyLock::new(|| {
    let pattern = concat!(
        r#"(?i)(?P<bearer>\bbearer(?:\s+|%20|\+))[A-Za-z0-9\-._~+/]+=*"#,
        r#"|(?P<form>\b(?:client_secret|client_assertion|assertion|access_token|refresh_token|id_token|password)\s*=\s*)[^&\s"'\\,;)]+"#,
        r#"|(?P<json>\\?"(?:access_token|refresh_token|id_token|client_secret|client_assertion|accessToken|refreshToken|token|secret)\\?"\s*:\s*\\?")(?:[^"\\]|\\[^"])+"#,
        r#"|eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"#,
    );
    // The pattern is a constant: a failure here is a programming error caught by every
    // test that logs, not something input can cause.
    Regex::new(pattern).expect("the secret pattern is a valid regex")
});

/// `text` with every secret replaced by [`REDACTED`] (the prefix that identifies it kept).
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    SECRETS.replace_all(text, |c: &regex::Captures<'_>| {
        let prefix = ["bearer", "form", "json"]
            .iter()
            .find_map(|n| c.name(n))
            .map_or("", |m| m.as_str());
        format!("{prefix}{REDACTED}")
    })
}

/// A `MakeWriter` whose writers buffer one log record and write it redacted when dropped
/// (the fmt layer makes one writer per record, so a secret split across two `write`
/// calls is still seen whole).
#[derive(Debug, Clone)]
pub struct RedactingWriter<M> {
    inner: M,
}

impl<M> RedactingWriter<M> {
    pub fn new(inner: M) -> Self {
        RedactingWriter { inner }
    }
}

/// One record being written; see [`RedactingWriter`].
pub struct RedactingRecord<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> Write for RedactingRecord<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> RedactingRecord<W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let out = redact(&text);
        self.inner.write_all(out.as_bytes())?;
        self.buffer.clear();
        Ok(())
    }
}

impl<W: Write> Drop for RedactingRecord<W> {
    fn drop(&mut self) {
        // A log line that cannot be written has nowhere to report that failure.
        let _ = self.emit();
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingWriter<M> {
    type Writer = RedactingRecord<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingRecord {
            inner: self.inner.make_writer(),
            buffer: Vec::new(),
        }
    }
}

/// Log format: `json` (one object per line, for log collectors) or `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// asenet's subscriber: `filter`, `format`, and every record redacted on its way to
/// `writer` (the operator passes stderr; tests pass a buffer). `ansi`: colour codes in
/// text output, only for a terminal (a log collector or a file would store the escape
/// codes; tracing-subscriber colours by default, whatever the output is).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(RedactingWriter::new(writer));
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// The filter of asenet's log output: `rust_log` (the `RUST_LOG` value) or `default`, with
/// `azure_core`'s whole-request dump off unless `rust_log` names `azure_core` itself.
pub fn env_filter(rust_log: Option<&str>, default: &str) -> EnvFilter {
    let spec = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or(default);
    let mut filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new(default));
    if !spec.contains("azure_core") {
        if let Ok(directive) = format!("{TRANSPORT_DUMP}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_in_a_header_dump_is_redacted() {
        let line = r#"headers: {"authorization": HeaderValue("Bearer abc.DEF-123_x/y+z=")}"#;
        let out = redact(line);
        assert_eq!(
            out,
            r#"headers: {"authorization": HeaderValue("Bearer [REDACTED]")}"#
        );
    }

    #[test]
    fn token_request_form_parameters_are_redacted() {
        let body = "grant_type=client_credentials&client_id=c&client_secret=s3cr3t%2Fx&client_assertion=aaa.bbb.ccc&scope=x";
        let out = redact(body);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(!out.contains("aaa.bbb"), "{out}");
        assert!(out.contains("client_id=c&"), "{out}");
        assert!(out.contains("client_secret=[REDACTED]"), "{out}");
    }

    #[test]
    fn tokens_in_json_bodies_are_redacted_also_inside_a_json_log_line() {
        let raw = r#"{"token_type":"Bearer","access_token":"opaque-value","expires_in":3599}"#;
        assert_eq!(
            redact(raw),
            r#"{"token_type":"Bearer","access_token":"[REDACTED]","expires_in":3599}"#
        );
        let escaped = r#"{"message":"body {\"access_token\":\"opaque-value\"}"}"#;
        let out = redact(escaped);
        assert!(!out.contains("opaque-value"), "{out}");
    }

    #[test]
    fn a_jwt_anywhere_is_redacted() {
        let out = redact("federated token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl read");
        assert_eq!(out, "federated token [REDACTED] read");
    }

    #[test]
    fn ordinary_log_lines_are_left_as_they_are() {
        let line = "PUT /subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg status=200";
        assert_eq!(redact(line), line);
    }

    #[test]
    fn the_transport_dump_is_off_unless_azure_core_is_named() {
        let plain = env_filter(Some("trace"), "info").to_string();
        assert!(plain.contains(&format!("{TRANSPORT_DUMP}=off")), "{plain}");
        let named = env_filter(Some("trace,azure_core=trace"), "info").to_string();
        assert!(!named.contains("=off"), "{named}");
    }
}
