//! The emulator serves vLLM's pages: every `vllm:` family on its `/metrics` has the name, type and label
//! names that vLLM's own definitions give (`vllm/v1/metrics/loggers.py`, and for
//! `vllm:cache_config_info` the fields of `vllm/config/cache.py`), from vLLM's PyPI source
//! distribution, which `tests/tools/vllm-defs.sh` fetches (`just test` runs it; `WVA_VLLM_DEFS` names
//! another directory).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;
use wva_metrics_server::sources::exposition;

const EMULATOR: &str = env!("CARGO_BIN_EXE_vllm-emulator");

fn defs_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("WVA_VLLM_DEFS") {
        return PathBuf::from(dir);
    }
    let out = Command::new("tests/tools/vllm-defs.sh")
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/tools/vllm-defs.sh");
    assert!(
        out.status.success(),
        "tests/tools/vllm-defs.sh could not fetch vLLM's metric definitions (PyPI); set WVA_VLLM_DEFS to a directory holding vllm/v1/metrics/loggers.py and vllm/config/cache.py"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[derive(Debug, Clone, PartialEq)]
enum Labels {
    Names(BTreeSet<String>),
    /// `vllm:cache_config_info`: the cache configuration's fields and `engine`.
    CacheConfig,
}

/// Each `self._{gauge,counter,histogram}_cls(name="vllm:…", …, labelnames=…)` of `loggers.py`.
fn definitions(loggers: &str) -> BTreeMap<String, (&'static str, Labels)> {
    let base = ["model_name", "engine"];
    let strings = |list: &str| -> Vec<String> {
        list.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut out = BTreeMap::new();
    for kind in ["gauge", "counter", "histogram"] {
        let open = format!("self._{kind}_cls(");
        let mut rest = loggers;
        while let Some(at) = rest.find(&open) {
            let body_start = at + open.len();
            // The call's arguments, to the matching parenthesis.
            let mut depth = 1;
            let mut end = body_start;
            for (i, c) in rest[body_start..].char_indices() {
                match c {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = body_start + i;
                    break;
                }
            }
            let call = &rest[body_start..end];
            rest = &rest[end..];
            // The info gauges (`vllm:cache_config_info`) take their name from a variable.
            if call.contains("labelnames=metrics_info.keys()") {
                for assigned in loggers.split("name = \"").skip(1) {
                    if let Some(n) = assigned
                        .split('"')
                        .next()
                        .filter(|n| n.starts_with("vllm:"))
                    {
                        out.insert(n.to_string(), (kind, Labels::CacheConfig));
                    }
                }
                continue;
            }
            let Some(name) = call
                .split("name=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .filter(|n| n.starts_with("vllm:"))
            else {
                continue;
            };
            let Some(labels) = call.split("labelnames=").nth(1) else {
                continue;
            };
            let labels = labels.trim();
            let parsed = if labels.starts_with("metrics_info.keys()") {
                Labels::CacheConfig
            } else if let Some(extra) = labels.strip_prefix("labelnames + [") {
                let mut set: BTreeSet<String> = base.iter().map(ToString::to_string).collect();
                set.extend(strings(extra.split(']').next().unwrap_or_default()));
                Labels::Names(set)
            } else if labels.starts_with("labelnames") {
                Labels::Names(base.iter().map(ToString::to_string).collect())
            } else if let Some(list) = labels.strip_prefix('[') {
                Labels::Names(
                    strings(list.split(']').next().unwrap_or_default())
                        .into_iter()
                        .collect(),
                )
            } else {
                continue;
            };
            out.insert(name.to_string(), (kind, parsed));
        }
    }
    out
}

/// The fields of `class CacheConfig` (its `__dict__`, which `metrics_info` turns into labels).
fn cache_fields(cache: &str) -> BTreeSet<String> {
    let class = cache
        .split("\nclass CacheConfig")
        .nth(1)
        .expect("class CacheConfig in vllm/config/cache.py");
    let class = class.split("\nclass ").next().unwrap_or(class);
    class
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

fn fetch_page(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            return text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "the emulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn emulator_pages_match_vllm_definitions() {
    let dir = defs_dir();
    let loggers = std::fs::read_to_string(dir.join("vllm/v1/metrics/loggers.py")).unwrap();
    let cache = std::fs::read_to_string(dir.join("vllm/config/cache.py")).unwrap();
    let defs = definitions(&loggers);
    let fields = cache_fields(&cache);
    assert!(
        defs.len() > 20,
        "parsed only {} definitions: {defs:?}",
        defs.len()
    );
    assert!(
        fields.contains("block_size") && fields.contains("num_gpu_blocks"),
        "{fields:?}"
    );

    let port = free_port();
    let mut child = Command::new(EMULATOR)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--engines",
            "2",
            "--in-flight",
            "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let page = fetch_page(port);
    let _ = child.kill();
    let _ = child.wait();

    // Families by their TYPE line; label names of their samples.
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            kinds.insert(name.to_string(), kind.to_string());
        }
    }
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let warnings = exposition::parse(&page, |s| {
        let set = labels.entry(s.name.to_string()).or_default();
        for (k, _) in s.labels {
            set.insert(k.to_string());
        }
    });
    assert!(warnings.is_empty(), "{warnings:?}");

    let mut checked = BTreeSet::new();
    for (family, kind) in kinds.iter().filter(|(f, _)| f.starts_with("vllm:")) {
        // prometheus_client renders a counter as `<name>_total` and `<name>_created` (a gauge).
        let (def_name, def_kind) = match (
            kind.as_str(),
            family.strip_suffix("_total"),
            family.strip_suffix("_created"),
        ) {
            ("counter", Some(base), _) => (base, "counter"),
            ("gauge", _, Some(base)) => (base, "counter"),
            (k, _, _) => (family.as_str(), k),
        };
        let (kind_in_vllm, want) = defs
            .get(def_name)
            .unwrap_or_else(|| panic!("{family}: vLLM {} defines no {def_name}", dir.display()));
        assert_eq!(*kind_in_vllm, def_kind, "{family}: type");
        let samples: Vec<&String> = labels
            .keys()
            .filter(|n| {
                *n == family
                    || (kind == "histogram"
                        && n.strip_prefix(family.as_str())
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)))
            })
            .collect();
        assert!(!samples.is_empty(), "{family}: no samples");
        for s in samples {
            let mut got = labels[s].clone();
            got.remove("le");
            match want {
                Labels::Names(want) => assert_eq!(&got, want, "{s}: label names"),
                Labels::CacheConfig => {
                    assert!(
                        got.contains("engine")
                            && got.contains("num_gpu_blocks")
                            && got.contains("block_size"),
                        "{s}: {got:?}"
                    );
                    let unknown: Vec<&String> = got
                        .iter()
                        .filter(|l| *l != "engine" && !fields.contains(*l))
                        .collect();
                    assert!(
                        unknown.is_empty(),
                        "{s}: labels vLLM does not set: {unknown:?}"
                    );
                }
            }
        }
        checked.insert(def_name.to_string());
    }
    // Every series the server reads is on the page.
    for read in [
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:request_success",
        "vllm:cache_config_info",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
    ] {
        assert!(
            checked.contains(read),
            "{read} is not on the emulator's page"
        );
    }
}
