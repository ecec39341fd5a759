//! The clock's ticks, as enqueued (migration 0012): what the start-up catch-up heals from.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Records a tick; `false` when another clock (or an earlier start) already did.
pub async fn record(
    conn: &mut PgConnection,
    key: &str,
    job: &str,
    tick: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO clock_ticks (key, job, tick) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(job)
    .bind(tick)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The latest tick recorded for `job`, if any.
pub async fn latest(
    conn: &mut PgConnection,
    job: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(tick) FROM clock_ticks WHERE job = $1")
        .bind(job)
        .fetch_one(conn)
        .await
}
