//! `agent-meter seed`: the launch agents and default prices (`seeds/*.sql`), idempotent.

use sqlx::PgPool;

/// The seed files, in the order they run.
pub const SEEDS: &[(&str, &str)] = &[
    ("seeds/agents.sql", include_str!("../../seeds/agents.sql")),
    ("seeds/prices.sql", include_str!("../../seeds/prices.sql")),
];

/// Applies every seed file in one transaction.
pub async fn run(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (name, sql) in SEEDS {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        tracing::info!(seed = name, "applied");
    }
    tx.commit().await
}
