//! Tenancy in the operator (docs/operator.md, "Tenancy"): the reflector stores of the
//! `AseTenancyPolicy` and `AseBackendGrant` objects, the [`PolicySet`] a reconcile judges
//! its component with, and the task that wakes the specs whose decision a change of those
//! objects changes.
//!
//! The decision itself is pure ([`crate::tenancy`]); a reconcile puts the refusals of its
//! component into the scope it plans with ([`crate::diff::Scope::refused`]), so a refused
//! spec is planned like an invalid one: nothing it contributes is written, what it owns in
//! Azure stays as it is, its status says `Ready=False`, reason `NotPermitted`.

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tracing::{debug, warn};

use super::context::{Context, Stores};
use super::index::key_of;
use crate::api::AseConnectivity;
use crate::tenancy::{AseBackendGrant, AseTenancyPolicy, PolicySet, TenancyMode};

/// The reflector stores of the tenancy objects (watched across the cluster: a grant lives
/// in its owner's namespace, which the operator need not watch for specs), and of the
/// namespaces' metadata (their labels, for `namespaceSelector`).
#[derive(Clone)]
pub struct TenancyStores {
    pub policies: Store<AseTenancyPolicy>,
    pub grants: Store<AseBackendGrant>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl TenancyStores {
    /// The policy set of the objects in the stores, enforcing, and the errors of their bad
    /// entries (which grant nothing; [`wake_changed`] logs them when they appear).
    pub fn judge(&self) -> (PolicySet, Vec<crate::tenancy::PolicyError>) {
        let policies = self.policies.state();
        let grants = self.grants.state();
        let (set, errors) =
            PolicySet::enforce(policies.iter().map(|p| &**p), grants.iter().map(|g| &**g));
        let labels = self.namespaces.state().into_iter().filter_map(|ns| {
            let name = ns.metadata.name.clone()?;
            Some((name, ns.metadata.labels.clone().unwrap_or_default()))
        });
        (set.with_namespace_labels(labels), errors)
    }

    /// The policy set of the objects in the stores, enforcing.
    pub fn policy_set(&self) -> PolicySet {
        self.judge().0
    }

    /// True once every store has seen its initial list.
    pub fn is_ready(&self) -> bool {
        let ready =
            |r: Option<Result<(), reflector::store::WriterDropped>>| matches!(r, Some(Ok(())));
        ready(self.policies.wait_until_ready().now_or_never())
            && ready(self.grants.wait_until_ready().now_or_never())
            && ready(self.namespaces.wait_until_ready().now_or_never())
    }

    pub async fn wait_until_ready(&self) -> bool {
        self.policies.wait_until_ready().await.is_ok()
            && self.grants.wait_until_ready().await.is_ok()
            && self.namespaces.wait_until_ready().await.is_ok()
    }
}

/// The policy set a reconcile judges with: off when tenancy is off; `None` when enforcing
/// but the policies and grants are not read yet (judging then would refuse every spec and
/// flap its status: the reconcile backs off instead).
pub fn policy_set(ctx: &Context) -> Option<PolicySet> {
    match ctx.settings.tenancy {
        TenancyMode::Off => Some(PolicySet::off()),
        TenancyMode::Enforce => match ctx.stores.tenancy() {
            Some(t) if t.is_ready() => Some(t.policy_set()),
            Some(_) => None,
            // Enforcing without stores (an embedder that gave none): nothing is allowed.
            None => Some(PolicySet::enforce([], []).0),
        },
    }
}

/// Starts watching the tenancy objects and the namespaces' metadata: the stores, and a
/// stream that yields once per change (an object applied or deleted, or an initial list
/// completed). A namespace's label change counts: it may change what a selector selects.
pub fn watch(client: Client) -> (TenancyStores, impl Stream<Item = ()> + Send + 'static) {
    let (policies, policy_writer) = reflector::store::<AseTenancyPolicy>();
    let (grants, grant_writer) = reflector::store::<AseBackendGrant>();
    let policy_changes = reflector(
        policy_writer,
        watcher(
            Api::<AseTenancyPolicy>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .filter_map(|e| async move { changed(e, "AseTenancyPolicy") });
    let grant_changes = reflector(
        grant_writer,
        watcher(
            Api::<AseBackendGrant>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .filter_map(|e| async move { changed(e, "AseBackendGrant") });
    // Labels only: the metadata of namespaces, not their specs and statuses.
    let (namespaces, namespace_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let namespace_changes = reflector(
        namespace_writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .filter_map(|e| async move { changed(e, "Namespace") });
    (
        TenancyStores {
            policies,
            grants,
            namespaces,
        },
        futures::stream::select(
            futures::stream::select(policy_changes, grant_changes),
            namespace_changes,
        ),
    )
}

/// `Some(())` for an event that changes what the store holds as a whole.
fn changed<K>(event: Result<watcher::Event<K>, watcher::Error>, kind: &str) -> Option<()> {
    match event {
        Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
            Some(())
        }
        Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
        Err(e) => {
            // Most often: the CRD is not installed (Helm does not upgrade `crds/`).
            warn!(error = %e, kind, "cannot watch tenancy objects; specs stay refused or waiting");
            None
        }
    }
}

/// Which specs a new policy set decides differently from the previous one. Both sets judge
/// the specs as they are now (a spec edited since the last change is compared fairly); on
/// the first set, every spec counts as changed.
#[derive(Default)]
pub struct Decisions {
    last: Option<PolicySet>,
}

impl Decisions {
    pub fn changed(
        &mut self,
        set: &PolicySet,
        specs: &[std::sync::Arc<AseConnectivity>],
    ) -> Vec<ObjectRef<AseConnectivity>> {
        let out = specs
            .iter()
            .filter(|spec| match &self.last {
                Some(last) => last.decide(spec) != set.decide(spec),
                None => true,
            })
            .map(|spec| {
                let (namespace, name) = key_of(spec);
                ObjectRef::new(&name).within(&namespace)
            })
            .collect();
        self.last = Some(set.clone());
        out
    }
}

/// Wakes, on every change of the tenancy objects, the specs whose decision changed (a
/// grant given or revoked, a policy edited): they reconcile with the new set. A reconcile's
/// cached outcome includes its members' refusals ([`super::context::fingerprint_in`]), so
/// a woken spec plans afresh. Runs until `changes` ends.
pub async fn wake_changed(
    changes: impl Stream<Item = ()>,
    tenancy: TenancyStores,
    specs: Stores,
    wake: impl Fn(ObjectRef<AseConnectivity>),
) {
    let mut decisions = Decisions::default();
    let mut changes = std::pin::pin!(changes);
    while changes.next().await.is_some() {
        if !tenancy.is_ready() {
            continue;
        }
        let (set, errors) = tenancy.judge();
        for e in &errors {
            warn!(error = %e, "bad tenancy entry; it grants nothing");
        }
        let woken = decisions.changed(&set, &specs.all());
        debug!(
            specs = woken.len(),
            "tenancy changed; waking the specs it decides differently"
        );
        for r in woken {
            wake(r);
        }
    }
}
