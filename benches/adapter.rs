//! The request-path baseline: Prometheus Adapter (sigs.k8s.io/prometheus-adapter, built from its Go module
//! by benches/tools/build-adapter.sh) with WVA v0.4.1's external rule for `inferno_desired_replicas`,
//! against a real Prometheus over HTTPS that scrapes the series WVA would export, with delegated
//! authentication and authorization against a real kube-apiserver (etcd + kube-apiserver from
//! tests/e2e). The adapter serves with a certificate from the same CA as our server and trusts the same
//! front-proxy CA, so one client measures both.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::ExtendedKeyUsagePurpose as Eku;

use crate::harness::{self, Ca, Proc};
use crate::support;

/// WVA v0.4.1's Prometheus Adapter values (`config/samples/prometheus-adapter-values.yaml`): one external
/// rule, the HPA's namespace matched against `exported_namespace`.
const RULES: &str = r#"externalRules:
- seriesQuery: 'inferno_desired_replicas{variant_name!="",exported_namespace!=""}'
  resources:
    overrides:
      exported_namespace: {resource: namespace}
      variant_name: {resource: deployment}
  name:
    matches: "^inferno_desired_replicas"
    as: "inferno_desired_replicas"
  metricsQuery: 'inferno_desired_replicas{<<.LabelMatchers>>}'
"#;

/// The identity the HPA controller's requests carry through the aggregator, and the RBAC that WVA's
/// install gives it.
pub const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const HPA_RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: external-metrics-reader}\nrules:\n- apiGroups: [external.metrics.k8s.io]\n  resources: ['*']\n  verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: hpa-external-metrics}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: external-metrics-reader}\nsubjects:\n- {kind: ServiceAccount, name: horizontal-pod-autoscaler, namespace: kube-system}\n";

pub struct Baseline {
    pub port: u16,
    pub dir: PathBuf,
    _procs: Vec<Proc>,
}

/// `namespaces`: (namespace, variants) — WVA's exported gauge for `variant-0..variants` in each.
fn exposition(namespaces: &[(String, usize)]) -> String {
    let mut page = String::from(
        "# HELP inferno_desired_replicas Desired replicas\n# TYPE inferno_desired_replicas gauge\n",
    );
    for (ns, n) in namespaces {
        for i in 0..*n {
            // WVA's labels; Prometheus renames `namespace` to `exported_namespace` because the scrape
            // config attaches the target's own `namespace` label (as a ServiceMonitor does).
            page.push_str(&format!(
                "inferno_desired_replicas{{variant_name=\"variant-{i}\",namespace=\"{ns}\",accelerator_type=\"H100\"}} {}\n",
                1 + i % 3
            ));
        }
    }
    page
}

/// A WVA-like /metrics endpoint: a blocking one-request-per-connection responder on a thread.
fn serve_page(page: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

fn kubectl(
    bin: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    let mut cmd = Command::new(bin.join("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    let out = support::output_with_stdin(&mut cmd, stdin).map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn wait_for(
    what: &str,
    timeout: Duration,
    procs: &mut [Proc],
    mut ready: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match ready() {
            Ok(()) => return,
            Err(e) => e,
        };
        for p in procs.iter_mut() {
            p.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Builds what is missing, starts etcd, kube-apiserver, Prometheus (HTTPS) and the adapter, and returns
/// once the adapter answers `inferno_desired_replicas` for the last namespace.
/// `client`: the front-proxy client certificate and key the benchmark's client presents.
pub fn start(
    serving: &support::Ca,
    front_proxy_ca_pem: &str,
    client: (&Path, &Path),
    namespaces: &[(String, usize)],
) -> Baseline {
    let bin = harness::binaries();
    let adapter = {
        let out = Command::new(Path::new(harness::ROOT).join("benches/tools/build-adapter.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running benches/tools/build-adapter.sh");
        assert!(
            out.status.success(),
            "building prometheus-adapter failed (see above); Go and the Go module proxy are needed"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let dir = Path::new(harness::ROOT)
        .join("target/bench")
        .join(format!("adapter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut procs = Vec::new();

    // Control plane: the adapter's delegated authorization (SubjectAccessReview) and its REST mapper.
    let fp_ca = dir.join("front-proxy-ca.crt");
    std::fs::write(&fp_ca, front_proxy_ca_pem).unwrap();
    let aggregator = Ca::new(&dir, "aggregator-ca");
    // kube-apiserver's own proxy client identity (unused here: nothing goes through the aggregator).
    let (agg_crt, agg_key) = aggregator.issue(
        "aggregator",
        "front-proxy-client",
        &[],
        &[],
        Eku::ClientAuth,
    );
    let cp = harness::start_control_plane(&dir, &bin, &fp_ca, (&agg_crt, &agg_key), &[]);
    let kubeconfig = cp.admin_kubeconfig.clone();
    procs.push(cp.etcd);
    procs.push(cp.apiserver);
    wait_for(
        "kube-apiserver /readyz",
        Duration::from_secs(90),
        &mut procs,
        || kubectl(&bin, &kubeconfig, &["get", "--raw", "/readyz"], None).map(|_| ()),
    );
    kubectl(&bin, &kubeconfig, &["apply", "-f", "-"], Some(HPA_RBAC))
        .expect("applying the HPA's RBAC");

    // Prometheus over HTTPS scraping WVA's gauges every second.
    let page_port = serve_page(exposition(namespaces));
    let prom_ca = Ca::new(&dir, "prometheus-ca");
    let (prom_crt, prom_key) = prom_ca.issue(
        "prometheus",
        "prometheus",
        &[],
        &["127.0.0.1"],
        Eku::ServerAuth,
    );
    let web = dir.join("prometheus-web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            prom_crt.display(),
            prom_key.display()
        ),
    )
    .unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, format!("global: {{scrape_interval: 1s, scrape_timeout: 900ms}}\nscrape_configs:\n  - job_name: wva-controller-manager\n    static_configs:\n      - targets: ['127.0.0.1:{page_port}']\n        labels: {{namespace: workload-variant-autoscaler-system}}\n")).unwrap();
    let prom_port = support::free_port();
    let prometheus = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    procs.push(Proc::spawn(
        &dir,
        "prometheus",
        Path::new(&prometheus),
        &[
            format!("--config.file={}", cfg.display()),
            format!("--web.config.file={}", web.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    ));
    let expected: usize = namespaces.iter().map(|(_, n)| n).sum();
    wait_for(
        "Prometheus to have every inferno_desired_replicas series",
        Duration::from_secs(60),
        &mut procs,
        || {
            let url = format!(
                "https://127.0.0.1:{prom_port}/api/v1/query?query=count(inferno_desired_replicas)"
            );
            let body = curl(&prom_ca.cert, None, &url)?;
            if body.contains(&format!("\"{expected}\"]")) {
                Ok(())
            } else {
                Err(body)
            }
        },
    );

    // The adapter, as WVA's chart deploys it (external rule above), serving TLS from our serving CA.
    let leaf = serving.server(&["127.0.0.1"]);
    let (crt, key) = (dir.join("adapter.crt"), dir.join("adapter.key"));
    std::fs::write(&crt, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let rules = dir.join("adapter-rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let port = support::free_port();
    let k = kubeconfig.display().to_string();
    procs.push(Proc::spawn(
        &dir,
        "prometheus-adapter",
        &adapter,
        &[
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--tls-cert-file={}", crt.display()),
            format!("--tls-private-key-file={}", key.display()),
            format!("--lister-kubeconfig={k}"),
            format!("--authentication-kubeconfig={k}"),
            format!("--authorization-kubeconfig={k}"),
            "--authentication-skip-lookup".into(),
            format!("--requestheader-client-ca-file={}", fp_ca.display()),
            "--requestheader-allowed-names=front-proxy-client".into(),
            format!("--prometheus-url=https://127.0.0.1:{prom_port}/"),
            format!("--prometheus-ca-file={}", prom_ca.cert.display()),
            format!("--config={}", rules.display()),
            "--metrics-relist-interval=1m".into(),
            "--v=1".into(),
        ],
    ));
    // Ready when it answers the HPA's question for the last namespace (series discovered, authz warm).
    let serving_ca = dir.join("serving-ca.crt");
    std::fs::write(&serving_ca, &serving.pem).unwrap();
    let (ns, _) = namespaces.last().expect("at least one namespace");
    let url = format!("https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/inferno_desired_replicas?labelSelector=variant_name%3Dvariant-0");
    wait_for(
        "prometheus-adapter to serve inferno_desired_replicas",
        Duration::from_secs(120),
        &mut procs,
        || {
            let body = curl(&serving_ca, Some(client), &url)?;
            let list: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            if list["items"][0]["metricName"] == "inferno_desired_replicas" {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
    Baseline {
        port,
        dir,
        _procs: procs,
    }
}

/// GET with curl (trusting `ca`, presenting `client` as the front proxy with the HPA's identity).
fn curl(ca: &Path, client: Option<(&Path, &Path)>, url: &str) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--cacert"]).arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        cmd.args(["-H", &format!("X-Remote-User: {HPA_USER}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(body)
    } else {
        Err(format!("{}{body}", String::from_utf8_lossy(&out.stderr)))
    }
}
