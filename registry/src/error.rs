//! The distribution spec's error codes, answered as `{"errors":[{"code","message","detail"}]}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    RangeInvalid,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::RangeInvalid => "RANGE_INVALID",
        }
    }

    /// The status the spec (and CNCF distribution) pairs with each code.
    fn status(self) -> u16 {
        match self {
            Self::BlobUnknown | Self::BlobUploadUnknown | Self::ManifestUnknown | Self::NameUnknown => 404,
            Self::Unauthorized => 401,
            Self::Denied => 403,
            Self::Unsupported => 415,
            Self::RangeInvalid => 416,
            _ => 400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub status: u16,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), detail: None, status: code.status() }
    }
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    pub fn blob_unknown(digest: &impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::BlobUnknown, "blob unknown to registry").with_detail(serde_json::json!({ "digest": digest.to_string() }))
    }
    pub fn upload_unknown() -> Self {
        Self::new(ErrorCode::BlobUploadUnknown, "blob upload unknown to registry")
    }
    pub fn manifest_unknown(reference: &str) -> Self {
        Self::new(ErrorCode::ManifestUnknown, "manifest unknown").with_detail(serde_json::json!({ "reference": reference }))
    }
    pub fn name_unknown(name: &impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NameUnknown, "repository name not known to registry").with_detail(serde_json::json!({ "name": name.to_string() }))
    }
    /// Disk trouble is the server's fault, not the client's.
    pub fn io(context: &str, e: std::io::Error) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(ErrorCode::Unsupported, format!("{context}: {e}")).with_status(500)
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(detail) = self.detail {
            error["detail"] = detail;
        }
        let body = serde_json::json!({ "errors": [error] }).to_string();
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, [("content-type", "application/json")], body).into_response()
    }
}
