//! Issue 13, defect 1: no log level prints a token, a client secret or a federated token.
//!
//! A test binary of its own: it installs asenet's subscriber around a whole pipeline run,
//! and tracing caches per-callsite interest process-wide, so tests running beside it on
//! other threads (with no subscriber) could switch its callsites off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asenet::azure::credential::{self, StaticToken};
use asenet::azure::{ArmClient, ArmClientOptions, RetryConfig};
use asenet::cli::CredentialKind;
use asenet::logging::{self, LogFormat};
use asenet::pipeline::{self, Pipeline, PipelineOptions};
use azure_core::auth::TokenCredential;
use mock_arm::RunningMock;
use serde_json::json;

const STATIC_TOKEN: &str = "static-token-7f3a9c-must-never-be-logged";
const CLIENT_SECRET: &str = "client-secret-5d21e8-must-never-be-logged";
const ISSUED_TOKEN: &str = "issued-access-token-b64c0f-must-never-be-logged";

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

/// A loopback token endpoint (`/{tenant}/oauth2/v2.0/token`) issuing `ISSUED_TOKEN`.
async fn token_server() -> String {
    let app = axum::Router::new().route(
        "/{tenant}/oauth2/v2.0/token",
        axum::routing::post(|| async {
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": ISSUED_TOKEN,
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// A `MakeWriter` collecting everything written into one shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Plans and applies examples/seed against a fresh mock, once with the static token and
/// once with a client-secret credential whose token comes from a loopback token server,
/// inside asenet's subscriber at `rust_log`; returns everything logged.
fn logged_run(rust_log: &str, format: LogFormat) -> String {
    let capture = Capture::default();
    let subscriber = logging::subscriber(
        format,
        logging::env_filter(Some(rust_log), "info"),
        capture.clone(),
        false,
    );
    // A current-thread runtime: every task (the mock's too) logs through this subscriber.
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let authority = token_server().await;
            let lookup = move |k: &str| match k {
                "AZURE_AUTHORITY_HOST" => Some(authority.clone()),
                "AZURE_TENANT_ID" => Some("tenant".into()),
                "AZURE_CLIENT_ID" => Some("client".into()),
                "AZURE_CLIENT_SECRET" => Some(CLIENT_SECRET.into()),
                _ => None,
            };
            let secret_credential =
                credential::credential_from(CredentialKind::ClientSecret, None, http(), &lookup)
                    .unwrap();
            let credentials: [Arc<dyn TokenCredential>; 2] =
                [Arc::new(StaticToken::new(STATIC_TOKEN)), secret_credential];
            for credential in credentials {
                let mock = seeded_mock().await;
                let arm =
                    ArmClient::new(&mock.base_url, credential, http(), fast_options()).unwrap();
                let specs: Vec<_> = asenet::load::load_specs(&[seed_dir()])
                    .unwrap()
                    .into_iter()
                    .map(|l| l.spec)
                    .collect();
                let scope = pipeline::scope_of(&specs);
                let pipeline = Pipeline::new(arm, PipelineOptions::default());
                let outcome = pipeline.plan(&specs, &scope).await.unwrap();
                assert!(outcome.plan.has_changes(), "the seed needs writes");
                pipeline
                    .apply(&specs, &scope, outcome, &|_| {})
                    .await
                    .unwrap();
                assert!(mock.state.stats().total > 0);
            }
        });
    });
    capture.text()
}

fn assert_no_secret(log: &str) {
    for secret in [STATIC_TOKEN, CLIENT_SECRET, ISSUED_TOKEN] {
        assert!(
            !log.contains(secret),
            "`{secret}` reached the log:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn no_log_level_prints_the_bearer_token_or_the_client_secret() {
    // Worst case: trace everywhere, azure_core's whole-request dump switched on by name.
    let dumped = logged_run("trace,azure_core=trace", LogFormat::Json);
    assert!(
        dumped.contains("the following request will be passed to the transport policy"),
        "the request dump ran (else this test proves nothing)"
    );
    assert!(
        dumped.contains("Bearer [REDACTED]"),
        "the Authorization header was seen and redacted"
    );
    assert_no_secret(&dumped);

    // What `logLevel: trace` gives: no request dump at all, still no secret.
    let plain = logged_run("trace", LogFormat::Text);
    assert!(
        plain.contains("performing request"),
        "azure_core's trace ran"
    );
    assert!(!plain.contains("the following request will be passed"));
    assert_no_secret(&plain);
}
