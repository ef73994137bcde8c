//! API errors and their Kubernetes `Status` form.
//!
//! Every failure the API server returns is a `Status` object with the reason and
//! code kubectl and client-go switch on (NotFound, AlreadyExists, Conflict, Invalid
//! with field causes, Expired, ...). Messages follow upstream wording because users
//! and scripts grep for them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// The kind of a field-level validation failure (upstream `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorType {
    /// A required field is missing or empty.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value appears twice where it must be unique.
    Duplicate,
    /// The value is not one of the supported values.
    NotSupported,
    /// The field may not be set or changed.
    Forbidden,
    /// The value is longer than allowed.
    TooLong,
    /// The value refers to something that does not exist.
    NotFound,
}

impl FieldErrorType {
    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::Duplicate => "Duplicate value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::NotFound => "Not found",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::NotFound => "FieldValueNotFound",
        }
    }

    /// Whether upstream prints the offending value in the message.
    fn shows_value(self) -> bool {
        matches!(self, Self::Invalid | Self::Duplicate | Self::NotSupported | Self::NotFound)
    }
}

/// One validation failure at a field path such as `spec.template.spec.containers[0].name`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorType,
    pub field: String,
    pub value: Value,
    pub detail: String,
    /// The value is already rendered as upstream prints it (Go maps and structs), not a JSON string to quote.
    pub raw_value: bool,
}

impl FieldError {
    pub fn new(kind: FieldErrorType, field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self { kind, field: field.into(), value, detail: detail.into(), raw_value: false }
    }
    /// An Invalid error whose value is shown verbatim (e.g. `map[string]string{...}`).
    pub fn invalid_rendered(field: impl Into<String>, rendered: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { raw_value: true, ..Self::invalid(field, Value::String(rendered.into()), detail) }
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Required, field, Value::Null, detail)
    }
    pub fn invalid(field: impl Into<String>, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Invalid, field, value.into(), detail)
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(FieldErrorType::Duplicate, field, value.into(), "")
    }
    pub fn not_supported(field: impl Into<String>, value: impl Into<Value>, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self::new(FieldErrorType::NotSupported, field, value.into(), format!("supported values: {}", list.join(", ")))
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Forbidden, field, Value::Null, detail)
    }
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(FieldErrorType::NotFound, field, value.into(), "")
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(FieldErrorType::TooLong, field, Value::Null, format!("must have at most {max} bytes"))
    }

    /// The message without the field path, e.g. `Invalid value: -1: must be greater than or equal to 0`.
    pub fn body(&self) -> String {
        let mut s = self.kind.label().to_string();
        if self.kind.shows_value() {
            let v = match &self.value {
                Value::String(x) if self.raw_value => x.clone(),
                Value::String(x) => format!("\"{x}\""),
                Value::Null => "null".to_string(),
                other => other.to_string(),
            };
            s.push_str(": ");
            s.push_str(&v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Identifies the resource an error is about, as upstream's `schema.GroupResource`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name, e.g. `deployments`.
    pub resource: String,
    /// Kind, e.g. `Deployment` (used by Invalid).
    pub kind: String,
    pub name: String,
}

impl Target {
    /// `deployments.apps` or `pods`.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() { self.resource.clone() } else { format!("{}.{}", self.resource, self.group) }
    }
    /// `Deployment.apps` or `Pod`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.clone() } else { format!("{}.{}", self.kind, self.group) }
    }
}

/// An error the API answers with; each maps to one `Status` reason and HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{} \"{}\" not found", .0.qualified_resource(), .0.name)]
    NotFound(Target),
    #[error("{} \"{}\" already exists", .0.qualified_resource(), .0.name)]
    AlreadyExists(Target),
    #[error("Operation cannot be fulfilled on {} \"{}\": {}", .0.qualified_resource(), .0.name, .1)]
    Conflict(Target, String),
    #[error("{} \"{}\" is invalid: {}", .0.qualified_kind(), .0.name, format_causes(.1))]
    Invalid(Target, Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("the server could not find the requested resource")]
    UnknownPath,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf")]
    UnsupportedMediaType,
    #[error("Request entity too large: limit is {0}")]
    TooLarge(usize),
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// A JSON patch that does not apply to the object (a `test` that fails, a path that
    /// is missing, an unknown operation). Upstream keeps the reason off the wire.
    #[error("the server rejected our request due to an error in our request")]
    JsonPatchFailed(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

fn format_causes(causes: &[FieldError]) -> String {
    match causes {
        [one] => one.to_string(),
        many => format!("[{}]", many.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) | Self::UnknownPath => StatusCode::NOT_FOUND,
            Self::AlreadyExists(_) | Self::Conflict(..) => StatusCode::CONFLICT,
            Self::Invalid(..) | Self::JsonPatchFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Expired(_) => StatusCode::GONE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) | Self::UnknownPath => "NotFound",
            Self::AlreadyExists(_) => "AlreadyExists",
            Self::Conflict(..) => "Conflict",
            Self::Invalid(..) | Self::JsonPatchFailed(_) => "Invalid",
            Self::BadRequest(_) => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::TooLarge(_) => "RequestEntityTooLarge",
            Self::Expired(_) => "Expired",
            Self::TooManyRequests(_) => "TooManyRequests",
            Self::Internal(_) => "InternalError",
        }
    }

    /// The stale-resourceVersion conflict every optimistic-concurrency write can hit.
    pub fn stale(target: Target) -> Self {
        Self::Conflict(target, "the object has been modified; please apply your changes to the latest version and try again".into())
    }

    /// The `Status` object for this error, with `details` as upstream fills them.
    pub fn status(&self) -> Status {
        let of = |t: &Target, kind: &str| StatusDetails { name: t.name.clone(), group: t.group.clone(), kind: kind.to_string(), ..Default::default() };
        let details = match self {
            Self::NotFound(t) | Self::AlreadyExists(t) | Self::Conflict(t, _) => Some(of(t, &t.resource)),
            Self::Invalid(t, causes) => Some(StatusDetails {
                causes: causes.iter().map(|c| StatusCause { reason: c.kind.reason().into(), message: c.body(), field: c.field.clone() }).collect(),
                ..of(t, &t.kind)
            }),
            // Upstream's answers for what no route serves and for a JSON patch that does
            // not apply (`NewGenericServerResponse`) carry empty details; kubectl reads
            // them (`kubectl debug` tells a missing subresource by its empty name).
            Self::UnknownPath | Self::MethodNotAllowed | Self::JsonPatchFailed(_) | Self::TooManyRequests(_) => Some(StatusDetails::default()),
            Self::Internal(m) => Some(StatusDetails { causes: vec![StatusCause { message: m.clone(), ..Default::default() }], ..Default::default() }),
            _ => None,
        };
        Status {
            status: "Failure",
            message: self.to_string(),
            reason: self.reason(),
            details,
            code: self.code().as_u16(),
            ..Status::success(0)
        }
    }

    /// The `Status` object as a JSON value (for embedding, e.g. in a watch ERROR event).
    pub fn to_status(&self) -> Value {
        serde_json::to_value(self.status()).unwrap_or(Value::Null)
    }
}

/// `meta/v1` Status, serialized as upstream's Go struct: fields in declaration order,
/// empty ones left out (`omitempty`), `metadata` always present.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub kind: &'static str,
    #[serde(rename = "apiVersion")]
    pub api_version: &'static str,
    pub metadata: Map<String, Value>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    #[serde(skip_serializing_if = "is_zero")]
    pub code: u16,
}

impl Status {
    /// A `Success` status, as a create of `pods/binding` or `pods/eviction` answers.
    pub fn success(code: u16) -> Self {
        Self { kind: "Status", api_version: "v1", metadata: Map::new(), status: "Success", message: String::new(), reason: "", details: None, code }
    }
}

/// `meta/v1` StatusDetails, in upstream's field order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatusDetails {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "is_zero_i32")]
    pub retry_after_seconds: i32,
}

/// `meta/v1` StatusCause, in upstream's field order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatusCause {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// A JSON response body as upstream's serializer writes it: compact, ending in a newline.
pub fn json_body<T: Serialize + ?Sized>(body: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// A JSON response with the given status code (see [`json_body`]).
pub fn json_response<T: Serialize + ?Sized>(code: StatusCode, body: &T) -> Response {
    (code, [(axum::http::header::CONTENT_TYPE, "application/json")], json_body(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code(), &self.status())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_reads_like_upstream() {
        let t = Target { group: "apps".into(), resource: "deployments".into(), kind: "Deployment".into(), name: "bad".into() };
        let e = ApiError::Invalid(t, vec![FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0")]);
        assert_eq!(e.to_string(), "Deployment.apps \"bad\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0");
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["message"], "Invalid value: -1: must be greater than or equal to 0");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
    }

    #[test]
    fn status_serializes_in_upstream_field_order() {
        let t = |group: &str, resource: &str| Target { group: group.into(), resource: resource.into(), kind: "X".into(), name: "n".into() };
        let body = |e: ApiError| String::from_utf8(json_body(&e.status())).unwrap();
        assert_eq!(
            body(ApiError::NotFound(t("", "pods"))),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"n\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"n\",\"kind\":\"pods\"},\"code\":404}\n"
        );
        let ends = |b: String, tail: &str| assert!(b.ends_with(&format!("{tail}\n")), "{b}");
        ends(body(ApiError::AlreadyExists(t("apps", "deployments"))), r#""reason":"AlreadyExists","details":{"name":"n","group":"apps","kind":"deployments"},"code":409}"#);
        ends(body(ApiError::stale(t("apps", "deployments"))), r#""reason":"Conflict","details":{"name":"n","group":"apps","kind":"deployments"},"code":409}"#);
        ends(
            body(ApiError::Invalid(t("", "pods"), vec![FieldError::required("spec.containers", "")])),
            r#""reason":"Invalid","details":{"name":"n","kind":"X","causes":[{"reason":"FieldValueRequired","message":"Required value","field":"spec.containers"}]},"code":422}"#,
        );
        ends(body(ApiError::UnknownPath), r#""message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#);
        ends(body(ApiError::MethodNotAllowed), r#""reason":"MethodNotAllowed","details":{},"code":405}"#);
        ends(
            body(ApiError::JsonPatchFailed("testing value /a failed".into())),
            r#""message":"the server rejected our request due to an error in our request","reason":"Invalid","details":{},"code":422}"#,
        );
        ends(body(ApiError::Internal("boom".into())), r#""reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#);
        let expired = body(ApiError::Expired("too old resource version: 1 (5)".into()));
        assert!(!expired.contains("details"), "{expired}");
        ends(expired, r#""reason":"Expired","code":410}"#);
        assert_eq!(String::from_utf8(json_body(&Status::success(201))).unwrap(), "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Success\",\"code\":201}\n");
    }

    #[test]
    fn not_found_names_the_qualified_resource() {
        let t = Target { group: "".into(), resource: "pods".into(), kind: "Pod".into(), name: "x".into() };
        assert_eq!(ApiError::NotFound(t).to_string(), "pods \"x\" not found");
    }
}
