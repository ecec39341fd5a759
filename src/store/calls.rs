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

/// Keeps what an ended call said (`call_content`) next to its `calls` row, in the caller's
/// transaction (the webhook's report, the sync's upsert), and links the call to its caller's lead:
/// fields this content lacks keep what an earlier report or sync said. When the structured data
/// names the caller (name, email, property address) the lead's empty fields are filled, never
/// overwritten; a caller without a lead yet gets one then. A call whose row does not exist is
/// left alone (nothing to attach to).
pub async fn save_content(
    conn: &mut PgConnection,
    agent_id: Uuid,
    vapi_call_id: &str,
    content: &crate::vapi::CallContent,
) -> Result<(), sqlx::Error> {
    let call: Option<(Uuid, Option<String>, Option<Uuid>)> = sqlx::query_as(
        "SELECT id, customer_number, lead_id FROM calls WHERE agent_id = $1 AND vapi_call_id = $2",
    )
    .bind(agent_id)
    .bind(vapi_call_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((call_id, customer, lead)) = call else {
        return Ok(());
    };
    if !content.is_empty() {
        sqlx::query(
            "INSERT INTO call_content (call_id, agent_id, call_type, summary, structured_data,
                                       success_evaluation, transcript, recording_url, costs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (call_id) DO UPDATE SET
                 call_type          = COALESCE(EXCLUDED.call_type, call_content.call_type),
                 summary            = COALESCE(EXCLUDED.summary, call_content.summary),
                 structured_data    = COALESCE(EXCLUDED.structured_data, call_content.structured_data),
                 success_evaluation = COALESCE(EXCLUDED.success_evaluation, call_content.success_evaluation),
                 transcript         = COALESCE(EXCLUDED.transcript, call_content.transcript),
                 recording_url      = COALESCE(EXCLUDED.recording_url, call_content.recording_url),
                 costs              = COALESCE(EXCLUDED.costs, call_content.costs),
                 updated_at         = now()",
        )
        .bind(call_id)
        .bind(agent_id)
        .bind(&content.call_type)
        .bind(&content.summary)
        .bind(&content.structured_data)
        .bind(&content.success_evaluation)
        .bind(&content.transcript)
        .bind(&content.recording_url)
        .bind(&content.costs)
        .execute(&mut *conn)
        .await?;
    }
    let details = content.caller_details();
    let number = customer.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let lead = match (lead, number) {
        (Some(lead), _) => Some(lead),
        (None, Some(number)) if !details.is_empty() => {
            let (lead, created) =
                super::leads::upsert_by_phone(&mut *conn, agent_id, number).await?;
            if created {
                let id = format!("msg_lead_created_{}", lead.simple());
                let data = serde_json::json!({"lead_id": lead, "phone": number,
                                              "vapi_call_id": vapi_call_id});
                super::outbound::emit(conn, agent_id, &id, "lead.created", data).await?;
            }
            Some(lead)
        }
        (None, Some(number)) => {
            sqlx::query_scalar("SELECT id FROM leads WHERE agent_id = $1 AND phone = $2")
                .bind(agent_id)
                .bind(number)
                .fetch_optional(&mut *conn)
                .await?
        }
        (None, None) => None,
    };
    let Some(lead) = lead else {
        return Ok(());
    };
    sqlx::query("UPDATE calls SET lead_id = $2 WHERE id = $1 AND lead_id IS NULL")
        .bind(call_id)
        .bind(lead)
        .execute(&mut *conn)
        .await?;
    if details.is_empty() {
        return Ok(());
    }
    // Only empty fields change: what the agency (or an earlier call) wrote stays. A lead that
    // changed is announced (`lead.updated`).
    let updated: Option<(serde_json::Value, i64)> = sqlx::query_as(
        "WITH new AS (
             SELECT id,
                    CASE WHEN NULLIF(btrim(name), '') IS NULL THEN COALESCE($3, name) ELSE name END AS name,
                    CASE WHEN NULLIF(btrim(email), '') IS NULL THEN COALESCE($4, email) ELSE email END AS email,
                    CASE WHEN NULLIF(btrim(address), '') IS NULL THEN COALESCE($5, address) ELSE address END AS address
               FROM leads WHERE agent_id = $1 AND id = $2)
         UPDATE leads l SET name = new.name, email = new.email, address = new.address,
                updated_at = now()
           FROM new
          WHERE l.id = new.id
            AND (l.name, l.email, l.address) IS DISTINCT FROM (new.name, new.email, new.address)
         RETURNING jsonb_build_object('lead_id', l.id, 'phone', l.phone, 'name', l.name,
                                      'email', l.email, 'address', l.address),
                   (extract(epoch FROM l.updated_at) * 1000000)::bigint",
    )
    .bind(agent_id)
    .bind(lead)
    .bind(&details.name)
    .bind(&details.email)
    .bind(&details.address)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((data, at)) = updated {
        let id = format!("msg_lead_updated_{}_{at}", lead.simple());
        super::outbound::emit(conn, agent_id, &id, "lead.updated", data).await?;
    }
    // The property to insure, when the lead has none yet (a tool call during the call may have
    // added one already: that one is the agency's record and stays alone).
    if let Some(address) = &details.address {
        sqlx::query(
            "INSERT INTO properties (agent_id, lead_id, address)
             SELECT $1, $2, $3
              WHERE NOT EXISTS (SELECT 1 FROM properties WHERE agent_id = $1 AND lead_id = $2)
             ON CONFLICT (agent_id, lead_id, address) DO NOTHING",
        )
        .bind(agent_id)
        .bind(lead)
        .bind(address)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
