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
