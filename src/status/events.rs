//! The Events recorded when a variant's recommendation or decidability changes.

use kube::runtime::events::{Event, EventType};

use crate::saturation::TargetReason;

use super::patch::truncate;
use super::view::VariantView;
use super::*;

/// The Warning to record when a variant's accelerator cannot be resolved, once per change of the reason
/// (`warned`: the reason last recorded). The variant is served all the same, as `accelerator_type="unresolved"`.
pub(crate) fn accelerator_event(v: &VariantView, warned: Option<&str>) -> Option<Event> {
    let why = v.accelerator_unresolved.as_deref()?;
    (warned != Some(why)).then(|| Event {
        type_: EventType::Warning,
        reason: "AcceleratorNotResolved".into(),
        note: Some(truncate(
            &format!("served with accelerator_type=\"unresolved\": {why}"),
            MAX_MESSAGE_BYTES,
        )),
        action: "Evaluate".into(),
        secondary: None,
    })
}

/// The event to record when a VariantAutoscaling's recommendation or decidability changes, if any.
pub(crate) fn event_for(
    v: &VariantView,
    previous_desired: Option<i64>,
    previous_optimization_message: Option<&str>,
) -> Option<Event> {
    match (v.desired, previous_desired) {
        (Some(now), Some(before)) if now != before => Some(Event {
            type_: EventType::Normal,
            reason: match (&v.desired_reason, now > before) {
                (Some(TargetReason::ScaleToZero), _) => "ScaleToZeroRecommended",
                (Some(TargetReason::ScaleFromZero), _) => "ScaleFromZeroRecommended",
                (_, true) => "ScaleUpRecommended",
                (_, false) => "ScaleDownRecommended",
            }
            .into(),
            note: Some(truncate(
                &format!("desired replicas {before} → {now}: {}", v.message),
                MAX_MESSAGE_BYTES,
            )),
            action: "Recommend".into(),
            secondary: None,
        }),
        // Scale-up needed but every variant is at its maxReplicas: said once per change of the reason.
        (Some(_), _)
            if v.desired_reason == Some(TargetReason::ScaleUpBlocked)
                && previous_optimization_message != Some(v.optimization.message.as_str()) =>
        {
            Some(Event {
                type_: EventType::Warning,
                reason: "MaxReplicasReached".into(),
                note: Some(truncate(&v.message, MAX_MESSAGE_BYTES)),
                action: "Recommend".into(),
                secondary: None,
            })
        }
        // The GPU limiter cut the scale-up (WVA's ResourceConstrained): said once per change.
        (Some(_), _)
            if v.desired_reason == Some(TargetReason::Limited)
                && previous_optimization_message != Some(v.optimization.message.as_str()) =>
        {
            Some(Event {
                type_: EventType::Warning,
                reason: "ResourceConstrained".into(),
                note: Some(truncate(&v.message, MAX_MESSAGE_BYTES)),
                action: "Recommend".into(),
                secondary: None,
            })
        }
        // The configuration asks for the queueing model, which WVA v0.9 refuses: said once per change.
        (Some(_), _)
            if v.desired_reason == Some(TargetReason::Refused)
                && previous_optimization_message != Some(v.optimization.message.as_str()) =>
        {
            Some(Event {
                type_: EventType::Warning,
                reason: "OptimizationRefused".into(),
                note: Some(truncate(&v.message, MAX_MESSAGE_BYTES)),
                action: "Recommend".into(),
                secondary: None,
            })
        }
        (None, _) if previous_optimization_message != Some(v.optimization.message.as_str()) => {
            Some(Event {
                type_: EventType::Warning,
                reason: match (v.target_resolved.status, v.optimization.reason) {
                    (false, _) => "TargetNotFound",
                    (_, "MetricsUnavailable") => "MetricsUnavailable",
                    _ => "InvalidConfiguration",
                }
                .into(),
                note: Some(truncate(&v.optimization.message, MAX_MESSAGE_BYTES)),
                action: "Evaluate".into(),
                secondary: None,
            })
        }
        _ => None,
    }
}
