//! `call_transfers`: the transfer requests we answered and the transfers Vapi made on its own,
//! by Vapi call id (the calls row may not exist yet: it comes with the end-of-call report or the
//! daily sync).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One answered `transfer-destination-request`, or one `transfer-update` of a transfer Vapi made
/// without asking.
pub struct NewTransfer<'a> {
    pub agent_id: Uuid,
    pub vapi_call_id: &'a str,
    /// The stored request it answers: a redelivery (stored once) records nothing more.
    pub webhook_event_id: i64,
    pub requested_at: DateTime<Utc>,
    pub number: &'a str,
    /// The hours in force then (canonical text).
    pub hours: &'a str,
    pub in_hours: bool,
    /// The message type it comes from.
    pub source: &'a str,
}

pub async fn insert(conn: &mut PgConnection, t: &NewTransfer<'_>) -> Result<(), sqlx::Error> {
    write(conn, t, "").await.map(|_| ())
}

/// Records a transfer Vapi reports (`transfer-update`) unless we already recorded answering the
/// call's request for that number in hours (that transfer is this one); `true` when recorded.
pub async fn insert_reported(
    conn: &mut PgConnection,
    t: &NewTransfer<'_>,
) -> Result<bool, sqlx::Error> {
    write(
        conn,
        t,
        "WHERE NOT EXISTS (SELECT 1 FROM call_transfers
                            WHERE agent_id = $1 AND vapi_call_id = $2 AND number = $5 AND in_hours
                              AND source = 'transfer-destination-request')",
    )
    .await
}

/// Inserts `t` (once per webhook event) when `condition` (a `WHERE` over its parameters, or
/// nothing) holds; whether a row was written.
async fn write(
    conn: &mut PgConnection,
    t: &NewTransfer<'_>,
    condition: &'static str,
) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO call_transfers
             (agent_id, vapi_call_id, webhook_event_id, requested_at, number, hours, in_hours, source)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 {condition}
         ON CONFLICT (webhook_event_id) DO NOTHING"
    )))
    .bind(t.agent_id)
    .bind(t.vapi_call_id)
    .bind(t.webhook_event_id)
    .bind(t.requested_at)
    .bind(t.number)
    .bind(t.hours)
    .bind(t.in_hours)
    .bind(t.source)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(rows == 1)
}
