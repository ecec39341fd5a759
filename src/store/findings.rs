//! Risk assessments: a provider's answer, saved under the tool call's key (by the effects writer,
//! `jobs::writer`), so a re-run reads it back instead of paying again.

use sqlx::PgConnection;
use uuid::Uuid;

pub const SOLAR: &str = "solar";
pub const WATER: &str = "water";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Finding {
    pub id: Uuid,
    pub lead_id: Option<Uuid>,
    pub property_id: Option<Uuid>,
    pub result: serde_json::Value,
    /// When the finding was saved: the time its usage row is metered at, on every re-run.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The finding saved under `idempotency_key`, if any (a paid answer is never asked for twice).
pub async fn find(
    conn: &mut PgConnection,
    agent_id: Uuid,
    kind: &str,
    idempotency_key: &str,
) -> Result<Option<Finding>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, lead_id, property_id, result, created_at FROM risk_assessments
          WHERE agent_id = $1 AND kind = $2 AND idempotency_key = $3",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(idempotency_key)
    .fetch_optional(conn)
    .await
}
