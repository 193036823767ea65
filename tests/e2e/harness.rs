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
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(program)
            .args(args)
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
