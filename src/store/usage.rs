//! The usage ledger (`agent_usage_metrics`): one row per billable effect, exactly once.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::money;

/// Metric names, as stored in `metric_type` and `pricing_config` (a tool's metric is its own:
/// `crate::tools::Tool::METRIC`).
pub mod metric {
    pub const VAPI_CALL_MINUTES: &str = "vapi_call_minutes";
    pub const SUBSCRIPTION: &str = "subscription";
    pub const SETUP_FEE: &str = "setup_fee";
}

pub struct NewUsage<'a> {
    pub agent_id: Uuid,
    pub metric_type: &'a str,
    pub quantity: Decimal,
    pub unit_price_usd: Decimal,
    pub provider_cost_usd: Option<Decimal>,
    pub occurred_at: DateTime<Utc>,
    pub idempotency_key: &'a str,
    pub metadata: serde_json::Value,
}

/// Writes the usage row unless its idempotency key was already metered. Returns whether a row
/// was written; `false` means an earlier run (or the other path: webhook vs sync) billed it.
pub async fn insert_once(conn: &mut PgConnection, u: &NewUsage<'_>) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          provider_cost_usd, occurred_at, idempotency_key, metadata,
                                          corrects)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9 ->> 'corrects')
         ON CONFLICT (agent_id, metric_type, idempotency_key) DO NOTHING",
    )
    .bind(u.agent_id)
    .bind(u.metric_type)
    .bind(u.quantity)
    .bind(u.unit_price_usd)
    .bind(money::usage_cost(u.quantity, u.unit_price_usd))
    .bind(u.provider_cost_usd)
    .bind(u.occurred_at)
    .bind(u.idempotency_key)
    .bind(&u.metadata)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(written == 1)
}
