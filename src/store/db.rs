//! The connection pool, migrations (ours and apalis's), readiness, and the local default database.
//!
//! With no `DATABASE_URL` the service uses `postgres://localhost/agent_meter` when a server answers
//! there (creating the database), else it starts a private PostgreSQL under `.data/postgres` with
//! the machine's own `initdb`/`pg_ctl`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use sqlx::{
    Connection, PgConnection, PgPool,
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Our own migrations (`migrations/`), tracked in `public._sqlx_migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The name of the database used when `DATABASE_URL` is unset.
pub const LOCAL_DATABASE: &str = "agent_meter";
/// Where the private fallback cluster lives, relative to the working directory.
pub const PRIVATE_CLUSTER_DIR: &str = ".data/postgres";
const PRIVATE_PORT: u16 = 54329;

/// A pool with short timeouts: a dead database must surface as a fast 503, not a hung request.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        // After a database restart old connections fail once (57P01); test before handing out.
        .test_before_acquire(true)
        .connect_with(options.application_name("agent-meter"))
        .await
}

/// Applies apalis's queue schema (schema `apalis`) and then ours ([`crate::app::migrate`] adds
/// the registered tools' finding kinds). Safe to run concurrently and
/// repeatedly: sqlx takes an advisory lock and skips applied versions.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    apalis_postgres::PostgresStorage::migrations()
        .run(pool)
        .await?;
    MIGRATOR.run(pool).await
}

/// True when the database answers and every migration we ship has been applied.
pub async fn is_ready(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or_default();
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|e| match &e {
                // The migrations table itself is missing: reachable but not migrated.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(e),
            })?;
    Ok(applied == Some(latest) && crate::store::queue::schema_exists(pool).await?)
}

/// Which database the process ends up using, and why (logged at start-up).
#[derive(Debug)]
pub struct ResolvedDatabase {
    pub url: String,
    pub source: &'static str,
}

/// `DATABASE_URL` when given; otherwise the local default described in the module doc.
pub async fn resolve_database_url(configured: Option<&str>) -> anyhow::Result<ResolvedDatabase> {
    if let Some(url) = configured {
        return Ok(ResolvedDatabase {
            url: url.to_string(),
            source: "DATABASE_URL",
        });
    }
    // libpq would connect as the OS user; sqlx's own guess fails in some containers, so say it.
    let user = local_user().await;
    if let Ok(conn) = connect_once(&format!("postgres://{user}@localhost/postgres")).await {
        create_database_if_missing(conn, LOCAL_DATABASE).await?;
        return Ok(ResolvedDatabase {
            url: format!("postgres://{user}@localhost/{LOCAL_DATABASE}"),
            source: "local server at localhost:5432",
        });
    }
    let admin = private_cluster_admin_url().await?;
    let conn = connect_once(&admin)
        .await
        .context("the private PostgreSQL started but does not accept connections")?;
    create_database_if_missing(conn, LOCAL_DATABASE).await?;
    Ok(ResolvedDatabase {
        url: format!("postgres://postgres@127.0.0.1:{PRIVATE_PORT}/{LOCAL_DATABASE}"),
        source: "private cluster under .data/postgres",
    })
}

/// Starts (initialising on first use) the private cluster under `./.data/postgres` and returns
/// the URL of its `postgres` database. Idempotent: an already running cluster is reused.
pub async fn private_cluster_admin_url() -> anyhow::Result<String> {
    let cluster = LocalCluster::new(
        std::env::current_dir()?.join(PRIVATE_CLUSTER_DIR),
        PRIVATE_PORT,
    );
    cluster.start().await?;
    Ok(cluster.admin_url())
}

/// True when a PostgreSQL server accepts a connection at `url` within 3 s.
pub async fn answers(url: &str) -> bool {
    match connect_once(url).await {
        Ok(conn) => {
            conn.close().await.ok();
            true
        }
        Err(_) => false,
    }
}

/// The role libpq would use by default: `PGUSER`, else the OS user.
pub async fn local_user() -> String {
    for var in ["PGUSER", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    let from_id = tokio::process::Command::new("id")
        .arg("-un")
        .output()
        .await
        .ok();
    from_id
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres".to_string())
}

async fn connect_once(url: &str) -> Result<PgConnection, sqlx::Error> {
    tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(url))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// Creates `name` unless it exists; a concurrent creator winning the race is fine.
pub async fn create_database_if_missing(mut conn: PgConnection, name: &str) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        // The name is quoted above; it is ours (a constant or a test database name), never user input.
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            let duplicate =
                matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42P04"));
            if !duplicate {
                return Err(e).with_context(|| format!("creating database {name}"));
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Finds a PostgreSQL server binary: on PATH, else the newest under /usr/lib/postgresql.
fn pg_binary(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
            .filter(|p| p.is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

/// `initdb` and `pg_ctl` refuse to run as root: run them as the `postgres` user then.
fn pg_command(binary: &Path, as_postgres: bool) -> tokio::process::Command {
    if as_postgres {
        let mut cmd = tokio::process::Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(binary);
        cmd
    } else {
        tokio::process::Command::new(binary)
    }
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A PostgreSQL cluster of our own: the local default when no server answers (`.data/postgres`
/// on port 54329), and the restartable server of the reliability suite.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl LocalCluster {
    pub fn new(dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            dir: dir.into(),
            port,
        }
    }

    /// The URL of its `postgres` database (trust authentication, loopback only).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Initialises the cluster on first use and starts it; a running cluster is left alone.
    pub async fn start(&self) -> anyhow::Result<()> {
        let dir = &self.dir;
        let initdb = pg_binary("initdb").context(
            "no PostgreSQL answers on localhost:5432 and initdb was not found: \
             install PostgreSQL or set DATABASE_URL",
        )?;
        let as_root = is_root().await;
        if !dir.join("PG_VERSION").exists() {
            tracing::info!(dir = %dir.display(), "initialising a private PostgreSQL cluster");
            std::fs::create_dir_all(dir)?;
            if as_root {
                let mut chown = tokio::process::Command::new("chown");
                chown
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.parent().unwrap_or(dir));
                run(chown, "chown the cluster directory to postgres").await?;
            }
            let mut cmd = pg_command(&initdb, as_root);
            cmd.args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
                .arg(dir);
            run(cmd, "initdb").await?;
        }
        if self.pg_ctl(&["status"]).await.is_ok() {
            return Ok(());
        }
        tracing::info!(dir = %dir.display(), port = self.port, "starting the private PostgreSQL");
        let log = dir.join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            dir.display()
        );
        let log = log.to_string_lossy();
        self.pg_ctl(&["start", "-w", "-l", &log, "-o", &options])
            .await
    }

    /// Restarts the server (`mode`: smart, fast or immediate) and waits until it accepts
    /// connections. Its output keeps going to `server.log`: without `-l` the new postmaster
    /// would hold our output pipe open forever.
    pub async fn restart(&self, mode: &str) -> anyhow::Result<()> {
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy();
        self.pg_ctl(&["restart", "-w", "-m", mode, "-l", &log])
            .await
    }

    /// Runs `pg_ctl <args> -D <dir>` (as the `postgres` user when we are root).
    pub async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let pg_ctl = pg_binary("pg_ctl").context("pg_ctl not found next to initdb")?;
        let mut cmd = pg_command(&pg_ctl, is_root().await);
        cmd.args(args).arg("-D").arg(&self.dir);
        run(cmd, &format!("pg_ctl {}", args.join(" "))).await
    }
}

async fn is_root() -> bool {
    tokio::process::Command::new("id")
        .arg("-u")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The role tenant-facing work runs as (see `migrations/*_tenancy.up.sql`).
pub const TENANT_ROLE: &str = "agent_meter_tenant";

/// A transaction scoped to one agent: it runs as [`TENANT_ROLE`] with `app.agent_id` set for this
/// transaction only, so Row Level Security decides what it can see and change.
pub async fn tenant_tx(
    pool: &PgPool,
    agent_id: uuid::Uuid,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    // One round trip: a Uuid formats as hex and dashes only, so the text is safe to inline.
    let begin = format!(
        "BEGIN; SET LOCAL ROLE agent_meter_tenant; SELECT set_config('app.agent_id', '{agent_id}', true)"
    );
    pool.begin_with(sqlx::AssertSqlSafe(begin)).await
}
