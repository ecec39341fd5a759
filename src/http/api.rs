//! The agent API (`/v1`): an agent reads its own data with `Authorization: Bearer <token>`.
//!
//! Every request runs in a transaction as `agent_meter_tenant` with the token's agent set
//! (`db::tenant_tx`), so Row Level Security, not these handlers, decides what is visible: another
//! tenant's id is simply not found (404). The OpenAPI document is generated from this file.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, request::Parts},
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use uuid::Uuid;

use super::{AppState, error::ApiError};
use crate::{
    billing::Month,
    money,
    store::{agents, db, reports},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/me", get(me))
        .route("/v1/leads", get(leads))
        .route("/v1/leads/{id}", get(lead))
        .route("/v1/usage", get(usage))
        .route("/v1/invoices", get(invoices))
        .route("/v1/invoices/{period}", get(invoice))
}

/// The authenticated agent of a request.
pub struct Tenant(pub Uuid);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(unauthorized)?;
        // A Supabase access token (the agency's own Supabase session), or one of our API tokens.
        if let Some(supabase) = &app.supabase
            && super::supabase::looks_like_jwt(token)
        {
            let user = supabase.user_of(token).await.ok_or_else(unauthorized)?;
            let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
            let agent =
                agents::agent_for_user(&mut conn, user, app.config.billing_timezone).await?;
            return agent.map(Tenant).ok_or_else(unauthorized);
        }
        let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
        let agent = agents::agent_for_token(&mut conn, token, app.config.billing_timezone).await?;
        agent.map(Tenant).ok_or_else(unauthorized)
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing, unknown or revoked API token",
    )
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such {what}"),
    )
}

/// Runs `f` in the agent's tenant-scoped transaction (read-only work; rolled back at the end).
pub(super) async fn as_tenant<T, F>(app: &AppState, agent: Uuid, f: F) -> Result<T, ApiError>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> futures::future::BoxFuture<'c, Result<T, ApiError>>,
{
    let mut tx = db::tenant_tx(&app.pool, agent)
        .await
        .map_err(ApiError::unavailable)?;
    let out = f(&mut tx).await?;
    tx.rollback().await?;
    Ok(out)
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MeOut {
    pub id: Uuid,
    pub agency_name: String,
    pub email: String,
    pub phone_number: Option<String>,
    pub status: String,
}

#[utoipa::path(get, path = "/v1/me", security(("bearer" = [])),
    responses((status = 200, body = MeOut), (status = 401, description = "bad token")))]
async fn me(State(app): State<AppState>, Tenant(agent): Tenant) -> Result<Json<MeOut>, ApiError> {
    let me = as_tenant(&app, agent, |c| {
        Box::pin(async move {
            sqlx::query_as("SELECT id, agency_name, email, phone_number, status FROM agents")
                .fetch_optional(c)
                .await?
                .ok_or_else(|| not_found("agent"))
        })
    })
    .await?;
    Ok(Json(me))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct LeadOut {
    pub id: Uuid,
    pub phone: String,
    pub name: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeadPage {
    pub data: Vec<LeadOut>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The page size asked for, 1 to 200.
    fn limit(&self, default: i64) -> Result<i64, ApiError> {
        let limit = self.limit.unwrap_or(default);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                "limit must be 1 to 200",
            ));
        }
        Ok(limit)
    }
}

/// Pages fetch `limit + 1` rows to learn whether more follow: drop the extra one and return the
/// cursor of the last row kept, if there is a next page.
fn last_page_cut<T>(
    rows: &mut Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    more.then(|| rows.last().map(cursor)).flatten()
}

#[utoipa::path(get, path = "/v1/leads", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = LeadPage), (status = 400), (status = 401)))]
async fn leads(
    State(app): State<AppState>,
    Tenant(agent): Tenant,
    Query(q): Query<PageQuery>,
) -> Result<Json<LeadPage>, ApiError> {
    let limit = q.limit(50)?;
    // The cursor is the last row's (created_at, id): stable under inserts, no offsets.
    let after: Option<(DateTime<Utc>, Uuid)> = q
        .cursor
        .as_deref()
        .map(|c| {
            let (at, id) = c.split_once('_')?;
            Some((
                DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
                id.parse().ok()?,
            ))
        })
        .map(|p| {
            p.ok_or_else(|| ApiError::bad_request("invalid_cursor", "cursor is not one we issued"))
        })
        .transpose()?;
    let mut rows: Vec<LeadOut> = as_tenant(&app, agent, |c| {
        Box::pin(async move {
            Ok(sqlx::query_as(
                "SELECT id, phone, name, status, created_at FROM leads
                  WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))
                  ORDER BY created_at, id LIMIT $3",
            )
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1))
            .bind(limit + 1)
            .fetch_all(c)
            .await?)
        })
    })
    .await?;
    let next_cursor = last_page_cut(&mut rows, limit, |l| {
        format!("{}_{}", l.created_at.to_rfc3339(), l.id)
    });
    Ok(Json(LeadPage {
        data: rows,
        next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LeadDetail {
    #[serde(flatten)]
    pub lead: LeadOut,
    #[schema(value_type = Vec<Object>)]
    pub properties: Vec<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub risk_assessments: Vec<serde_json::Value>,
    pub tags: Vec<String>,
    /// Its calls, oldest first, with what each said and the transfers its assistant asked for.
    #[schema(value_type = Vec<LeadCall>)]
    pub calls: Vec<serde_json::Value>,
}

/// A call of a lead (`/v1/leads/{id}`), as the lead detail's `calls` carry it. The values come
/// from one SQL `jsonb_build_object` (exact numbers as stored); this type documents them.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct LeadCall {
    pub vapi_call_id: String,
    pub status: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds, to the millisecond.
    pub duration_seconds: Option<f64>,
    pub ended_reason: Option<String>,
    /// Vapi's call type: `inboundPhoneCall`, `outboundPhoneCall`, `webCall`, ...
    #[serde(rename = "type")]
    pub call_type: Option<String>,
    /// Vapi's summary of the call.
    pub summary: Option<String>,
    /// Vapi's success evaluation, as text (`"true"`, `"8"`, `"Pass"`, per the assistant's rubric).
    pub success_evaluation: Option<String>,
    /// What the call's analysis extracted (`analysis.structuredData` and our `caller_details`
    /// output: `caller_name`, `property_address`, `email`, `coverage_interest`,
    /// `best_callback_time`).
    #[schema(value_type = Option<Object>)]
    pub structured_data: Option<serde_json::Value>,
    /// The recording as Vapi stores it (any scheme: check before linking).
    pub recording_url: Option<String>,
    /// `[{requested_at, number, in_hours, hours}]`: the transfers its assistant asked for (out
    /// of hours it took a message instead).
    #[schema(value_type = Vec<Object>)]
    pub transfers: Vec<serde_json::Value>,
}

#[utoipa::path(get, path = "/v1/leads/{id}", params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = LeadDetail), (status = 401), (status = 404)))]
async fn lead(
    State(app): State<AppState>,
    Tenant(agent): Tenant,
    Path(id): Path<String>,
) -> Result<Json<LeadDetail>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| not_found("lead"))?;
    let detail = as_tenant(&app, agent, |c| {
        Box::pin(async move {
            let lead: LeadOut = sqlx::query_as("SELECT id, phone, name, status, created_at FROM leads WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *c)
                .await?
                .ok_or_else(|| not_found("lead"))?;
            let json_rows = |sql: &'static str| sqlx::query_scalar::<_, serde_json::Value>(sql).bind(id);
            let properties = json_rows(
                "SELECT jsonb_build_object('id', id, 'address', address, 'has_solar', has_solar,
                        'water_source', water_source) FROM properties WHERE lead_id = $1 ORDER BY created_at",
            )
            .fetch_all(&mut *c)
            .await?;
            let risk_assessments = json_rows(
                "SELECT jsonb_build_object('id', id, 'kind', kind, 'property_id', property_id,
                        'vapi_call_id', vapi_call_id, 'result', result, 'created_at', created_at)
                   FROM risk_assessments WHERE lead_id = $1 ORDER BY created_at",
            )
            .fetch_all(&mut *c)
            .await?;
            // Each call with the transfers its assistant asked for (call_transfers, keyed by
            // Vapi's call id: recorded during the call, before this row existed).
            let calls = json_rows(
                "SELECT jsonb_build_object('vapi_call_id', c.vapi_call_id, 'status', c.status,
                        'started_at', c.started_at, 'ended_at', c.ended_at, 'duration_seconds', c.duration_seconds,
                        'ended_reason', c.ended_reason,
                        'type', cc.call_type, 'summary', cc.summary,
                        'success_evaluation', cc.success_evaluation,
                        'structured_data', cc.structured_data, 'recording_url', cc.recording_url,
                        'transfers', COALESCE((SELECT jsonb_agg(jsonb_build_object(
                                          'requested_at', t.requested_at, 'number', t.number,
                                          'in_hours', t.in_hours, 'hours', t.hours)
                                          ORDER BY t.requested_at, t.id)
                                     FROM call_transfers t
                                    WHERE t.agent_id = c.agent_id AND t.vapi_call_id = c.vapi_call_id),
                                  '[]'::jsonb))
                   FROM calls c LEFT JOIN call_content cc ON cc.call_id = c.id
                  WHERE c.lead_id = $1 ORDER BY c.created_at, c.id",
            )
            .fetch_all(&mut *c)
            .await?;
            let tags = sqlx::query_scalar("SELECT tag FROM tags WHERE lead_id = $1 ORDER BY tag")
                .bind(id)
                .fetch_all(&mut *c)
                .await?;
            Ok(LeadDetail { lead, properties, risk_assessments, tags, calls })
        })
    })
    .await?;
    Ok(Json(detail))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct MonthQuery {
    /// `YYYY-MM`, a calendar month in the billing time zone.
    pub month: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageOut {
    pub metric_type: String,
    pub count: i64,
    /// Exact quantity, as a decimal string.
    pub quantity: String,
    /// Billed amount (each price's line rounded once), two decimals.
    pub amount: String,
}

#[utoipa::path(get, path = "/v1/usage", params(MonthQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<UsageOut>), (status = 400), (status = 401)))]
async fn usage(
    State(app): State<AppState>,
    Tenant(agent): Tenant,
    Query(q): Query<MonthQuery>,
) -> Result<Json<Vec<UsageOut>>, ApiError> {
    let month = Month::parse(&q.month).map_err(|m| ApiError::bad_request("invalid_month", m))?;
    let tz = app.config.billing_timezone;
    let rows = as_tenant(&app, agent, |c| {
        Box::pin(async move { Ok(reports::usage(c, month, tz, None).await?) })
    })
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| UsageOut {
                metric_type: r.metric_type,
                count: r.events,
                quantity: r.quantity.normalize().to_string(),
                amount: reports::cents(money::round_line(r.billed_usd)),
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceSummary {
    pub period: String,
    pub status: String,
    pub total: String,
    /// At Stripe: open, paid, past_due, void or uncollectible; absent when not billed there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<String>,
    /// Stripe's page where the invoice is paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_invoice_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePage {
    pub data: Vec<InvoiceSummary>,
    /// Pass as `cursor` for older invoices; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/invoices", params(PageQuery), security(("bearer" = [])),
    responses((status = 200, body = InvoicePage), (status = 400), (status = 401)))]
async fn invoices(
    State(app): State<AppState>,
    Tenant(agent): Tenant,
    Query(q): Query<PageQuery>,
) -> Result<Json<InvoicePage>, ApiError> {
    let limit = q.limit(24)?;
    // Newest first; the cursor is the last period shown.
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            Month::parse(c)
                .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor is not one we issued"))
        })
        .transpose()?;
    type Row = (
        chrono::NaiveDate,
        String,
        rust_decimal::Decimal,
        Option<String>,
        Option<String>,
    );
    let mut rows: Vec<Row> = as_tenant(&app, agent, |c| {
        Box::pin(async move {
            Ok(sqlx::query_as(
                "SELECT period_start, status, total_usd, payment_status, hosted_invoice_url FROM invoices
                  WHERE ($1::date IS NULL OR period_start < $1) ORDER BY period_start DESC LIMIT $2",
            )
            .bind(before.map(|m| m.first_day))
            .bind(limit + 1)
            .fetch_all(c)
            .await?)
        })
    })
    .await?;
    let next_cursor = last_page_cut(&mut rows, limit, |r| r.0.format("%Y-%m").to_string());
    let data: Vec<InvoiceSummary> = rows
        .into_iter()
        .map(
            |(p, status, total, payment_status, hosted_invoice_url)| InvoiceSummary {
                period: p.format("%Y-%m").to_string(),
                status,
                total: reports::cents(total),
                payment_status,
                hosted_invoice_url,
            },
        )
        .collect();
    Ok(Json(InvoicePage { data, next_cursor }))
}

#[utoipa::path(get, path = "/v1/invoices/{period}", params(("period" = String, Path, description = "YYYY-MM")),
    security(("bearer" = [])), responses((status = 200, body = Object), (status = 401), (status = 404)))]
async fn invoice(
    State(app): State<AppState>,
    Tenant(agent): Tenant,
    Path(period): Path<String>,
) -> Result<Json<reports::InvoiceOut>, ApiError> {
    let month = Month::parse(&period).map_err(|_| not_found("invoice"))?;
    let found = as_tenant(&app, agent, |c| {
        Box::pin(async move { Ok(reports::invoices(c, month.first_day, None).await?) })
    })
    .await?;
    found
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| not_found("invoice"))
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "agent-meter agent API", description = "An agency's own leads, usage and invoices."),
    paths(me, leads, lead, usage, invoices, invoice),
    components(schemas(LeadCall)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
