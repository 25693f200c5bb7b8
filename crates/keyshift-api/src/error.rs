//! The Azure error envelope and Keyshift's stable error codes. The HTTP status of each code is
//! decided here, once.

use serde::Serialize;
use std::fmt;

/// A stable error code, spelled as Azure spells it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: a malformed or invalid request.
    BadParameter,
    /// 401: missing or invalid bearer token.
    Unauthorized,
    /// 403: the caller may not do this, or the key forbids it.
    Forbidden,
    /// 404: no such key (or version, or deleted key).
    KeyNotFound,
    /// 404: no such route or object other than a key.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 408: the client took too long to send its request.
    RequestTimeout,
    /// 409: a conflicting state (name taken, concurrent change).
    Conflict,
    /// 413: the request body is larger than allowed.
    RequestEntityTooLarge,
    /// 429: too many requests.
    Throttled,
    /// 500: a bug or an unexpected backend failure.
    InternalError,
    /// 503: the service cannot serve now (sealed, store unavailable).
    ServiceUnavailable,
}

impl ErrorCode {
    /// The code as sent in `error.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadParameter => "BadParameter",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::KeyNotFound => "KeyNotFound",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::RequestTimeout => "RequestTimeout",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::RequestEntityTooLarge => "RequestEntityTooLarge",
            ErrorCode::Throttled => "Throttled",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadParameter => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::KeyNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::Conflict => 409,
            ErrorCode::RequestEntityTooLarge => 413,
            ErrorCode::Throttled => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::ServiceUnavailable => 503,
        }
    }
}

/// An error as the client sees it: code, message and an optional inner code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A message for people. Never carries key material.
    pub message: String,
    /// A finer code, e.g. `KeyOperationForbidden` or `ObjectIsDeletedButRecoverable`.
    pub inner: Option<&'static str>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            inner: None,
        }
    }

    /// Adds an inner error code.
    pub fn with_inner(mut self, inner: &'static str) -> Self {
        self.inner = Some(inner);
        self
    }

    /// 400 `BadParameter`.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadParameter, message)
    }

    /// 403 `Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 409 `Conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 404 `KeyNotFound` with Azure's wording.
    pub fn key_not_found(name: &str) -> Self {
        Self::new(
            ErrorCode::KeyNotFound,
            format!(
                "A key with (name/id) {name} was not found in this key vault. If you recently deleted \
                 this key you may be able to recover it using the correct recovery command."
            ),
        )
    }

    /// 500 `InternalError`; the detail goes to the log, not to the client.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalError,
            "The service encountered an internal error.",
        )
    }

    /// The JSON envelope: `{"error":{"code","message","innererror":{"code"}}}`.
    pub fn envelope(&self) -> ErrorEnvelope<'_> {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.as_str(),
                message: &self.message,
                innererror: self.inner.map(|code| InnerError { code }),
            },
        }
    }

    /// The envelope serialized.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope()).unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// `{"error": ...}`
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    /// The error.
    pub error: ErrorBody<'a>,
}

/// The `error` member.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Stable code.
    pub code: &'a str,
    /// Message.
    pub message: &'a str,
    /// Inner error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub innererror: Option<InnerError>,
}

/// The `innererror` member.
#[derive(Debug, Serialize)]
pub struct InnerError {
    /// Inner code.
    pub code: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let e = ApiError::forbidden("Operation decrypt is not permitted on this key.")
            .with_inner("KeyOperationForbidden");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "Forbidden");
        assert_eq!(v["error"]["innererror"]["code"], "KeyOperationForbidden");
        assert_eq!(e.code.status(), 403);
        let plain: serde_json::Value =
            serde_json::from_slice(&ApiError::bad_parameter("x").to_json()).unwrap();
        assert!(plain["error"].get("innererror").is_none());
    }
}
