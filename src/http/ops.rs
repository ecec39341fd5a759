//! The ops API (`/ops`, `Authorization: Bearer <an ops token>`, or the ops page's session): see,
//! re-run and cancel jobs, and watch queue depth. Who may call it: the operators of `OPS_TOKENS`
//! and `OPS_TOKEN`; disabled (404) when neither is set. Every action is audited with the operator.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, request::Parts},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{AppState, error::ApiError};
use crate::store::queue::{self, JobFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops/jobs", get(list))
        .route("/ops/jobs/retry", post(retry_matching))
        .route("/ops/jobs/{id}", get(show))
        .route("/ops/jobs/{id}/retry", one(Act::Retry))
        .route("/ops/jobs/{id}/cancel", one(Act::Cancel))
        .route("/ops/queues", get(queues))
}

/// The ops page's session cookie (a random id; the session lives in `ops_sessions`).
pub const SESSION_COOKIE: &str = "ops_session";

/// An authenticated ops caller; `actor` names them in the audit trail: `api:<operator>` for a
/// bearer token (`OPS_TOKENS` names each token's owner), `ui:<operator>` for a page session.
/// Never a header the client chooses.
pub struct Operator {
    pub actor: String,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if app.config.ops_tokens.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the ops API is disabled (OPS_TOKEN and OPS_TOKENS unset)",
            ));
        }
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong ops token",
            )
        };
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| super::auth::strip_bearer(v.as_bytes()));
        if let Some(given) = bearer {
            let name = app.config.operator(given).ok_or_else(unauthorized)?;
            return Ok(Operator {
                actor: format!("api:{name}"),
            });
        }
        let Some(session) = super::cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(unauthorized());
        };
        let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
        let (name, mac) = crate::store::sessions::OPS
            .bound_owner(&mut conn, session)
            .await?
            .ok_or_else(unauthorized)?;
        // The session lives only as long as its operator, with the same token, is configured:
        // dropping someone from OPS_TOKENS (or rotating their token) ends their sessions at once.
        let still_configured = app.config.ops_tokens.iter().any(|t| {
            t.name == name && mac.as_deref().is_some_and(|m| t.opened_session(session, m))
        });
        if !still_configured {
            tracing::info!(operator = %name, "ops session refused: operator or token no longer configured");
            return Err(unauthorized());
        }
        // A browser sends the cookie with any request to us, including one a foreign page makes:
        // a state-changing request on a session must show it comes from our own pages.
        if !parts.method.is_safe() && !same_origin(&parts.headers, app) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site",
                "cross-site request refused",
            ));
        }
        Ok(Operator {
            actor: format!("ui:{name}"),
        })
    }
}

/// A sign-in form posted from another origin (a browser says where a post comes from; a script
/// without `Origin` or `Sec-Fetch-Site` is not a browser another site can steer).
pub fn foreign_post(headers: &axum::http::HeaderMap, app: &AppState) -> bool {
    let from_browser = headers.contains_key("origin") || headers.contains_key("sec-fetch-site");
    from_browser && !same_origin(headers, app)
}

/// The `Set-Cookie` value of a session cookie: `HttpOnly`, scoped to `path`, `Secure` when we
/// are served over https (`PUBLIC_BASE_URL`). `session`: its id and lifetime; `None` clears it.
pub fn session_cookie(
    app: &AppState,
    name: &str,
    path: &str,
    same_site: &str,
    session: Option<(&str, std::time::Duration)>,
) -> String {
    let https = app
        .config
        .public_base_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let secure = if https { "; Secure" } else { "" };
    let (value, max_age) = session.map_or(("", 0), |(id, ttl)| (id, ttl.as_secs()));
    format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    )
}

/// Whether a request comes from our own origin: `Sec-Fetch-Site: same-origin`, else an `Origin`
/// equal to ours (`PUBLIC_BASE_URL`'s, or the request's own host). No evidence is a refusal:
/// browsers send one or the other on every POST, and scripts use bearer tokens.
pub fn same_origin(headers: &axum::http::HeaderMap, app: &AppState) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site.eq_ignore_ascii_case("same-origin");
    }
    let Some(origin) = header("origin") else {
        return false;
    };
    let Ok(origin) = reqwest::Url::parse(origin) else {
        return false;
    };
    match app.config.public_base_url.as_deref() {
        Some(base) => reqwest::Url::parse(base).is_ok_and(|b| b.origin() == origin.origin()),
        None => header("host").is_some_and(|host| {
            origin.host_str().is_some_and(|h| {
                let with_port = match origin.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                };
                host.eq_ignore_ascii_case(&with_port)
            })
        }),
    }
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

/// What a job's button (or its API route) does.
#[derive(Clone, Copy)]
pub enum Act {
    Retry,
    Cancel,
}

/// Retries or cancels one job and audits it, in one transaction; the ids it acted on (none when
/// the job is in no state for it).
pub async fn act_on_one(
    app: &AppState,
    op: &Operator,
    id: String,
    act: Act,
) -> Result<Vec<String>, ApiError> {
    let ids = std::slice::from_ref(&id);
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let (action, done) = match act {
        Act::Retry => ("retry", queue::retry(&mut tx, ids).await?),
        Act::Cancel => ("cancel", queue::cancel(&mut tx, ids, &op.actor).await?),
    };
    queue::audit(&mut tx, &op.actor, action, &done, None).await?;
    tx.commit().await?;
    Ok(done)
}

/// `POST /ops/jobs/{id}/retry` and `/cancel`: `act` on the job; 409 when it is in no state
/// for it.
fn one(act: Act) -> axum::routing::MethodRouter<AppState> {
    post(
        move |State(app): State<AppState>, op: Operator, Path(id): Path<String>| async move {
            let done = act_on_one(&app, &op, id, act).await?;
            let (key, code, why) = match act {
                Act::Retry => (
                    "retried",
                    "not_retryable",
                    "only failed or cancelled jobs can be re-run",
                ),
                Act::Cancel => (
                    "cancelled",
                    "not_cancellable",
                    "only pending jobs can be cancelled",
                ),
            };
            if done.is_empty() {
                return Err(ApiError::new(StatusCode::CONFLICT, code, why));
            }
            Ok(Json(json!({ key: done })))
        },
    )
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

async fn queues(
    State(app): State<AppState>,
    _op: Operator,
) -> Result<Json<Vec<queue::QueueRow>>, ApiError> {
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    Ok(Json(queue::queues(&mut conn).await?))
}
