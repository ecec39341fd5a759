//! What every benchmark needs: a scratch database on `BENCH_DATABASE_URL` (an admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrated and seeded, dropped at the end.

use agent_meter::{db, seed};
use sqlx::{Connection, PgConnection, PgPool};

pub struct Scratch {
    admin: String,
    name: String,
    /// The scratch database's URL (for tools like pgbench).
    #[allow(
        dead_code,
        reason = "each bench is its own crate; not every one needs the URL"
    )]
    pub url: String,
    pub pool: PgPool,
}

impl Scratch {
    /// Creates `am_bench_{tag}_{pid}` with a pool of `pool_size`, migrated and seeded.
    pub async fn create(tag: &str, pool_size: u32) -> Scratch {
        let admin = std::env::var("BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("am_bench_{tag}_{}", std::process::id());
        let conn = PgConnection::connect(&admin)
            .await
            .expect("connect to BENCH_DATABASE_URL");
        db::create_database_if_missing(conn, &name)
            .await
            .expect("create the scratch database");
        // Same server and options (e.g. `?sslmode=disable`), the scratch database's name.
        let (path, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
        let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
        let url = match query {
            "" => format!("{base}/{name}"),
            q => format!("{base}/{name}?{q}"),
        };
        let pool = db::connect(&url, pool_size).await.expect("pool");
        db::migrate(&pool).await.expect("migrate");
        seed::run(&pool).await.expect("seed");
        Scratch {
            admin,
            name,
            url,
            pool,
        }
    }

    /// Closes the pool and drops the database.
    pub async fn drop_database(self) {
        self.pool.close().await;
        if let Ok(mut c) = PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
        }
    }
}
