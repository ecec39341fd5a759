//! Steps the tests of the books share: usage rows, rolling up and finalizing a month in Phoenix,
//! a day's Vapi sync, the counts they check. Re-exported by `helpers`.

use agent_meter::{
    billing::{self, FinalizeError, Month, RollupOutcome},
    jobs::{Deps, sync_calls::SyncCalls},
};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::America::Phoenix;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// A decimal from its text.
pub fn d(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

/// A month from its label (`2026-11`).
pub fn month(s: &str) -> Month {
    Month::parse(s).expect("month")
}

/// An instant from its RFC 3339 text.
pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("time")
}

/// A day after the months the tests finalize have all ended.
pub fn later() -> DateTime<Utc> {
    at("2027-06-01T00:00:00Z")
}

/// (metric, quantity, unit price) of a usage row: one solar scan at the seeded price.
pub const SCAN: (&str, &str, &str) = ("solar_ocr_scan", "1", "0.075");

/// A usage row to write, as metering would: [`UsageRow::new`], what differs from its defaults,
/// then [`UsageRow::insert`].
pub struct UsageRow<'a> {
    agent: Uuid,
    metric: &'a str,
    quantity: &'a str,
    /// The unit price; the one in force for the agent on the row's day in Phoenix when `None`.
    price: Option<&'a str>,
    provider_cost: Option<&'a str>,
    at: &'a str,
    key: &'a str,
    /// When the row was written; the column's default (the clock at the insert) when `None`.
    created: Option<&'a str>,
}

impl<'a> UsageRow<'a> {
    /// `quantity` of `metric` at `price` each (cost their product), occurring `at`, metered under
    /// `key`, with no provider cost.
    pub fn new(
        agent: Uuid,
        (metric, quantity, price): (&'a str, &'a str, Option<&'a str>),
        at: &'a str,
        key: &'a str,
    ) -> Self {
        UsageRow {
            agent,
            metric,
            quantity,
            price,
            provider_cost: None,
            at,
            key,
            created: None,
        }
    }

    /// The provider's reported cost (none reported when `None`).
    pub fn provider_cost(self, cost: Option<&'a str>) -> Self {
        UsageRow {
            provider_cost: cost,
            ..self
        }
    }

    /// Written at `created` rather than now.
    pub fn created(self, created: &'a str) -> Self {
        UsageRow {
            created: Some(created),
            ..self
        }
    }

    pub async fn insert(self, pool: &PgPool) {
        sqlx::query(
            "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd,
                                              cost_usd, provider_cost_usd, occurred_at,
                                              idempotency_key, created_at)
             SELECT $1, $2, $3::numeric, p.price, $3::numeric * p.price, $5::numeric,
                    $6::timestamptz, $7, COALESCE($8::timestamptz, clock_timestamp())
               FROM (SELECT COALESCE($4::numeric, (
                        SELECT unit_price_usd
                          FROM price_in_force($1, $2,
                                              ($6::timestamptz AT TIME ZONE 'America/Phoenix')::date)
                     )) AS price) p",
        )
        .bind(self.agent)
        .bind(self.metric)
        .bind(self.quantity)
        .bind(self.price)
        .bind(self.provider_cost)
        .bind(self.at)
        .bind(self.key)
        .bind(self.created)
        .execute(pool)
        .await
        .expect("usage row");
    }
}

/// A usage row of `agent`: `quantity` of `metric` at `price` each (cost their product), occurring
/// `at`, metered under `key`.
pub async fn add_usage(
    pool: &PgPool,
    agent: Uuid,
    (metric, quantity, price): (&str, &str, &str),
    at: &str,
    key: &str,
) {
    UsageRow::new(agent, (metric, quantity, Some(price)), at, key)
        .insert(pool)
        .await;
}

/// (idempotency key, quantity, unit price) of the usage rows of `metric` (every metric when
/// `None`), by key.
pub async fn usage_rows(pool: &PgPool, metric: Option<&str>) -> Vec<(String, Decimal, Decimal)> {
    sqlx::query_as(
        "SELECT idempotency_key, quantity, unit_price_usd FROM agent_usage_metrics
          WHERE $1::text IS NULL OR metric_type = $1 ORDER BY idempotency_key",
    )
    .bind(metric)
    .fetch_all(pool)
    .await
    .expect("usage rows")
}

/// A call of `agent` that Vapi calls `vapi_call_id`, ended `ended_at` after `seconds`.
pub async fn add_ended_call(
    pool: &PgPool,
    agent: Uuid,
    vapi_call_id: &str,
    seconds: i32,
    ended_at: &str,
) {
    sqlx::query(
        "INSERT INTO calls (agent_id, vapi_call_id, status, duration_seconds, ended_at)
         VALUES ($1, $2, 'ended', $3, $4::timestamptz)",
    )
    .bind(agent)
    .bind(vapi_call_id)
    .bind(seconds)
    .bind(ended_at)
    .execute(pool)
    .await
    .expect("call");
}

/// Counts the usage rows that not exactly one invoice holds (none ever should).
pub const NOT_HELD_ONCE: &str = "SELECT count(*) FROM agent_usage_metrics u
                                  WHERE (SELECT count(*) FROM invoices i
                                          WHERE invoice_holds(i, u)) <> 1";

/// Rolls month `m` up in Phoenix for the agent with `email` (every agent when `None`).
pub async fn rollup(pool: &PgPool, m: &str, email: Option<&str>) -> Vec<RollupOutcome> {
    billing::rollup(pool, month(m), Phoenix, email)
        .await
        .unwrap_or_else(|e| panic!("rollup {m}: {e}"))
}

/// Finalizes month `m` in Phoenix for the agent with `email`, [`later`] than it.
pub async fn finalize(
    pool: &PgPool,
    m: &str,
    email: Option<&str>,
) -> Result<Vec<RollupOutcome>, FinalizeError> {
    billing::finalize(pool, month(m), Phoenix, email, later()).await
}

/// The daily Vapi sync of `date`, for every agency, unsliced.
pub fn day_sync(date: NaiveDate) -> SyncCalls {
    SyncCalls {
        date,
        agent_id: None,
        slice: None,
    }
}

/// Deps on `pool` with the test configuration and `extra`.
pub fn deps_with(pool: &PgPool, extra: &[(&str, &str)]) -> Deps {
    Deps::new(
        pool.clone(),
        std::sync::Arc::new(crate::helpers::test_config(extra)),
    )
}
