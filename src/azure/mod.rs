//! The ARM shell: every call asenet makes to Azure Resource Manager.
//!
//! One HTTP stack: a reqwest 0.12 (rustls) client inside one `azure_core` 0.21 pipeline,
//! with asenet's retry policy and request observer (`policy`), shared by the generated
//! `azure_mgmt_network` 0.21 client and by the few raw calls below, so retries, auth and
//! metrics live in one place.
//!
//! Which path each operation takes, and why:
//! - Reads of NSGs, route tables, VNets and subnets use the generated request builders
//!   (`network_security_groups_client().get(..).send()`); the raw body is kept next to the
//!   typed model because apply writes back every property asenet does not manage, and the
//!   typed models drop fields they do not know (docs/domain.md 4.4).
//! - Writes (PUT, DELETE) are raw requests through the same pipeline: the generated builders
//!   send no `If-Match` and offer no hook to add one (domain.md 4.6), they serialise the
//!   typed model (losing unknown fields of foreign rules), and their poller reduces a failed
//!   long-running operation to "Long running operation failed" without Azure's code and
//!   message (domain.md 4.5). `put` / `delete` poll `Azure-AsyncOperation` (else
//!   `Location`) themselves, honouring `Retry-After`.
//! - The ASE address lookup (`Microsoft.Web/hostingEnvironments/{name}/capacities/virtualip`,
//!   domain.md 1.5) is not in the network crate: a raw GET.

pub mod config;
pub mod credential;
pub mod error;
pub mod operations;
pub mod pacing;
pub mod policy;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::auth::TokenCredential;
use azure_core::headers::{HeaderName, Headers};
use azure_core::{
    ClientOptions, Context, HttpClient, Method, Request, RetryOptions, TransportOptions, Url,
};
use azure_mgmt_network::models;
use serde_json::Value;

pub use config::{AzureArgs, CredentialKind};
pub use error::{ArmError, ErrorCategory};
pub use operations::Op;
pub use policy::{ArmObserver, RetryConfig, WriteFence};

use crate::model::ResourceId;

/// api-version of Microsoft.Web reads (domain.md 1.5).
pub const WEB_API_VERSION: &str = "2023-12-01";
/// api-version of Microsoft.Network, the one `azure_mgmt_network` 0.21 sends (domain.md 4).
pub const NETWORK_API_VERSION: &str = "2024-03-01";

/// Knobs of the ARM client.
#[derive(Debug, Clone)]
pub struct ArmClientOptions {
    pub retry: RetryConfig,
    /// Poll interval of a long-running operation when ARM sends no `Retry-After`.
    pub lro_default_poll: Duration,
    /// Upper bound for one poll interval.
    pub lro_max_poll: Duration,
    /// Give up polling after this long.
    pub lro_timeout: Duration,
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
}

impl Default for ArmClientOptions {
    fn default() -> Self {
        ArmClientOptions {
            retry: RetryConfig::default(),
            lro_default_poll: Duration::from_secs(5),
            lro_max_poll: Duration::from_secs(60),
            lro_timeout: Duration::from_secs(30 * 60),
            request_timeout: Duration::from_secs(100),
        }
    }
}

/// The condition a write carries (domain.md 4.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: <etag>`: the resource is still what we read.
    IfMatch(String),
    /// `If-None-Match: *`: create only, never overwrite something created meanwhile.
    IfNoneMatch,
}

/// A resource as read: the raw ARM JSON, the typed model, and the etag.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub raw: Value,
    pub typed: T,
    pub etag: Option<String>,
}

/// Progress of a long-running operation, for people watching. The first report of a write
/// has `polls: 0`: ARM accepted the request (the instant NRP's write window counts it,
/// domain.md 4.8); the others follow each poll.
#[derive(Debug, Clone)]
pub struct LroProgress {
    pub status: String,
    /// Status reads so far; 0: the request was just accepted.
    pub polls: u32,
    pub elapsed: Duration,
}

/// Reports that ARM accepted a write (see [`LroProgress`]).
fn accepted(progress: &(dyn Fn(&LroProgress) + Send + Sync)) {
    progress(&LroProgress {
        status: "Accepted".to_string(),
        polls: 0,
        elapsed: Duration::ZERO,
    });
}

/// A client for the ARM endpoint. Cheap to clone.
#[derive(Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Url,
    network: azure_mgmt_network::Client,
    pipeline: azure_core::Pipeline,
    credential: Arc<dyn TokenCredential>,
    scopes: Vec<String>,
    observers: Arc<policy::Observers>,
    fence: Arc<policy::FenceSlot>,
    options: ArmClientOptions,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .finish()
    }
}

/// Checks the endpoint: https, or plain http to a loopback address only (the mock).
pub fn check_endpoint(endpoint: &str) -> Result<Url, ArmError> {
    check_secure_url("endpoint", endpoint).map_err(ArmError::Config)
}

/// The rule every URL a credential or token is sent to is held to (ARM endpoint, identity
/// endpoints; issue 13): https, or plain http to a loopback address only (the mock, a
/// local token server). `what` names the setting in the error.
pub fn check_secure_url(what: &str, value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{what} `{value}` is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "{what} `{value}`: plain http is only allowed to loopback addresses (the mock ARM server); use https"
        )),
        other => Err(format!("{what} `{value}`: unsupported scheme `{other}`")),
    }
}

/// `localhost` or a loopback IP literal (127.0.0.0/8, ::1): this machine (the mock ARM
/// server, a local token server), never Azure.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// A reqwest client (rustls) trusting the platform roots plus `ca_cert` (PEM) if given.
pub fn http_client(
    ca_cert: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client, ArmError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10));
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            ArmError::Config(format!("cannot read --ca-cert `{}`: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            ArmError::Config(format!("--ca-cert `{}` is not PEM: {e}", path.display()))
        })?;
        if certs.is_empty() {
            return Err(ArmError::Config(format!(
                "--ca-cert `{}` holds no certificate",
                path.display()
            )));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| ArmError::Config(format!("cannot build the HTTP client: {e}")))
}

impl ArmClient {
    /// A client for `endpoint` with a credential and an HTTP client (see `http_client`).
    pub fn new(
        endpoint: &str,
        credential: Arc<dyn TokenCredential>,
        http: Arc<dyn HttpClient>,
        options: ArmClientOptions,
    ) -> Result<Self, ArmError> {
        let endpoint = check_endpoint(endpoint)?;
        let observers = Arc::new(policy::Observers::default());
        let fence = Arc::new(policy::FenceSlot::default());
        let mut client_options =
            ClientOptions::new(TransportOptions::new(http)).retry(RetryOptions::none());
        client_options
            .per_retry_policies_mut()
            .push(Arc::new(policy::ArmRetryPolicy {
                config: options.retry.clone(),
            }));
        // After the retry policy: every attempt of a write, retries included, is checked
        // right before it is sent; before the observer: a write not sent is not counted.
        client_options
            .per_retry_policies_mut()
            .push(Arc::new(policy::FencePolicy {
                fence: fence.clone(),
            }));
        client_options
            .per_retry_policies_mut()
            .push(Arc::new(policy::ObserverPolicy {
                observers: observers.clone(),
            }));
        let base = endpoint.as_str().trim_end_matches('/');
        let scopes = vec![format!("{base}/.default")];
        let network = azure_mgmt_network::Client::new(
            endpoint.clone(),
            credential.clone(),
            scopes.clone(),
            client_options.clone(),
        );
        let pipeline = azure_core::Pipeline::new(
            Some("asenet"),
            Some(env!("CARGO_PKG_VERSION")),
            client_options,
            Vec::new(),
            Vec::new(),
        );
        Ok(ArmClient {
            inner: Arc::new(Inner {
                endpoint,
                network,
                pipeline,
                credential,
                scopes,
                observers,
                fence,
                options,
            }),
        })
    }

    /// A client from the command line / operator flags.
    pub fn from_args(args: &AzureArgs) -> Result<Self, ArmError> {
        Self::from_args_with(args, ArmClientOptions::default())
    }

    pub fn from_args_with(args: &AzureArgs, options: ArmClientOptions) -> Result<Self, ArmError> {
        check_endpoint(&args.endpoint)?;
        let http: Arc<dyn HttpClient> = Arc::new(http_client(
            args.ca_cert.as_deref(),
            options.request_timeout,
        )?);
        let credential =
            credential::credential(args.credential, args.token.as_deref(), http.clone())?;
        Self::new(&args.endpoint, credential, http, options)
    }

    /// Adds an observer told about every HTTP attempt (method, resource type, status).
    pub fn with_observer(self, observer: Arc<dyn ArmObserver>) -> Self {
        self.inner.observers.add(observer);
        self
    }

    /// Fences every write (PUT, DELETE, PATCH, POST) on `fence`: each attempt, retries
    /// included, is sent only while `fence.may_write()`; otherwise it fails with
    /// [`ArmError::Fenced`] without reaching ARM. The operator passes its leadership, so a
    /// replica whose Lease renewal deadline passed cannot write (issue 10, defect 1).
    pub fn with_write_fence(self, fence: Arc<dyn WriteFence>) -> Self {
        self.inner.fence.set(fence);
        self
    }

    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    pub fn options(&self) -> &ArmClientOptions {
        &self.inner.options
    }

    // -----------------------------------------------------------------------------------
    // Reads through the generated builders

    pub async fn get_nsg(
        &self,
        id: &ResourceId,
    ) -> Result<Option<Fetched<models::NetworkSecurityGroup>>, ArmError> {
        self.note(Op::GetNetworkSecurityGroup, id);
        let r = self
            .inner
            .network
            .network_security_groups_client()
            .get(id.resource_group(), id.name(), id.subscription())
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.fetched(id, r).await
    }

    pub async fn get_route_table(
        &self,
        id: &ResourceId,
    ) -> Result<Option<Fetched<models::RouteTable>>, ArmError> {
        self.note(Op::GetRouteTable, id);
        let r = self
            .inner
            .network
            .route_tables_client()
            .get(id.resource_group(), id.name(), id.subscription())
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.fetched(id, r).await
    }

    /// The service tags ARM publishes for `location` (`ServiceTags_List`, docs/domain.md
    /// 5.1; the SDK's api-version), as the JSON ARM answered; `None` on 404. One read,
    /// counted like every other (throttling bucket, observers).
    pub async fn list_service_tags(
        &self,
        subscription: &str,
        location: &str,
    ) -> Result<Option<Value>, ArmError> {
        let what = format!(
            "/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/serviceTags"
        );
        tracing::trace!(operation = Op::ListServiceTags.name(), resource = %what, "ARM call");
        let r = self
            .inner
            .network
            .service_tags_client()
            .list(location, subscription)
            .send()
            .await
            .map(|r| r.into_raw_response());
        let response = match r {
            Ok(r) => r,
            Err(e) => {
                let e = map_error("GET", &what, e);
                return if e.is_not_found() { Ok(None) } else { Err(e) };
            }
        };
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| map_error("GET", &what, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ArmError::Decode {
                resource: what,
                message: e.to_string(),
            })
    }

    /// A VNet with its subnets inline (one read gives the address space and every subnet).
    pub async fn get_vnet(
        &self,
        id: &ResourceId,
    ) -> Result<Option<Fetched<models::VirtualNetwork>>, ArmError> {
        self.note(Op::GetVirtualNetwork, id);
        let r = self
            .inner
            .network
            .virtual_networks_client()
            .get(id.resource_group(), id.name(), id.subscription())
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.fetched(id, r).await
    }

    pub async fn get_subnet(
        &self,
        id: &ResourceId,
    ) -> Result<Option<Fetched<models::Subnet>>, ArmError> {
        let vnet = id
            .parent()
            .ok_or_else(|| ArmError::Config(format!("`{id}` is not a subnet id")))?;
        self.note(Op::GetSubnet, id);
        let r = self
            .inner
            .network
            .subnets_client()
            .get(
                id.resource_group(),
                vnet.name(),
                id.name(),
                id.subscription(),
            )
            .send()
            .await
            .map(|r| r.into_raw_response());
        self.fetched(id, r).await
    }

    async fn fetched<T: serde::de::DeserializeOwned>(
        &self,
        id: &ResourceId,
        response: azure_core::Result<azure_core::Response>,
    ) -> Result<Option<Fetched<T>>, ArmError> {
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let e = map_error("GET", id.as_str(), e);
                return if e.is_not_found() { Ok(None) } else { Err(e) };
            }
        };
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| map_error("GET", id.as_str(), e))?;
        let raw: Value = serde_json::from_slice(&bytes).map_err(|e| ArmError::Decode {
            resource: id.to_string(),
            message: e.to_string(),
        })?;
        let typed = T::deserialize(&raw).map_err(|e| ArmError::Decode {
            resource: id.to_string(),
            message: e.to_string(),
        })?;
        let etag = raw.get("etag").and_then(Value::as_str).map(str::to_owned);
        Ok(Some(Fetched { raw, typed, etag }))
    }

    /// Lists `collection` in a resource group, following `nextLink` (domain.md 4.9; each
    /// item is the body GET returns), handing each item to `each` as soon as its page is
    /// parsed; stops paging once `each` returns `true` (the caller
    /// has seen everything it wants). A 404 (no such group) lists nothing. Items are not
    /// collected here: a group of thousands of NSGs would otherwise be held as JSON trees
    /// all at once (issue 14's process memory).
    ///
    /// Items whose `id` `wanted` refuses are skipped without being parsed.
    pub async fn list_in_group<T: serde::de::DeserializeOwned>(
        &self,
        subscription: &str,
        resource_group: &str,
        collection: &str,
        wanted: &(dyn Fn(&str) -> bool + Sync),
        each: &mut (dyn FnMut(Fetched<T>) -> bool + Send),
    ) -> Result<(), ArmError> {
        let path = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network/{collection}"
        );
        let op = Op::list(collection).ok_or_else(|| {
            ArmError::Config(format!(
                "asenet does not list `{collection}` (docs/azure-permissions.md)"
            ))
        })?;
        let mut url = self.url(&path, NETWORK_API_VERSION)?;
        loop {
            let page = match self.send(op, Method::Get, url, None, &[], &path).await {
                Ok(r) => r,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            };
            let mut done = false;
            let wanted = |id: Option<&str>| id.is_some_and(wanted);
            let next = page.for_each_item(&path, &wanted, &mut |raw| {
                let typed = T::deserialize(&raw).map_err(|e| ArmError::Decode {
                    resource: path.clone(),
                    message: e.to_string(),
                })?;
                let etag = raw.get("etag").and_then(Value::as_str).map(str::to_owned);
                let seen_all = each(Fetched { raw, typed, etag });
                done = done || seen_all;
                Ok(())
            })?;
            let Some(next) = next.filter(|_| !done) else {
                return Ok(());
            };
            url = self.follow(&path, "nextLink", &next)?;
        }
    }

    // -----------------------------------------------------------------------------------
    // Raw calls

    /// The ASE's addresses (`capacities/virtualip`, domain.md 1.5); `None` on 404.
    pub async fn get_ase_addresses(&self, ase: &ResourceId) -> Result<Option<Value>, ArmError> {
        let url = self.url(&format!("{ase}/capacities/virtualip"), WEB_API_VERSION)?;
        match self
            .send(
                Op::GetAseAddresses,
                Method::Get,
                url,
                None,
                &[],
                ase.as_str(),
            )
            .await
        {
            Ok(r) => Ok(Some(r.json(ase.as_str())?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PUT the complete resource body with a precondition, then poll its long-running
    /// operation to the end; returns the resource as the PUT answered it (see `wait`).
    ///
    /// Neither the body nor the answer is held as a JSON tree through the operation (10
    /// s and more on NRP, domain.md 4.5): the body is dropped once serialised, and the
    /// answer (the whole resource: an NSG with hundreds of rules) is kept as the text
    /// received and parsed when the operation ends. With the writes in flight of a
    /// 10,000-spec component, the trees were the controller's largest transient (issue 14).
    pub async fn put(
        &self,
        id: &ResourceId,
        body: Value,
        precondition: Option<&Precondition>,
        progress: &(dyn Fn(&LroProgress) + Send + Sync),
    ) -> Result<Value, ArmError> {
        let op = Op::put(id).ok_or_else(|| unlisted("write", id))?;
        let url = self.url(id.as_str(), NETWORK_API_VERSION)?;
        let mut headers = Vec::new();
        match precondition {
            Some(Precondition::IfMatch(etag)) => headers.push(("if-match", etag.clone())),
            Some(Precondition::IfNoneMatch) => headers.push(("if-none-match", "*".to_string())),
            None => {}
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| ArmError::Decode {
            resource: id.to_string(),
            message: e.to_string(),
        })?;
        drop(body);
        let response = self
            .send(op, Method::Put, url, Some(bytes), &headers, id.as_str())
            .await?;
        let first = response.head(id.as_str())?;
        accepted(progress);
        let done = self.wait(id, &response, &first, progress).await?;
        match done {
            Some(body) => Ok(body),
            None => response.json(id.as_str()),
        }
    }

    /// DELETE with a precondition, polled to the end. Absent already is success.
    pub async fn delete(
        &self,
        id: &ResourceId,
        precondition: Option<&Precondition>,
        progress: &(dyn Fn(&LroProgress) + Send + Sync),
    ) -> Result<(), ArmError> {
        let op = Op::delete(id).ok_or_else(|| unlisted("delete", id))?;
        let url = self.url(id.as_str(), NETWORK_API_VERSION)?;
        let mut headers = Vec::new();
        if let Some(Precondition::IfMatch(etag)) = precondition {
            headers.push(("if-match", etag.clone()));
        }
        let response = match self
            .send(op, Method::Delete, url, None, &headers, id.as_str())
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        accepted(progress);
        if response.status == 202 {
            self.wait_delete(id, &response.headers, progress).await?;
        }
        Ok(())
    }

    /// The request URL of `path`, built segment by segment: each segment is
    /// percent-encoded on its own, so no character of a name can start a new segment, a
    /// query or a fragment. The segments come from `ResourceId`s, which refuse `.`, `..`
    /// and URL metacharacters (issue 12), so normalisation cannot move the request.
    fn url(&self, path: &str, api_version: &str) -> Result<Url, ArmError> {
        let mut url = self.inner.endpoint.clone();
        url.set_path("");
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                ArmError::Config(format!(
                    "endpoint `{}` cannot take a path",
                    self.inner.endpoint
                ))
            })?;
            segments.clear();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                segments.push(part);
            }
        }
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// Records which entry of the operations table a generated-builder call is.
    fn note(&self, op: Op, id: &ResourceId) {
        tracing::trace!(operation = op.name(), resource = %id, "ARM call");
    }

    async fn send(
        &self,
        op: Op,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        headers: &[(&'static str, String)],
        resource: &str,
    ) -> Result<RawResponse, ArmError> {
        let verb = method.to_string().to_ascii_uppercase();
        debug_assert_eq!(verb, op.entry().method, "{op:?} is a {}", op.entry().method);
        tracing::trace!(operation = op.name(), resource, "ARM call");
        let scopes: Vec<&str> = self.inner.scopes.iter().map(String::as_str).collect();
        let token = self
            .inner
            .credential
            .get_token(&scopes)
            .await
            .map_err(|e| ArmError::Credential(e.to_string()))?;
        let mut req = Request::new(url, method);
        req.insert_header(
            azure_core::headers::AUTHORIZATION,
            format!("Bearer {}", token.token.secret()),
        );
        for (k, v) in headers {
            req.insert_header(HeaderName::from_static(k), v.clone());
        }
        if let Some(b) = body {
            req.insert_header(azure_core::headers::CONTENT_TYPE, "application/json");
            req.set_body(b);
        }
        let response = self
            .inner
            .pipeline
            .send(&Context::new(), &mut req)
            .await
            .map_err(|e| map_error(&verb, resource, e))?;
        let (status, headers, body) = response.deconstruct();
        let bytes = body
            .collect()
            .await
            .map_err(|e| map_error(&verb, resource, e))?;
        Ok(RawResponse {
            status: u16::from(status),
            headers,
            body: bytes.to_vec(),
        })
    }

    /// Polls a write's operation (domain.md 4.5). Returns the final resource body when it
    /// differs from `initial` (the PUT response), `None` when `initial` is it.
    ///
    /// With `Azure-AsyncOperation`, a `Succeeded` status means the resource is what the PUT
    /// answered (NRP answers a PUT with the resource as written, etag included, only
    /// `provisioningState` still `Updating`, on the resource and on the children it wrote),
    /// so that body is returned with `provisioningState: Succeeded` instead of reading the
    /// resource once more: one GET less per write. Nothing relies on that etag for
    /// correctness: the next plan observes afresh, and within an apply a stale etag only
    /// turns the next conditional write of that resource into a 412 and a re-read
    /// (domain.md 4.6). A PUT answered without a body is read back.
    async fn wait(
        &self,
        id: &ResourceId,
        initial: &RawResponse,
        first: &FirstAnswer,
        progress: &(dyn Fn(&LroProgress) + Send + Sync),
    ) -> Result<Option<Value>, ArmError> {
        let headers = &initial.headers;
        let started = Instant::now();
        let first_delay = self.poll_delay(headers);
        if let Some(status_url) = self.poll_url(id, headers, "Azure-AsyncOperation")? {
            self.poll_status(id, status_url, first_delay, started, progress)
                .await?;
            return if first.is_object {
                let mut body = initial.json(id.as_str())?;
                settle(&mut body);
                Ok(Some(body))
            } else {
                self.read_raw(id).await.map(Some)
            };
        }
        // No operation header: watch the resource's own provisioningState.
        let state = first.state.as_deref().unwrap_or("Succeeded");
        if is_terminal(state) {
            return check_terminal(id, state).map(|_| None);
        }
        let mut delay = first_delay;
        let mut polls = 0;
        loop {
            self.check_timeout(id, state, started)?;
            tokio::time::sleep(delay).await;
            polls += 1;
            let body = self.read_raw(id).await?;
            let state = body
                .pointer("/properties/provisioningState")
                .and_then(Value::as_str)
                .unwrap_or("Succeeded")
                .to_string();
            progress(&LroProgress {
                status: state.clone(),
                polls,
                elapsed: started.elapsed(),
            });
            if is_terminal(&state) {
                check_terminal(id, &state)?;
                return Ok(Some(body));
            }
            delay = self.inner.options.lro_default_poll;
        }
    }

    async fn wait_delete(
        &self,
        id: &ResourceId,
        headers: &Headers,
        progress: &(dyn Fn(&LroProgress) + Send + Sync),
    ) -> Result<(), ArmError> {
        let started = Instant::now();
        let delay = self.poll_delay(headers);
        if let Some(status_url) = self.poll_url(id, headers, "Azure-AsyncOperation")? {
            return self
                .poll_status(id, status_url, delay, started, progress)
                .await;
        }
        let Some(location) = self.poll_url(id, headers, "Location")? else {
            return Ok(());
        };
        let mut delay = delay;
        let mut polls = 0;
        loop {
            self.check_timeout(id, "Deleting", started)?;
            tokio::time::sleep(delay).await;
            polls += 1;
            let r = self
                .send(
                    Op::PollLocation,
                    Method::Get,
                    location.clone(),
                    None,
                    &[],
                    id.as_str(),
                )
                .await?;
            progress(&LroProgress {
                status: if r.status == 202 {
                    "InProgress"
                } else {
                    "Succeeded"
                }
                .into(),
                polls,
                elapsed: started.elapsed(),
            });
            if r.status != 202 {
                return Ok(());
            }
            delay = self.poll_delay(&r.headers);
        }
    }

    /// Polls an `Azure-AsyncOperation` URL until `Succeeded`; `Failed`/`Canceled` surface
    /// the operation's error code and message.
    async fn poll_status(
        &self,
        id: &ResourceId,
        url: Url,
        first_delay: Duration,
        started: Instant,
        progress: &(dyn Fn(&LroProgress) + Send + Sync),
    ) -> Result<(), ArmError> {
        let mut delay = first_delay;
        let mut polls = 0;
        let mut status = "InProgress".to_string();
        loop {
            self.check_timeout(id, &status, started)?;
            tokio::time::sleep(delay).await;
            polls += 1;
            let r = self
                .send(
                    Op::PollAsyncOperation,
                    Method::Get,
                    url.clone(),
                    None,
                    &[],
                    id.as_str(),
                )
                .await?;
            let body = r.json(id.as_str())?;
            status = body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("InProgress")
                .to_string();
            progress(&LroProgress {
                status: status.clone(),
                polls,
                elapsed: started.elapsed(),
            });
            match status.as_str() {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" | "Cancelled" => {
                    let error = body.get("error").cloned().unwrap_or(Value::Null);
                    return Err(ArmError::OperationFailed {
                        resource: id.to_string(),
                        status,
                        code: error
                            .get("code")
                            .and_then(Value::as_str)
                            .unwrap_or("Unknown")
                            .to_string(),
                        message: error
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("the operation status carried no error message")
                            .to_string(),
                    });
                }
                _ => delay = self.poll_delay(&r.headers),
            }
        }
    }

    /// A URL ARM gave for a follow-up request, accepted only on the endpoint's own origin
    /// (scheme, host and port): the bearer token goes nowhere else. The endpoint itself is
    /// https or loopback http (`check_endpoint`), so the same origin is too.
    fn follow(&self, resource: &str, field: &str, url: &str) -> Result<Url, ArmError> {
        let foreign = || ArmError::ForeignUrl {
            resource: resource.to_string(),
            field: field.to_string(),
            url: url.to_string(),
            endpoint: self.inner.endpoint.origin().ascii_serialization(),
        };
        let parsed = Url::parse(url).map_err(|_| foreign())?;
        if parsed.origin() != self.inner.endpoint.origin() {
            return Err(foreign());
        }
        Ok(parsed)
    }

    /// The operation URL of a write's answer (domain.md 4.5), held to `follow`'s rule.
    fn poll_url(
        &self,
        id: &ResourceId,
        headers: &Headers,
        name: &'static str,
    ) -> Result<Option<Url>, ArmError> {
        let header = HeaderName::from(name.to_ascii_lowercase());
        match headers.get_optional_str(&header) {
            Some(v) => self.follow(id.as_str(), name, v).map(Some),
            None => Ok(None),
        }
    }

    fn check_timeout(
        &self,
        id: &ResourceId,
        status: &str,
        started: Instant,
    ) -> Result<(), ArmError> {
        if started.elapsed() > self.inner.options.lro_timeout {
            return Err(ArmError::OperationTimeout {
                resource: id.to_string(),
                status: status.to_string(),
                waited_secs: started.elapsed().as_secs(),
            });
        }
        Ok(())
    }

    fn poll_delay(&self, headers: &Headers) -> Duration {
        policy::retry_after(headers)
            .unwrap_or(self.inner.options.lro_default_poll)
            .min(self.inner.options.lro_max_poll)
    }

    /// GET any resource raw (a write's body when the PUT answered without one, and the
    /// state of a write polled without an operation URL).
    pub async fn read_raw(&self, id: &ResourceId) -> Result<Value, ArmError> {
        let op = Op::get(id).ok_or_else(|| unlisted("read", id))?;
        let url = self.url(id.as_str(), NETWORK_API_VERSION)?;
        self.send(op, Method::Get, url, None, &[], id.as_str())
            .await?
            .json(id.as_str())
    }
}

/// A call to a resource type that is not in the operations table.
fn unlisted(what: &str, id: &ResourceId) -> ArmError {
    ArmError::Config(format!(
        "asenet does not {what} `{id}`: only NSGs, route tables and subnets are in its table of ARM operations (docs/azure-permissions.md)"
    ))
}

struct RawResponse {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

/// What [`ArmClient::wait`] reads of a write's first answer, read without building its
/// JSON tree.
#[derive(Debug, Default)]
struct FirstAnswer {
    is_object: bool,
    /// `properties.provisioningState`, when it is a string.
    state: Option<String>,
}

/// The part of an answer [`FirstAnswer`] reads; every other field is skipped unparsed.
#[derive(serde::Deserialize)]
struct AnswerHead {
    #[serde(default)]
    properties: Option<AnswerProperties>,
}

#[derive(serde::Deserialize)]
struct AnswerProperties {
    #[serde(default, rename = "provisioningState")]
    provisioning_state: Option<Value>,
}

impl RawResponse {
    /// [`FirstAnswer`] of this answer. The text is checked to be JSON as [`RawResponse::json`]
    /// checks it; an object of an unexpected shape (`properties` not an object) is read
    /// through the tree, as before.
    fn head(&self, resource: &str) -> Result<FirstAnswer, ArmError> {
        let starts_object = self
            .body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if !starts_object {
            // Null, empty, or not an object: nothing to read but its validity.
            self.json(resource)?;
            return Ok(FirstAnswer::default());
        }
        let head = match serde_json::from_slice::<AnswerHead>(&self.body) {
            Ok(head) => head,
            Err(_) => {
                let v = self.json(resource)?;
                let state = v
                    .pointer("/properties/provisioningState")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                return Ok(FirstAnswer {
                    is_object: v.is_object(),
                    state,
                });
            }
        };
        Ok(FirstAnswer {
            is_object: true,
            state: head
                .properties
                .and_then(|p| p.provisioning_state)
                .and_then(|s| s.as_str().map(str::to_owned)),
        })
    }

    /// Calls `each` with every item of a collection page's `value`, parsed one at a time,
    /// and returns the page's `nextLink`. A page of 100 NSGs is ~1.5 MB of JSON and several
    /// times that as one `Value` tree; parsed item by item, one item's tree is held at a
    /// time (issue 14's memory). A page without `value` (or with `null`) has no items.
    /// Only the items whose `id` (`None` when it has none) `wanted` accepts are parsed into
    /// trees; the others are only scanned (a component planned in parts lists a resource
    /// group once per part, and wants a part of it each time).
    fn for_each_item(
        &self,
        resource: &str,
        wanted: &dyn Fn(Option<&str>) -> bool,
        each: &mut dyn FnMut(Value) -> Result<(), ArmError>,
    ) -> Result<Option<String>, ArmError> {
        if self.body.is_empty() {
            return Ok(None);
        }
        let mut failed = None;
        let seed = page::Page {
            wanted,
            each,
            failed: &mut failed,
        };
        let mut de = serde_json::Deserializer::from_slice(&self.body);
        let next = serde::de::DeserializeSeed::deserialize(seed, &mut de).and_then(|next| {
            de.end()?;
            Ok(next)
        });
        match (next, failed) {
            (_, Some(e)) => Err(e),
            (Ok(next), None) => Ok(next),
            (Err(e), None) => Err(ArmError::Decode {
                resource: resource.to_string(),
                message: e.to_string(),
            }),
        }
    }

    fn json(&self, resource: &str) -> Result<Value, ArmError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| ArmError::Decode {
            resource: resource.to_string(),
            message: e.to_string(),
        })
    }
}

/// A collection page (`{ "value": [...], "nextLink": "..." }`, domain.md 4) read item by
/// item with serde's seeds ([`RawResponse::for_each_item`]).
mod page {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    use super::ArmError;

    /// The page: hands each item of `value` to `each`; gives `nextLink`. An error of
    /// `each` is kept in `failed` and stops the parse.
    pub(super) struct Page<'a> {
        pub(super) wanted: &'a dyn Fn(Option<&str>) -> bool,
        pub(super) each: &'a mut dyn FnMut(Value) -> Result<(), ArmError>,
        pub(super) failed: &'a mut Option<ArmError>,
    }

    impl<'de> DeserializeSeed<'de> for Page<'_> {
        type Value = Option<String>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Page<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a collection page (an object with `value`)")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let Page {
                wanted,
                each,
                failed,
            } = self;
            let mut next = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match &*key {
                    "value" => map.next_value_seed(Items {
                        wanted,
                        each: &mut *each,
                        failed: &mut *failed,
                    })?,
                    "nextLink" => next = map.next_value::<Option<String>>()?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(next)
        }
    }

    struct Items<'a> {
        wanted: &'a dyn Fn(Option<&str>) -> bool,
        each: &'a mut dyn FnMut(Value) -> Result<(), ArmError>,
        failed: &'a mut Option<ArmError>,
    }

    impl<'de> DeserializeSeed<'de> for Items<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Items<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the list of the page's items")
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
                let text = raw.get();
                // Not an object: refused by the parse below, as before.
                if item_id(text).is_some_and(|id| !(self.wanted)(id.as_deref())) {
                    continue;
                }
                let item: Value = serde_json::from_str(text).map_err(de::Error::custom)?;
                if let Err(e) = (self.each)(item) {
                    *self.failed = Some(e);
                    return Err(de::Error::custom("an item of the page was refused"));
                }
            }
            Ok(())
        }
    }

    /// The `id` of an item (the text of a JSON value), read up to that key and no further:
    /// ARM writes it near the front, and an item a part of a component does not want is
    /// then scanned once (for its end, by the page's parse) instead of twice. `None` when
    /// the text is not an object; `Some(None)` for an object without `id`. The first `id`
    /// of an object that repeats it decides; the parse of a wanted item reads its last
    /// (`fetch_group` checks that one again).
    fn item_id(text: &str) -> Option<Option<std::borrow::Cow<'_, str>>> {
        use std::borrow::Cow;
        #[derive(serde::Deserialize)]
        struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
        struct Find<'a, 'f>(&'f mut Option<Option<Cow<'a, str>>>);
        impl<'de> Visitor<'de> for Find<'de, '_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an item (an object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if key.0 == "id" {
                        let id = map.next_value::<Option<Text<'de>>>()?;
                        *self.0 = Some(id.map(|t| t.0));
                        return Ok(());
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                *self.0 = Some(None);
                Ok(())
            }
        }
        let mut found = None;
        let mut de = serde_json::Deserializer::from_str(text);
        // Stopping at `id` leaves the object unfinished, which the deserializer reports
        // as an error once the visitor returns: `found` is what was read.
        let _ = de::Deserializer::deserialize_map(&mut de, Find(&mut found));
        found
    }
}

/// Marks a resource written by a succeeded operation, and every child in it, as
/// `provisioningState: Succeeded` (where a `provisioningState` is present).
fn settle(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(p) = o.get_mut("properties").and_then(Value::as_object_mut) {
                if let Some(state) = p.get_mut("provisioningState") {
                    *state = Value::String("Succeeded".into());
                }
            }
            for (k, child) in o.iter_mut() {
                if k != "provisioningState" {
                    settle(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(settle),
        _ => {}
    }
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "Succeeded" | "Failed" | "Canceled" | "Cancelled")
}

/// A resource polled without an operation URL ended in `state`; ARM gives no error body
/// then, so the code is asenet's own.
fn check_terminal(id: &ResourceId, state: &str) -> Result<(), ArmError> {
    if state == "Succeeded" {
        return Ok(());
    }
    Err(ArmError::OperationFailed {
        resource: id.to_string(),
        status: state.to_string(),
        code: "ProvisioningFailed".into(),
        message: format!("the resource ended in provisioningState {state}"),
    })
}

/// Maps an `azure_core` error (HTTP status with ARM's code and message, I/O, credential)
/// to an `ArmError`.
pub fn map_error(method: &str, resource: &str, e: azure_core::Error) -> ArmError {
    if e.downcast_ref::<policy::Fenced>().is_some() {
        return ArmError::Fenced {
            method: method.to_string(),
            resource: resource.to_string(),
        };
    }
    if let Some(h) = e.as_http_error() {
        return ArmError::Http {
            method: method.to_string(),
            resource: resource.to_string(),
            status: u16::from(h.status()),
            code: h.error_code().unwrap_or("Unknown").to_string(),
            message: h.error_message().unwrap_or("").to_string(),
        };
    }
    match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, error_code } => ArmError::Http {
            method: method.to_string(),
            resource: resource.to_string(),
            status: u16::from(*status),
            code: error_code.clone().unwrap_or_else(|| "Unknown".into()),
            message: e.to_string(),
        },
        azure_core::error::ErrorKind::Credential => ArmError::Credential(error_chain(&e)),
        azure_core::error::ErrorKind::DataConversion => ArmError::Decode {
            resource: resource.to_string(),
            message: error_chain(&e),
        },
        _ => ArmError::Connection {
            method: method.to_string(),
            resource: resource.to_string(),
            message: error_chain(&e),
        },
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> RawResponse {
        RawResponse {
            status: 201,
            headers: Headers::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// The items and `nextLink` of a page read item by item are those of its JSON tree, in
    /// order, whatever the order of its keys; an item `each` refuses stops the page with
    /// that error.
    #[test]
    fn a_page_read_item_by_item_gives_the_items_and_next_link_of_its_json_tree() {
        let items = |body: &str| {
            let mut seen = Vec::new();
            let next = answer(body).for_each_item("p", &|_| true, &mut |v| {
                seen.push(v);
                Ok(())
            });
            next.map(|n| (seen, n))
        };
        let cases = [
            r#"{"value":[{"id":"a","etag":"1"},{"id":"b","properties":{"x":[1,{"y":null}]}}],"nextLink":"https://next"}"#,
            r#"{"nextLink":"https://next","odd":{"value":[9]},"value":[{"id":"a"}]}"#,
            r#"{"value":[],"nextLink":null}"#,
            r#"{"value":null}"#,
            r#"{"other":1}"#,
            "",
        ];
        for body in cases {
            let (seen, next) = items(body).unwrap();
            let tree = answer(body).json("p").unwrap();
            let want: Vec<Value> = tree
                .get("value")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            assert_eq!(seen, want, "{body}");
            assert_eq!(
                next.as_deref(),
                tree.get("nextLink").and_then(Value::as_str),
                "{body}"
            );
        }
        for bad in [
            "{",
            r#"{"value":[{"id":"a"},"#,
            r#"{"value":7}"#,
            "[1]",
            "{} x",
        ] {
            assert!(matches!(items(bad), Err(ArmError::Decode { .. })), "{bad}");
        }
        let mut calls = 0;
        let refused = answer(r#"{"value":[{"id":"a"},{"id":"b"}]}"#).for_each_item(
            "p",
            &|_| true,
            &mut |_| {
                calls += 1;
                Err(ArmError::Config("refused".into()))
            },
        );
        assert!(matches!(refused, Err(ArmError::Config(m)) if m == "refused"));
        assert_eq!(calls, 1, "the page stops at the refused item");
        // Only the items whose id is wanted are given; the others are skipped unparsed,
        // escaped ids read as their text, and a malformed page is still refused.
        let mut given = Vec::new();
        let body = r#"{"value":[{"id":"a","x":[1,2]},{"properties":{"id":"b"},"id":"b\u0021"},{"n":1},{"id":"c","x":{"id":"b!"}},{"id":7}],"nextLink":"l"}"#;
        let next = answer(body).for_each_item("p", &|id| id == Some("b!"), &mut |v| {
            given.push(v);
            Ok(())
        });
        assert_eq!(next.unwrap().as_deref(), Some("l"));
        // An item whose id is not a string is parsed and given, as one without an id
        // would be when wanted (here: not wanted, but unreadable, so given).
        assert_eq!(
            given,
            vec![
                serde_json::json!({"properties":{"id":"b"},"id":"b!"}),
                serde_json::json!({"id":7}),
            ]
        );
        let skipped = answer(r#"{"value":[{"id":"a"},{"id":"#).for_each_item(
            "p",
            &|_| false,
            &mut |_| Ok(()),
        );
        assert!(matches!(skipped, Err(ArmError::Decode { .. })));
    }

    /// The first answer of a write is read as its JSON tree would be read, without
    /// building the tree (issue 14), for every shape ARM or a broken proxy could send.
    #[test]
    fn the_first_answer_of_a_write_reads_as_its_json_tree_does() {
        let cases = [
            r#"{"name":"n","properties":{"provisioningState":"Updating","securityRules":[{"name":"r","properties":{"provisioningState":"Succeeded"}}]}}"#,
            r#" {"properties":{"provisioningState":"Succeeded"}}"#,
            r#"{"properties":{"provisioningState":7}}"#,
            r#"{"properties":"odd"}"#,
            r#"{"properties":null}"#,
            r#"{"etag":"W/\"1\""}"#,
            r#"{"properties":{"a":1},"properties":{"provisioningState":"Failed"}}"#,
            "[1,2]",
            "null",
            "",
        ];
        for body in cases {
            let head = answer(body).head("r").unwrap();
            let tree = answer(body).json("r").unwrap();
            let state = tree
                .pointer("/properties/provisioningState")
                .and_then(Value::as_str);
            assert_eq!(head.is_object, tree.is_object(), "{body}");
            assert_eq!(head.state.as_deref(), state, "{body}");
        }
        for bad in ["{", "{\"properties\":", "not json", "{} x"] {
            assert!(answer(bad).head("r").is_err(), "{bad}");
            assert!(answer(bad).json("r").is_err(), "{bad}");
        }
    }
}
