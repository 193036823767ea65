//! The status writer loop: the Lease holder writes status every `--status-interval` and as soon as a
//! decision changes, retrying failed writes with backoff; it never touches request serving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::cluster::crd::VariantAutoscaling;
use crate::cluster::leader::LeaderElector;
use crate::cluster::snapshot::SourceKind;
use crate::engine::Engine;
use crate::telemetry::{Metrics, ResultLabels};

use super::events::{accelerator_event, event_for};
use super::gauges::{update_gauges, update_gpu_gauges, GaugeSeries};
use super::patch::status_patch;
use super::view::{views, VariantView};
use super::*;

pub struct StatusWriter {
    pub client: Client,
    pub engine: Arc<Engine>,
    pub elector: LeaderElector,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub tick: Duration,
}

impl StatusWriter {
    /// A writer that competes for the Lease `wva-metrics-server-status` in `namespace`.
    pub fn new(
        client: Client,
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        namespace: &str,
        opts: &StatusOptions,
    ) -> Self {
        let elector = LeaderElector::new(
            client.clone(),
            namespace,
            LEASE_NAME,
            &opts.identity,
            opts.lease_duration,
        );
        Self {
            client,
            engine,
            elector,
            metrics,
            interval: opts.interval,
            tick: opts.tick,
        }
    }

    pub async fn run(self: Arc<Self>) {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(self.elector.identity().to_string()),
            },
        );
        let mut gauges = GaugeSeries::default();
        let mut last_written: BTreeMap<ViewKey, Option<i64>> = BTreeMap::new();
        // What annotated objects (no status to read back) last showed, for their Events.
        let mut remembered: BTreeMap<ViewKey, Remembered> = BTreeMap::new();
        // The unresolved-accelerator reason last recorded per variant.
        let mut warned: BTreeMap<ViewKey, String> = BTreeMap::new();
        let mut last_full = None::<Instant>;
        let mut retry_at: BTreeMap<ViewKey, (Instant, u32)> = BTreeMap::new();
        let mut leading = false;
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let snapshot = self.engine.snapshot();
            if !snapshot.synced {
                continue;
            }
            let views = views(&self.engine.explain_at(&snapshot, None), &snapshot);
            update_gauges(&self.metrics, &views, &mut gauges);
            update_gpu_gauges(&self.metrics, &snapshot.gpus, &mut gauges);

            let leader = match self.elector.try_acquire_or_renew().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election failed; not writing status this round");
                    false
                }
            };
            if leader != leading {
                tracing::info!(
                    identity = self.elector.identity(),
                    leader,
                    "status writer leadership changed"
                );
                leading = leader;
                last_written.clear();
                remembered.clear();
                warned.clear();
            }
            if !leader {
                continue;
            }
            let full = last_full.is_none_or(|t| t.elapsed() >= self.interval);
            let now = Instant::now();
            for v in &views {
                let key = (v.namespace.clone(), v.kind, v.name.clone());
                if let Some(event) = accelerator_event(v, warned.get(&key).map(String::as_str)) {
                    self.publish(&recorder, v, v.uid.clone(), &event).await;
                }
                match &v.accelerator_unresolved {
                    Some(why) => warned.insert(key.clone(), why.clone()),
                    None => warned.remove(&key),
                };
                let changed = last_written.get(&key) != Some(&v.desired);
                let due = retry_at.get(&key).is_none_or(|(at, _)| now >= *at);
                if !(full || changed) || !due {
                    continue;
                }
                let result = self.write(&recorder, v, &mut remembered).await;
                self.metrics
                    .status_writes
                    .get_or_create(&ResultLabels {
                        result: if result.is_ok() { "ok" } else { "error" }.into(),
                    })
                    .inc();
                match result {
                    Ok(()) => {
                        last_written.insert(key.clone(), v.desired);
                        retry_at.remove(&key);
                    }
                    Err(e) => {
                        let attempts = retry_at.get(&key).map_or(0, |(_, n)| *n) + 1;
                        let backoff = Duration::from_secs(1 << attempts.min(5)).min(self.interval);
                        tracing::warn!(namespace = %v.namespace, variant = %v.name, error = %e, retry_in = ?backoff, "status write failed");
                        retry_at.insert(key, (now + backoff, attempts));
                    }
                }
            }
            if full {
                last_full = Some(now);
            }
            let live: BTreeSet<ViewKey> = views
                .iter()
                .map(|v| (v.namespace.clone(), v.kind, v.name.clone()))
                .collect();
            last_written.retain(|k, _| live.contains(k));
            retry_at.retain(|k, _| live.contains(k));
            warned.retain(|k, _| live.contains(k));
            remembered.retain(|k, _| live.contains(k));
        }
    }

    /// A VariantAutoscaling gets its status (server-side apply) and an Event on a change; an annotated
    /// HPA or ScaledObject has no status of ours, so it gets the Event alone.
    async fn write(
        &self,
        recorder: &Recorder,
        v: &VariantView,
        remembered: &mut BTreeMap<ViewKey, Remembered>,
    ) -> Result<(), kube::Error> {
        let (previous_desired, previous_message, uid) = if v.kind == SourceKind::VariantAutoscaling
        {
            let api: Api<VariantAutoscaling> = Api::namespaced(self.client.clone(), &v.namespace);
            // Re-read, as WVA does: the VA may be gone, and conditions keep their transition times.
            let Some(current) = api.get_opt(&v.name).await? else {
                return Ok(());
            };
            let status = current.status.clone().unwrap_or_default();
            let existing = status.conditions.clone().unwrap_or_default();
            let previous_desired = status
                .desired_optimized_alloc
                .as_ref()
                .and_then(|d| d["numReplicas"].as_i64());
            let previous_message = existing
                .iter()
                .find(|c| c["type"] == "OptimizationReady")
                .and_then(|c| c["message"].as_str())
                .map(str::to_string);
            let body = status_patch(v, &existing, Time(jiff::Timestamp::now()));
            api.patch_status(
                &v.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
            (previous_desired, previous_message, current.metadata.uid)
        } else {
            let key = (v.namespace.clone(), v.kind, v.name.clone());
            let before = remembered.insert(
                key,
                Remembered {
                    desired: v.desired,
                    message: v.optimization.message.clone(),
                },
            );
            (
                before.as_ref().and_then(|b| b.desired),
                before.map(|b| b.message),
                v.uid.clone(),
            )
        };
        if let Some(event) = event_for(v, previous_desired, previous_message.as_deref()) {
            self.publish(recorder, v, uid, &event).await;
        }
        Ok(())
    }

    /// Records `event` on the variant's declaring object; a failure is logged, not retried.
    async fn publish(
        &self,
        recorder: &Recorder,
        v: &VariantView,
        uid: Option<String>,
        event: &kube::runtime::events::Event,
    ) {
        let reference = ObjectReference {
            api_version: Some(v.kind.api_version().into()),
            kind: Some(v.kind.as_str().into()),
            name: Some(v.name.clone()),
            namespace: Some(v.namespace.clone()),
            uid,
            ..Default::default()
        };
        if let Err(e) = recorder.publish(event, &reference).await {
            tracing::warn!(variant = %v.name, kind = %v.kind, error = %e, "recording an event failed");
        }
    }
}

/// A view's identity: namespace, declaring kind, name.
type ViewKey = (String, SourceKind, String);

/// The last decision shown for an annotated object.
struct Remembered {
    desired: Option<i64>,
    message: String,
}
