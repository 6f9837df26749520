//! Kubernetes events (`events.k8s.io/v1`) that are always true.
//!
//! kube-runtime's `Recorder` folds a repeated event into a series (one Event object whose
//! `series.count` grows) keyed by type, reason, action, reporter and object, but *not* the
//! note: a second `Applied` with another note was counted into the first event, whose note
//! stayed the first one's, so `kubectl describe` showed "applied 2 change(s) to ase-two-nsg
//! (x3 over 43s)" after writes to two different NSGs (issue 10, defect 3). This recorder is
//! the same thing with the note in the key: an event repeated word for word within
//! [`SERIES_TTL`] is counted into its series (a resync repeating a finding does not spam the
//! namespace), any other note is a new Event object.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, ResourceExt};

/// How long a published event can still grow a series (kube-runtime's `Recorder` uses 6 min).
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// What makes two events the same event: everything shown, the note included.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    type_: EventType,
    reason: String,
    action: String,
    note: Option<String>,
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    related: Option<(Option<String>, Option<String>, Option<String>)>,
}

fn object_key(
    r: &ObjectReference,
) -> (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    (
        r.api_version.clone(),
        r.kind.clone(),
        r.namespace.clone(),
        r.uid.clone().or_else(|| r.name.clone()),
    )
}

/// Publishes events on behalf of one reporter (controller + instance). Cheap to share.
pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    /// The last version of each event published within [`SERIES_TTL`].
    cache: Mutex<HashMap<EventKey, K8sEvent>>,
}

impl EventRecorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        EventRecorder {
            client,
            reporter,
            cache: Mutex::default(),
        }
    }

    fn key(ev: &Event, regarding: &ObjectReference) -> EventKey {
        EventKey {
            type_: ev.type_,
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: ev.note.clone(),
            regarding: object_key(regarding),
            related: ev
                .secondary
                .as_ref()
                .map(|r| (r.kind.clone(), r.namespace.clone(), r.name.clone())),
        }
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            related: ev.secondary.clone(),
            ..Default::default()
        }
    }

    /// Creates the event, or, when the same event (same note) was published within
    /// [`SERIES_TTL`], counts it into that event's series.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Self::key(ev, regarding);
        let previous = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, e| {
                let last = e
                    .series
                    .as_ref()
                    .map(|s| s.last_observed_time.0)
                    .or_else(|| e.event_time.as_ref().map(|t| t.0));
                last.is_none_or(|t| t + SERIES_TTL > now)
            });
            cache.get(&key).cloned()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let event = match previous {
            Some(mut event) => {
                let count = event.series.as_ref().map_or(2, |s| s.count + 1);
                event.series = Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                });
                events
                    .patch(
                        &event.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&event),
                    )
                    .await?;
                event
            }
            None => {
                let event = self.new_event(ev, regarding, now);
                events.create(&PostParams::default(), &event).await?;
                event
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, event);
        Ok(())
    }
}
