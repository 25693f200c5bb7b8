//! Client errors: a kind to branch on, the HTTP status, and the service's own code and message from
//! the Azure error envelope. Server text is untrusted: it is parsed leniently, cut to a bounded
//! length and stripped of control characters, and a malformed body never panics.

use serde::Deserialize;
use std::fmt;

/// What went wrong, coarsely, for callers to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 404: no such key, version or route.
    NotFound,
    /// 403: authenticated, but not allowed (RBAC, or the key's `key_ops`).
    Forbidden,
    /// 401, or the token endpoint refused the credential.
    Unauthorized,
    /// 409: the name is taken or being deleted or recovered.
    Conflict,
    /// Another 4xx: the request was invalid.
    BadRequest,
    /// 429: too many requests (after any retries).
    Throttled,
    /// 502, 503 or 504: the service cannot answer now (after any retries).
    Unavailable,
    /// 500 or another 5xx: the service failed.
    Server,
    /// The request could not be sent or its answer not received (DNS, TCP, TLS, timeout).
    Transport,
    /// The service answered something this client cannot read.
    InvalidResponse,
    /// A caller-supplied value was refused before anything was sent (bad kid, name, URL,
    /// configuration file).
    InvalidInput,
}

/// An error from the client.
#[derive(Debug)]
pub struct ClientError {
    kind: ErrorKind,
    status: Option<u16>,
    code: Option<String>,
    message: String,
    inner_code: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Longest server-supplied message kept.
const MAX_MESSAGE_CHARS: usize = 1024;

impl ClientError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ClientError {
            kind,
            status: None,
            code: None,
            message: message.into(),
            inner_code: None,
            source: None,
        }
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn invalid_response(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidResponse, message)
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// A transport failure from reqwest. The URL is dropped from the source: reqwest puts it in
    /// its messages, and it is already known to the caller. This client decodes JSON itself, so
    /// any reqwest error (a "decode" error included: reqwest reports a body cut short that way)
    /// is the connection's fault.
    pub(crate) fn transport(context: &str, e: reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else if e.is_body() || e.is_decode() {
            "the answer was cut short or unreadable"
        } else {
            "the exchange failed"
        };
        Self::new(ErrorKind::Transport, format!("{context}: {what}")).with_source(e.without_url())
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The service's error code (`error.code`, e.g. `KeyNotFound`, `Forbidden`; or the OAuth
    /// `error`, e.g. `invalid_client`).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The finer code from `error.innererror.code` (e.g. `ForbiddenByRbac`,
    /// `KeyOperationForbidden`, `ObjectIsDeletedButRecoverable`).
    pub fn inner_code(&self) -> Option<&str> {
        self.inner_code.as_deref()
    }

    /// The message: the service's, or this client's description.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Builds the error for a non-success answer of the keys API from its status and body.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Self {
        let kind = kind_for_status(status);
        match parse_envelope(body) {
            Some(env) => ClientError {
                kind,
                status: Some(status),
                code: env.code.map(|c| clean(&c, 128)),
                message: env
                    .message
                    .map(|m| clean(&m, MAX_MESSAGE_CHARS))
                    .unwrap_or_else(|| format!("HTTP {status}")),
                inner_code: env.inner_code.map(|c| clean(&c, 128)),
                source: None,
            },
            None => {
                let message = if body.is_empty() {
                    format!("HTTP {status} with an empty body")
                } else {
                    format!("HTTP {status} without an Azure error envelope")
                };
                Self::new(kind, message).with_status(status)
            }
        }
    }

    /// Builds the error for a refused token request from an OAuth2 error body
    /// (`{"error": "invalid_client", "error_description": "..."}`).
    pub(crate) fn from_token_response(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct OAuthError {
            error: Option<serde_json::Value>,
            error_description: Option<String>,
        }
        let parsed: Option<OAuthError> = serde_json::from_slice(body).ok();
        let code = parsed.as_ref().and_then(|p| match &p.error {
            Some(serde_json::Value::String(s)) => Some(clean(s, 128)),
            _ => None,
        });
        let description = parsed
            .and_then(|p| p.error_description)
            .map(|d| clean(&d, MAX_MESSAGE_CHARS));
        // The token endpoint answers 400 or 401 for a wrong secret (invalid_client), both of which
        // mean "these credentials do not work"; other statuses keep their usual kind.
        let kind = match (status, code.as_deref()) {
            (401, _) | (400, Some("invalid_client" | "unauthorized_client" | "invalid_grant")) => {
                ErrorKind::Unauthorized
            }
            _ => kind_for_status(status),
        };
        let message = format!(
            "the token endpoint refused the request (HTTP {status}{}){}",
            code.as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default(),
            description.map(|d| format!(": {d}")).unwrap_or_default()
        );
        ClientError {
            kind,
            status: Some(status),
            code,
            message,
            inner_code: None,
            source: None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.status, &self.code) {
            (Some(s), Some(c)) => write!(f, "{c} (HTTP {s}): {}", self.message)?,
            (Some(s), None) => write!(f, "HTTP {s}: {}", self.message)?,
            _ => f.write_str(&self.message)?,
        }
        if let Some(inner) = &self.inner_code {
            write!(f, " [{inner}]")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The kind that goes with an HTTP status.
pub(crate) fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        429 => ErrorKind::Throttled,
        502..=504 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::BadRequest,
        500..=599 => ErrorKind::Server,
        // 1xx, 3xx or a success status with an unreadable body: not something this API answers.
        _ => ErrorKind::InvalidResponse,
    }
}

/// The members of `{"error": {"code", "message", "innererror": {"code"}}}` that were present and
/// strings. Anything else in the body is ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub code: Option<String>,
    pub message: Option<String>,
    pub inner_code: Option<String>,
}

pub(crate) fn parse_envelope(body: &[u8]) -> Option<Envelope> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?.as_object()?;
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let envelope = Envelope {
        code: text(error.get("code")),
        message: text(error.get("message")),
        inner_code: text(error.get("innererror").and_then(|i| i.get("code"))),
    };
    (envelope != Envelope::default()).then_some(envelope)
}

/// Server text made safe to print: control characters replaced, length bounded.
fn clean(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_with_inner_code() {
        let body = br#"{"error":{"code":"Forbidden","message":"Operation decrypt is not permitted on this key.","innererror":{"code":"KeyOperationForbidden"}}}"#;
        let e = ClientError::from_response(403, body);
        assert_eq!(e.kind(), ErrorKind::Forbidden);
        assert_eq!(e.status(), Some(403));
        assert_eq!(e.code(), Some("Forbidden"));
        assert_eq!(e.inner_code(), Some("KeyOperationForbidden"));
        assert_eq!(
            e.message(),
            "Operation decrypt is not permitted on this key."
        );
        assert_eq!(
            e.to_string(),
            "Forbidden (HTTP 403): Operation decrypt is not permitted on this key. [KeyOperationForbidden]"
        );
    }

    #[test]
    fn statuses_map_to_kinds() {
        for (status, kind) in [
            (400, ErrorKind::BadRequest),
            (401, ErrorKind::Unauthorized),
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::NotFound),
            (405, ErrorKind::BadRequest),
            (409, ErrorKind::Conflict),
            (413, ErrorKind::BadRequest),
            (429, ErrorKind::Throttled),
            (500, ErrorKind::Server),
            (502, ErrorKind::Unavailable),
            (503, ErrorKind::Unavailable),
            (504, ErrorKind::Unavailable),
            (302, ErrorKind::InvalidResponse),
            (200, ErrorKind::InvalidResponse),
        ] {
            assert_eq!(kind_for_status(status), kind, "{status}");
        }
    }

    #[test]
    fn malformed_envelopes_never_panic() {
        let bodies: [&[u8]; 12] = [
            b"",
            b"<html>502 Bad Gateway</html>",
            b"\xff\xfe\x00junk",
            b"null",
            b"[]",
            b"{}",
            br#"{"error":null}"#,
            br#"{"error":"text"}"#,
            br#"{"error":{}}"#,
            br#"{"error":{"code":5,"message":["x"],"innererror":"y"}}"#,
            br#"{"error":{"code":"KeyNotFound""#,
            br#"{"error":{"innererror":{"innererror":{"code":"deep"}}}}"#,
        ];
        for body in bodies {
            let e = ClientError::from_response(404, body);
            assert_eq!(e.kind(), ErrorKind::NotFound);
            assert_eq!(e.status(), Some(404));
            assert!(e.code().is_none(), "{:?}", String::from_utf8_lossy(body));
            assert!(e.message().contains("404"), "{}", e.message());
        }
        // Only a message: kept.
        let e = ClientError::from_response(500, br#"{"error":{"message":"boom"}}"#);
        assert_eq!(
            (e.kind(), e.message(), e.code()),
            (ErrorKind::Server, "boom", None)
        );
    }

    #[test]
    fn server_text_is_bounded_and_cleaned() {
        let long = "x".repeat(10_000);
        let body = serde_json::json!({"error": {"code": "BadParameter\r\nX-Injected: 1", "message": long}});
        let e = ClientError::from_response(400, body.to_string().as_bytes());
        assert_eq!(e.code(), Some("BadParameter  X-Injected: 1"));
        assert_eq!(e.message().chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn oauth_errors() {
        let e = ClientError::from_token_response(
            401,
            br#"{"error":"invalid_client","error_description":"Invalid client credentials."}"#,
        );
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert_eq!(e.code(), Some("invalid_client"));
        assert!(e.message().contains("Invalid client credentials."));
        let e = ClientError::from_token_response(400, br#"{"error":"invalid_client"}"#);
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        let e = ClientError::from_token_response(400, br#"{"error":"invalid_request"}"#);
        assert_eq!(e.kind(), ErrorKind::BadRequest);
        let e = ClientError::from_token_response(502, b"<html>");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.code(), None);
    }
}
