//! The web role: the Vapi webhook and health probes. It verifies, persists, enqueues and
//! answers; it never calls an outside API inline.

pub mod api;
pub mod assistant;
pub mod auth;
pub mod error;
pub mod html;
pub mod message;
pub mod oauth;
pub mod ops;
pub mod ops_page;
pub mod portal;
pub mod routing;
pub mod stripe;
pub mod supabase;
pub mod throttle;
pub mod tool_calls;
pub mod transfer;
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
    pub tool_results: Arc<crate::jobs::tool_results::ToolResults>,
    /// The last queue gauges read for `/metrics` and when; scrapes within `METRICS_CACHE_SECS`
    /// reuse them, and concurrent scrapes wait for one read (the lock) instead of each reading.
    pub queue_gauges: Arc<tokio::sync::Mutex<Option<QueueGauges>>>,
    /// Supabase access tokens, when `SUPABASE_URL` or `SUPABASE_JWT_SECRET` is set.
    pub supabase: Option<Arc<supabase::SupabaseAuth>>,
    /// Failed sign-ins per client (ops login, portal sign-in): too many get 429.
    pub sign_ins: Arc<throttle::SignIns>,
}

/// A cookie's value.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Waiting jobs and oldest wait per kind, and when they were read.
pub type QueueGauges = (std::time::Instant, Vec<(String, i64, f64)>);

impl AppState {
    pub fn new(pool: PgPool, config: Arc<Config>) -> Self {
        let auth = Arc::new(auth::VapiAuth::from_config(&config));
        let supabase = supabase::SupabaseAuth::from_config(&config).map(Arc::new);
        Self {
            pool,
            config,
            auth,
            routing: Arc::default(),
            tool_results: Arc::default(),
            queue_gauges: Arc::default(),
            supabase,
            sign_ins: Arc::default(),
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
        // Stripe's events about our invoices (signed with STRIPE_WEBHOOK_SECRET).
        .route("/stripe/webhook", post(stripe::stripe_webhook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api::router())
        .merge(ops::router())
        .merge(ops_page::router())
        .merge(portal::router())
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
    if crate::store::db::is_ready(&app.pool).await? {
        Ok(Json(serde_json::json!({"status": "ready"})))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_migrated",
            "database reachable but not migrated: run `agent-meter migrate`",
        ))
    }
}

/// Prometheus text format. Who may call it: anyone when `METRICS_TOKEN` is unset, else a bearer of
/// that token. Queue gauges come from one cheap read (statuses and times, never job arguments)
/// reused for `METRICS_CACHE_SECS`, so a scrape costs at most one query whatever the backlog.
async fn metrics(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &app.config.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| auth::strip_bearer(v.as_bytes()));
        if !given.is_some_and(|g| token.matches(g)) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong metrics token",
            ));
        }
    }
    let Some(handle) = crate::telemetry::handle() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_metrics",
            "metrics recorder unavailable",
        ));
    };
    let waiting = {
        let mut cached = app.queue_gauges.lock().await;
        match &*cached {
            Some((at, gauges)) if at.elapsed() < app.config.metrics_cache => gauges.clone(),
            _ => {
                let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
                let gauges = crate::store::queue::waiting_by_kind(&mut conn).await?;
                *cached = Some((std::time::Instant::now(), gauges.clone()));
                gauges
            }
        }
    };
    // Every registered queue is reported, empty ones as 0.
    let mut by_kind: std::collections::BTreeMap<String, (i64, f64)> = crate::tools::queues()
        .iter()
        .map(|q| (q.to_string(), (0, 0.0)))
        .collect();
    for (kind, depth, age) in waiting {
        by_kind.insert(kind, (depth, age));
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
/// listener between them instead ([`serve_only`] and [`crate::jobs::listen`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let targets = crate::jobs::listen::Targets {
        tool_results: Some(state.tool_results.clone()),
        queues: None,
    };
    tokio::spawn(crate::jobs::listen::run(
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
    // The peer address is what the sign-in limiter counts failures by (`throttle::Client`).
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}
