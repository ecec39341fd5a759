//! What the tool registry keeps in the database: allowed finding kinds, and who has which tool.

use sqlx::{PgConnection, PgPool};

/// Adds `kinds` to `finding_kinds` (those already there are kept).
pub async fn add_kinds(pool: &PgPool, kinds: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO finding_kinds (kind) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(kinds)
    .execute(pool)
    .await?;
    Ok(())
}

/// True when `kind` is an allowed finding kind.
pub async fn kind_allowed(conn: &mut PgConnection, kind: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM finding_kinds WHERE kind = $1)")
        .bind(kind)
        .fetch_one(conn)
        .await
}

/// How many agents have the tool `name` (`agents.tools` NULL means every tool).
pub async fn agents_with(conn: &mut PgConnection, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM agents WHERE tools IS NULL OR $1 = ANY (tools)")
        .bind(name)
        .fetch_one(conn)
        .await
}
