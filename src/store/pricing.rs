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
        "SELECT id, metric_type, unit, unit_price_usd, unit_cost_usd FROM price_in_force($1, $2, $3)",
    )
    .bind(agent_id)
    .bind(metric_type)
    .bind(day)
    .fetch_optional(conn)
    .await
}

/// The default (every agent's) unit price of `metric_type` in force on `day`.
pub async fn default_price_on(
    conn: &mut PgConnection,
    metric_type: &str,
    day: chrono::NaiveDate,
) -> Result<Option<Decimal>, sqlx::Error> {
    sqlx::query_scalar("SELECT unit_price_usd FROM price_in_force(NULL, $1, $2)")
        .bind(metric_type)
        .bind(day)
        .fetch_optional(conn)
        .await
}

/// How many agents pay their own price for `metric_type` on `day` (an override in force).
pub async fn overrides_on(
    conn: &mut PgConnection,
    metric_type: &str,
    day: chrono::NaiveDate,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM agents a
           JOIN LATERAL price_in_force(a.id, $1, $2) p ON p.agent_id IS NOT NULL",
    )
    .bind(metric_type)
    .bind(day)
    .fetch_one(conn)
    .await
}

/// A price row as listed.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct PriceRow {
    pub id: i64,
    pub metric_type: String,
    pub unit: String,
    pub unit_price_usd: Decimal,
    pub unit_cost_usd: Option<Decimal>,
    pub effective_from: chrono::NaiveDate,
    pub effective_to: Option<chrono::NaiveDate>,
    pub agent_email: Option<String>,
}

pub async fn list(conn: &mut PgConnection) -> Result<Vec<PriceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.metric_type, p.unit, p.unit_price_usd, p.unit_cost_usd, p.effective_from,
                p.effective_to, a.email AS agent_email
           FROM pricing_config p LEFT JOIN agents a ON a.id = p.agent_id
          ORDER BY a.email NULLS FIRST, p.metric_type, p.effective_from",
    )
    .fetch_all(conn)
    .await
}

/// Why a new price could not be set.
#[derive(Debug, thiserror::Error)]
pub enum SetPriceError {
    #[error("a {0} price already starts on or after {1}: change prices in date order")]
    LaterPriceExists(String, chrono::NaiveDate),
    #[error("no earlier {0} price to take the unit from: pass --unit")]
    NoUnit(String),
    #[error("the new range overlaps an existing {0} price")]
    Overlap(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Starts a new price on `from` and closes the range in force then (its `effective_to` = `from`),
/// in one transaction. The database's exclusion constraint rejects any overlap that slips by.
pub async fn set(
    conn: &mut PgConnection,
    agent_id: Option<Uuid>,
    metric_type: &str,
    unit_price: Decimal,
    unit_cost: Option<Decimal>,
    unit: Option<&str>,
    from: chrono::NaiveDate,
) -> Result<i64, SetPriceError> {
    let later: Option<chrono::NaiveDate> = sqlx::query_scalar(
        "SELECT max(effective_from) FROM pricing_config
          WHERE metric_type = $1 AND agent_id IS NOT DISTINCT FROM $2 AND effective_from >= $3",
    )
    .bind(metric_type)
    .bind(agent_id)
    .bind(from)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(day) = later {
        return Err(SetPriceError::LaterPriceExists(metric_type.into(), day));
    }
    let previous_unit: Option<String> = sqlx::query_scalar(
        "SELECT unit FROM pricing_config WHERE metric_type = $1
          ORDER BY agent_id IS NOT DISTINCT FROM $2 DESC, effective_from DESC LIMIT 1",
    )
    .bind(metric_type)
    .bind(agent_id)
    .fetch_optional(&mut *conn)
    .await?;
    let unit = unit
        .map(str::to_string)
        .or(previous_unit)
        .ok_or_else(|| SetPriceError::NoUnit(metric_type.into()))?;
    sqlx::query(
        "UPDATE pricing_config SET effective_to = $3
          WHERE metric_type = $1 AND agent_id IS NOT DISTINCT FROM $2
            AND effective_from < $3 AND (effective_to IS NULL OR effective_to > $3)",
    )
    .bind(metric_type)
    .bind(agent_id)
    .bind(from)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "INSERT INTO pricing_config (metric_type, unit, unit_price_usd, unit_cost_usd, effective_from, agent_id)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(metric_type)
    .bind(unit)
    .bind(unit_price)
    .bind(unit_cost)
    .bind(from)
    .bind(agent_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23P01") => {
            SetPriceError::Overlap(metric_type.into())
        }
        _ => SetPriceError::Db(e),
    })
}

/// SQL for the live ledger rows a new price of metric `$1` from `$3` (the day's first instant
/// `$4`) would re-price, for agent `$2` (NULL: every agent whose own price does not cover the
/// day), days read in zone `$5`: rows metered since then that are neither a reversal nor
/// reversed, and whose price differs from the one now in force for their day.
const REPRICED: &str = "SELECT u.* FROM agent_usage_metrics u
     JOIN LATERAL price_in_force(u.agent_id, u.metric_type,
                                 (u.occurred_at AT TIME ZONE $5)::date) p ON true
    WHERE u.metric_type = $1 AND ($2::uuid IS NULL OR u.agent_id = $2)
      AND u.occurred_at >= $4
      AND NOT (u.metadata ? 'reverses')
      AND NOT EXISTS (SELECT 1 FROM agent_usage_metrics r
                       WHERE r.agent_id = u.agent_id AND r.metric_type = u.metric_type
                         AND r.metadata ->> 'reverses' = u.idempotency_key)
      AND p.unit_price_usd <> u.unit_price_usd";

/// What re-pricing the ledger after a new price would touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repricing {
    /// Live rows whose price changes.
    pub rows: i64,
    /// Months (YYYY-MM) of finalized invoices that hold some of them (then nothing may change).
    pub finalized: Vec<String>,
}

/// What a price from `from` (just set, on `conn`'s transaction) would re-price.
pub async fn repricing(
    conn: &mut PgConnection,
    agent_id: Option<Uuid>,
    metric_type: &str,
    from: chrono::NaiveDate,
    tz: Tz,
) -> Result<Repricing, sqlx::Error> {
    let (rows, finalized): (i64, Vec<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH r AS ({REPRICED})
         SELECT (SELECT count(*) FROM r),
                COALESCE((SELECT array_agg(DISTINCT to_char(i.period_start, 'YYYY-MM'))
                            FROM r JOIN invoices i ON i.agent_id = r.agent_id
                           WHERE i.status = 'finalized'
                             AND invoice_holds(i, r::agent_usage_metrics)), '{{}}')"
    )))
    .bind(metric_type)
    .bind(agent_id)
    .bind(from)
    .bind(crate::money::calendar::day_start(from, tz))
    .bind(tz.name())
    .fetch_one(conn)
    .await?;
    Ok(Repricing { rows, finalized })
}

/// Re-prices the rows [`repricing`] counts by reversal and re-entry, on the caller's transaction
/// (after the new price `price_id` was set on it): each live row gets a reversal (its own time,
/// price, quantity, cost and provider cost negated, key `{key}:rev-p{price_id}`) and a re-entry
/// at the price now in force for its day (key `{key}:p{price_id}`, the provider cost carried
/// once), both naming the row they correct, so the month, the provenance and the count of
/// provider cost are kept. Returns how many rows were re-priced.
pub async fn reprice(
    conn: &mut PgConnection,
    agent_id: Option<Uuid>,
    metric_type: &str,
    from: chrono::NaiveDate,
    tz: Tz,
    price_id: i64,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH r AS ({REPRICED}),
         reversals AS (
             INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd,
                                              cost_usd, provider_cost_usd, occurred_at,
                                              idempotency_key, metadata, corrects)
             SELECT agent_id, metric_type, -quantity, unit_price_usd, -cost_usd, -provider_cost_usd,
                    occurred_at, idempotency_key || ':rev-p' || $6, m, m ->> 'corrects'
               FROM r CROSS JOIN LATERAL (SELECT jsonb_build_object(
                        'corrects', COALESCE(r.corrects, r.idempotency_key),
                        'reverses', r.idempotency_key, 'reason', 're-priced',
                        'price_id', $6) AS m) meta
             RETURNING 1)
         INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          provider_cost_usd, occurred_at, idempotency_key,
                                          metadata, corrects)
         SELECT r.agent_id, r.metric_type, r.quantity, p.unit_price_usd, r.quantity * p.unit_price_usd,
                r.provider_cost_usd, r.occurred_at, r.idempotency_key || ':p' || $6, m, m ->> 'corrects'
           FROM r
           JOIN LATERAL price_in_force(r.agent_id, r.metric_type,
                                       (r.occurred_at AT TIME ZONE $5)::date) p ON true
          CROSS JOIN LATERAL (SELECT r.metadata - 'reverses' || jsonb_build_object(
                        'corrects', COALESCE(r.corrects, r.idempotency_key),
                        'reprices', r.idempotency_key, 'price_id', $6) AS m) meta"
    )))
    .bind(metric_type)
    .bind(agent_id)
    .bind(from)
    .bind(crate::money::calendar::day_start(from, tz))
    .bind(tz.name())
    .bind(price_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(written)
}
