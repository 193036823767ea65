//! Static discovery documents. They never depend on upstream health: the aggregator's availability
//! probe and every kubectl in the cluster read them, and a failing discovery document breaks namespace
//! deletion and garbage collection cluster-wide (kube-controller-manager's namespace controller and garbage
//! collector need every group's discovery).

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

/// What `GET /apis` answers, from the Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApisFormat {
    /// Aggregated discovery, `apidiscovery.k8s.io/<version>` `APIGroupDiscoveryList`.
    Aggregated(&'static str),
    /// The legacy APIGroupList.
    Legacy,
}

/// The media types of an Accept header in order of preference (q descending, then as listed), each with
/// its lower-cased parameters.
type Params = Vec<(String, String)>;

fn media_ranges(accept: &str) -> Vec<(String, Params)> {
    let mut ranges: Vec<(f64, usize, String, Params)> = accept
        .split(',')
        .enumerate()
        .map(|(i, range)| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let params: Params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| {
                    let v = v.trim();
                    // A quoted-string value (RFC 9110) means its content.
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    (k.trim().to_ascii_lowercase(), v.to_string())
                })
                .collect();
            // A parameter given twice with two values is ambiguous: the range means nothing we serve.
            let ambiguous = params
                .iter()
                .enumerate()
                .any(|(i, (k, v))| params[..i].iter().any(|(k2, v2)| k2 == k && v2 != v));
            let q = params
                .iter()
                .find(|(k, _)| k == "q")
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or(1.0);
            (if ambiguous { 0.0 } else { q }, i, media, params)
        })
        .filter(|(q, ..)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.into_iter().map(|(_, _, m, p)| (m, p)).collect()
}

/// Negotiates `GET /apis`: aggregated discovery v2 or v2beta1 when asked for (the aggregator asks for
/// both from 1.30 on, v2 only from 1.37), the legacy document for plain JSON, `None` (406) otherwise.
pub(crate) fn negotiate_apis(accept: Option<&str>) -> Option<ApisFormat> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(ApisFormat::Legacy);
    };
    for (media, params) in media_ranges(accept) {
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let typed = param("g").is_some() || param("as").is_some();
        if typed {
            if media == "application/json"
                && param("g") == Some("apidiscovery.k8s.io")
                && param("as") == Some("APIGroupDiscoveryList")
            {
                match param("v") {
                    Some("v2") => return Some(ApisFormat::Aggregated("v2")),
                    Some("v2beta1") => return Some(ApisFormat::Aggregated("v2beta1")),
                    _ => {}
                }
            }
            continue;
        }
        if matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            return Some(ApisFormat::Legacy);
        }
    }
    None
}

/// The aggregated discovery document (`apidiscovery.k8s.io/<version>`, v2 and v2beta1 share the shape).
pub(crate) fn api_group_discovery_list(version: &str) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": [{
            "metadata": {"name": GROUP},
            "versions": [{
                "version": VERSION,
                "freshness": "Current",
                "resources": [{
                    "resource": "externalmetrics",
                    "responseKind": {"group": "", "version": "", "kind": "ExternalMetricValueList"},
                    "scope": "Namespaced",
                    "singularResource": "",
                    "verbs": ["get"]
                }]
            }]
        }]
    })
}

/// The Content-Type of an aggregated discovery answer.
pub(crate) fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
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
    fn apis_negotiation() {
        let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        let v2b1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        let cases: Vec<(Option<String>, Option<ApisFormat>)> = vec![
            (None, Some(ApisFormat::Legacy)),
            (Some("application/json".into()), Some(ApisFormat::Legacy)),
            (Some(v2.into()), Some(ApisFormat::Aggregated("v2"))),
            // The aggregator of 1.30–1.36.
            (
                Some(format!("{v2},{v2b1}")),
                Some(ApisFormat::Aggregated("v2")),
            ),
            // 1.26–1.29.
            (Some(v2b1.into()), Some(ApisFormat::Aggregated("v2beta1"))),
            // kubectl: aggregated first, JSON as the fallback.
            (
                Some(format!("{v2};q=0.9, {v2b1};q=0.8, application/json;q=0.7")),
                Some(ApisFormat::Aggregated("v2")),
            ),
            (
                Some(format!("application/json, {v2};q=0.5")),
                Some(ApisFormat::Legacy),
            ),
            (
                Some("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList".into()),
                None,
            ),
            (Some("application/vnd.kubernetes.protobuf".into()), None),
            // Issue 21 item 10: another group, or the right one twice with another, is not ours to answer.
            (
                Some("application/json;g=wrong.example.com;v=v2;as=APIGroupDiscoveryList".into()),
                None,
            ),
            (
                Some("application/json;g=apidiscovery.k8s.io;g=wrong.example.com;v=v2;as=APIGroupDiscoveryList".into()),
                None,
            ),
            (
                Some("application/json;g=wrong.example.com;v=v2;as=APIGroupDiscoveryList;g=apidiscovery.k8s.io".into()),
                None,
            ),
            (
                Some("application/json;as=APIGroupDiscoveryList;v=v2".into()),
                None,
            ),
            (
                Some("application/json;g=\"apidiscovery.k8s.io\";v=\"v2\";as=\"APIGroupDiscoveryList\"".into()),
                Some(ApisFormat::Aggregated("v2")),
            ),
            (
                Some(format!("{v2};q=0, application/json")),
                Some(ApisFormat::Legacy),
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate_apis(accept.as_deref()), want, "{accept:?}");
        }
        let doc = api_group_discovery_list("v2");
        assert_eq!(
            doc["items"][0]["versions"][0]["resources"][0]["responseKind"]["kind"],
            "ExternalMetricValueList"
        );
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
