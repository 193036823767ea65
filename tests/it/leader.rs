//! Leader election for the status writer against a test double of the Kubernetes API that implements
//! Lease create/get/replace with resourceVersion conflicts.

use crate::support;

use std::time::Duration;

use support::*;
use wva_metrics_server::cluster::leader::LeaderElector;

#[tokio::test]
async fn lease_is_held_by_one_and_handed_over_on_expiry() {
    install_provider();
    let api = FakeKubeApi::start(ApiState::default()).await;
    let a = LeaderElector::new(
        api.client(),
        "wva",
        "wva-metrics-server-status",
        "replica-a",
        Duration::from_secs(1),
    );
    let b = LeaderElector::new(
        api.client(),
        "wva",
        "wva-metrics-server-status",
        "replica-b",
        Duration::from_secs(1),
    );
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "A creates the lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "B sees a live lease held by A"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "A renews");
    // A stops renewing (crashed): after the lease duration B takes over, and A learns it lost.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "B takes over the expired lease"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "A is no longer leader"
    );
    let lease = api.state.lock().unwrap().leases["wva-metrics-server-status"].clone();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // A clean release lets A take over at once.
    assert!(b.release().await.unwrap(), "B held it");
    assert!(!b.release().await.unwrap(), "nothing left to release");
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "released lease is free"
    );
    assert_eq!(
        api.state.lock().unwrap().leases["wva-metrics-server-status"]["spec"]["leaseTransitions"],
        2
    );
}

#[tokio::test]
async fn concurrent_takeover_has_one_winner() {
    install_provider();
    let api = FakeKubeApi::start(ApiState::default()).await;
    let electors: Vec<LeaderElector> = (0..4)
        .map(|i| {
            LeaderElector::new(
                api.client(),
                "wva",
                "lease",
                &format!("replica-{i}"),
                Duration::from_secs(30),
            )
        })
        .collect();
    let results = futures::future::join_all(
        electors
            .iter()
            .map(wva_metrics_server::cluster::leader::LeaderElector::try_acquire_or_renew),
    )
    .await;
    let winners = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(winners, 1, "exactly one replica holds the lease");
}
