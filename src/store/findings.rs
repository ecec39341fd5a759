//! Risk assessments: a provider's paid answer, saved under the tool call's key before anything
//! else can fail, so a re-run reads it back instead of paying again.

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

pub struct NewFinding<'a> {
    pub agent_id: Uuid,
    pub lead_id: Option<Uuid>,
    pub property_id: Option<Uuid>,
    pub kind: &'a str,
    pub idempotency_key: &'a str,
    pub result: serde_json::Value,
}

/// Saves the finding unless one exists under the key; returns the stored one either way.
pub async fn save_once(
    conn: &mut PgConnection,
    f: &NewFinding<'_>,
) -> Result<Finding, sqlx::Error> {
    sqlx::query(
        "INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, idempotency_key, result)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (agent_id, kind, idempotency_key) DO NOTHING",
    )
    .bind(f.agent_id)
    .bind(f.lead_id)
    .bind(f.property_id)
    .bind(f.kind)
    .bind(f.idempotency_key)
    .bind(&f.result)
    .execute(&mut *conn)
    .await?;
    find(conn, f.agent_id, f.kind, f.idempotency_key)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

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
