use crate::*;

/// 5d. The status Lease moves to the other replica when its holder stops.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    // (d) The status Lease moves to the other replica when its holder stops, and status keeps being written.
    let holder = eventually("a status Lease holder", Duration::from_secs(30), || async {
        let h = lease_holder(c);
        if h.starts_with("replica-") {
            Ok(h)
        } else {
            Err(h)
        }
    })
    .await;
    let (stopped, other) = if holder == "replica-a" {
        ("server", "replica-b")
    } else {
        ("server-b", "replica-a")
    };
    // SIGTERM, as on a rolling update: the holder releases the Lease on its way out, so the other
    // replica takes it at its next round instead of after the Lease expires (15 s).
    let terminated = Instant::now();
    c.procs.get_mut(stopped).unwrap().terminate();
    eventually(
        &format!("{other} taking over the status Lease from {holder}"),
        Duration::from_secs(40),
        || async {
            let h = lease_holder(c);
            if h == other {
                Ok(())
            } else {
                Err(h)
            }
        },
    )
    .await;
    let handover = terminated.elapsed();
    let proc = c.procs.get_mut(stopped).unwrap();
    proc.finish(Duration::from_secs(40));
    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
    assert!(
        log.contains("released the status Lease"),
        "{stopped} did not release the Lease on SIGTERM"
    );
    c.start_replica(stopped);
    eprintln!(
        "e2e[5d] Lease released on SIGTERM and handed over from {holder} to {other} in {:.1}s",
        handover.as_secs_f64()
    );
    set_load(k, "qwen-h100", 0);
}
