//! The web role: the Vapi webhook and health probes. It verifies, persists, enqueues and
//! answers; it never calls an outside API inline.

pub mod api;
pub mod auth;
pub mod error;
pub mod oauth;
pub mod ops;
pub mod ops_page;
pub mod routing;
pub mod tool_calls;
pub mod tool_results;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::watch};
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};

use crate::config::Config;
pub use error::ApiError;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub auth: Arc<auth::VapiAuth>,
    pub routing: Arc<routing::RoutingCache>,
    pub tool_results: Arc<tool_results::ToolResults>,
}

impl AppState {
    pub fn new(pool: PgPool, config: Arc<Config>) -> Self {
        let auth = Arc::new(auth::VapiAuth::from_config(&config));
        Self {
            pool,
            config,
            auth,
            routing: Arc::default(),
            tool_results: Arc::default(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.webhook_max_body_bytes;
    Router::new()
        .route("/vapi/webhook", post(webhook::vapi_webhook))
        // The seed deployment's path, so an existing Vapi server URL keeps working.
        .route("/functions/v1/vapi-handler", post(webhook::vapi_webhook))
        // Vapi's OAuth2 credential asks here for tokens (anyone with a configured client).
        .route("/oauth/token", post(oauth::token))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::router())
        .merge(ops::router())
        .merge(ops_page::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        // Bounds slow clients (a body trickled in forever) as well as slow handlers.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(15),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if crate::db::is_ready(&app.pool).await? {
        Ok(Json(serde_json::json!({"status": "ready"})))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_migrated",
            "database reachable but not migrated: run `agent-meter migrate`",
        ))
    }
}

/// Prometheus text format; queue gauges are read from the database at scrape time.
async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let Some(handle) = crate::telemetry::handle() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_metrics",
            "metrics recorder unavailable",
        ));
    };
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    // Every registered queue is reported, empty ones as 0.
    let mut by_kind: std::collections::BTreeMap<String, (i64, f64)> = crate::worker::queues()
        .iter()
        .map(|q| (q.to_string(), (0, 0.0)))
        .collect();
    for q in crate::store::queue::queues(&mut conn).await? {
        let e = by_kind.entry(q.kind).or_default();
        e.0 += q.depth;
        e.1 = e.1.max(q.oldest_age_secs.unwrap_or(0.0));
    }
    for (kind, (depth, age)) in by_kind {
        crate::telemetry::queue(&kind, depth, age);
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    ))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Serves until `shutdown` turns true; requests in flight are answered before returning. Runs
/// its own notification listener for tool results; a process that runs more roles shares one
/// listener between them instead ([`serve_only`] and [`crate::listen`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let targets = crate::listen::Targets {
        tool_results: Some(state.tool_results.clone()),
        queues: None,
    };
    tokio::spawn(crate::listen::run(
        state.pool.clone(),
        targets,
        shutdown.clone(),
    ));
    serve_only(listener, state, shutdown).await
}

/// [`serve`] without a listener of its own: the caller feeds `state.tool_results`.
pub async fn serve_only(
    listener: TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "web listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
