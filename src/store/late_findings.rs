//! Findings owed to a live call (migration 0010): the tool-calls webhook records the call's
//! control URL when it answers without the finding; whoever claims the row first (the webhook's
//! last look, or the tool job's commit) says the finding, so it is said once.

use sqlx::PgConnection;

/// Records that the finding under `key` is owed to the call at `control_url`.
pub async fn owe(conn: &mut PgConnection, key: &str, control_url: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO late_findings (key, control_url) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(control_url)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims the findings owed under `keys` that nobody has said yet: (key, control URL) each.
pub async fn claim(
    conn: &mut PgConnection,
    keys: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE late_findings SET delivered_at = now()
          WHERE key = ANY($1) AND delivered_at IS NULL
         RETURNING key, control_url",
    )
    .bind(keys)
    .fetch_all(conn)
    .await
}

/// Deletes rows older than a day (no call lasts that long).
pub async fn prune(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    super::prune_day_old(conn, "late_findings").await
}
