//! Generic kube-rs reflectors: a store kept current by a watcher (list, then watch, with backoff on
//! errors), slimmed on the way in, poking a change notifier on every event; and the same for an optional
//! CRD, followed only while the API serves it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::error::api_status_code;
use crate::follow::hint;
use crate::telemetry::{Metrics, WatchLabels};

/// What the reflectors of one loop share: the client, who to poke on a change, the metrics.
#[derive(Clone)]
pub(crate) struct Reflect {
    pub client: Client,
    pub changed: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

/// One kind to reflect: its name in logs and metrics, what to select, how to slim it.
pub(crate) struct Watched<K> {
    pub name: &'static str,
    pub config: watcher::Config,
    pub slim: fn(&mut K),
    /// Return when the API answers 404 (the resource's CRD was removed) instead of retrying.
    pub until_not_found: bool,
}

impl<K> Watched<K> {
    /// Every object of the kind, retried on every error.
    pub(crate) fn all(name: &'static str, slim: fn(&mut K)) -> Self {
        Self {
            name,
            config: watcher::Config::default(),
            slim,
            until_not_found: false,
        }
    }

    /// Only the objects a field or label selector picks.
    pub(crate) fn selected(mut self, config: watcher::Config) -> Self {
        self.config = config;
        self
    }
}

/// A kind whose CRD may not be installed (KEDA's ScaledObject): unknown until discovery answered,
/// then absent (an empty, complete list) or followed by a reflector.
pub(crate) enum Optional<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    Unknown,
    Absent,
    Present(Store<K>),
}

impl<K: Resource + Clone + 'static> Optional<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The objects, and whether the list is complete.
    pub(crate) fn state(&self) -> (Vec<Arc<K>>, bool) {
        match self {
            Optional::Unknown => (Vec::new(), false),
            Optional::Absent => (Vec::new(), true),
            Optional::Present(store) => (store.state(), ready(store)),
        }
    }
}

/// An optional CRD's objects, swapped whole as the CRD comes and goes.
pub(crate) type OptionalStore<K> = Arc<ArcSwap<Optional<K>>>;

pub(crate) fn optional_store<K: Resource + Clone + 'static>() -> OptionalStore<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    Arc::new(ArcSwap::from_pointee(Optional::Unknown))
}

/// An optional CRD this server follows while it is installed.
pub(crate) struct OptionalCrd<K> {
    pub group_version: &'static str,
    pub plural: &'static str,
    /// Who ships the CRD, for log lines ("KEDA's ScaledObject").
    pub what: &'static str,
    pub slim: fn(&mut K),
}

/// How often the API's discovery is asked whether an optional CRD appeared.
pub(crate) const CRD_POLL: Duration = Duration::from_secs(30);

/// Whether a store has its first full list.
pub(crate) fn ready<K: Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

impl Reflect {
    /// The kind's API in one namespace, or in all of them.
    pub(crate) fn api<K>(&self, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Runs a reflector into `writer`, poking `changed` on every event. Returns when the stream ends, or
    /// on a 404 with [`Watched::until_not_found`].
    pub(crate) async fn run<K>(&self, watched: Watched<K>, api: Api<K>, writer: Writer<K>)
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let Watched {
            name,
            config,
            slim,
            until_not_found,
        } = watched;
        let labels = WatchLabels {
            resource: name.into(),
        };
        let stream =
            reflector::reflector(writer, watcher(api, config).modify(slim)).default_backoff();
        futures::pin_mut!(stream);
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        self.metrics.watch_up.get_or_create(&labels).set(1);
                        tracing::info!(resource = name, "initial list loaded");
                    }
                    self.changed.notify_one();
                }
                Some(Err(e)) => {
                    self.metrics.watch_errors.get_or_create(&labels).inc();
                    self.metrics.watch_up.get_or_create(&labels).set(0);
                    if until_not_found && api_status_code(&e) == Some(404) {
                        return;
                    }
                    tracing::warn!(resource = name, error = %e, "watch failed; retrying with backoff{}", hint(&e));
                }
                None => return,
            }
        }
    }

    /// Namespaces (exclusion, local-config opt-in) matter only when watching every namespace; otherwise
    /// this never ends.
    pub(crate) async fn namespaces(
        &self,
        watching_all: bool,
        watched: Watched<Namespace>,
        writer: Writer<Namespace>,
    ) {
        if watching_all {
            self.run(watched, Api::all(self.client.clone()), writer)
                .await;
        } else {
            futures::future::pending::<()>().await;
        }
    }

    /// Whether `group_version` serves `plural` (its CRD is installed and established).
    async fn served(&self, group_version: &str, plural: &str) -> Result<bool, kube::Error> {
        match self.client.list_api_group_resources(group_version).await {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
            Err(e) if crate::error::client_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Follows an optional CRD's objects while it is installed: asks discovery every [`CRD_POLL`] until
    /// it is, then reflects them until the API answers 404, and starts over. While the CRD is absent the
    /// list is empty and complete, so a cluster without it is not held unready.
    pub(crate) async fn optional<K>(
        &self,
        namespace: Option<&str>,
        crd: OptionalCrd<K>,
        state: &OptionalStore<K>,
    ) where
        K: Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let what = crd.what;
        loop {
            match self.served(crd.group_version, crd.plural).await {
                Ok(true) => {
                    tracing::info!("{what} CRD is installed; following {}", crd.plural);
                    let (store, writer) = reflector::store::<K>();
                    state.store(Arc::new(Optional::Present(store)));
                    let watched = Watched {
                        until_not_found: true,
                        ..Watched::all(crd.plural, crd.slim)
                    };
                    self.run(watched, self.api(namespace), writer).await;
                    tracing::info!(
                        "{} are no longer served ({what} CRD was removed?); checking again",
                        crd.plural
                    );
                    state.store(Arc::new(Optional::Absent));
                    self.changed.notify_one();
                    continue;
                }
                Ok(false) => {
                    if !matches!(**state.load(), Optional::Absent) {
                        tracing::info!(
                            "{what} CRD is not installed; {} are followed once it is",
                            crd.plural
                        );
                        state.store(Arc::new(Optional::Absent));
                        self.changed.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "asking the API whether {what} CRD is installed failed; retrying");
                }
            }
            tokio::time::sleep(CRD_POLL).await;
        }
    }
}
