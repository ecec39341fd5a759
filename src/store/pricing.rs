//! Effective-dated prices: the price in force for an agent and metric at a moment.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Price {
    pub id: i64,
    pub metric_type: String,
    pub unit: String,
    pub unit_price_usd: Decimal,
    pub unit_cost_usd: Option<Decimal>,
}

/// The price in force at `at`, read as a date in the billing time zone. An agent's own price
/// beats the default; among equals the latest `effective_from` wins.
pub async fn price_at(
    conn: &mut PgConnection,
    agent_id: Uuid,
    metric_type: &str,
    at: DateTime<Utc>,
    tz: Tz,
) -> Result<Option<Price>, sqlx::Error> {
    let day = at.with_timezone(&tz).date_naive();
    sqlx::query_as(
        "SELECT id, metric_type, unit, unit_price_usd, unit_cost_usd
           FROM pricing_config
          WHERE metric_type = $2
            AND (agent_id = $1 OR agent_id IS NULL)
            AND effective_from <= $3
            AND (effective_to IS NULL OR effective_to > $3)
          ORDER BY agent_id NULLS LAST, effective_from DESC
          LIMIT 1",
    )
    .bind(agent_id)
    .bind(metric_type)
    .bind(day)
    .fetch_optional(conn)
    .await
}
