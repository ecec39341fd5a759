//! The raw Vapi messages we accepted, deduplicated per tenant by a key per message.

use sqlx::PgConnection;
use uuid::Uuid;

/// How a message was routed to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Its phone number belongs to an agent.
    Routed,
    /// It names a phone number no agent owns: stored for ops, never billed.
    Unroutable,
    /// It names no phone number at all.
    NoCall,
}

impl Routing {
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Routed => "routed",
            Routing::Unroutable => "unroutable",
            Routing::NoCall => "no_call",
        }
    }
}

/// Message types Vapi sends many times per call; their raw copies are pruned after
/// `WEBHOOK_EVENT_RETENTION_DAYS` (nothing is billed from them).
pub const HIGH_VOLUME: &[&str] = &[
    "conversation-update",
    "speech-update",
    "transcript",
    "model-output",
];

/// Deletes raw high-volume events older than `keep_days`; returns how many. The list is
/// spelled out so the partial index `webhook_events_high_volume` (migration 0009) serves it.
pub async fn prune_high_volume(
    conn: &mut PgConnection,
    keep_days: i32,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM webhook_events
          WHERE message_type IN ('conversation-update', 'speech-update', 'transcript', 'model-output')
            AND received_at < now() - make_interval(days => $1)",
    )
    .bind(keep_days)
    .execute(conn)
    .await?
    .rows_affected())
}

pub struct NewEvent<'a> {
    pub agent_id: Option<Uuid>,
    pub dedupe_key: &'a str,
    pub message_type: &'a str,
    pub vapi_call_id: Option<&'a str>,
    pub routing: Routing,
    /// The message body exactly as received (valid JSON).
    pub payload: &'a str,
}

/// Inserts the event unless its key was seen; `Some(id)` only for a new event. A concurrent
/// duplicate waits for the first transaction and then sees the conflict, so exactly one wins.
pub async fn insert_new(
    conn: &mut PgConnection,
    event: &NewEvent<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO webhook_events (agent_id, dedupe_key, message_type, vapi_call_id, routing, payload)
         VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
         ON CONFLICT (agent_id, dedupe_key) DO NOTHING
         RETURNING id",
    )
    .bind(event.agent_id)
    .bind(event.dedupe_key)
    .bind(event.message_type)
    .bind(event.vapi_call_id)
    .bind(event.routing.as_str())
    .bind(event.payload)
    .fetch_optional(conn)
    .await
}
