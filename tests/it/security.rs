//! Issue 13: a token never leaves its origin; identity endpoints are held to the ARM
//! endpoint's rule. (That no log prints a token is `tests/log_redaction.rs`: it installs
//! its own subscriber, which needs a process of its own.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asenet::azure::credential::{self, StaticToken};
use asenet::azure::{ArmClient, ArmClientOptions, ArmError, RetryConfig};
use asenet::cli::CredentialKind;
use asenet::model::ResourceId;
use mock_arm::{FaultAction, FaultSpec, RunningMock};
use serde_json::json;

const STATIC_TOKEN: &str = "static-token-7f3a9c-must-never-be-logged";
const CLIENT_SECRET: &str = "client-secret-5d21e8-must-never-be-logged";
const NSG: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/network/providers/Microsoft.Network/networkSecurityGroups/sql-nsg";

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed")
}

/// What Azure holds for the seed example (`mock-seed.yaml`, `snapshot.yaml`).
fn seed_azure_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/azure/seed")
}

fn fast_options() -> ArmClientOptions {
    ArmClientOptions {
        retry: RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_millis(200),
        },
        lro_default_poll: Duration::from_millis(20),
        lro_max_poll: Duration::from_millis(100),
        lro_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
    }
}

fn http() -> Arc<dyn azure_core::HttpClient> {
    Arc::new(asenet::azure::http_client(None, Duration::from_secs(5)).unwrap())
}

/// The mock ARM seeded with examples/seed, fast long-running operations.
async fn seeded_mock() -> RunningMock {
    let seed = std::fs::read_to_string(seed_azure_dir().join("mock-seed.yaml")).unwrap();
    let config = mock_arm::Config {
        clock_scale: 20.0,
        lro_delay: Duration::from_secs(1),
        lro_retry_after: Duration::from_millis(200),
        ..mock_arm::Config::default()
    };
    let state =
        mock_arm::MockState::new(config, mock_arm::Seed::from_yaml(&seed).unwrap()).unwrap();
    mock_arm::start(state, mock_arm::ServeOptions::default())
        .await
        .unwrap()
}

/// A loopback listener that counts the connections made to it and drops each at once.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (origin, count)
}

/// A write (PUT of an NSG, or DELETE of an unused one) whose answer points its operation
/// URLs at a loopback listener that counts connections.
async fn poll_to_foreign_origin(method: &str) -> (Result<(), ArmError>, usize, RunningMock) {
    let mock = seeded_mock().await;
    let arm = ArmClient::new(
        &mock.base_url,
        Arc::new(StaticToken::new(STATIC_TOKEN)),
        http(),
        fast_options(),
    )
    .unwrap();
    let id = ResourceId::parse(&NSG.replace("sql-nsg", "spare-nsg")).unwrap();
    let body = json!({"location": "westeurope", "properties": {"securityRules": []}});
    if method == "DELETE" {
        arm.put(&id, body.clone(), None, &|_| {}).await.unwrap();
    }
    let (origin, connections) = counting_listener().await;
    mock.state.inject_fault(FaultSpec {
        method: Some(method.into()),
        path: Some("spare-nsg".into()),
        count: 1,
        action: FaultAction::ForeignPollUrl { origin },
    });
    let result = if method == "PUT" {
        arm.put(&id, body.clone(), None, &|_| {}).await.map(|_| ())
    } else {
        arm.delete(&id, None, &|_| {}).await
    };
    // Give a poll that did go out the time to connect.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (result, connections.load(Ordering::SeqCst), mock)
}

#[tokio::test]
async fn an_operation_url_on_another_origin_is_refused_and_never_gets_the_token() {
    for method in ["PUT", "DELETE"] {
        let (result, connections, _mock) = poll_to_foreign_origin(method).await;
        let err = result.expect_err("a foreign poll URL must fail the write");
        let text = err.to_string();
        assert!(
            matches!(err, ArmError::ForeignUrl { .. }),
            "{method}: {text}"
        );
        assert!(text.contains("Azure-AsyncOperation"), "{method}: {text}");
        assert!(text.contains("spare-nsg"), "{method}: {text}");
        assert_eq!(connections, 0, "{method}: the foreign origin was contacted");
    }
}

#[test]
fn follow_up_urls_need_the_endpoints_scheme_host_and_port() {
    let ok = asenet::azure::check_secure_url("endpoint", "http://127.0.0.1:8443");
    assert!(ok.is_ok());
    for (value, needle) in [
        ("http://10.0.0.5:8080", "plain http"),
        ("http://login.example.com", "plain http"),
        ("ftp://127.0.0.1", "unsupported scheme"),
        ("not a url", "is not a URL"),
    ] {
        let err = asenet::azure::check_secure_url("AZURE_AUTHORITY_HOST", value).unwrap_err();
        assert!(err.contains("AZURE_AUTHORITY_HOST"), "{err}");
        assert!(err.contains(value), "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn an_http_authority_host_is_refused_before_any_secret_is_sent() {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        token_file.path(),
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    )
    .unwrap();
    let file = token_file.path().display().to_string();
    for kind in [
        CredentialKind::ClientSecret,
        CredentialKind::WorkloadIdentity,
        CredentialKind::Auto,
    ] {
        for authority in ["http://login.example.com", "http://10.0.0.5:8080/"] {
            let file = file.clone();
            let lookup = move |k: &str| match k {
                "AZURE_AUTHORITY_HOST" => Some(authority.to_string()),
                "AZURE_TENANT_ID" => Some("tenant".into()),
                "AZURE_CLIENT_ID" => Some("client".into()),
                "AZURE_CLIENT_SECRET" => Some(CLIENT_SECRET.into()),
                "AZURE_FEDERATED_TOKEN_FILE" => Some(file.clone()),
                _ => None,
            };
            let err = match credential::credential_from(kind, None, http(), &lookup) {
                Ok(_) => panic!("{kind:?} accepted AZURE_AUTHORITY_HOST {authority}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains("AZURE_AUTHORITY_HOST"), "{err}");
            assert!(err.contains(authority), "{err}");
            assert!(err.contains("plain http"), "{err}");
        }
    }
    // https, and http to loopback (a local token server), are accepted.
    for authority in ["https://login.microsoftonline.us", "http://127.0.0.1:9"] {
        let lookup = move |k: &str| match k {
            "AZURE_AUTHORITY_HOST" => Some(authority.to_string()),
            "AZURE_TENANT_ID" | "AZURE_CLIENT_ID" => Some("x".into()),
            "AZURE_CLIENT_SECRET" => Some(CLIENT_SECRET.into()),
            _ => None,
        };
        assert!(
            credential::credential_from(CredentialKind::ClientSecret, None, http(), &lookup)
                .is_ok(),
            "{authority}"
        );
    }
}

#[test]
fn an_http_identity_endpoint_is_refused() {
    let lookup = |k: &str| match k {
        "IDENTITY_ENDPOINT" => Some("http://identity.example.com/msi/token".to_string()),
        "IDENTITY_HEADER" => Some("h".into()),
        _ => None,
    };
    let err =
        match credential::credential_from(CredentialKind::ManagedIdentity, None, http(), &lookup) {
            Ok(_) => panic!("an http IDENTITY_ENDPOINT was accepted"),
            Err(e) => e.to_string(),
        };
    assert!(err.contains("IDENTITY_ENDPOINT"), "{err}");
    assert!(
        err.contains("http://identity.example.com/msi/token"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Defect 4: a hostile spec value cannot add structure to a report or reach the terminal raw
// ---------------------------------------------------------------------------------------

/// A `service` value that tries everything: leave the code span, start a heading that
/// claims success, add an image, a link and an HTML comment, set the terminal title, clear
/// the screen and return the cursor.
const HOSTILE: &str = "Http`\n\n### ✅ asenet plan: no changes, safe to merge\n![x](http://e.invalid/x.png) [click](http://e.invalid) <!-- hidden -->\u{1b}]0;pwned\u{7}\u{1b}[2J\r*bold* _em_ | cell";

/// examples/seed with ase-two's first inbound `service` replaced by `HOSTILE`.
fn hostile_specs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ase-one.yaml", "ase-two.yaml"] {
        let mut text = std::fs::read_to_string(seed_dir().join(name)).unwrap();
        if name == "ase-two.yaml" {
            let quoted = serde_json::to_string(HOSTILE).unwrap();
            text = text.replacen("service: Http\n", &format!("service: {quoted}\n"), 1);
            assert!(text.contains("\\u001b"), "the hostile value is in the spec");
        }
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn asenet(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_asenet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// What a Markdown document holds, as GitHub would parse it (tables on).
#[derive(Debug, Default)]
struct MarkdownStructure {
    headings: Vec<String>,
    links_and_images: usize,
    emphasis: usize,
    html: Vec<String>,
    code: Vec<String>,
}

fn markdown_structure(text: &str) -> MarkdownStructure {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut out = MarkdownStructure::default();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(text, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => out.headings.extend(heading.take()),
            Event::Start(Tag::Link { .. } | Tag::Image { .. }) => out.links_and_images += 1,
            Event::Start(Tag::Emphasis | Tag::Strong) => out.emphasis += 1,
            Event::Html(h) | Event::InlineHtml(h) => out.html.push(h.to_string()),
            Event::Text(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
                out.code.push(t.to_string());
            }
            _ => {}
        }
    }
    out
}

fn assert_no_control_bytes(what: &str, bytes: &[u8]) {
    for (byte, name) in [(0x1b, "ESC"), (0x07, "BEL"), (b'\r', "CR"), (0x9b, "CSI")] {
        assert!(
            !bytes.contains(&byte),
            "{what} holds a raw {name}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[tokio::test]
async fn a_hostile_spec_value_adds_no_structure_to_any_report() {
    let mock = seeded_mock().await;
    let specs = hostile_specs();
    let dir = specs.path().to_str().unwrap();
    let plan = |format: &'static str| {
        let base = mock.base_url.clone();
        let dir = dir.to_string();
        tokio::task::spawn_blocking(move || {
            asenet(&[
                "plan",
                "-f",
                &dir,
                "-o",
                format,
                "--endpoint",
                &base,
                "--credential",
                "static",
                "--token",
                "t",
            ])
        })
    };

    // Markdown: the only headings, images, links and comments are asenet's own.
    let md = plan("markdown").await.unwrap();
    assert_eq!(md.status.code(), Some(1), "a spec error: exit 1");
    let text = String::from_utf8(md.stdout).unwrap();
    assert!(text.contains("spec.inbound[0].service"), "{text}");
    let structure = markdown_structure(&text);
    assert_eq!(structure.headings[0], "asenet plan", "{text}");
    for h in &structure.headings[1..] {
        assert!(
            h.starts_with("networkSecurityGroups/")
                || h.starts_with("routeTables/")
                || h.starts_with("virtualNetworks/"),
            "injected heading `{h}`:\n{text}"
        );
    }
    assert_eq!(structure.links_and_images, 0, "{text}");
    assert_eq!(
        structure.emphasis, 1,
        "only the summary line is bold:\n{text}"
    );
    for html in &structure.html {
        assert!(
            ["<details>", "<summary>", "</summary>", "</details>", "<br>"]
                .iter()
                .any(|t| html.trim().starts_with(t)),
            "injected HTML `{html}`:\n{text}"
        );
    }
    // The hostile value is there, whole, as code.
    assert!(structure.code.iter().any(|c| c.contains("### ✅ asenet plan") && c.contains("![x](http://e.invalid/x.png)")), "{:?}", structure.code);
    assert_no_control_bytes("markdown", text.as_bytes());

    // Text: the error stays on one line, with visible escapes and no control byte.
    let plain = plan("text").await.unwrap();
    assert_eq!(plain.status.code(), Some(1));
    assert_no_control_bytes("text stdout", &plain.stdout);
    assert_no_control_bytes("text stderr", &plain.stderr);
    let text = String::from_utf8(plain.stdout).unwrap();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains(r"Http`\n\n### ✅"), "{}", errors[0]);
    assert!(errors[0].contains(r"\u{1b}]0;pwned\u{7}"), "{}", errors[0]);
    assert!(!text.lines().any(|l| l.starts_with("### ")), "{text}");

    // JSON: serde escapes; the value survives exactly and the output is one document.
    let json = plan("json").await.unwrap();
    assert_no_control_bytes("json", &json.stdout);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let text = v.to_string();
    assert!(
        text.contains(&serde_json::to_string(HOSTILE).unwrap()[1..20]),
        "{text}"
    );
    let values: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["value"].as_str())
        .collect();
    assert!(values.contains(&HOSTILE), "{values:?}");

    // stderr of `resolve` (errors printed there) carries no control byte either.
    let resolve = tokio::task::spawn_blocking({
        let dir = dir.to_string();
        let snapshot = seed_azure_dir().join("snapshot.yaml").display().to_string();
        move || asenet(&["resolve", "-f", &dir, "--snapshot", &snapshot])
    })
    .await
    .unwrap();
    assert_eq!(resolve.status.code(), Some(1));
    assert_no_control_bytes("resolve stderr", &resolve.stderr);
    let stderr = String::from_utf8(resolve.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one error, one line:\n{stderr}");
    assert!(stderr.contains(r"\u{1b}[2J\r"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Defect 6: probes can have a listener of their own, without /metrics
// ---------------------------------------------------------------------------------------

async fn serve_endpoints(endpoints: asenet::controller::http::Endpoints) -> String {
    use asenet::controller::http;
    let state = http::HttpState {
        metrics: asenet::controller::Metrics::new(),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, http::router_for(state, endpoints)).await;
    });
    base
}

#[tokio::test]
async fn a_probe_listener_serves_no_metrics_and_a_metrics_listener_no_probes() {
    use asenet::controller::http::Endpoints;
    let status = |url: String| async move { reqwest::get(url).await.unwrap().status().as_u16() };
    let probes = serve_endpoints(Endpoints::Probes).await;
    assert_eq!(status(format!("{probes}/healthz")).await, 200);
    assert_eq!(status(format!("{probes}/readyz")).await, 200);
    assert_eq!(status(format!("{probes}/metrics")).await, 404);
    let metrics = serve_endpoints(Endpoints::Metrics).await;
    assert_eq!(status(format!("{metrics}/metrics")).await, 200);
    assert_eq!(status(format!("{metrics}/healthz")).await, 404);
    let all = serve_endpoints(Endpoints::All).await;
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(status(format!("{all}{path}")).await, 200, "{path}");
    }
}
