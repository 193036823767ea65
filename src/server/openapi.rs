//! OpenAPI documents for `external.metrics.k8s.io/v1beta1`, as the aggregator downloads them
//! (`/openapi/v2`, and `/openapi/v3` with the group-version's document behind it) so that `kubectl explain`
//! and OpenAPI-driven clients know the group. Static: built once, with a content hash as the ETag and
//! in the v3 index's `serverRelativeURL`.

use std::sync::OnceLock;

use serde_json::{json, Value};

use super::discovery::{GROUP, GROUP_VERSION, VERSION};

const LIST: &str = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList";
const VALUE: &str = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValue";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
const RESOURCE: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResource";

/// The v3 path of the group-version's document.
pub(crate) const V3_GROUP_PATH: &str = "/openapi/v3/apis/external.metrics.k8s.io/v1beta1";

/// The schemas, with `$ref`s under `prefix` (`#/definitions/` for v2, `#/components/schemas/` for v3).
fn schemas(prefix: &str) -> Value {
    let r = |name: &str| json!({ "$ref": format!("{prefix}{name}") });
    let string = |description: &str| json!({"type": "string", "description": description});
    json!({
        LIST: {
            "description": "ExternalMetricValueList is a list of values for a given metric for some set labels",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": string("APIVersion defines the versioned schema of this representation of an object."),
                "kind": string("Kind is a string value representing the REST resource this object represents."),
                "metadata": r(LIST_META),
                "items": {"type": "array", "description": "value of the metric matching a given set of labels", "items": r(VALUE)}
            },
            "x-kubernetes-group-version-kind": [{"group": GROUP, "version": VERSION, "kind": "ExternalMetricValueList"}]
        },
        VALUE: {
            "description": "ExternalMetricValue is a metric value for external metric. A single metric value is identified by metric name and a set of string labels. For one metric there can be multiple values with different sets of labels.",
            "type": "object",
            "required": ["metricName", "metricLabels", "timestamp", "value"],
            "properties": {
                "apiVersion": string("APIVersion defines the versioned schema of this representation of an object."),
                "kind": string("Kind is a string value representing the REST resource this object represents."),
                "metricName": string("the name of the metric"),
                "metricLabels": {"type": "object", "description": "a set of labels that identify a single time series for the metric", "additionalProperties": {"type": "string"}},
                "timestamp": r(TIME),
                "window": {"type": "integer", "format": "int64", "description": "The window ([Timestamp-Window, Timestamp]) from which these metrics were calculated, in seconds."},
                "value": r(QUANTITY)
            },
            "x-kubernetes-group-version-kind": [{"group": GROUP, "version": VERSION, "kind": "ExternalMetricValue"}]
        },
        LIST_META: {
            "description": "ListMeta describes metadata that synthetic resources must have, including lists and various status objects.",
            "type": "object",
            "properties": {
                "continue": string("continue may be set if the user set a limit on the number of items returned."),
                "remainingItemCount": {"type": "integer", "format": "int64", "description": "The number of subsequent items in the list which are not included in this list response."},
                "resourceVersion": string("String that identifies the server's internal version of this object."),
                "selfLink": string("Deprecated: selfLink is a legacy read-only field that is no longer populated by the system.")
            }
        },
        QUANTITY: {
            "description": "Quantity is a fixed-point representation of a number.",
            "type": "string"
        },
        TIME: {
            "description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.",
            "type": "string",
            "format": "date-time"
        },
        RESOURCE_LIST: {
            "description": "APIResourceList is a list of APIResource, it is used to expose the name of the resources supported in a specific group and version, and if the resource is namespaced.",
            "type": "object",
            "required": ["groupVersion", "resources"],
            "properties": {
                "apiVersion": string("APIVersion defines the versioned schema of this representation of an object."),
                "kind": string("Kind is a string value representing the REST resource this object represents."),
                "groupVersion": string("groupVersion is the group and version this APIResourceList is for."),
                "resources": {"type": "array", "description": "resources contains the name of the resources and if they are namespaced.", "items": r(RESOURCE)}
            }
        },
        RESOURCE: {
            "description": "APIResource specifies the name of a resource and whether it is namespaced.",
            "type": "object",
            "required": ["name", "singularName", "namespaced", "kind", "verbs"],
            "properties": {
                "name": string("name is the plural name of the resource."),
                "singularName": string("singularName is the singular name of the resource."),
                "namespaced": {"type": "boolean", "description": "namespaced indicates if a resource is namespaced or not."},
                "kind": string("kind is the kind for the resource"),
                "verbs": {"type": "array", "description": "verbs is a list of supported kube verbs", "items": {"type": "string"}}
            }
        }
    })
}

fn info() -> Value {
    json!({"title": "wva-metrics-server", "version": env!("CARGO_PKG_VERSION")})
}

const METRIC_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}";
/// The resource discovery lists (`externalmetrics`): the path `kubectl explain externalmetrics` looks up.
/// Requests name the metric in its place ([`METRIC_PATH`]).
const RESOURCE_PATH: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/externalmetrics";
const RESOURCES_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/";

/// The two OpenAPI formats. They describe the same paths and operations and differ only in how a
/// response's schema and a parameter's type are written, and in v2's per-operation media types.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Swagger 2.0 (`/openapi/v2`).
    V2,
    /// OpenAPI 3.0 (`/openapi/v3`).
    V3,
}

impl Format {
    /// Where schemas live, as a `$ref` prefix.
    fn schema_prefix(self) -> &'static str {
        match self {
            Format::V2 => "#/definitions/",
            Format::V3 => "#/components/schemas/",
        }
    }

    /// A 200 with the named schema, and a 401.
    fn ok(self, name: &str) -> Value {
        let schema = json!({"$ref": format!("{}{name}", self.schema_prefix())});
        let body = match self {
            Format::V2 => json!({"description": "OK", "schema": schema}),
            Format::V3 => {
                json!({"description": "OK", "content": {"application/json": {"schema": schema}}})
            }
        };
        json!({"200": body, "401": {"description": "Unauthorized"}})
    }

    /// A string parameter in `location` (`path` parameters are required).
    fn param(self, name: &str, location: &str, description: &str) -> Value {
        let mut p = json!({"name": name, "in": location, "description": description});
        let string = json!({"type": "string", "uniqueItems": true});
        match self {
            Format::V2 => merge(&mut p, &string),
            Format::V3 => p["schema"] = string,
        }
        if location == "path" {
            p["required"] = json!(true);
        }
        p
    }

    /// A `get` operation; `list` marks the ones that return an `ExternalMetricValueList`.
    fn get(self, description: &str, id: &str, response: &str, consumes: &str, list: bool) -> Value {
        let mut op = json!({
            "description": description,
            "tags": ["externalMetrics_v1beta1"],
            "operationId": id,
            "responses": self.ok(response)
        });
        if self == Format::V2 {
            merge(
                &mut op,
                &json!({"consumes": [consumes], "produces": ["application/json"], "schemes": ["https"]}),
            );
        }
        if list {
            merge(
                &mut op,
                &json!({
                    "x-kubernetes-action": "list",
                    "x-kubernetes-group-version-kind": {"group": GROUP, "version": VERSION, "kind": "ExternalMetricValueList"}
                }),
            );
        }
        op
    }

    /// The group-version's paths.
    fn paths(self) -> Value {
        let namespace = self.param(
            "namespace",
            "path",
            "object name and auth scope, such as for teams and projects",
        );
        json!({
            RESOURCES_PATH: {"get": self.get(
                "get available resources",
                "getExternalMetricsV1beta1APIResources",
                RESOURCE_LIST,
                "application/json",
                false,
            )},
            METRIC_PATH: {
                "parameters": [
                    namespace,
                    self.param("metric", "path", &format!("the name of the external metric ({})", crate::provider::metrics::metric_names().collect::<Vec<_>>().join(", "))),
                    self.param("labelSelector", "query", "A selector to restrict the list of returned series by their labels (variant_name, exported_namespace, …).")
                ],
                "get": self.get(
                    "list the values of an external metric in a namespace",
                    "listExternalMetricsV1beta1NamespacedExternalMetricValue",
                    LIST,
                    "*/*",
                    true,
                )
            },
            RESOURCE_PATH: {
                "parameters": [namespace],
                "get": self.get(
                    "the resource discovery lists; a request names the metric in its place (namespaces/{namespace}/{metric})",
                    "listExternalMetricsV1beta1NamespacedExternalMetrics",
                    LIST,
                    "*/*",
                    true,
                )
            }
        })
    }
}

/// Copies `extra`'s fields into the object `into`.
fn merge(into: &mut Value, extra: &Value) {
    if let (Some(into), Some(extra)) = (into.as_object_mut(), extra.as_object()) {
        into.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// The Swagger 2.0 document (`/openapi/v2`).
fn build_v2() -> Value {
    json!({
        "swagger": "2.0",
        "info": info(),
        "paths": Format::V2.paths(),
        "definitions": schemas(Format::V2.schema_prefix())
    })
}

/// The OpenAPI 3.0 document of the group-version (`/openapi/v3/apis/external.metrics.k8s.io/v1beta1`).
fn build_v3() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": Format::V3.paths(),
        "components": {"schemas": schemas(Format::V3.schema_prefix())}
    })
}

/// A document's bytes and their ETag (a content hash, stable across replicas and restarts).
pub(crate) struct Document {
    pub body: Vec<u8>,
    pub etag: String,
}

impl Document {
    pub(crate) fn of(value: &Value) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        // FNV-1a: a stable content hash; no security property is needed here.
        let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        Document {
            body,
            etag: format!("{hash:016X}"),
        }
    }
}

pub(crate) fn v2() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| Document::of(&build_v2()))
}

pub(crate) fn v3_group() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| Document::of(&build_v3()))
}

/// The v3 index (`/openapi/v3`): one path, the group-version, with its document's hash.
pub(crate) fn v3_index() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| {
        Document::of(&json!({"paths": {
            format!("apis/{GROUP_VERSION}"): {
                "serverRelativeURL": format!("{V3_GROUP_PATH}?hash={}", v3_group().etag)
            }
        }}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` resolves inside its own document, in both versions.
    #[test]
    fn references_resolve() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        if k == "$ref" {
                            out.push(v.as_str().unwrap().to_string());
                        } else {
                            refs(v, out);
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        for (doc, prefix, defs) in [
            (build_v2(), "#/definitions/", "/definitions"),
            (build_v3(), "#/components/schemas/", "/components/schemas"),
        ] {
            let mut found = Vec::new();
            refs(&doc, &mut found);
            assert!(found.len() > 5);
            for r in found {
                let name = r.strip_prefix(prefix).unwrap();
                assert!(
                    doc.pointer(defs).unwrap().get(name).is_some(),
                    "{r} does not resolve"
                );
            }
        }
        let index: Value = serde_json::from_slice(&v3_index().body).unwrap();
        let url = index["paths"]["apis/external.metrics.k8s.io/v1beta1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert_eq!(url, format!("{V3_GROUP_PATH}?hash={}", v3_group().etag));
        assert_ne!(v2().etag, v3_group().etag);
    }
}
