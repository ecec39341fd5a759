//! One error type for every HTTP answer: `{"error": {"code", "message"}}`, internals hidden.

use axum::{
    Json,
    extract::rejection::BytesRejection,
    http::StatusCode,
    response::{IntoResponse, Response},
};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid webhook credentials",
        )
    }

    pub fn bad_json(e: serde_json::Error) -> Self {
        Self::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    }

    /// The body could not be read: too large (413), or the client went away / was too slow.
    pub fn from_body_rejection(r: BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "body_too_large",
                "request body exceeds the size limit",
            )
        } else {
            Self::new(status, "unreadable_body", r.body_text())
        }
    }
}

impl ApiError {
    /// True for [`ApiError::unavailable`]: the database could not be reached.
    pub fn is_unavailable(&self) -> bool {
        self.code == "database_unavailable"
    }

    /// No connection could be had (or it died): 503, so the sender retries.
    pub fn unavailable(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; retry later",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // We could not persist: the caller must retry, so never answer 2xx here.
        let unavailable = matches!(
            e,
            sqlx::Error::PoolTimedOut
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        ) || matches!(&e, sqlx::Error::Database(d)
                if d.code().is_some_and(|c| ["08", "53", "57", "58"].iter().any(|class| c.starts_with(class))));
        if unavailable {
            Self::unavailable(e)
        } else {
            tracing::error!(error = %e, "database error");
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; retry later",
            )
        }
    }
}

impl From<apalis_postgres::Error> for ApiError {
    fn from(e: apalis_postgres::Error) -> Self {
        match e {
            apalis_postgres::Error::Database(e) => e.into(),
            other => {
                tracing::error!(error = %other, "enqueue failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; retry later",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
