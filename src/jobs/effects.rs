//! What billable jobs share: a paid answer saved before any effect, the business key of a tool
//! call, the tool-result wake-up, and metering call minutes once (tool jobs meter through the
//! effects writer, `super::writer`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Deps, JobError};
use crate::store::{findings, pricing, usage};

/// The answer saved under `key` by an earlier run, or a new one from `ask` (the provider call),
/// committed on its own (`provider_answers`) before any effect is attempted. A saved answer is
/// never asked for again, so neither a crash nor an effect that keeps failing makes us pay twice.
pub async fn saved_or_ask<Fut>(
    deps: &Deps,
    agent_id: Uuid,
    kind: &str,
    key: &str,
    ask: impl FnOnce() -> Fut,
) -> Result<serde_json::Value, JobError>
where
    Fut: std::future::Future<Output = Result<serde_json::Value, JobError>>,
{
    let mut conn = deps.pool.acquire().await?;
    if let Some(answer) = findings::saved_answer(&mut conn, agent_id, kind, key).await? {
        return Ok(answer);
    }
    drop(conn);
    let answer = ask().await?;
    let mut conn = deps.pool.acquire().await?;
    // Two racing runs keep the first answer saved, and both go on with it.
    Ok(findings::save_answer(&mut conn, agent_id, kind, key, &answer).await?)
}

/// The LISTEN/NOTIFY channel on which finished tool calls are announced (payload: the id).
pub const TOOL_RESULTS_CHANNEL: &str = "agent_meter_tool_results";

/// The tool call to wake on commit, if a webhook request may still be waiting for it: a job
/// older than the wait (a retry, an ops re-run, a bulk enqueue) skips the NOTIFY, which would
/// otherwise serialize commits for nobody.
pub fn awaited<'a>(
    tool_call_id: &'a str,
    requested_at: Option<DateTime<Utc>>,
    deps: &Deps,
) -> Option<&'a str> {
    let wait = chrono::Duration::from_std(deps.config.tool_result_wait).unwrap_or_default();
    requested_at
        .filter(|at| Utc::now() - *at <= wait + chrono::Duration::seconds(1))
        .map(|_| tool_call_id)
}

/// The business key of everything a tool call causes (finding, usage row).
pub fn tool_call_key(tool_call_id: &str) -> String {
    format!("tool_call:{tool_call_id}")
}

pub struct Metered<'a> {
    pub agent_id: Uuid,
    pub metric: &'a str,
    pub key: &'a str,
    pub quantity: Decimal,
    pub occurred_at: DateTime<Utc>,
    pub provider_cost_usd: Option<Decimal>,
    pub metadata: serde_json::Value,
}

/// Writes the usage row at the price in force at `occurred_at` (once per key) on the caller's
/// transaction (call minutes; tool jobs meter through [`super::writer`]).
/// Returns whether this run wrote it; the caller logs and counts it once its transaction commits.
/// No price in force is permanent: ops fix prices, then re-run.
pub async fn meter(tx: &mut PgConnection, deps: &Deps, m: Metered<'_>) -> Result<bool, JobError> {
    let tz = deps.config.billing_timezone;
    let price = pricing::price_at(tx, m.agent_id, m.metric, m.occurred_at, tz)
        .await?
        .ok_or_else(|| {
            JobError::Permanent(format!(
                "no {} price in force on {} ({tz})",
                m.metric,
                m.occurred_at.with_timezone(&tz).date_naive()
            ))
        })?;
    let mut metadata = m.metadata;
    if let Some(obj) = metadata.as_object_mut() {
        obj.insert("pricing_config_id".into(), price.id.into());
    }
    let written = usage::insert_once(
        tx,
        &usage::NewUsage {
            agent_id: m.agent_id,
            metric_type: m.metric,
            quantity: m.quantity,
            unit_price_usd: price.unit_price_usd,
            provider_cost_usd: m.provider_cost_usd,
            occurred_at: m.occurred_at,
            idempotency_key: m.key,
            metadata,
        },
    )
    .await?;
    if written {
        // A capped agency hears when this crosses 50, 80 or 100% of its cap.
        super::caps::notice(tx, tz, &[m.agent_id], Utc::now()).await?;
    }
    Ok(written)
}
