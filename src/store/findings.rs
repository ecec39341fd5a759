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

/// A paid answer saved under `key`: in `provider_answers`, or (saved before that table existed,
/// or by the writer) as the finding itself.
pub async fn saved_answer(
    conn: &mut PgConnection,
    agent_id: Uuid,
    kind: &str,
    key: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT answer FROM provider_answers WHERE agent_id = $1 AND kind = $2 AND key = $3
         UNION ALL
         SELECT result FROM risk_assessments WHERE agent_id = $1 AND kind = $2 AND idempotency_key = $3
         LIMIT 1",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Commits `answer` under `key` (its own statement, so its own transaction) unless one is
/// already saved; returns the answer that is saved.
pub async fn save_answer(
    conn: &mut PgConnection,
    agent_id: Uuid,
    kind: &str,
    key: &str,
    answer: &serde_json::Value,
) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar(
        "WITH new AS (
             INSERT INTO provider_answers (agent_id, kind, key, answer) VALUES ($1, $2, $3, $4)
             ON CONFLICT (agent_id, kind, key) DO NOTHING
             RETURNING answer)
         SELECT answer FROM new
         UNION ALL
         SELECT answer FROM provider_answers WHERE agent_id = $1 AND kind = $2 AND key = $3
         LIMIT 1",
    )
    .bind(agent_id)
    .bind(kind)
    .bind(key)
    .bind(answer)
    .fetch_one(conn)
    .await
}
