//! metav1.Status error bodies. client-go only turns a body into a typed error when it decodes as a
//! Status with `status: "Failure"`, so every error this server returns goes through here.

use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::Bytes;
use serde::Serialize;

/// Every response body this server sends: whole, in memory.
pub type Body = http_body_util::Full<Bytes>;

#[derive(Debug, Serialize)]
struct ApiStatus<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    code: u16,
}

/// `{}`: an object with no fields (metav1.ListMeta and ObjectMeta when there is nothing to say).
#[derive(Debug, Serialize)]
pub(crate) struct Empty {}

#[derive(Debug, Serialize)]
pub(crate) struct Details<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
}

/// The Kubernetes `reason` for an HTTP status.
pub(crate) fn reason_for(code: StatusCode) -> &'static str {
    match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::NOT_ACCEPTABLE => "NotAcceptable",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::GATEWAY_TIMEOUT => "Timeout",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        _ => "InternalError",
    }
}

pub fn failure(code: StatusCode, message: &str) -> Response<Body> {
    failure_with_details(code, message, None)
}

pub(crate) fn failure_with_details(
    code: StatusCode,
    message: &str,
    details: Option<Details<'_>>,
) -> Response<Body> {
    // Messages may carry caller input; a response never grows with it.
    let message = crate::error::cap(message, crate::error::MAX_STATUS_MESSAGE_BYTES);
    let body = ApiStatus {
        kind: "Status",
        api_version: "v1",
        metadata: Empty {},
        status: "Failure",
        message: &message,
        reason: reason_for(code),
        details,
        code: code.as_u16(),
    };
    json_response(code, &body)
}

/// Every JSON body carries `Content-Type: application/json`: without it client-go decodes with its own
/// default (protobuf for the HPA) and fails.
pub(crate) fn json_response<T: Serialize>(code: StatusCode, body: &T) -> Response<Body> {
    // Room for an answer to an HPA or a Status in one allocation; larger documents grow from there.
    let mut bytes = Vec::with_capacity(1024);
    let bytes = match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => bytes,
        // Serializing our own plain structs cannot fail; answer something well-formed if it ever does.
        Err(e) => format!(r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"encoding error: {e}","reason":"InternalError","code":500}}"#)
            .into_bytes(),
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_shape() {
        let resp = failure(
            StatusCode::NOT_FOUND,
            "the server could not find the requested resource",
        );
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404})
        );
    }
}
