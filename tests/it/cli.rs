//! The shipped binaries as a user runs them: `analyze`, `scrape`, and `serve --standalone` against
//! `vllm-emulator` pods on loopback addresses, checked through the real HTTPS endpoint.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::free_port;

const SERVER: &str = env!("CARGO_BIN_EXE_wva-metrics-server");
const EMULATOR: &str = env!("CARGO_BIN_EXE_vllm-emulator");

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    support::output_with_stdin(Command::new(SERVER).args(args), stdin).unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn analyze_reads_a_model_snapshot_and_prints_the_decision() {
    let input = r#"{"config": {"kvCacheThreshold": 0.8, "queueLengthThreshold": 5, "kvSpareTrigger": 0.1, "queueSpareTrigger": 3},
      "variants": [{"name": "llama-l40s", "cost": 5, "accelerator": "L40S", "specReplicas": 2, "readyReplicas": 2,
                    "replicas": [{"pod": "llama-l40s-0", "kvCacheUsage": 0.91, "queueLength": 6}, {"pod": "llama-l40s-1", "kvCacheUsage": 0.95, "queueLength": 9}]},
                   {"name": "llama-h100", "cost": "20.0", "specReplicas": 1, "readyReplicas": 1,
                    "replicas": [{"pod": "llama-h100-0", "kvCacheUsage": 0.85, "queueLength": 2}]}]}"#;
    let out = run(&["analyze", "-"], Some(input));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["analysis"]["totalReplicas"], 3);
    assert_eq!(v["analysis"]["nonSaturatedReplicas"], 0);
    assert_eq!(v["analysis"]["avgSpareKvCapacity"], 0.0);
    assert_eq!(v["analysis"]["shouldScaleUp"], true);
    assert_eq!(v["analysis"]["scaleDownSafe"], false);
    assert_eq!(v["inTransition"], false);
    assert_eq!(
        v["targets"],
        serde_json::json!({"llama-l40s": 3, "llama-h100": 1})
    );

    // Defaults apply when config is omitted; a file works like stdin.
    let dir = temp("analyze");
    let file = dir.join("in.json");
    std::fs::write(&file, r#"{"variants": [{"name": "v", "specReplicas": 1, "readyReplicas": 1, "replicas": [{"pod": "p", "kvCacheUsage": 0.1, "queueLength": 0}]}]}"#).unwrap();
    let v = json(&run(&["analyze", file.to_str().unwrap()], None));
    assert_eq!(v["config"]["kvCacheThreshold"], 0.8);
    assert_eq!(v["targets"]["v"], 1);

    for (input, fragment) in [
        (
            r#"{"variants": [{"name": "v", "cost": "cheap", "specReplicas": 1, "readyReplicas": 1}]}"#,
            "variants[0].cost",
        ),
        (
            r#"{"variants": [{"name": "v", "specReplicas": 1}]}"#,
            "missing field `readyReplicas`",
        ),
        (
            r#"{"variants": [{"name": "v", "specReplicas": 1, "readyReplicas": 1, "replicas": [{"pod": "p", "kvCacheUsage": "high", "queueLength": 0}]}]}"#,
            "variants[0].replicas[0].kvCacheUsage",
        ),
        (
            r#"{"config": {"kvCacheThreshold": 2}, "variants": []}"#,
            "kvCacheThreshold must be between 0 and 1",
        ),
        (
            r#"{"config": {"kvCacheTreshold": 0.5}, "variants": []}"#,
            "config",
        ),
        ("not json", "invalid input"),
    ] {
        let out = run(&["analyze", "-"], Some(input));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{input} accepted");
        assert!(err.contains(fragment), "{input}: {err}");
    }
}

/// WVA parity, from the issue's repros: a variant at 0 replicas never takes the +1 (WVA answers
/// cheap 0, pricey 3), and a 17-digit decimal one ULP below a threshold of 1.0 stays below it.
#[test]
fn analyze_matches_wva_on_the_parity_repros() {
    let zero = r#"{"variants":[{"name":"cheap","cost":5,"specReplicas":0,"readyReplicas":0,"replicas":[]},{"name":"pricey","cost":20,"specReplicas":2,"readyReplicas":2,"replicas":[{"pod":"p0","kvCacheUsage":0.9,"queueLength":0},{"pod":"p1","kvCacheUsage":0.9,"queueLength":0}]}]}"#;
    let v = json(&run(&["analyze", "-"], Some(zero)));
    assert_eq!(v["targets"], serde_json::json!({"cheap": 0, "pricey": 3}));

    let ulp = r#"{"config":{"kvCacheThreshold":1.0},"variants":[{"name":"a","specReplicas":2,"readyReplicas":2,"replicas":[{"pod":"p0","kvCacheUsage":0.9999999999999999,"queueLength":0},{"pod":"p1","kvCacheUsage":0.9999999999999999,"queueLength":0}]}]}"#;
    let v = json(&run(&["analyze", "-"], Some(ulp)));
    assert_eq!(v["analysis"]["nonSaturatedReplicas"], 2, "{v}");
}

#[test]
fn scrape_extracts_signals_from_files_and_refuses_pages_without_them() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/vllm-0.5.x-v0-kubeai-hack-mock-metrics.txt"
    );
    let out = run(&["scrape", fixture], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(
        v["models"]["neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8"]["queueLength"],
        2.0
    );
    assert_eq!(v["warnings"], serde_json::json!([]));

    let out = run(
        &["scrape", "-"],
        Some("vllm:num_requests_waiting{model_name=\"m\"} 1\nbroken line {\n"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2:")
            && err.contains("no model with both KV-cache usage and queue length"),
        "{err}"
    );
}

/// `scrape` takes the server's TLS and token options, and says precisely what is wrong with them.
#[test]
fn scrape_options_for_https_and_tokens_are_checked() {
    let dir = temp("scrape-options");
    let missing = dir.join("missing-token");
    let out = run(
        &[
            "scrape",
            "http://127.0.0.1:9/metrics",
            "--bearer-token-file",
            missing.to_str().unwrap(),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing-token"),
        "{err}"
    );
    let out = run(
        &[
            "scrape",
            "https://vllm.llm.svc:8443/metrics",
            "--tls-server-name",
            "vllm.llm.svc",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("applies to a URL whose host is an IP"),
        "{err}"
    );
    let out = run(
        &[
            "scrape",
            "https://127.0.0.1:9/metrics",
            "--ca-file",
            dir.join("no-ca.crt").to_str().unwrap(),
            "--timeout",
            "2s",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-ca.crt"), "{err}");
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wva-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl_like(ca: &Path, url: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&https_text(ca, url)?).ok()
}

fn https_text(ca: &Path, url: &str) -> Option<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(ca).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(c.ok()?).ok()?;
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        c.get(url).send().await.ok()?.text().await.ok()
    })
}

fn post(url: &str, body: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
    });
}

/// Desired replicas per variant of the Qwen model as served over HTTPS. (The example's second model,
/// parked at zero behind an endpoint picker, is the demo's and `tests/it/zero.rs`'s; without its EPP it stays
/// at 0, which `granite_stays_at_zero` checks.)
fn desired(ca: &Path, port: u16) -> Option<Vec<(String, String)>> {
    let all = desired_all(ca, port)?;
    Some(
        all.into_iter()
            .filter(|(v, _)| v.starts_with("qwen-"))
            .collect(),
    )
}

fn desired_all(ca: &Path, port: u16) -> Option<Vec<(String, String)>> {
    let v = curl_like(ca, &format!("https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/inferno_desired_replicas"))?;
    v["items"].as_array()?;
    Some(support::variant_values(&v))
}

/// Whether the parked model is still answered 0: its endpoint picker is not running here, so its demand
/// is unknown, and unknown never moves a model.
fn granite_stays_at_zero(ca: &Path, port: u16) -> bool {
    desired_all(ca, port)
        .is_some_and(|all| all.contains(&("granite-l4".to_string(), "0".to_string())))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bundled example served in standalone mode, its three emulated pods on a free port.
struct Standalone {
    file: PathBuf,
    ca: PathBuf,
    port: u16,
    emu_port: u16,
    _emulator: Kill,
    _server: Kill,
}

fn standalone(name: &str, server_args: &[&str]) -> Standalone {
    let emu_port = free_port();
    let dir = temp(name);
    // The bundled example with its pods moved to a free port.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/examples/standalone.yaml"
    ))
    .unwrap();
    let file = dir.join("standalone.yaml");
    std::fs::write(
        &file,
        example.replace("\"18000\"", &format!("\"{emu_port}\"")),
    )
    .unwrap();
    let mut emu = Command::new(EMULATOR);
    for a in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        emu.args(["--listen", &format!("{a}:{emu_port}")]);
    }
    let emulator = Kill(
        emu.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let port = free_port();
    let cert_dir = dir.join("certs");
    let server = Kill(
        Command::new(SERVER)
            .args(["serve", "--standalone", file.to_str().unwrap()])
            .args(["--secure-port", &port.to_string()])
            .args(server_args)
            .args(["--cert-dir", cert_dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    Standalone {
        file,
        ca: cert_dir.join("ca.crt"),
        port,
        emu_port,
        _emulator: emulator,
        _server: server,
    }
}

/// The standalone server also serves KEDA's external scaler on loopback with its generated certificate and
/// no client authentication; it answers the number the HPA path answers.
#[test]
fn standalone_serves_the_external_scaler_on_loopback() {
    use wva_metrics_server::scaler::proto::{GetMetricsRequest, ScaledObjectRef};
    let grpc = free_port();
    let s = standalone(
        "scaler",
        &[
            "--scrape-interval",
            "500ms",
            "--lookback",
            "2s",
            "--external-scaler-port",
            &grpc.to_string(),
        ],
    );
    wait_for("idle decision", Duration::from_secs(30), || {
        desired(&s.ca, s.port)
            == Some(vec![
                ("qwen-h100".into(), "1".into()),
                ("qwen-l40s".into(), "1".into()),
            ])
    });
    support::install_provider();
    let ca = std::fs::read_to_string(&s.ca).unwrap();
    let so = |name: &str| ScaledObjectRef {
        name: name.into(),
        namespace: "llm".into(),
        scaler_metadata: Default::default(),
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], grpc));
        let mut c = support::scaler_client(addr, &ca, None).await.unwrap();
        let m = c
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(so("qwen-h100")),
                metric_name: "wva_desired_replicas".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(m.metric_values[0].metric_value, 1);
        assert!(
            c.is_active(so("qwen-l40s"))
                .await
                .unwrap()
                .into_inner()
                .result
        );
        let missing = c.is_active(so("nope")).await.unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    });
}

#[test]
fn standalone_server_scales_the_cheapest_variant_under_load() {
    let s = standalone(
        "standalone",
        &["--scrape-interval", "500ms", "--lookback", "2s"],
    );
    let (file, ca, port, emu_port) = (s.file.clone(), s.ca.clone(), s.port, s.emu_port);
    let addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

    // Idle: scale-down is safe; the only variant above one replica (the cheap L40S at 2) gives one back.
    wait_for("idle decision", Duration::from_secs(30), || {
        desired(&ca, port)
            == Some(vec![
                ("qwen-h100".into(), "1".into()),
                ("qwen-l40s".into(), "1".into()),
            ])
    });
    assert!(granite_stays_at_zero(&ca, port));

    // `status` renders the same decisions as tables (and `--json` the document itself); a namespace
    // filter with no models says so.
    let url = format!("https://127.0.0.1:{port}");
    let out = run(
        &["status", "--url", &url, "--ca-file", ca.to_str().unwrap()],
        None,
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("MODEL Qwen/Qwen3-0.6B  NAMESPACE llm"),
        "{table}"
    );
    let l40s = table
        .lines()
        .find(|l| l.trim_start().starts_with("qwen-l40s "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        l40s.contains("L40S") && l40s.contains("scaleDown"),
        "{l40s}"
    );
    assert!(
        table.contains("granite-l4") && table.contains("zero: scale to zero enabled"),
        "{table}"
    );
    let out = run(
        &[
            "status",
            "--url",
            &url,
            "--ca-file",
            ca.to_str().unwrap(),
            "--json",
            "-n",
            "llm",
        ],
        None,
    );
    assert!(json(&out)["models"]
        .as_array()
        .is_some_and(|m| m.len() == 2));
    let out = run(
        &[
            "status",
            "--url",
            &url,
            "--ca-file",
            ca.to_str().unwrap(),
            "-n",
            "nothing-here",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no models\n");
    // A server that cannot be reached is a clear error, not a table.
    let out = run(
        &["status", "--url", "https://127.0.0.1:9", "--timeout", "2s"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GET https://127.0.0.1:9/debug/variants"));

    // Every pod saturated (16 running → KV 0.8, 14 waiting): the cheapest variant gets +1.
    for a in addrs {
        post(
            &format!("http://{a}:{emu_port}/emulator/load"),
            r#"{"inFlight": 30}"#,
        );
    }
    wait_for(
        "scale-up of the cheap variant",
        Duration::from_secs(30),
        || {
            desired(&ca, port)
                == Some(vec![
                    ("qwen-h100".into(), "1".into()),
                    ("qwen-l40s".into(), "3".into()),
                ])
        },
    );

    // A malformed edit, a file truncated to nothing and a file of bad YAML are reported, and the last
    // good state keeps being served (an editor's truncate-then-write must not withdraw every variant).
    let good = std::fs::read_to_string(&file).unwrap();
    let mut text = good.clone();
    text.push_str(
        "---\nkind: Deployment\nmetadata: {name: broken, namespace: llm}\nspec: {replicas: many}\n",
    );
    for bad in [
        text,
        String::new(),
        "kind: [unclosed\n  - : :\n".to_string(),
    ] {
        std::fs::write(&file, &bad).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            desired(&ca, port),
            Some(vec![
                ("qwen-h100".into(), "1".into()),
                ("qwen-l40s".into(), "3".into())
            ]),
            "after writing {bad:?}"
        );
    }
    std::fs::write(&file, &good).unwrap();

    // WVA's gauges on our /metrics follow the decisions.
    wait_for(
        "inferno_desired_replicas gauges on /metrics",
        Duration::from_secs(20),
        || {
            https_text(&ca, &format!("https://127.0.0.1:{port}/metrics")).is_some_and(|t| {
                t.lines().any(|l| {
                    l.starts_with("inferno_desired_replicas{")
                        && l.contains("variant_name=\"qwen-l40s\"")
                        && l.ends_with(" 3.0")
                }) && t.lines().any(|l| {
                    l.starts_with("wva_current_replicas{")
                        && l.contains("variant_name=\"qwen-h100\"")
                        && l.ends_with(" 1.0")
                })
            })
        },
    );

    // A valid edit is picked up: the L40S Deployment now has 5 ready of 5 but only 2 pods are seen, so
    // the model holds at spec.replicas.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            "replicas: 2\n  selector: {matchLabels: {app: qwen-l40s}}",
            "replicas: 5\n  selector: {matchLabels: {app: qwen-l40s}}",
        )
        .replace(
            "status: {replicas: 2, readyReplicas: 2}",
            "status: {replicas: 5, readyReplicas: 5}",
        );
    std::fs::write(&file, text).unwrap();
    wait_for(
        "the edited file to be served",
        Duration::from_secs(20),
        || {
            desired(&ca, port)
                == Some(vec![
                    ("qwen-h100".into(), "1".into()),
                    ("qwen-l40s".into(), "5".into()),
                ])
        },
    );
}

/// The issue's repro: a pod that answers 200 with garbage instead of vLLM metrics holds spec.replicas
/// while young, then the metric answers 503 naming the pod once `--max-metric-age` has passed.
#[test]
fn a_pod_serving_garbage_ends_in_a_503_after_max_metric_age() {
    let s = standalone(
        "garbage",
        &[
            "--scrape-interval",
            "300ms",
            "--lookback",
            "1s",
            "--max-metric-age",
            "3s",
        ],
    );
    let (ca, port, emu_port) = (s.ca.clone(), s.port, s.emu_port);
    wait_for("first decision", Duration::from_secs(30), || {
        desired(&ca, port).is_some()
    });
    post(
        &format!("http://127.0.0.2:{emu_port}/emulator/fault"),
        r#"{"metrics": "garbage"}"#,
    );
    let url = format!("https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/inferno_desired_replicas?labelSelector=variant_name%3Dqwen-l40s");
    // Young: the answer holds (never lower than spec.replicas 2).
    std::thread::sleep(Duration::from_millis(1200));
    let young = curl_like(&ca, &url).expect("an answer while the data is young");
    assert_eq!(young["kind"], "ExternalMetricValueList", "{young}");
    assert!(
        young["items"][0]["value"]
            .as_str()
            .is_some_and(|v| v.parse::<i64>().unwrap_or(0) >= 2),
        "{young}"
    );
    let mut last = String::new();
    wait_for("a 503 naming the pod", Duration::from_secs(20), || {
        last = https_text(&ca, &url).unwrap_or_default();
        last.contains("\"code\":503") && last.contains("qwen-l40s-decode-0")
    });
    assert!(last.contains("no vLLM queue or KV-cache metrics"), "{last}");
}

#[test]
fn standalone_refuses_bad_files_and_non_loopback_addresses() {
    let dir = temp("bad");
    let out = run(
        &[
            "serve",
            "--standalone",
            dir.join("missing.yaml").to_str().unwrap(),
            "--secure-port",
            &free_port().to_string(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.yaml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &[
            "serve",
            "--standalone",
            "x.yaml",
            "--bind-address",
            "0.0.0.0",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only on loopback"));

    // A malformed object is reported with file, document index and field, and the server still starts.
    let file = dir.join("objects.yaml");
    std::fs::write(
        &file,
        "kind: Pod\nmetadata: {name: p, namespace: llm}\nstatus: {phase: 7, podIP: [1]}\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(SERVER)
        .args([
            "serve",
            "--standalone",
            file.to_str().unwrap(),
            "--secure-port",
            &port.to_string(),
            "--cert-dir",
            dir.join("c").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "server did not start: {}",
                String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).to_string();
    assert!(out.contains("objects.yaml: document 0 (line 1): Pod p: field status.phase: invalid type: integer `7`"), "{out}");
}

#[test]
fn readme_documents_every_serve_flag() {
    let help = String::from_utf8(run(&["serve", "--help"], None).stdout).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', ']', ')', ';']))
        .filter(|w| w.len() > 2)
        .collect();
    assert!(flags.len() > 30, "{flags:?}");
    for flag in flags {
        if flag == "--help" {
            continue;
        }
        assert!(
            readme.contains(&format!("`{flag}`")),
            "README's configuration table lacks {flag}"
        );
    }
    for env in help
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[env: "))
        .map(|e| e.split(['=', ']']).next().unwrap())
    {
        assert!(
            readme.contains(&format!("`{env}`")),
            "README's configuration table lacks {env}"
        );
    }
}
