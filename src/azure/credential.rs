//! Choosing an `azure_identity` 0.21 credential (docs/domain.md 6).
//!
//! `auto` picks, in order: workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set (AKS,
//! 6.1), a service principal when `AZURE_CLIENT_SECRET` is set (6.3), then managed identity
//! (6.2) and, if that yields no token, the Azure CLI. `static` uses a fixed bearer token
//! (`--token`/`ASENET_TOKEN`) for the mock ARM server.
//!
//! Two thin wrappers, with why: `StaticToken` (azure_identity has no fixed-token credential)
//! and `FileWorkloadIdentity` (0.21's `WorkloadIdentityCredential` reads the projected token
//! file once at creation; the kubelet rotates it, so a long-running operator must re-read
//! it; azure_identity 1.0 re-reads after 600 s, domain.md 6.1, and so does this wrapper).
//! Identity requests use the same reqwest client as ARM calls (same CA and proxy settings).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::auth::{AccessToken, Secret, TokenCredential};
use azure_core::HttpClient;
use azure_identity::{
    AppServiceManagedIdentityCredential, AzureCliCredential, ClientSecretCredential,
    TokenCredentialOptions, VirtualMachineManagedIdentityCredential, WorkloadIdentityCredential,
};

use super::config::CredentialKind;
use super::ArmError;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a re-read federated token file is trusted before reading it again.
const TOKEN_FILE_MAX_AGE: Duration = Duration::from_secs(600);

/// Builds the credential `kind` asks for, from the process environment.
pub fn credential(
    kind: CredentialKind,
    token: Option<&str>,
    http: Arc<dyn HttpClient>,
) -> Result<Arc<dyn TokenCredential>, ArmError> {
    credential_from(kind, token, http, &|k| std::env::var(k).ok())
}

/// Environment lookup (the process environment, or a map in tests).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Builds the credential `kind` asks for, reading settings through `lookup`.
///
/// Every identity endpoint a secret goes to is held to the ARM endpoint's rule (https, or
/// http to loopback only; issue 13): `AZURE_AUTHORITY_HOST` (the client secret and the
/// federated token go there) and `IDENTITY_ENDPOINT` (App Service managed identity; a
/// loopback http URL in practice). The one exception is IMDS: azure_identity's
/// `VirtualMachineManagedIdentityCredential` calls `http://169.254.169.254`, fixed in the
/// crate and not configurable; IMDS is plain http by Azure's design, link-local, reachable
/// only from the VM itself, and sends no secret (it authenticates the caller by source).
pub fn credential_from(
    kind: CredentialKind,
    token: Option<&str>,
    http: Arc<dyn HttpClient>,
    lookup: Lookup<'_>,
) -> Result<Arc<dyn TokenCredential>, ArmError> {
    let env = |k: &str| lookup(k).filter(|v| !v.is_empty());
    let options = || TokenCredentialOptions::from(http.clone());
    Ok(match kind {
        CredentialKind::Static => {
            let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
                ArmError::Config(
                    "--credential static needs a token (--token or ASENET_TOKEN)".into(),
                )
            })?;
            Arc::new(StaticToken(Secret::new(token.to_string())))
        }
        CredentialKind::WorkloadIdentity => {
            Arc::new(FileWorkloadIdentity::from_lookup(http, lookup)?)
        }
        CredentialKind::ClientSecret => client_secret(http.clone(), lookup)?,
        CredentialKind::ManagedIdentity => managed_identity(options(), lookup)?,
        CredentialKind::AzureCli => Arc::new(AzureCliCredential::new()),
        CredentialKind::Auto => {
            if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                Arc::new(FileWorkloadIdentity::from_lookup(http, lookup)?)
            } else if env("AZURE_CLIENT_SECRET").is_some() {
                client_secret(http.clone(), lookup)?
            } else {
                Arc::new(FirstThatWorks {
                    candidates: vec![
                        ("managed identity", managed_identity(options(), lookup)?),
                        ("Azure CLI", Arc::new(AzureCliCredential::new())),
                    ],
                    chosen: Mutex::new(None),
                })
            }
        }
    })
}

/// `AZURE_AUTHORITY_HOST` (default: the public cloud's), https or loopback http only.
pub fn authority_host(lookup: Lookup<'_>) -> Result<azure_core::Url, ArmError> {
    let value = lookup("AZURE_AUTHORITY_HOST")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "https://login.microsoftonline.com".into());
    super::check_secure_url("AZURE_AUTHORITY_HOST", &value).map_err(ArmError::Config)
}

/// A variable a credential cannot do without.
fn required(lookup: Lookup<'_>, what: &str, key: &str) -> Result<String, ArmError> {
    lookup(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ArmError::Config(format!("{what} needs the {key} environment variable")))
}

/// A service principal with a secret (domain.md 6.3), its authority host checked.
fn client_secret(
    http: Arc<dyn HttpClient>,
    lookup: Lookup<'_>,
) -> Result<Arc<dyn TokenCredential>, ArmError> {
    let what = "client secret credential";
    Ok(Arc::new(ClientSecretCredential::new(
        http,
        authority_host(lookup)?,
        required(lookup, what, "AZURE_TENANT_ID")?,
        required(lookup, what, "AZURE_CLIENT_ID")?,
        required(lookup, what, "AZURE_CLIENT_SECRET")?,
    )))
}

/// App Service / Functions style endpoint when `IDENTITY_ENDPOINT` is set (checked like
/// the ARM endpoint), IMDS otherwise (see `credential_from` for why IMDS is http).
fn managed_identity(
    options: TokenCredentialOptions,
    lookup: Lookup<'_>,
) -> Result<Arc<dyn TokenCredential>, ArmError> {
    if let Some(endpoint) = lookup("IDENTITY_ENDPOINT") {
        super::check_secure_url("IDENTITY_ENDPOINT", &endpoint).map_err(ArmError::Config)?;
        let c = AppServiceManagedIdentityCredential::create(options)
            .map_err(|e| ArmError::Config(format!("managed identity: {e}")))?;
        Ok(Arc::new(c))
    } else {
        Ok(Arc::new(VirtualMachineManagedIdentityCredential::new(
            options,
        )))
    }
}

/// A fixed bearer token (for the mock ARM server; it never expires).
#[derive(Debug)]
pub struct StaticToken(Secret);

impl StaticToken {
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken(Secret::new(token.into()))
    }
}

impl TokenCredential for StaticToken {
    fn get_token<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        _scopes: &'life1 [&'life2 str],
    ) -> BoxFuture<'async_trait, azure_core::Result<AccessToken>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let token = AccessToken::new(
            self.0.clone(),
            time::OffsetDateTime::now_utc() + time::Duration::hours(24),
        );
        Box::pin(async move { Ok(token) })
    }

    fn clear_cache<'life0, 'async_trait>(
        &'life0 self,
    ) -> BoxFuture<'async_trait, azure_core::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Ok(()) })
    }
}

/// Workload identity that re-reads the projected service-account token when it is older
/// than ten minutes and builds a new exchange credential when its content changed.
#[derive(Debug)]
pub struct FileWorkloadIdentity {
    http: Arc<dyn HttpClient>,
    authority: azure_core::Url,
    tenant_id: String,
    client_id: String,
    file: String,
    state: Mutex<Option<(Instant, String, Arc<WorkloadIdentityCredential>)>>,
}

impl FileWorkloadIdentity {
    pub fn from_env(http: Arc<dyn HttpClient>) -> Result<Self, ArmError> {
        Self::from_lookup(http, &|k| std::env::var(k).ok())
    }

    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and
    /// `AZURE_AUTHORITY_HOST` (https or loopback http only: the federated token goes there).
    pub fn from_lookup(http: Arc<dyn HttpClient>, lookup: Lookup<'_>) -> Result<Self, ArmError> {
        let what = "workload identity";
        Ok(FileWorkloadIdentity {
            http,
            authority: authority_host(lookup)?,
            tenant_id: required(lookup, what, "AZURE_TENANT_ID")?,
            client_id: required(lookup, what, "AZURE_CLIENT_ID")?,
            file: required(lookup, what, "AZURE_FEDERATED_TOKEN_FILE")?,
            state: Mutex::new(None),
        })
    }

    fn current(&self) -> azure_core::Result<Arc<WorkloadIdentityCredential>> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((read_at, _, cred)) = state.as_ref() {
            if read_at.elapsed() < TOKEN_FILE_MAX_AGE {
                return Ok(cred.clone());
            }
        }
        let content = std::fs::read_to_string(&self.file).map_err(|e| {
            azure_core::Error::full(
                azure_core::error::ErrorKind::Credential,
                e,
                format!("cannot read the federated token file {}", self.file),
            )
        })?;
        let content = content.trim().to_string();
        let cred = match state.as_ref() {
            Some((_, old, cred)) if *old == content => cred.clone(),
            _ => Arc::new(WorkloadIdentityCredential::new(
                self.http.clone(),
                self.authority.clone(),
                self.tenant_id.clone(),
                self.client_id.clone(),
                content.clone(),
            )),
        };
        *state = Some((Instant::now(), content, cred.clone()));
        Ok(cred)
    }
}

impl TokenCredential for FileWorkloadIdentity {
    fn get_token<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        scopes: &'life1 [&'life2 str],
    ) -> BoxFuture<'async_trait, azure_core::Result<AccessToken>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { self.current()?.get_token(scopes).await })
    }

    fn clear_cache<'life0, 'async_trait>(
        &'life0 self,
    ) -> BoxFuture<'async_trait, azure_core::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            *self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            Ok(())
        })
    }
}

/// Tries each credential in order until one returns a token, then sticks to it
/// (managed identity first; the Azure CLI on a developer machine).
#[derive(Debug)]
struct FirstThatWorks {
    candidates: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: Mutex<Option<usize>>,
}

impl FirstThatWorks {
    async fn token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let chosen = *self
            .chosen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = chosen {
            return self.candidates[i].1.get_token(scopes).await;
        }
        let mut errors = Vec::new();
        for (i, (name, c)) in self.candidates.iter().enumerate() {
            match c.get_token(scopes).await {
                Ok(t) => {
                    *self
                        .chosen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(i);
                    tracing::info!(credential = name, "using credential");
                    return Ok(t);
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        Err(azure_core::Error::message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no credential worked (set AZURE_FEDERATED_TOKEN_FILE or AZURE_CLIENT_SECRET, or pick one with --credential): {}",
                errors.join("; ")
            ),
        ))
    }
}

impl TokenCredential for FirstThatWorks {
    fn get_token<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        scopes: &'life1 [&'life2 str],
    ) -> BoxFuture<'async_trait, azure_core::Result<AccessToken>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.token(scopes))
    }

    fn clear_cache<'life0, 'async_trait>(
        &'life0 self,
    ) -> BoxFuture<'async_trait, azure_core::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            for (_, c) in &self.candidates {
                c.clear_cache().await?;
            }
            Ok(())
        })
    }
}
