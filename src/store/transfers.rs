//! `call_transfers`: the transfer requests we answered, by Vapi call id (the calls row may not
//! exist yet when Vapi asks: it comes with the end-of-call report or the daily sync).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One answered `transfer-destination-request`.
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
}

pub async fn insert(conn: &mut PgConnection, t: &NewTransfer<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO call_transfers
             (agent_id, vapi_call_id, webhook_event_id, requested_at, number, hours, in_hours)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (webhook_event_id) DO NOTHING",
    )
    .bind(t.agent_id)
    .bind(t.vapi_call_id)
    .bind(t.webhook_event_id)
    .bind(t.requested_at)
    .bind(t.number)
    .bind(t.hours)
    .bind(t.in_hours)
    .execute(conn)
    .await?;
    Ok(())
}
