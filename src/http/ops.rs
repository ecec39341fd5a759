//! The ops API (`/ops`, `Authorization: Bearer $OPS_TOKEN`): see, re-run and cancel jobs, and
//! watch queue depth. Disabled (404) when `OPS_TOKEN` is unset. Every action is audited.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, request::Parts},
    routing::{get, post},
};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{AppState, error::ApiError};
use crate::store::queue::{self, JobFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops/jobs", get(list))
        .route("/ops/jobs/retry", post(retry_matching))
        .route("/ops/jobs/{id}", get(show))
        .route("/ops/jobs/{id}/retry", post(retry_one))
        .route("/ops/jobs/{id}/cancel", post(cancel_one))
        .route("/ops/queues", get(queues))
}

/// An authenticated ops caller; `actor` names them in the audit trail.
pub struct Operator {
    pub actor: String,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &app.config.ops_token else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the ops API is disabled (OPS_TOKEN unset)",
            ));
        };
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .or_else(|| cookie(parts, "ops_token"))
            .unwrap_or_default();
        let ok: bool = digest(given.as_bytes())
            .ct_eq(&digest(expected.expose().as_bytes()))
            .into();
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong ops token",
            ));
        }
        let who = parts
            .headers
            .get("x-ops-actor")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 100)
            .unwrap_or("ops");
        Ok(Operator {
            actor: format!("api:{who}"),
        })
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// A cookie's value (the ops page keeps the token in one).
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn checked(f: JobFilter) -> Result<JobFilter, ApiError> {
    f.validate()
        .map_err(|m| ApiError::bad_request("invalid_filter", m))?;
    Ok(f)
}

async fn list(
    State(app): State<AppState>,
    _op: Operator,
    Query(f): Query<JobFilter>,
) -> Result<Json<Vec<queue::JobRow>>, ApiError> {
    let f = checked(f)?;
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    Ok(Json(queue::list(&mut conn, &f).await?))
}

async fn show(
    State(app): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<Json<queue::JobDetail>, ApiError> {
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    queue::show(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such job"))
}

async fn retry_one(
    State(app): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let retried = queue::retry(&mut tx, std::slice::from_ref(&id)).await?;
    queue::audit(&mut tx, &op.actor, "retry", &retried, None).await?;
    tx.commit().await?;
    if retried.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            "only failed or cancelled jobs can be re-run",
        ));
    }
    Ok(Json(json!({"retried": retried})))
}

async fn retry_matching(
    State(app): State<AppState>,
    op: Operator,
    body: Result<Json<JobFilter>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(mut f) = body.map_err(|e| ApiError::bad_request("invalid_filter", e.body_text()))?;
    f.status = Some("failed".into());
    f.limit = Some(f.limit.unwrap_or(10_000));
    let f = checked(f)?;
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let ids: Vec<String> = queue::list(&mut tx, &f)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let retried = queue::retry(&mut tx, &ids).await?;
    queue::audit(&mut tx, &op.actor, "retry", &retried, Some(&f)).await?;
    tx.commit().await?;
    Ok(Json(json!({"retried": retried})))
}

async fn cancel_one(
    State(app): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let cancelled = queue::cancel(&mut tx, std::slice::from_ref(&id), &op.actor).await?;
    queue::audit(&mut tx, &op.actor, "cancel", &cancelled, None).await?;
    tx.commit().await?;
    if cancelled.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            "only pending jobs can be cancelled",
        ));
    }
    Ok(Json(json!({"cancelled": cancelled})))
}

async fn queues(
    State(app): State<AppState>,
    _op: Operator,
) -> Result<Json<Vec<queue::QueueRow>>, ApiError> {
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    Ok(Json(queue::queues(&mut conn).await?))
}
