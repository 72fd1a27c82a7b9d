//! The error kinds every handler answers with, and the one mapping from them to an HTTP
//! status and JSON body.
//!
//! Owns the stable error codes of the spec. Module errors (`PipelineError`, `OriginError`,
//! `StoreError`, `CpuError`, `UrlError`) convert into [`HttpError`] here, classified by who
//! caused them: client (4xx), origin (502/504), overload (503), internal (500). A 5xx body
//! never carries internal detail; the detail goes to the log line only.

use std::fmt;

use crate::accounts::AccountError;
use crate::auth::AuthError;
use crate::cache::flight::TaskFailed;
use crate::cpu::CpuError;
use crate::delivery::url::UrlError;
use crate::origin::{OriginError, OriginGetError, OriginalsError};
use crate::pipeline::PipelineError;
use crate::render::RenderError;
use crate::store::StoreError;
use crate::usage::QuotaError;

/// The stable codes of the spec's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    ValidationError,
    MethodNotAllowed,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedFormat,
    ImageTooLarge,
    CorruptImage,
    QuotaExceeded,
    RateLimited,
    Internal,
    OriginUnavailable,
    Overloaded,
    OriginTimeout,
    TransformTimeout,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedFormat => "UNSUPPORTED_FORMAT",
            ErrorCode::ImageTooLarge => "IMAGE_TOO_LARGE",
            ErrorCode::CorruptImage => "CORRUPT_IMAGE",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL_ERROR",
            ErrorCode::OriginUnavailable => "ORIGIN_UNAVAILABLE",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::OriginTimeout => "ORIGIN_TIMEOUT",
            ErrorCode::TransformTimeout => "TRANSFORM_TIMEOUT",
        }
    }

    fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ErrorCode::ValidationError => S::BAD_REQUEST,
            ErrorCode::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            ErrorCode::Unauthorized => S::UNAUTHORIZED,
            ErrorCode::Forbidden => S::FORBIDDEN,
            ErrorCode::NotFound => S::NOT_FOUND,
            ErrorCode::Conflict => S::CONFLICT,
            ErrorCode::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedFormat => S::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ImageTooLarge | ErrorCode::CorruptImage => S::UNPROCESSABLE_ENTITY,
            ErrorCode::QuotaExceeded | ErrorCode::RateLimited => S::TOO_MANY_REQUESTS,
            ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
            ErrorCode::OriginUnavailable => S::BAD_GATEWAY,
            ErrorCode::Overloaded => S::SERVICE_UNAVAILABLE,
            ErrorCode::OriginTimeout | ErrorCode::TransformTimeout => S::GATEWAY_TIMEOUT,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error on its way to becoming a response.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub(crate) code: ErrorCode,
    /// Shown to the client for 4xx; replaced by a generic text for 5xx.
    pub(crate) message: String,
    /// Internal detail for the log line only.
    pub(crate) detail: Option<String>,
    /// Seconds, for 503/429.
    pub(crate) retry_after: Option<u64>,
    /// For 405: the methods the route accepts (`Allow`); `None` means `GET, HEAD`.
    pub(crate) allow: Option<&'static str>,
}

impl HttpError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> HttpError {
        HttpError {
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
            allow: None,
        }
    }

    /// `405 METHOD_NOT_ALLOWED` naming the methods the route accepts.
    pub(crate) fn method_not_allowed(allow: &'static str) -> HttpError {
        HttpError {
            allow: Some(allow),
            ..HttpError::new(
                ErrorCode::MethodNotAllowed,
                format!("method not allowed on this route; use {allow}"),
            )
        }
    }

    pub(crate) fn validation(message: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::ValidationError, message)
    }

    pub(crate) fn not_found() -> HttpError {
        HttpError::new(ErrorCode::NotFound, "image not found")
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> HttpError {
        HttpError::new(ErrorCode::Forbidden, message)
    }

    /// A server-side failure: the client sees a generic message, the log sees `detail`.
    pub(crate) fn internal(detail: impl Into<String>) -> HttpError {
        HttpError {
            detail: Some(detail.into()),
            ..HttpError::new(ErrorCode::Internal, "internal error")
        }
    }

    pub(crate) fn status(&self) -> http::StatusCode {
        self.code.status()
    }

    /// The JSON body of the spec: `{"error":{"code","message","status","path"}}`.
    pub(crate) fn body(&self, path: &str) -> String {
        let status = self.status();
        let message = if status.is_server_error() {
            generic_message(self.code)
        } else {
            self.message.as_str()
        };
        serde_json::json!({
            "error": {
                "code": self.code.as_str(),
                "message": message,
                "status": status.as_u16(),
                "path": path,
            }
        })
        .to_string()
    }
}

fn generic_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::OriginUnavailable => "the image origin is unavailable",
        ErrorCode::Overloaded => "the node is overloaded, retry later",
        ErrorCode::OriginTimeout => "the image origin did not answer in time",
        ErrorCode::TransformTimeout => "the transform did not finish in time",
        _ => "internal error",
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpError {}

impl From<UrlError> for HttpError {
    fn from(e: UrlError) -> HttpError {
        HttpError::validation(e.to_string())
    }
}

impl From<PipelineError> for HttpError {
    fn from(e: PipelineError) -> HttpError {
        match e {
            PipelineError::UnsupportedFormat => HttpError::new(
                ErrorCode::UnsupportedFormat,
                "the stored original is in a format this node cannot decode",
            ),
            PipelineError::SourceTooLarge(m) => HttpError::new(ErrorCode::ImageTooLarge, m),
            PipelineError::OutputTooLarge(m) | PipelineError::BadRequest(m) => {
                HttpError::validation(m)
            }
            PipelineError::Deadline(_) => HttpError::new(ErrorCode::TransformTimeout, "timeout"),
            PipelineError::Corrupt(m) => HttpError::new(ErrorCode::CorruptImage, m),
            PipelineError::Internal(m) => HttpError::internal(m),
        }
    }
}

impl From<OriginError> for HttpError {
    fn from(e: OriginError) -> HttpError {
        let code = match e {
            // A path in the metadata store whose original is missing is our inconsistency,
            // but the client still asked for something that cannot be served: 404.
            OriginError::NotFound(_) => ErrorCode::NotFound,
            OriginError::Timeout => ErrorCode::OriginTimeout,
            OriginError::Unavailable(_) => ErrorCode::OriginUnavailable,
        };
        HttpError {
            detail: Some(e.to_string()),
            ..HttpError::new(code, "image not found")
        }
    }
}

impl From<OriginalsError> for HttpError {
    fn from(e: OriginalsError) -> HttpError {
        match e {
            OriginalsError::Origin(e) => e.into(),
            OriginalsError::Store(e) => e.into(),
            // A data key that does not unwrap: logged with its row; nothing to tell the client.
            OriginalsError::Kek(e) => {
                tracing::error!(error = %e, "an original's data key was refused");
                HttpError::internal("the original's key could not be used")
            }
        }
    }
}

impl From<OriginGetError> for HttpError {
    fn from(e: OriginGetError) -> HttpError {
        match e {
            OriginGetError::Origin(e) => e.into(),
            OriginGetError::TooLarge(size) => HttpError::new(
                ErrorCode::ImageTooLarge,
                format!("the original is {size} bytes, over limits.max_source_bytes"),
            ),
            // Logged where it was found (object name, reason); the client learns no more.
            OriginGetError::Sealed(detail) => HttpError {
                detail: Some(detail),
                ..HttpError::new(
                    ErrorCode::OriginUnavailable,
                    "the original could not be read",
                )
            },
        }
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        match e {
            StoreError::Conflict(m) => HttpError::new(ErrorCode::Conflict, m),
            StoreError::Limit(m) => HttpError::validation(m),
            StoreError::NotFound => HttpError::new(ErrorCode::NotFound, "not found"),
            // A database too busy to answer in time: a retry shortly will do, as with a full
            // render queue (the detail is logged, not sent).
            e if e.is_busy() => {
                tracing::warn!(error = %e, "the metadata store is busy");
                HttpError {
                    retry_after: Some(1),
                    ..HttpError::new(ErrorCode::Overloaded, "the metadata store is busy")
                }
            }
            other => HttpError::internal(other.to_string()),
        }
    }
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> HttpError {
        match e {
            AuthError::Missing | AuthError::Invalid => {
                HttpError::new(ErrorCode::Unauthorized, e.to_string())
            }
            // The key limit (409), a busy database (503), or a 500.
            AuthError::Store(e) => e.into(),
            AuthError::Random => HttpError::internal(e.to_string()),
        }
    }
}

impl From<AccountError> for HttpError {
    fn from(e: AccountError) -> HttpError {
        match e {
            AccountError::NoSuchAccount | AccountError::NoSuchKey => {
                HttpError::new(ErrorCode::NotFound, e.to_string())
            }
            AccountError::Erasing => HttpError::new(ErrorCode::Conflict, e.to_string()),
            AccountError::Invalid(m) => HttpError::validation(m),
            AccountError::Refused(m) => HttpError::forbidden(m),
            AccountError::Store(e) => e.into(),
            AccountError::Auth(e) => e.into(),
            AccountError::Export(m) => HttpError::internal(m),
        }
    }
}

impl From<QuotaError> for HttpError {
    fn from(e: QuotaError) -> HttpError {
        let code = match e {
            QuotaError::Monthly { .. } => ErrorCode::QuotaExceeded,
            QuotaError::Storage { .. } => ErrorCode::PayloadTooLarge,
        };
        HttpError::new(code, e.to_string())
    }
}

impl From<TaskFailed> for HttpError {
    fn from(e: TaskFailed) -> HttpError {
        HttpError::internal(e.to_string())
    }
}

impl From<RenderError> for HttpError {
    fn from(e: RenderError) -> HttpError {
        match e {
            RenderError::Cpu(e) => e.into(),
            RenderError::Origin(e) => e.into(),
            RenderError::Pipeline(e) => e.into(),
            RenderError::Store(e) => StoreError::Shared(e).into(),
            RenderError::Task(e) => e.into(),
        }
    }
}

impl From<CpuError> for HttpError {
    fn from(e: CpuError) -> HttpError {
        match e {
            CpuError::Overloaded { retry_after } => HttpError {
                retry_after: Some(retry_after),
                ..HttpError::new(ErrorCode::Overloaded, "overloaded")
            },
            CpuError::Timeout => HttpError::new(ErrorCode::TransformTimeout, "timeout"),
            CpuError::Panicked(m) => HttpError::internal(format!("render panicked: {m}")),
            CpuError::ShutDown => HttpError::internal("cpu pool shut down"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_detail() {
        let e = HttpError::internal("/var/lib/imgnode/secret/path.db: disk I/O error");
        let body = e.body("/i/demo/a.jpg");
        assert!(!body.contains("secret"), "{body}");
        assert!(body.contains("INTERNAL_ERROR"));
        assert!(body.contains("\"status\":500"));
    }

    #[test]
    fn client_errors_keep_their_message() {
        let e = HttpError::validation("w must be an integer from 1 to 10000");
        let v: serde_json::Value = serde_json::from_str(&e.body("/i/x")).unwrap();
        assert_eq!(v["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(v["error"]["status"], 400);
        assert_eq!(v["error"]["path"], "/i/x");
        assert_eq!(
            v["error"]["message"],
            "w must be an integer from 1 to 10000"
        );
    }

    #[test]
    fn pipeline_errors_map_to_the_spec_codes() {
        let cases = [
            (PipelineError::UnsupportedFormat, 415, "UNSUPPORTED_FORMAT"),
            (
                PipelineError::SourceTooLarge("x".into()),
                422,
                "IMAGE_TOO_LARGE",
            ),
            (PipelineError::Corrupt("x".into()), 422, "CORRUPT_IMAGE"),
            (
                PipelineError::OutputTooLarge("x".into()),
                400,
                "VALIDATION_ERROR",
            ),
            (PipelineError::Internal("x".into()), 500, "INTERNAL_ERROR"),
        ];
        for (err, status, code) in cases {
            let e = HttpError::from(err);
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.code.as_str(), code);
        }
    }
}
