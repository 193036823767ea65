//! The end-to-end harness: PKI, processes (etcd, kube-apiserver, kube-controller-manager, Prometheus,
//! our server) on loopback, kubeconfigs, and small helpers. Every process logs into the run directory,
//! which is printed at the start and kept.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::ExtendedKeyUsagePurpose;

pub use crate::support::free_port;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A CA on disk that issues certificates into the run directory (support::Ca, written out as files).
pub struct Ca {
    pub cert: PathBuf,
    inner: crate::support::Ca,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        let inner = crate::support::Ca::new(name);
        let cert = dir.join(format!("{name}.crt"));
        std::fs::write(&cert, &inner.pem).unwrap();
        Self {
            cert,
            inner,
            dir: dir.to_path_buf(),
        }
    }

    /// Issues `name.crt`/`name.key` (SANs that parse as IPs become IP SANs); returns their paths.
    pub fn issue(
        &self,
        name: &str,
        cn: &str,
        orgs: &[&str],
        sans: &[&str],
        eku: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let leaf = self.inner.leaf(sans, cn, orgs, vec![eku]);
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &leaf.cert_pem).unwrap();
        std::fs::write(&k, &leaf.key_pem).unwrap();
        (c, k)
    }
}

/// A child process stopped on drop.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(dir: &Path, name: &str, program: &Path, args: &[String]) -> Self {
        Self::spawn_with_env(dir, name, program, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        dir: &Path,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", program.display()));
        Self {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as kubelet sends on a rolling update; the process is waited for in the background
    /// ([`Proc::finish`]).
    pub fn terminate(&mut self) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `within` for a terminated process to exit, then kills it.
    pub fn finish(&mut self, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        if let Some(c) = self.child.as_mut() {
            while std::time::Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        self.stop();
    }

    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = tail
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!("{} exited ({status}); last log lines:\n{tail}", self.name);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` until it returns `Some`, or fails with `what` and the last state.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A kubeconfig for a user authenticating with a client certificate.
pub fn cert_kubeconfig(path: &Path, server: &str, ca: &Path, (cert, key): (&Path, &Path)) {
    kubeconfig(
        path,
        server,
        ca,
        BTreeMap::from([
            ("client-certificate", cert.display().to_string()),
            ("client-key", key.display().to_string()),
        ]),
    );
}

pub fn kubeconfig(path: &Path, server: &str, ca: &Path, user: BTreeMap<&str, String>) {
    let mut user_yaml = String::new();
    for (k, v) in user {
        user_yaml.push_str(&format!("    {k}: {v}\n"));
    }
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n{user_yaml}contexts:\n- name: e2e\n  context: {{cluster: e2e, user: u}}\ncurrent-context: e2e\n",
        ca.display()
    );
    std::fs::write(path, text).unwrap();
}

pub fn run_dir() -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = Path::new(ROOT)
        .join("target")
        .join("e2e")
        .join(format!("run-{stamp}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds (once, cached) and locates the control-plane binaries.
pub fn binaries() -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("tests/e2e/build-binaries.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/e2e/build-binaries.sh");
    assert!(out.status.success(), "building the control-plane binaries failed (see the output above); Go 1.24+ and the Go module proxy are needed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Builds (once, cached) and locates the LeaderWorkerSet controller manager and its CRD.
pub fn lws() -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("tests/e2e/build-lws.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/e2e/build-lws.sh");
    assert!(
        out.status.success(),
        "building the LeaderWorkerSet controller failed (see the output above); Go and the Go module proxy are needed"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// etcd and kube-apiserver on loopback, with the cluster CA, service-account keys and an admin
/// (system:masters) kubeconfig in `dir`.
pub struct ControlPlane {
    pub etcd: Proc,
    pub apiserver: Proc,
    pub url: String,
    /// Issues the cluster's client and serving certificates.
    pub ca: Ca,
    pub admin_kubeconfig: PathBuf,
}

/// Starts etcd and kube-apiserver (RBAC, request-header authentication from `front_proxy_ca`, the
/// aggregator's client certificate `front_proxy_client`) plus `extra_args`; does not wait for readiness.
pub fn start_control_plane(
    dir: &Path,
    bin: &Path,
    front_proxy_ca: &Path,
    front_proxy_client: (&Path, &Path),
    extra_args: &[String],
) -> ControlPlane {
    let ca = Ca::new(dir, "cluster-ca");
    let (api_crt, api_key) = ca.issue(
        "apiserver",
        "kube-apiserver",
        &[],
        &[
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default.svc",
            "10.0.0.1",
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (admin_crt, admin_key) = ca.issue(
        "admin",
        "admin",
        &["system:masters"],
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let sa_key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("sa.key"), sa_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("sa.pub"), sa_key.public_key_pem()).unwrap();

    let etcd_port = free_port();
    let etcd = Proc::spawn(
        dir,
        "etcd",
        &bin.join("etcd"),
        &[
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()),
            "--log-level=warn".into(),
        ],
    );
    let api_port = free_port();
    let p = |x: &Path| x.display().to_string();
    let mut args = vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // Nothing here reaches the API through the `kubernetes` Service, and from 1.37 the endpoint
        // reconciler refuses a loopback advertise address.
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={api_port}"),
        format!("--tls-cert-file={}", p(&api_crt)),
        format!("--tls-private-key-file={}", p(&api_key)),
        format!("--client-ca-file={}", p(&ca.cert)),
        format!("--service-account-key-file={}", p(&dir.join("sa.pub"))),
        format!(
            "--service-account-signing-key-file={}",
            p(&dir.join("sa.key"))
        ),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--authorization-mode=RBAC".into(),
        format!("--requestheader-client-ca-file={}", p(front_proxy_ca)),
        "--requestheader-allowed-names=front-proxy-client".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        format!("--proxy-client-cert-file={}", p(front_proxy_client.0)),
        format!("--proxy-client-key-file={}", p(front_proxy_client.1)),
        format!("--cert-dir={}", p(&dir.join("apiserver-certs"))),
        "--disable-admission-plugins=ServiceAccount".into(),
    ];
    args.extend_from_slice(extra_args);
    let apiserver = Proc::spawn(dir, "kube-apiserver", &bin.join("kube-apiserver"), &args);
    let url = format!("https://127.0.0.1:{api_port}");
    let admin_kubeconfig = dir.join("admin.kubeconfig");
    cert_kubeconfig(&admin_kubeconfig, &url, &ca.cert, (&admin_crt, &admin_key));
    ControlPlane {
        etcd,
        apiserver,
        url,
        ca,
        admin_kubeconfig,
    }
}
