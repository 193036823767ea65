use crate::*;

/// Alerts and the dashboard against the real Prometheus: the shipped rules load, every dashboard query
/// returns data, and with both replicas stopped the APIService alert fires (then clears).
pub(crate) async fn run(c: &mut Cluster) {
    let rules = prometheus_api(c, "/api/v1/rules", &[]).unwrap_or_default();
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(loaded, 8, "Prometheus loaded the shipped rules: {rules}");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{ROOT}/manifests/monitoring/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().replace("$namespace", ".*"))
        .collect();
    for q in &queries {
        eventually(
            &format!("dashboard query {q}"),
            Duration::from_secs(90),
            || async {
                match prometheus_query(c, q) {
                    Ok(r) if !r.is_empty() => Ok(()),
                    Ok(_) => Err("no data".into()),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
    }
    eprintln!(
        "e2e[m] Prometheus loaded the 8 shipped alerts; all {} dashboard queries return data",
        queries.len()
    );
    assert!(
        !firing_alerts(c).contains(&"WvaMetricsServerAPIServiceUnavailable".to_string()),
        "the APIService alert fires while the server is up"
    );
    c.procs.get_mut("server").unwrap().stop();
    c.procs.get_mut("server-b").unwrap().stop();
    let stopped = Instant::now();
    eventually(
        "WvaMetricsServerAPIServiceUnavailable firing",
        Duration::from_secs(120),
        || async {
            let firing = firing_alerts(c);
            if firing.contains(&"WvaMetricsServerAPIServiceUnavailable".to_string()) {
                Ok(())
            } else {
                Err(format!("firing: {firing:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "e2e[m] both replicas stopped: WvaMetricsServerAPIServiceUnavailable fired after {:.1}s (for: shortened to 5s)",
        stopped.elapsed().as_secs_f64()
    );
    c.start_replica("server");
    c.start_replica("server-b");
    eventually(
        "the APIService alert resolved",
        Duration::from_secs(120),
        || async {
            let firing = firing_alerts(c);
            if firing.contains(&"WvaMetricsServerAPIServiceUnavailable".to_string()) {
                Err(format!("firing: {firing:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
}
