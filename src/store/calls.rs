//! Calls as Vapi reports them, one row per (agent, Vapi call id).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::vapi::CallReport;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Call {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub vapi_call_id: String,
    pub customer_number: Option<String>,
    pub status: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<Decimal>,
    pub ended_reason: Option<String>,
    pub vapi_cost_usd: Option<Decimal>,
    pub updated_at: DateTime<Utc>,
}

/// Records an ended call; fields the report lacks keep what an earlier message said. A Vapi call
/// has one owner, the agency that first recorded it: `None` (nothing written) when it is
/// another's.
pub async fn upsert_report(
    conn: &mut PgConnection,
    agent_id: Uuid,
    report: &CallReport,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO calls (agent_id, vapi_call_id, customer_number, status, started_at, ended_at,
                            duration_seconds, ended_reason, vapi_cost_usd)
         VALUES ($1, $2, $3, 'ended', $4, $5, $6, $7, $8)
         ON CONFLICT (vapi_call_id) DO UPDATE SET
             customer_number  = COALESCE(EXCLUDED.customer_number, calls.customer_number),
             status           = 'ended',
             started_at       = COALESCE(EXCLUDED.started_at, calls.started_at),
             ended_at         = COALESCE(EXCLUDED.ended_at, calls.ended_at),
             duration_seconds = COALESCE(EXCLUDED.duration_seconds, calls.duration_seconds),
             ended_reason     = COALESCE(EXCLUDED.ended_reason, calls.ended_reason),
             vapi_cost_usd    = COALESCE(EXCLUDED.vapi_cost_usd, calls.vapi_cost_usd),
             updated_at       = now()
         WHERE calls.agent_id = EXCLUDED.agent_id
         RETURNING id",
    )
    .bind(agent_id)
    .bind(&report.vapi_call_id)
    .bind(&report.customer_number)
    .bind(report.started_at)
    .bind(report.ended_at)
    .bind(report.duration_seconds)
    .bind(&report.ended_reason)
    .bind(report.cost)
    .fetch_optional(conn)
    .await
}

/// A call's statuses in the order Vapi moves through them (`scheduled` first); a status we do
/// not know ranks before them all.
const STATUS_RANK: &str = "array_position(ARRAY['scheduled', 'queued', 'ringing', 'in-progress',
                                              'forwarding', 'ended'], {s})";

/// Records a status change. Statuses only move forward (queued < ringing < in-progress <
/// forwarding < ended; in-progress again after forwarding, when the forwarded leg connects),
/// whatever order the messages arrive in: a late `ringing` never overwrites `in-progress`, and
/// nothing reopens an ended call.
pub async fn update_status(
    conn: &mut PgConnection,
    agent_id: Uuid,
    vapi_call_id: &str,
    customer_number: Option<&str>,
    status: &str,
    ended_reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    let (old, new) = (
        STATUS_RANK.replace("{s}", "calls.status"),
        STATUS_RANK.replace("{s}", "EXCLUDED.status"),
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO calls (agent_id, vapi_call_id, customer_number, status, ended_reason)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (vapi_call_id) DO UPDATE SET
             status          = EXCLUDED.status,
             customer_number = COALESCE(calls.customer_number, EXCLUDED.customer_number),
             ended_reason    = COALESCE(EXCLUDED.ended_reason, calls.ended_reason),
             updated_at      = now()
         WHERE calls.agent_id = EXCLUDED.agent_id
           AND calls.status IS DISTINCT FROM 'ended'
           AND (calls.status IS NULL
                OR COALESCE({new}, 0) > COALESCE({old}, 0)
                OR (calls.status = 'forwarding' AND EXCLUDED.status = 'in-progress'))"
    )))
    .bind(agent_id)
    .bind(vapi_call_id)
    .bind(customer_number)
    .bind(status)
    .bind(ended_reason)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find(
    conn: &mut PgConnection,
    agent_id: Uuid,
    vapi_call_id: &str,
) -> Result<Option<Call>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, agent_id, vapi_call_id, customer_number, status, started_at, ended_at,
                duration_seconds, ended_reason, vapi_cost_usd, updated_at
           FROM calls WHERE agent_id = $1 AND vapi_call_id = $2",
    )
    .bind(agent_id)
    .bind(vapi_call_id)
    .fetch_optional(conn)
    .await
}
