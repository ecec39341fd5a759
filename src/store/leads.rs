//! Leads (callers, per agent) and what we learn about them: properties, findings, tags.

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

/// Finds or creates the property at `address` for the lead; `None` without an address.
pub async fn property_for(
    conn: &mut PgConnection,
    agent_id: Uuid,
    lead_id: Option<Uuid>,
    address: Option<&str>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let Some(address) = address.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    sqlx::query_scalar(
        "INSERT INTO properties (agent_id, lead_id, address) VALUES ($1, $2, $3)
         ON CONFLICT (agent_id, lead_id, address) DO UPDATE SET address = EXCLUDED.address
         RETURNING id",
    )
    .bind(agent_id)
    .bind(lead_id)
    .bind(address)
    .fetch_one(conn)
    .await
    .map(Some)
}

/// Tags a lead once (a repeated tag is a no-op).
pub async fn tag(
    conn: &mut PgConnection,
    agent_id: Uuid,
    lead_id: Uuid,
    tag: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tags (agent_id, lead_id, tag) VALUES ($1, $2, $3)
         ON CONFLICT (agent_id, lead_id, tag) DO NOTHING",
    )
    .bind(agent_id)
    .bind(lead_id)
    .bind(tag)
    .execute(conn)
    .await?;
    Ok(())
}
