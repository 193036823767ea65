use crate::*;

/// 6. Security through the real aggregator and directly.
pub(crate) async fn run(c: &mut Cluster) {
    // 6. Security through the real aggregator and directly.
    let denied = c.kubectl_as(Some("mallory"), &["get", "--raw", &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/inferno_desired_replicas")]).unwrap_err();
    assert!(
        denied.contains("Forbidden") || denied.contains("forbidden"),
        "{denied}"
    );
    let direct = format!("https://127.0.0.1:{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/inferno_desired_replicas", c.server_port);
    let rogue = Ca::new(&c.dir, "rogue-ca");
    let (rc, rk) = rogue.issue(
        "rogue-client",
        "front-proxy-client",
        &[],
        &[],
        Eku::ClientAuth,
    );
    let status = curl(
        &c.certs.join("ca.crt"),
        Some((&rc, &rk)),
        &direct,
        &[
            "X-Remote-User: system:admin",
            "X-Remote-Group: system:masters",
        ],
    );
    assert_eq!(status, "401", "unknown-CA client certificate");
    let status = curl(
        &c.certs.join("ca.crt"),
        None,
        &direct,
        &[
            "X-Remote-User: system:admin",
            "X-Remote-Group: system:masters",
        ],
    );
    assert_eq!(
        status, "403",
        "front-proxy headers without a trusted certificate are ignored (anonymous)"
    );
    eprintln!("e2e[6] no-RBAC user refused, unknown CA 401, spoofed headers 403");
}
