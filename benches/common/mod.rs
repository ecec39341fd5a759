//! What every benchmark needs: a scratch database on `BENCH_DATABASE_URL` (an admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrated and seeded, dropped at the end unless
//! `BENCH_KEEP_DATABASE` is set (to read plans against the bench's data afterwards).

use std::{str::FromStr, time::Duration};

use agent_meter::store::{db, seed};
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
        agent_meter::app::migrate(&pool).await.expect("migrate");
        seed::run(&pool).await.expect("seed");
        Scratch {
            admin,
            name,
            url,
            pool,
        }
    }

    /// Closes the pool and drops the database (kept, and named, with `BENCH_KEEP_DATABASE`).
    pub async fn drop_database(self) {
        self.pool.close().await;
        if std::env::var_os("BENCH_KEEP_DATABASE").is_some() {
            println!("kept the scratch database: {}", self.url);
            return;
        }
        if let Ok(mut c) = PgConnection::connect(&self.admin).await {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
        }
    }
}

/// The value after `name` on the command line (`--rows 1000`), or `default`.
#[allow(
    dead_code,
    reason = "each bench is its own crate; not every one reads arguments this way"
)]
pub fn arg<T: FromStr>(name: &str, default: T) -> T {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0 to 1) of `sorted` latencies, in milliseconds (0 when there are none).
#[allow(
    dead_code,
    reason = "each bench is its own crate; not every one reports latencies"
)]
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len().max(1) - 1) as f64 * p).round() as usize;
    sorted.get(idx).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A listener at a loopback port of the kernel's choosing, and the base URL it will serve.
#[allow(
    dead_code,
    reason = "each bench is its own crate; not every one serves HTTP"
)]
pub async fn loopback() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, base)
}

/// Runs `sql`, one statement without parameters (`ANALYZE`, `VACUUM` …), which must succeed.
#[allow(
    dead_code,
    reason = "each bench is its own crate; not every one runs bare statements"
)]
pub async fn execute(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.expect(sql);
}
