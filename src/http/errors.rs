//! One place that turns every failure into an HTTP status and a stable error code.
//!
//! Clients get `{"error": {"code", "message"}}` with a short message; internal causes go
//! to the log, never to the client.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use crate::audit::AuditUnavailable;
use crate::machines::MachineError;
use crate::read_path::ReadError;
use crate::storage::StoreError;
use crate::vaults::VaultError;

/// An error as a client sees it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed on an internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        use StatusCode as S;
        let status = match &e {
            ReadError::Header(_)
            | ReadError::Skew(_)
            | ReadError::AuthenticationFailed
            | ReadError::Expired
            | ReadError::Disabled
            | ReadError::Replayed => S::UNAUTHORIZED,
            ReadError::Pending
            | ReadError::Guardrail(_)
            | ReadError::NotMember
            | ReadError::NotGranted => S::FORBIDDEN,
            ReadError::SecretNotFound => S::NOT_FOUND,
            ReadError::AuditUnavailable => S::SERVICE_UNAVAILABLE,
            ReadError::Internal(cause) => return Self::internal(cause),
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<MachineError> for ApiError {
    fn from(e: MachineError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            MachineError::WrongState { .. } => (S::CONFLICT, "wrong_state"),
            MachineError::TokenUnusable => (S::NOT_FOUND, "bootstrap_token_invalid"),
            MachineError::WeakKey => (S::BAD_REQUEST, "weak_public_key"),
            MachineError::NotTemporary => (S::CONFLICT, "not_temporary"),
            MachineError::NotLater { .. } | MachineError::TooFar { .. } => {
                (S::BAD_REQUEST, "invalid_expiry")
            }
            MachineError::NoSuchExtension(_) => (S::NOT_FOUND, "not_found"),
            MachineError::AlreadyReverted(_) => (S::CONFLICT, "already_reverted"),
            MachineError::Rule(_) => (S::BAD_REQUEST, "invalid_guardrails"),
            MachineError::Restarting | MachineError::Unavailable => {
                (S::SERVICE_UNAVAILABLE, "machine_unavailable")
            }
            MachineError::Store(cause) => return Self::internal(cause),
            MachineError::Audit(e) => return (*e).into(),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            VaultError::VaultExists(_) | VaultError::ProjectExists(_) => {
                (S::CONFLICT, "already_exists")
            }
            VaultError::NoVault(_) | VaultError::NoProject(_) => (S::NOT_FOUND, "not_found"),
            VaultError::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            VaultError::Policy(_) => (S::BAD_REQUEST, "invalid_guardrails"),
            VaultError::Store(_) | VaultError::Seal(_) => return Self::internal(&e),
            VaultError::Audit(a) => return (*a).into(),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
            other => Self::internal(&other),
        }
    }
}

impl From<AuditUnavailable> for ApiError {
    fn from(e: AuditUnavailable) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            e.to_string(),
        )
    }
}

pub(super) fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let api = match &err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than the limit",
        ),
        J::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        J::Deserialize(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON body: {e}"),
        ),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid JSON body: {other}"),
        ),
    };
    api.into()
}

/// A body that could not be read, for handlers that take raw bytes: too large is 413 with
/// the same code as an oversized JSON body, anything else is the client's fault too.
pub(super) fn payload_error(err: actix_web::Error) -> ApiError {
    use actix_web::error::PayloadError as P;
    match err.as_error::<P>() {
        Some(P::Overflow) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than the limit",
        ),
        _ => ApiError::bad_request(format!("cannot read the request body: {err}")),
    }
}

pub(super) fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("bad path: {err}")).into()
}

pub(super) fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(format!("bad query string: {err}")).into()
}

pub(super) async fn unknown_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // The path is not echoed: it may carry a bootstrap token.
    Err(ApiError::not_found(format!(
        "no route for this {} request",
        req.method()
    )))
}
