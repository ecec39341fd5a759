//! SQL by table family. Functions take the caller's connection or transaction, so the caller
//! decides what commits together; nothing here knows the web or the queue.

pub mod agents;
pub mod calls;
pub mod caps;
pub mod clock_ticks;
pub mod db;
pub mod findings;
pub mod late_findings;
pub mod leads;
pub mod outbound;
pub mod portal;
pub mod pricing;
pub mod queue;
pub mod reports;
pub mod secrets;
pub mod seed;
pub mod sessions;
pub mod stripe;
pub mod tools;
pub mod transfers;
pub mod usage;
pub mod usage_daily;
pub mod webhook_events;

/// Deletes the rows of `table` (a constant name) created more than a day ago: how many.
pub async fn prune_day_old(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
) -> Result<u64, sqlx::Error> {
    let sql = format!("DELETE FROM {table} WHERE created_at < now() - interval '1 day'");
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await?
        .rows_affected())
}

/// Runs a statement with parameter `$1`; how many rows it changed.
pub async fn run1<A>(
    conn: &mut sqlx::PgConnection,
    sql: &'static str,
    a: A,
) -> Result<u64, sqlx::Error>
where
    A: 'static + Send + sqlx::Encode<'static, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    Ok(sqlx::query(sql)
        .bind(a)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Runs a statement with parameters `$1` and `$2`; how many rows it changed.
pub async fn run2<A, B>(
    conn: &mut sqlx::PgConnection,
    sql: &'static str,
    a: A,
    b: B,
) -> Result<u64, sqlx::Error>
where
    A: 'static + Send + sqlx::Encode<'static, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    B: 'static + Send + sqlx::Encode<'static, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    Ok(sqlx::query(sql)
        .bind(a)
        .bind(b)
        .execute(conn)
        .await?
        .rows_affected())
}

/// True when `e` is a unique violation (SQLSTATE 23505).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}
