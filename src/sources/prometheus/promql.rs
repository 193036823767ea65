//! WVA's PromQL: the per-pod peak queries, the load queries and the scale-to-zero query, with label
//! values escaped. Pure functions.

use std::time::Duration;

/// Escapes a PromQL label value (backslash and double quote), as WVA's saturation queries do.
pub(crate) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-pod peak of the KV-cache usage over the window, falling back per pod to the pre-0.9.2 name.
pub(crate) fn kv_query(namespace: &str, model: &str, window: Duration) -> String {
    let sel = format!(
        "namespace=\"{}\",model_name=\"{}\"",
        escape_label(namespace),
        escape_label(model)
    );
    let w = window.as_secs().max(1);
    format!(
        "max by (pod) (max_over_time(vllm:kv_cache_usage_perc{{{sel}}}[{w}s])) or max by (pod) (max_over_time(vllm:gpu_cache_usage_perc{{{sel}}}[{w}s]))"
    )
}

/// Per-pod peak of the waiting queue over the window.
pub(crate) fn queue_query(namespace: &str, model: &str, window: Duration) -> String {
    let sel = format!(
        "namespace=\"{}\",model_name=\"{}\"",
        escape_label(namespace),
        escape_label(model)
    );
    format!(
        "max by (pod) (max_over_time(vllm:num_requests_waiting{{{sel}}}[{}s]))",
        window.as_secs().max(1)
    )
}

/// WVA v0.4.1's load queries (its `internal/collector` at v0.4.1), label values escaped. ITL prefers
/// `vllm:inter_token_latency_seconds` (vLLM >= 0.10.2) and falls back to `time_per_output_token_seconds`.
pub(crate) fn load_queries(namespace: &str, model: &str) -> [(&'static str, String); 5] {
    let sel = format!(
        "model_name=\"{}\",namespace=\"{}\"",
        escape_label(model),
        escape_label(namespace)
    );
    let avg =
        |m: &str| format!("sum(rate({m}_sum{{{sel}}}[1m]))/sum(rate({m}_count{{{sel}}}[1m]))");
    [
        (
            "arrivalRate",
            format!("sum(rate(vllm:request_success_total{{{sel}}}[1m]))"),
        ),
        ("avgInputTokens", avg("vllm:request_prompt_tokens")),
        ("avgOutputTokens", avg("vllm:request_generation_tokens")),
        ("ttftAverage", avg("vllm:time_to_first_token_seconds")),
        (
            "itlAverage",
            format!(
                "({}) or ({})",
                avg("vllm:inter_token_latency_seconds"),
                avg("vllm:time_per_output_token_seconds")
            ),
        ),
    ]
}

/// Saturation V2's per-pod figures (WVA v0.9's `cache_config_info`, `avg_input_tokens`,
/// `avg_output_tokens` and `prefix_cache_hit_rate` queries, keyed by pod): the KV cache's blocks and block
/// size (the metric has no `model_name`, so the namespace alone selects it), and the request shape over
/// five minutes. The hit rate reads the counters under the names Prometheus stores (`_total`).
pub(crate) fn token_queries(namespace: &str, model: &str) -> [(&'static str, String); 4] {
    let ns = escape_label(namespace);
    let sel = format!("namespace=\"{ns}\",model_name=\"{}\"", escape_label(model));
    let avg = |m: &str| {
        format!("max by (pod) (rate({m}_sum{{{sel}}}[5m]) / rate({m}_count{{{sel}}}[5m]))")
    };
    [
        (
            "cacheConfig",
            format!("max by (pod, num_gpu_blocks, block_size) (vllm:cache_config_info{{namespace=\"{ns}\"}})"),
        ),
        ("avgInputTokens", avg("vllm:request_prompt_tokens")),
        ("avgOutputTokens", avg("vllm:request_generation_tokens")),
        (
            "prefixCacheHitRate",
            format!("max by (pod) (rate(vllm:prefix_cache_hits_total{{{sel}}}[5m]) / rate(vllm:prefix_cache_queries_total{{{sel}}}[5m]))"),
        ),
    ]
}

/// WVA's scale-to-zero query: requests served by the model during the retention period.
pub(crate) fn idle_query(namespace: &str, model: &str, retention: Duration) -> String {
    format!(
        "sum(increase(vllm:request_success_total{{namespace=\"{}\",model_name=\"{}\"}}[{}s]))",
        escape_label(namespace),
        escape_label(model),
        retention.as_secs().max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_queries_match_wva_keyed_by_pod() {
        let q = token_queries("ns", "m\"x");
        assert_eq!(
            q[0].1,
            "max by (pod, num_gpu_blocks, block_size) (vllm:cache_config_info{namespace=\"ns\"})"
        );
        assert_eq!(
            q[1].1,
            "max by (pod) (rate(vllm:request_prompt_tokens_sum{namespace=\"ns\",model_name=\"m\\\"x\"}[5m]) / rate(vllm:request_prompt_tokens_count{namespace=\"ns\",model_name=\"m\\\"x\"}[5m]))"
        );
        assert!(q[3].1.contains("vllm:prefix_cache_hits_total") && q[3].1.contains("[5m]"));
    }

    #[test]
    fn queries_escape_label_values() {
        assert_eq!(
            queue_query("ns", "a\"b\\c", Duration::from_secs(60)),
            r#"max by (pod) (max_over_time(vllm:num_requests_waiting{namespace="ns",model_name="a\"b\\c"}[60s]))"#
        );
        assert!(kv_query("ns", "m", Duration::from_secs(60))
            .contains(" or max by (pod) (max_over_time(vllm:gpu_cache_usage_perc{"));
    }

    #[test]
    fn load_queries_match_wva_and_fall_back_for_itl() {
        let q = load_queries("ns", "m");
        assert_eq!(
            q[0].1,
            r#"sum(rate(vllm:request_success_total{model_name="m",namespace="ns"}[1m]))"#
        );
        assert_eq!(
            q[1].1,
            r#"sum(rate(vllm:request_prompt_tokens_sum{model_name="m",namespace="ns"}[1m]))/sum(rate(vllm:request_prompt_tokens_count{model_name="m",namespace="ns"}[1m]))"#
        );
        assert!(
            q[4].1.contains("vllm:inter_token_latency_seconds_sum")
                && q[4].1.contains(") or (")
                && q[4].1.contains("vllm:time_per_output_token_seconds_count")
        );
    }
}
