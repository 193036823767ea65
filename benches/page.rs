//! A realistic vLLM V1 metrics page for benchmarks: every core family of vLLM V1's metrics (vllm `vllm/v1/metrics/loggers.py`) with
//! `engine` and `model_name` labels, `_created` gauges, histograms with vLLM's default buckets.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::fmt::Write;

const LAT: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const TTFT: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const TOK: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
];

pub fn vllm_page(engines: usize) -> String {
    vllm_page_for("meta-llama/Llama-3.1-8B-Instruct", engines)
}

/// The same page for another `model_name`.
pub fn vllm_page_for(model: &str, engines: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# HELP python_gc_objects_collected_total Objects collected during gc\n# TYPE python_gc_objects_collected_total counter");
    for g in 0..3 {
        let _ = writeln!(
            o,
            "python_gc_objects_collected_total{{generation=\"{g}\"}} {}.0",
            1000 * (g + 1)
        );
    }
    let gauges = [
        ("vllm:num_requests_running", 3.0),
        ("vllm:num_requests_waiting", 7.0),
        ("vllm:kv_cache_usage_perc", 0.4213),
    ];
    for (name, v) in gauges {
        let _ = writeln!(o, "# HELP {name} A gauge.\n# TYPE {name} gauge");
        for e in 0..engines {
            let _ = writeln!(
                o,
                "{name}{{engine=\"{e}\",model_name=\"{model}\"}} {}",
                v + e as f64 * 0.01
            );
        }
    }
    for name in [
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:num_preemptions",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
    ] {
        let _ = writeln!(
            o,
            "# HELP {name}_total A counter.\n# TYPE {name}_total counter"
        );
        for e in 0..engines {
            let _ = writeln!(
                o,
                "{name}_total{{engine=\"{e}\",model_name=\"{model}\"}} 1.23456789012e+011"
            );
        }
        let _ = writeln!(
            o,
            "# HELP {name}_created A counter.\n# TYPE {name}_created gauge"
        );
        for e in 0..engines {
            let _ = writeln!(
                o,
                "{name}_created{{engine=\"{e}\",model_name=\"{model}\"}} 1.7769301736864982e+09"
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP vllm:request_success_total Count.\n# TYPE vllm:request_success_total counter"
    );
    for e in 0..engines {
        for r in ["stop", "length", "abort", "error"] {
            let _ = writeln!(o, "vllm:request_success_total{{engine=\"{e}\",finished_reason=\"{r}\",model_name=\"{model}\"}} 90.0");
        }
    }
    let hists: [(&str, &[f64]); 10] = [
        ("vllm:e2e_request_latency_seconds", LAT),
        ("vllm:request_queue_time_seconds", LAT),
        ("vllm:request_inference_time_seconds", LAT),
        ("vllm:request_prefill_time_seconds", LAT),
        ("vllm:request_decode_time_seconds", LAT),
        ("vllm:time_to_first_token_seconds", TTFT),
        ("vllm:inter_token_latency_seconds", ITL),
        ("vllm:request_time_per_output_token_seconds", ITL),
        ("vllm:request_prompt_tokens", TOK),
        ("vllm:request_generation_tokens", TOK),
    ];
    for (name, buckets) in hists {
        let _ = writeln!(o, "# HELP {name} A histogram.\n# TYPE {name} histogram");
        for e in 0..engines {
            for (i, b) in buckets.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "{name}_bucket{{engine=\"{e}\",le=\"{b:?}\",model_name=\"{model}\"}} {}.0",
                    i * 3
                );
            }
            let _ = writeln!(
                o,
                "{name}_bucket{{engine=\"{e}\",le=\"+Inf\",model_name=\"{model}\"}} 94.0"
            );
            let _ = writeln!(
                o,
                "{name}_count{{engine=\"{e}\",model_name=\"{model}\"}} 94.0"
            );
            let _ = writeln!(
                o,
                "{name}_sum{{engine=\"{e}\",model_name=\"{model}\"}} 201.3"
            );
        }
        let _ = writeln!(
            o,
            "# HELP {name}_created A histogram.\n# TYPE {name}_created gauge"
        );
        for e in 0..engines {
            let _ = writeln!(
                o,
                "{name}_created{{engine=\"{e}\",model_name=\"{model}\"}} 1.7769301736864982e+09"
            );
        }
    }
    o
}
