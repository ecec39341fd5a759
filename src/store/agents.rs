//! Agents: the tenants, found by their Vapi phone number id.

use sqlx::PgConnection;
use uuid::Uuid;

/// The routing facts about an agent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Agent {
    pub id: Uuid,
    pub agency_name: String,
    pub email: String,
    pub phone_number: Option<String>,
    pub vapi_phone_number_id: Option<String>,
    pub status: String,
}

/// The agent that owns a Vapi phone number, if any.
pub async fn find_by_phone_number_id(
    conn: &mut PgConnection,
    phone_number_id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, agency_name, email, phone_number, vapi_phone_number_id, status
           FROM agents WHERE vapi_phone_number_id = $1",
    )
    .bind(phone_number_id)
    .fetch_optional(conn)
    .await
}
