//! `wva-metrics-server status`: the `/debug/variants` document rendered as a table per model, for people
//! who would rather read columns than JSON. Reads the JSON loosely (a field a server version lacks shows
//! as `-`), so the command works against older and newer servers alike.

use std::fmt::Write as _;

use serde_json::Value;

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn fixed(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::from(indent);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Peak KV-cache usage and queue over a variant's pods with samples, and how many of its pods have one.
fn pod_figures(model: &Value, variant: &str) -> (String, String, String) {
    let pods: Vec<&Value> = model["pods"]
        .as_array()
        .map(|a| a.iter().filter(|p| p["variant"] == variant).collect())
        .unwrap_or_default();
    let samples: Vec<&Value> = pods
        .iter()
        .map(|p| &p["sample"])
        .filter(|s| s.is_object())
        .collect();
    let peak = |key: &str| {
        samples
            .iter()
            .filter_map(|s| s[key].as_f64())
            .reduce(f64::max)
    };
    (
        format!("{}/{}", samples.len(), pods.len()),
        peak("kvCacheUsage").map_or_else(|| "-".into(), |x| format!("{x:.2}")),
        peak("queueLength").map_or_else(|| "-".into(), |x| format!("{x:.0}")),
    )
}

/// The zero line: policy, activity and demand, when the server decides on them.
fn zero_line(zero: &Value, out: &mut String) {
    if !zero.is_object() {
        return;
    }
    let policy = &zero["policy"];
    let state = |v: &Value| {
        let mut s = text(&v["state"]);
        for key in ["reason", "pool", "requests", "lastSeconds"] {
            if !v[key].is_null() {
                let _ = write!(s, " {key}={}", text(&v[key]));
            }
        }
        s
    };
    let _ = writeln!(
        out,
        "  zero: scale to zero {} (retention {}, {}); activity {}; demand {}",
        if policy["enabled"] == true {
            "enabled"
        } else {
            "disabled"
        },
        text(&policy["retention"]),
        text(&policy["source"]),
        state(&zero["activity"]),
        state(&zero["demand"]),
    );
}

fn model_section(model: &Value, out: &mut String) {
    let config = &model["config"];
    let source = match (config["configMap"].as_str(), config["entry"].as_str()) {
        (Some(cm), Some(entry)) => format!("{cm} ({entry})"),
        _ => "built-in defaults".into(),
    };
    let _ = writeln!(
        out,
        "MODEL {}  NAMESPACE {}  THRESHOLDS {source}",
        text(&model["modelId"]),
        text(&model["namespace"])
    );
    let decision = &model["decision"];
    let reasons = decision["reasons"].as_array().cloned().unwrap_or_default();
    let reason_of = |name: &str| reasons.iter().find(|r| r["name"] == name).cloned();
    let mut names: Vec<String> = model["variants"]
        .as_array()
        .map(|a| a.iter().map(|v| text(&v["name"])).collect())
        .unwrap_or_default();
    if names.is_empty() {
        names = reasons.iter().map(|r| text(&r["name"])).collect();
    }
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            let v = model["variants"]
                .as_array()
                .and_then(|a| a.iter().find(|v| &text(&v["name"]) == name))
                .cloned()
                .unwrap_or(Value::Null);
            let r = reason_of(name).unwrap_or(Value::Null);
            let (fresh, kv, queue) = pod_figures(model, name);
            let desired = if model["unavailable"].is_string() {
                "503".into()
            } else {
                text(&r["target"])
            };
            vec![
                name.clone(),
                text(&v["kind"]),
                text(&v["role"]),
                text(&v["accelerator"]),
                text(&v["cost"]),
                text(&v["specReplicas"]),
                text(&v["readyReplicas"]),
                format!(
                    "{}..{}",
                    text(&v["minReplicas"]),
                    text(&v["maxReplicas"]).replace('-', "")
                ),
                desired,
                text(&r["reason"]),
                fresh,
                kv,
                queue,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "VARIANT",
            "KIND",
            "ROLE",
            "ACCELERATOR",
            "COST",
            "SPEC",
            "READY",
            "MIN..MAX",
            "DESIRED",
            "REASON",
            "SAMPLES",
            "KV",
            "QUEUE",
        ],
        &rows,
        "  ",
    ));
    analysis_lines(decision, out);
    capacity_lines(&decision["capacity"], out);
    zero_line(&decision["zero"], out);
    if let Some(why) = model["unavailable"].as_str() {
        let _ = writeln!(out, "  UNAVAILABLE (503): {why}");
    }
    for r in &reasons {
        let _ = writeln!(out, "  {}: {}", text(&r["name"]), text(&r["message"]));
    }
}

/// V1's analysis: of the model, or of each prefill/decode role of a disaggregated one.
fn analysis_lines(decision: &Value, out: &mut String) {
    let line = |label: &str, analysis: &Value, out: &mut String| {
        let _ = writeln!(
            out,
            "  {label}: {} replicas, {} not saturated, spare KV {}, spare queue {}; scale up: {}; scale down safe: {}",
            text(&analysis["totalReplicas"]),
            text(&analysis["nonSaturatedReplicas"]),
            fixed(&analysis["avgSpareKvCapacity"], 3),
            fixed(&analysis["avgSpareQueueLength"], 1),
            text(&analysis["scaleUpReason"]),
            text(&analysis["scaleDownReason"]),
        );
    };
    if decision["analysis"].is_object() {
        line("analysis", &decision["analysis"], out);
    }
    for (role, analysis) in decision["analysisByRole"].as_object().into_iter().flatten() {
        line(&format!("analysis of role {role}"), analysis, out);
    }
}

/// Saturation V2's analysis: the model's totals, then one line per variant with its capacity source.
fn capacity_lines(capacity: &Value, out: &mut String) {
    if !capacity.is_object() {
        return;
    }
    let totals = |t: &Value| {
        format!(
            "supply {} (anticipated {}), demand {}, utilization {}; required {}, spare {} tokens",
            fixed(&t["supply"], 0),
            fixed(&t["anticipatedSupply"], 0),
            fixed(&t["demand"], 0),
            fixed(&t["utilization"], 2),
            fixed(&t["requiredCapacity"], 0),
            fixed(&t["spareCapacity"], 0),
        )
    };
    let th = &capacity["thresholds"];
    let _ = writeln!(
        out,
        "  saturation V2 (U {}, D {}): {}",
        text(&th["scaleUpThreshold"]),
        text(&th["scaleDownBoundary"]),
        totals(&capacity["model"])
    );
    if let Some(roles) = capacity["roles"].as_object() {
        for (role, t) in roles {
            let _ = writeln!(out, "    role {role}: {}", totals(t));
        }
    }
    for v in capacity["variants"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "    {}: {} × {} tokens per replica ({}), demand {}, KV tokens {}/{}",
            text(&v["name"]),
            text(&v["replicas"]),
            fixed(&v["perReplicaCapacity"], 0),
            text(&v["source"]),
            fixed(&v["demand"], 0),
            text(&v["kvTokensUsed"]),
            text(&v["kvTokensCapacity"]),
        );
    }
}

/// Renders a `/debug/variants` document.
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    if doc["synced"] == false {
        out.push_str(
            "NOT SYNCED: the server has not listed every object yet; it answers 503 until then\n\n",
        );
    }
    let models = doc["models"].as_array().cloned().unwrap_or_default();
    if models.is_empty() {
        out.push_str("no models\n");
    }
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        model_section(m, &mut out);
    }
    if let Some(excluded) = doc["excluded"].as_array().filter(|a| !a.is_empty()) {
        out.push_str("\nEXCLUDED\n");
        let rows: Vec<Vec<String>> = excluded
            .iter()
            .map(|e| {
                vec![
                    format!("{}/{}", text(&e["namespace"]), text(&e["name"])),
                    text(&e["kind"]),
                    text(&e["modelId"]),
                    text(&e["reason"]),
                ]
            })
            .collect();
        out.push_str(&table(&["VARIANT", "KIND", "MODEL", "REASON"], &rows, "  "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_models_variants_zero_and_exclusions() {
        let doc = json!({
            "synced": true,
            "models": [{
                "namespace": "llm", "modelId": "Qwen/Qwen3-0.6B",
                "config": {"configMap": "wva/wva-saturation-scaling-config", "entry": "default"},
                "variants": [
                    {"name": "qwen-l40s", "kind": "VariantAutoscaling", "accelerator": "L40S", "cost": 5.0, "deployment": "d", "specReplicas": 2, "readyReplicas": 2, "minReplicas": 1},
                    {"name": "qwen-h100", "kind": "HorizontalPodAutoscaler", "accelerator": "H100", "cost": 20.0, "deployment": "e", "specReplicas": 1, "readyReplicas": 1, "minReplicas": 1, "maxReplicas": 4}
                ],
                "pods": [
                    {"variant": "qwen-l40s", "pod": "a", "sample": {"kvCacheUsage": 0.8, "queueLength": 14.0}},
                    {"variant": "qwen-l40s", "pod": "b", "missing": "not scraped yet"},
                    {"variant": "qwen-h100", "pod": "c", "sample": {"kvCacheUsage": 0.3, "queueLength": 0.0}}
                ],
                "decision": {
                    "analysis": {"totalReplicas": 3, "nonSaturatedReplicas": 1, "avgSpareKvCapacity": 0.5, "avgSpareQueueLength": 5.0, "scaleUpReason": "spare KV low", "scaleDownReason": "no"},
                    "reasons": [
                        {"name": "qwen-h100", "target": 1, "reason": "noChange", "message": "another variant of the model was chosen"},
                        {"name": "qwen-l40s", "target": 3, "reason": "scaleUp", "message": "scale up (cheapest)"}
                    ],
                    "zero": {"policy": {"enabled": true, "retention": "10m0s", "source": "entry \"default\""}, "activity": {"state": "active", "lastSeconds": 3}, "demand": {"state": "noPool"}}
                }
            }],
            "excluded": [{"namespace": "llm", "name": "bad", "kind": "HorizontalPodAutoscaler", "modelId": "m", "reason": "annotation llm-d.ai/variant-cost: not a number"}]
        });
        let out = render(&doc);
        assert!(out.contains("MODEL Qwen/Qwen3-0.6B  NAMESPACE llm  THRESHOLDS wva/wva-saturation-scaling-config (default)"), "{out}");
        let l40s = out
            .lines()
            .find(|l| l.trim_start().starts_with("qwen-l40s "))
            .unwrap();
        for cell in ["L40S", "scaleUp", "1/2", "0.80", "14", "1..", " 3 "] {
            assert!(l40s.contains(cell), "{cell} in {l40s:?}");
        }
        assert!(out.contains("1..4"), "{out}");
        assert!(out.contains("zero: scale to zero enabled (retention 10m0s, entry \"default\"); activity active lastSeconds=3; demand noPool"), "{out}");
        assert!(out.contains("EXCLUDED") && out.contains("llm/bad"));
        // Columns line up: the header's REASON starts where each row's reason does.
        let header = out
            .lines()
            .find(|l| l.contains("VARIANT") && l.contains("REASON"))
            .unwrap();
        let col = header.find("REASON").unwrap();
        assert_eq!(&l40s[col..col + 7], "scaleUp");
    }

    #[test]
    fn unavailable_and_unsynced_say_so() {
        let doc = json!({"synced": false, "models": [{"namespace": "n", "modelId": "m", "config": {}, "pods": [],
            "decision": {"analysis": {}, "reasons": [{"name": "v", "target": 1, "reason": "holdTransition", "message": "x"}]},
            "unavailable": "no fresh vLLM metrics for model \"m\""}], "excluded": []});
        let out = render(&doc);
        assert!(out.starts_with("NOT SYNCED"));
        assert!(out.contains("UNAVAILABLE (503): no fresh vLLM metrics"));
        assert!(out.contains("503"));
        assert_eq!(render(&json!({"models": []})), "no models\n");
    }

    #[test]
    fn disaggregated_models_show_roles_and_each_roles_analysis() {
        let a = |n: i64, up: bool| json!({"totalReplicas": n, "nonSaturatedReplicas": 0, "avgSpareKvCapacity": 0.0, "avgSpareQueueLength": 0.0, "scaleUpReason": if up {"saturated"} else {"no"}, "scaleDownReason": "no"});
        let doc = json!({"synced": true, "models": [{"namespace": "n", "modelId": "m", "config": {}, "pods": [],
            "variants": [
                {"name": "m-prefill", "kind": "VariantAutoscaling", "role": "prefill", "accelerator": "H100", "cost": 10.0, "specReplicas": 2, "readyReplicas": 2, "minReplicas": 1},
                {"name": "m-decode", "kind": "VariantAutoscaling", "role": "decode", "accelerator": "H100", "cost": 10.0, "specReplicas": 2, "readyReplicas": 2, "minReplicas": 1}
            ],
            "decision": {"analysisByRole": {"decode": a(2, false), "prefill": a(2, true)},
                "reasons": [{"name": "m-prefill", "target": 3, "reason": "scaleUp", "message": "up"},
                            {"name": "m-decode", "target": 1, "reason": "scaleDown", "message": "down"}]}}], "excluded": []});
        let out = render(&doc);
        let header = out.lines().find(|l| l.contains("VARIANT")).unwrap();
        let prefill = out
            .lines()
            .find(|l| l.trim_start().starts_with("m-prefill "))
            .unwrap();
        let col = header.find("ROLE").unwrap();
        assert_eq!(&prefill[col..col + 7], "prefill", "{out}");
        assert!(out.contains("analysis of role prefill: 2 replicas, 0 not saturated, spare KV 0.000, spare queue 0.0; scale up: saturated"), "{out}");
        assert!(out.contains("analysis of role decode: 2 replicas"), "{out}");
    }

    #[test]
    fn saturation_v2_shows_its_capacity() {
        let doc = json!({"synced": true, "models": [{"namespace": "n", "modelId": "m", "config": {}, "pods": [],
            "decision": {"analyzer": "saturation-v2",
                "capacity": {"thresholds": {"scaleUpThreshold": 0.85, "scaleDownBoundary": 0.7},
                    "model": {"supply": 12800.0, "anticipatedSupply": 12800.0, "demand": 11450.0, "utilization": 0.894, "requiredCapacity": 670.6, "spareCapacity": 0.0},
                    "variants": [{"name": "v", "replicas": 1, "perReplicaCapacity": 12800.0, "source": "fallback", "demand": 11450.0, "kvTokensUsed": 11000, "kvTokensCapacity": 16000}]},
                "reasons": [{"name": "v", "target": 2, "reason": "scaleUp", "message": "scale up"}]}}], "excluded": []});
        let out = render(&doc);
        assert!(out.contains("saturation V2 (U 0.85, D 0.7): supply 12800 (anticipated 12800), demand 11450, utilization 0.89; required 671, spare 0 tokens"), "{out}");
        assert!(
            out.contains(
                "v: 1 × 12800 tokens per replica (fallback), demand 11450, KV tokens 11000/16000"
            ),
            "{out}"
        );
        assert!(!out.contains("analysis:"), "{out}");
    }
}
