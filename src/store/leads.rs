//! Leads: callers, per agent. (Properties, findings and tags are written set-based by the
//! effects writer, `jobs::writer`.)

use sqlx::PgConnection;
use uuid::Uuid;

/// Finds the agent's lead for this phone number, creating it on first contact.
/// Returns the lead id and whether this call created it.
pub async fn upsert_by_phone(
    conn: &mut PgConnection,
    agent_id: Uuid,
    phone: &str,
) -> Result<(Uuid, bool), sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO leads (agent_id, phone) VALUES ($1, $2)
         ON CONFLICT (agent_id, phone) DO UPDATE SET updated_at = now()
         RETURNING id, (xmax = 0) AS created",
    )
    .bind(agent_id)
    .bind(phone)
    .fetch_one(conn)
    .await
}
