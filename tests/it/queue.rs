//! The queue at rest and on the wake (issue 11), with real `agent-meter` processes:
//! - an idle `worker` (and an idle `serve`) stays under its transaction and CPU budget, counted
//!   from `pg_stat_database` of its own database (the idle hot loop ran 3,400-5,200 a second);
//! - a report taken by a `web` process is metered by a `worker` process within milliseconds,
//!   woken by NOTIFY, not found by a poll;
//! - two `web`, three `worker` and one `clock` process at their default pools fit a private
//!   PostgreSQL with `max_connections = 60`, with room left for a migration and an operator.

use std::time::{Duration, Instant};

use agent_meter::store::{db, seed};
use sqlx::{Connection, PgConnection};

use crate::helpers::*;
use crate::reliability::support::*;

/// Transactions committed or rolled back in `database` so far (read from another database, so
/// the reading itself is not counted).
async fn transactions(admin: &mut PgConnection, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(&mut *admin)
    .await
    .expect("pg_stat_database")
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14th and 15th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    let ticks: u64 = fields.iter().sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

struct AtRest {
    transactions_per_sec: f64,
    cpu_share: f64,
    rss_mib: f64,
}

/// A seeded database whose tables are vacuumed and analyzed (autovacuum's transactions count in
/// `pg_stat_database` too, so it should find nothing to do), with the test's own pool closed: an
/// idle backend may report its transactions late, into a measurement; one that exits reports
/// them at once.
///
/// Every schedule entry has a tick recorded now, so a starting clock finds nothing missed: its
/// start-up catch-up (a month's rollup, a day's sync failing and retrying for want of a Vapi key
/// here) is work, not rest, and is tested in `billing`; measured inside the window it made an idle
/// `serve` read 5.1 % of a core once on a loaded CI machine.
async fn settled_db() -> TestDb {
    let schedule = agent_meter::app::clock::Schedule::parse(agent_meter::app::clock::SCHEDULE_TOML)
        .expect("schedule");
    clear_of_live_ticks(&schedule).await;
    let db = TestDb::seeded().await;
    for entry in &schedule.entries {
        sqlx::query("INSERT INTO clock_ticks (key, job, tick) VALUES ($1, $2, now())")
            .bind(format!("at-rest:{}", entry.job))
            .bind(&entry.job)
            .execute(&db.pool)
            .await
            .expect("record a tick");
    }
    db.execute("VACUUM ANALYZE").await;
    db.pool.close().await;
    db
}

/// A live cron tick inside the measurement (e.g. the daily sync at 03:00 Phoenix) would be work,
/// not rest: if one is due before the measurement can have ended, start after it. The horizon
/// covers a slow set-up too (seeding, vacuum, the process's start and its workers' registration,
/// then the settle and the window), with room to spare: five minutes.
async fn clear_of_live_ticks(schedule: &agent_meter::app::clock::Schedule) {
    let now = chrono::Utc::now();
    let soon = now + chrono::Duration::seconds(300);
    let due = schedule
        .entries
        .iter()
        .flat_map(|e| {
            agent_meter::app::clock::ticks_between(e, now, soon, chrono_tz::America::Phoenix)
        })
        .max();
    if let Some(tick) = due {
        let wait = (tick - now).to_std().unwrap_or_default() + Duration::from_secs(2);
        println!("a live tick at {tick}: measuring after it, in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// Measures `proc` over `window` once it has settled: transactions on `db`, CPU and memory.
async fn at_rest(db: &TestDb, proc: &Proc, window: Duration) -> AtRest {
    let mut admin = PgConnection::connect(&admin_url()).await.expect("admin");
    // Let start-up work (registration, the first fetches, catch-up checks) be counted before.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (tx0, cpu0, t0) = (
        transactions(&mut admin, &db.name).await,
        cpu_time(proc.pid),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (tx1, cpu1, elapsed) = (
        transactions(&mut admin, &db.name).await,
        cpu_time(proc.pid),
        t0.elapsed(),
    );
    AtRest {
        transactions_per_sec: (tx1 - tx0) as f64 / elapsed.as_secs_f64(),
        cpu_share: (cpu1 - cpu0).as_secs_f64() / elapsed.as_secs_f64(),
        rss_mib: proc.rss_kib() as f64 / 1024.0,
    }
}

/// Heartbeats at the production default (the suite's 1 s would be most of the budget).
const AT_REST_ENV: &[(&str, &str)] = &[("WORKER_HEARTBEAT_SECS", "10"), ("JOB_TIMEOUT_SECS", "5")];

/// Starts `agent-meter <role>` on a settled database, waits for its workers, measures it at rest
/// and checks it against its budget.
async fn check_at_rest(role: &str, max_transactions_per_sec: f64, max_cpu: f64, max_rss_mib: f64) {
    let db = settled_db().await;
    let mut vars = env(&db, "http://127.0.0.1:9", AT_REST_ENV);
    // Nothing here talks to it: any free port of the kernel's choosing.
    vars.push(("BIND_ADDR".into(), "127.0.0.1:0".into()));
    let proc = Proc::start(&[role], &vars);
    workers_registered(&db, agent_meter::tools::queues().len() as i64).await;
    let m = at_rest(&db, &proc, Duration::from_secs(8)).await;
    println!(
        "idle {role}: {:.1} transactions/s, {:.2} % of a core, {:.1} MiB",
        m.transactions_per_sec,
        m.cpu_share * 100.0,
        m.rss_mib
    );
    let log = proc.log_text();
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
    assert!(
        !log.contains("missed tick enqueued"),
        "the clock had nothing to catch up: {log}"
    );
    assert!(
        m.transactions_per_sec <= max_transactions_per_sec,
        "an idle {role} ran {:.0} transactions/s (budget {max_transactions_per_sec})",
        m.transactions_per_sec
    );
    assert!(
        m.cpu_share <= max_cpu,
        "an idle {role} used {:.1} % of a core (budget {:.0} %)",
        m.cpu_share * 100.0,
        max_cpu * 100.0
    );
    assert!(
        m.rss_mib <= max_rss_mib,
        "an idle {role} holds {:.1} MiB (budget {max_rss_mib})",
        m.rss_mib
    );
}

#[tokio::test]
async fn an_idle_worker_leaves_the_database_alone() {
    check_at_rest("worker", 20.0, 0.03, 64.0).await;
}

#[tokio::test]
async fn an_idle_serve_is_quiet_and_small() {
    // A serve also runs the clock and the web routes; with nothing to catch up (see
    // `settled_db`) it should rest like a worker.
    check_at_rest("serve", 20.0, 0.03, 64.0).await;
}

/// Milliseconds from each report's webhook transaction to its usage row, per call id.
async fn report_to_usage_ms(db: &TestDb, prefix: &str) -> Vec<f64> {
    sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM u.created_at - e.received_at) * 1000)::float8
           FROM webhook_events e
           JOIN agent_usage_metrics u
             ON u.agent_id = e.agent_id AND u.idempotency_key = 'vapi_call:' || e.vapi_call_id
          WHERE e.vapi_call_id LIKE $1 || '%' AND u.metric_type = 'vapi_call_minutes'
          ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&db.pool)
    .await
    .expect("latencies")
}

#[tokio::test]
async fn a_report_taken_by_one_process_is_metered_by_another_within_milliseconds() {
    const REPORTS: usize = 20;
    let db = TestDb::seeded().await;
    let worker = Proc::start(&["worker"], &env(&db, "http://127.0.0.1:9", AT_REST_ENV));
    let (_web, base) = Proc::web(&db).await;
    workers_registered(&db, agent_meter::tools::queues().len() as i64).await;
    let http = reqwest::Client::new();
    for i in 0..REPORTS {
        let r = http
            .post(format!("{base}/vapi/webhook"))
            .header("x-vapi-secret", SHARED_SECRET)
            .json(&end_of_call_report(&format!("wake-{i}"), PHONES[i % 5]))
            .send()
            .await
            .expect("webhook");
        assert!(r.status().is_success(), "{}", r.status());
        // One report at a time, each finding the worker at rest: a wake-up per report.
        eventually(5, "the report's usage row", || async {
            let rows = report_to_usage_ms(&db, "wake-").await;
            (rows.len() > i).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ms = report_to_usage_ms(&db, "wake-").await;
    assert_eq!(ms.len(), REPORTS, "every report metered once");
    let p50 = ms[REPORTS / 2];
    let max = ms[REPORTS - 1];
    println!(
        "webhook commit -> usage row: p50 {p50:.1} ms, max {max:.1} ms over {REPORTS} reports"
    );
    assert!(
        !worker.log_text().is_empty(),
        "the worker process logged its start"
    );
    assert!(p50 <= 100.0, "p50 {p50:.1} ms (target 100 ms): {ms:?}");
    assert!(max <= 1500.0, "slowest {max:.1} ms (target 1.5 s): {ms:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webs_three_workers_and_a_clock_fit_a_sixty_connection_server() {
    const REPORTS: usize = 600;
    let (cluster, _stopper) = private_cluster().await;
    let mut admin = PgConnection::connect(&cluster.admin_url())
        .await
        .expect("admin");
    sqlx::query("ALTER SYSTEM SET max_connections = 60")
        .execute(&mut admin)
        .await
        .expect("max_connections");
    drop(admin);
    cluster.restart("fast").await.expect("restart with 60");
    let mut admin = PgConnection::connect(&cluster.admin_url())
        .await
        .expect("admin");
    let max: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&mut admin)
        .await
        .expect("show");
    assert_eq!(max, "60");
    db::create_database_if_missing(
        PgConnection::connect(&cluster.admin_url())
            .await
            .expect("admin"),
        "budget",
    )
    .await
    .expect("database");
    let url = format!("postgres://postgres@127.0.0.1:{}/budget", cluster.port);
    {
        let pool = db::connect(&url, 2).await.expect("pool");
        agent_meter::app::migrate(&pool).await.expect("migrate");
        seed::run(&pool).await.expect("seed");
        pool.close().await;
    }

    // Every process at its default pool: no DATABASE_MAX_CONNECTIONS.
    let vars = |extra: &[(&str, &str)]| {
        let mut v = env_at(&url, "http://127.0.0.1:9", extra);
        v.retain(|(k, _)| k != "DATABASE_MAX_CONNECTIONS");
        v
    };
    let webs = [
        Proc::web_with(vars(&[])).await,
        Proc::web_with(vars(&[])).await,
    ];
    let _workers: Vec<Proc> = (0..3)
        .map(|_| Proc::start(&["worker"], &vars(&[])))
        .collect();
    let _clock = Proc::start(&["clock"], &vars(&[]));

    let connections = || async {
        let mut c = PgConnection::connect(&cluster.admin_url())
            .await
            .expect("an operator's connection");
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = 'budget'")
                .fetch_one(&mut c)
                .await
                .expect("pg_stat_activity");
        n
    };

    // Load the webs and workers hard enough to grow every pool, sampling the connection count.
    let bases = [webs[0].1.as_str(), webs[1].1.as_str()];
    let sending = send_reports(&bases, "budget", REPORTS, 32);
    let sampling = async {
        let mut peak = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        let pool = db::connect(&url, 1).await.expect("pool");
        loop {
            peak = peak.max(connections().await);
            let (rows, _) = usage(&pool, "vapi_call_minutes").await;
            if rows >= REPORTS as i64 || Instant::now() > deadline {
                pool.close().await;
                return (peak, rows);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (answers, (peak, rows)) = tokio::join!(sending, sampling);
    let refused: Vec<&u16> = answers
        .iter()
        .filter(|s| !(200..300).contains(*s))
        .collect();
    assert!(
        refused.is_empty(),
        "{} refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    assert_eq!(rows, REPORTS as i64, "every report metered");

    // Room left: a migration and an operator's session, on top of six busy processes.
    let migrator = db::connect(&url, 1)
        .await
        .expect("a migration's connection");
    agent_meter::app::migrate(&migrator)
        .await
        .expect("migrate beside the deployment");
    let after = connections().await;
    println!(
        "2 web + 3 worker + 1 clock: peak {peak} connections under {REPORTS} reports, \
         {after} with a migrator and an operator (max_connections 60)"
    );
    // The sampler's own connection is one of them.
    assert!(
        peak - 1 <= 49,
        "six processes held {} connections (budget 49 of 60)",
        peak - 1
    );
    migrator.close().await;
}

#[tokio::test]
async fn a_worker_refuses_to_start_on_a_get_jobs_it_did_not_install() {
    use agent_meter::store::queue::{QueueSchemaError, check_schema};
    let db = TestDb::seeded().await;
    check_schema(&db.pool)
        .await
        .expect("a fresh database passes");

    // What an apalis upgrade re-running its own migration would leave: apalis's 1.0 body.
    let original = include_str!("../../migrations/20261128000007_queue_scaling.down.sql");
    sqlx::raw_sql(sqlx::AssertSqlSafe(original))
        .execute(&db.pool)
        .await
        .expect("apalis's own get_jobs, and no trigger");
    let e = check_schema(&db.pool).await.expect_err("drift is refused");
    assert!(matches!(e, QueueSchemaError::GetJobsDrift { .. }), "{e}");
    let message = e.to_string();
    assert_has(
        &message,
        "apalis.get_jobs is not the body migration 20261204000035_queue_cost",
    );

    // The process says so and stops, rather than fetching with a body nobody reviewed.
    let mut worker = Proc::start(&["worker"], &env(&db, "http://127.0.0.1:9", &[]));
    let status = tokio::time::timeout(Duration::from_secs(30), worker.child.wait())
        .await
        .expect("the worker stops by itself")
        .expect("exit status");
    assert!(!status.success(), "{status}");
    assert!(
        worker
            .log_text()
            .contains("apalis.get_jobs is not the body"),
        "{}",
        worker.log_text()
    );

    // Back to our get_jobs, but without our trigger: named too.
    let up = include_str!("../../migrations/20261204000035_queue_cost.up.sql");
    let get_jobs = &up[up
        .find("CREATE OR REPLACE FUNCTION apalis.get_jobs")
        .expect("fn")..];
    sqlx::raw_sql(sqlx::AssertSqlSafe(get_jobs))
        .execute(&db.pool)
        .await
        .expect("our get_jobs again");
    let e = check_schema(&db.pool).await.expect_err("no trigger");
    assert!(matches!(e, QueueSchemaError::MissingTrigger), "{e}");
}
