//! Static discovery documents. They never depend on upstream health: the aggregator's availability
//! probe and every kubectl in the cluster read them, and a failing discovery document breaks namespace
//! deletion and garbage collection cluster-wide (spec `aggregated-api.md` §4.6).

use serde_json::{json, Value};

pub(crate) const GROUP: &str = "external.metrics.k8s.io";
pub(crate) const VERSION: &str = "v1beta1";
pub(crate) const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// One static resource, `externalmetrics`, verbs `get`: an empty list makes client-go fail discovery, and
/// listing real metric names buys nothing (the HPA never reads discovery for external metrics).
pub(crate) fn api_resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [{
            "name": "externalmetrics",
            "singularName": "",
            "namespaced": true,
            "kind": "ExternalMetricValueList",
            "verbs": ["get"]
        }]
    })
}

fn group_body() -> Value {
    let gv = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

pub(crate) fn api_group() -> Value {
    let mut g = group_body();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

pub(crate) fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_body()]})
}

/// Whether an `Accept` header admits plain JSON. The aggregator asks `/apis` for aggregated discovery
/// (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`) and falls back to the legacy
/// documents on 406 in every version from 1.26 on, so when only such types (or protobuf) are listed we
/// must say 406 rather than send a body it would misparse.
pub(crate) fn accepts_plain_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return true };
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        // A `g=`/`as=` parameter asks for a specific typed document, which we do not serve.
        let typed = params.iter().any(|(k, _)| k == "g" || k == "as");
        let refused = params
            .iter()
            .any(|(k, v)| k == "q" && v.parse::<f64>().is_ok_and(|q| q == 0.0));
        !typed && !refused && matches!(media.as_str(), "application/json" | "application/*" | "*/*")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, true),
            (Some(""), true),
            (Some("application/json"), true),
            (Some("application/json, */*"), true),
            (Some("application/vnd.kubernetes.protobuf, */*"), true),
            (Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"), false),
            (
                Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
                false,
            ),
            (Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList, application/json;q=0.9"), true),
            (Some("application/vnd.kubernetes.protobuf"), false),
            (Some("text/html"), false),
            (Some("application/json;q=0"), false),
            (Some("application/*"), true),
        ];
        for (accept, want) in cases {
            assert_eq!(accepts_plain_json(*accept), *want, "{accept:?}");
        }
    }

    #[test]
    fn resource_list_has_one_static_get_only_resource() {
        let v = api_resource_list();
        assert_eq!(v["resources"].as_array().unwrap().len(), 1);
        assert_eq!(v["resources"][0]["verbs"], json!(["get"]));
        assert!(v["resources"][0].get("group").is_none());
        assert_eq!(
            api_group()["preferredVersion"]["groupVersion"],
            GROUP_VERSION
        );
        assert!(api_group_list()["groups"][0].get("kind").is_none());
    }
}
