//! The worker: metering through the real queue, retries with real backoff, names, shutdown.

use std::{sync::Arc, time::Duration};

use agent_meter::{
    jobs::supervise as worker,
    jobs::{self, Deps, Job, JobError, meter_call::MeterCall},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::helpers::*;

#[tokio::test]
async fn end_of_call_report_meters_minutes_at_the_price_in_force() {
    let app = TestApp::spawn().await;
    app.post(&end_of_call_report("call-m", PHONE_1)).await;
    let agent = app.db.agent_id(PHONE_1).await;
    let row: (
        uuid::Uuid,
        String,
        Decimal,
        Decimal,
        Decimal,
        Option<Decimal>,
        String,
    ) = app
        .db
        .row_within(
            10,
            "the usage row",
            "SELECT agent_id, metric_type, quantity, unit_price_usd, cost_usd, provider_cost_usd,
                        idempotency_key FROM agent_usage_metrics",
        )
        .await;
    assert_eq!(row.0, agent);
    assert_eq!(row.1, "vapi_call_minutes");
    assert_eq!(row.2, Decimal::new(25, 1), "150 s is 2.5 minutes");
    assert_eq!(row.3, Decimal::new(20, 2));
    assert_eq!(row.4, Decimal::new(5, 1));
    assert_eq!(row.5, Some(Decimal::new(42, 2)));
    assert_eq!(row.6, "vapi_call:call-m");
}

#[tokio::test]
async fn minutes_keep_six_decimals_and_duration_seconds_is_the_fallback() {
    let app = TestApp::spawn().await;
    let mut report = end_of_call_report("call-6dp", PHONE_1);
    // Without timestamps, Vapi's older durationSeconds is taken.
    let message = report["message"].as_object_mut().expect("message");
    message.remove("startedAt");
    message.remove("endedAt");
    message.insert("durationSeconds".into(), json!(61));
    app.post(&report).await;
    let quantity: Decimal = app
        .db
        .scalar_within(
            10,
            "the usage row",
            "SELECT quantity FROM agent_usage_metrics",
        )
        .await;
    assert_eq!(quantity, Decimal::new(1_016_667, 6));
}

#[tokio::test]
async fn price_comes_from_the_call_end_time_and_agent_override_wins() {
    let app = TestApp::spawn().await;
    let agent2 = app.db.agent_id(PHONE_2).await;
    // A new default price from 2026-12-01, and an override for agent 2 in November.
    app.db
        .execute(
            "UPDATE pricing_config SET effective_to = DATE '2026-12-01'
          WHERE metric_type = 'vapi_call_minutes' AND agent_id IS NULL;
         ",
        )
        .await;
    sqlx::query(
        "INSERT INTO pricing_config (metric_type, unit, unit_price_usd, effective_from, agent_id)
         VALUES ('vapi_call_minutes', 'minute', 0.30, DATE '2026-12-01', NULL),
                ('vapi_call_minutes', 'minute', 0.10, DATE '2026-11-01', $1)",
    )
    .bind(agent2)
    .execute(&app.db.pool)
    .await
    .expect("new prices");

    let mut december = end_of_call_report("call-dec", PHONE_1);
    december["message"]["startedAt"] = json!("2026-12-02T17:00:00Z");
    december["message"]["endedAt"] = json!("2026-12-02T17:01:00Z");
    app.post(&end_of_call_report("call-nov", PHONE_1)).await;
    app.post(&december).await;
    app.post(&end_of_call_report("call-agent2", PHONE_2)).await;
    drain(&app.db.pool, 15).await;
    let prices: Vec<(String, Decimal)> = app
        .db
        .rows(
            "SELECT idempotency_key, unit_price_usd FROM agent_usage_metrics
              ORDER BY idempotency_key",
        )
        .await;
    assert_eq!(
        prices,
        vec![
            ("vapi_call:call-agent2".into(), Decimal::new(10, 2)),
            ("vapi_call:call-dec".into(), Decimal::new(30, 2)),
            ("vapi_call:call-nov".into(), Decimal::new(20, 2)),
        ]
    );
}

#[tokio::test]
async fn the_same_call_metered_by_many_jobs_is_billed_once() {
    let app = TestApp::spawn().await;
    app.post(&end_of_call_report("call-many", PHONE_1)).await;
    let job = MeterCall {
        agent_id: app.db.agent_id(PHONE_1).await,
        vapi_call_id: "call-many".into(),
    };
    for _ in 0..10 {
        jobs::enqueue_now(&app.db.pool, &job, None)
            .await
            .expect("enqueue");
    }
    drain(&app.db.pool, 20).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM apalis.jobs WHERE status = 'Done'")
            .await,
        11
    );
    assert_eq!(app.db.count(USAGE_ROWS).await, 1);
}

#[tokio::test]
async fn a_missing_price_kills_the_job_with_its_reason_and_bills_nothing() {
    let app = TestApp::spawn().await;
    app.db
        .execute("DELETE FROM pricing_config WHERE metric_type = 'vapi_call_minutes'")
        .await;
    app.post(&end_of_call_report("call-noprice", PHONE_1)).await;
    let (status, attempts, result): (String, i32, serde_json::Value) = app
        .db
        .row_within(
            10,
            "the job to be killed",
            "SELECT status, attempts, last_result FROM apalis.jobs WHERE status = 'Killed'",
        )
        .await;
    assert_eq!((status.as_str(), attempts), ("Killed", 1));
    assert!(
        result.to_string().contains("no vapi_call_minutes price"),
        "{result}"
    );
    assert_eq!(app.db.count(USAGE_ROWS).await, 0);
}

/// Records each run in `test_runs`; fails transiently while fewer than `fail_times` runs are recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    key: String,
    fail_times: i64,
}

impl Job for Flaky {
    const QUEUE: &'static str = "test_flaky";
    const MAX_ATTEMPTS: usize = 3;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let runs: i64 = sqlx::query_scalar(
            "WITH ins AS (INSERT INTO test_runs (key) VALUES ($1) RETURNING 1)
             SELECT count(*) + 1 FROM test_runs WHERE key = $1",
        )
        .bind(&self.key)
        .fetch_one(&deps.pool)
        .await?;
        if runs <= self.fail_times {
            return Err(JobError::Transient(format!("planned failure {runs}")));
        }
        Ok(())
    }
}

/// Sleeps, then records that it finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slow {
    key: String,
    millis: u64,
}

impl Job for Slow {
    const QUEUE: &'static str = "test_slow";
    const MAX_ATTEMPTS: usize = 3;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        sqlx::query("INSERT INTO test_runs (key) VALUES ($1)")
            .bind(&self.key)
            .execute(&deps.pool)
            .await?;
        Ok(())
    }
}

async fn test_deps() -> (TestDb, Deps) {
    test_deps_with(&[]).await
}

/// [`test_deps`] with settings of its own (`extra`, as for [`test_config`]).
async fn test_deps_with(extra: &[(&str, &str)]) -> (TestDb, Deps) {
    let db = TestDb::seeded().await;
    db.execute(
        "CREATE TABLE test_runs (key text NOT NULL,
                                 at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .await;
    let deps = Deps::new(db.pool.clone(), Arc::new(test_config(extra)));
    (db, deps)
}

#[tokio::test]
async fn a_transient_failure_is_retried_after_a_real_persisted_backoff() {
    let (db, deps) = test_deps().await;
    let (stop, shutdown) = watch::channel(false);
    let w = tokio::spawn(worker::supervise::<Flaky>(deps.clone(), shutdown));
    jobs::enqueue_now(
        &db.pool,
        &Flaky {
            key: "f".into(),
            fail_times: 1,
        },
        None,
    )
    .await
    .expect("enqueue");
    // After the first failure the job waits with run_at in the future (5-6 s), visible to ops.
    // Measured from the failure's own record (written just before the retry is deferred), not from
    // the moment this poll sees it, so a slow machine does not shrink it.
    let delay: f64 = db
        .scalar_within(
            10,
            "the first failure",
            "SELECT EXTRACT(EPOCH FROM j.run_at - f.at)::float8
               FROM apalis.jobs j JOIN job_failures f ON f.job_id = j.id
              WHERE j.status = 'Failed' AND j.attempts = 1",
        )
        .await;
    assert!(
        // 5-6 s of backoff plus the moments between recording the failure and deferring it.
        delay > 3.0 && delay <= 8.0,
        "retry scheduled {delay} s ahead"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM test_runs").await,
        1,
        "no immediate re-run"
    );
    eventually(15, "the retry to succeed", || async {
        let done: i64 = db
            .scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Done'")
            .await;
        (done == 1).then_some(())
    })
    .await;
    let gap: f64 = db
        .scalar("SELECT EXTRACT(EPOCH FROM max(at) - min(at))::float8 FROM test_runs")
        .await;
    assert!(gap >= 4.0, "second run came {gap} s after the first");
    stop.send(true).expect("stop");
    w.await.expect("worker task");
}

/// A job is acked at once whether it ends while its worker is parked (nothing more to fetch, the
/// gate shut) or while the worker is fetching again. apalis reads finished jobs' results only
/// when the worker is woken in its ready state; a job's end wakes it, but a wake-up during a fetch
/// is spent on the fetch, and an empty fetch parks the worker: so an empty fetch looks once more
/// (`jobs::gate` module docs). Without that, an instant job's ack waited for the next heartbeat
/// (60 s here) in three runs of four (eight jobs in turn, each enqueued once the one before is
/// acked; the odd ones end after the worker parked).
#[tokio::test]
async fn a_job_is_acked_at_once_whether_its_worker_is_parked_or_fetching() {
    let (db, deps) = test_deps_with(&[("WORKER_HEARTBEAT_SECS", "60")]).await;
    let (stop, shutdown) = watch::channel(false);
    let w = tokio::spawn(worker::supervise::<Slow>(deps.clone(), shutdown));
    for n in 0..8i64 {
        jobs::enqueue_now(
            &db.pool,
            &Slow {
                key: format!("parked-{n}"),
                // Ends during the fetch that follows its own, or after the worker parked.
                millis: if n % 2 == 0 { 0 } else { 300 },
            },
            None,
        )
        .await
        .expect("enqueue");
        eventually(20, "the ack", || async {
            let done: i64 = db
                .scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = 'test_slow' AND status = 'Done'")
                .await;
            (done == n + 1).then_some(())
        })
        .await;
    }
    // Each job's own record is written as it ends; the ack's done_at is its transaction's start.
    let (runs, lag): (i64, f64) = db
        .row(
            "SELECT count(*), max(EXTRACT(EPOCH FROM j.done_at - r.at))::float8
               FROM apalis.jobs j
               JOIN test_runs r ON r.key = convert_from(j.job, 'UTF8')::jsonb ->> 'key'
              WHERE j.job_type = 'test_slow'",
        )
        .await;
    assert_eq!(runs, 8, "one run per job");
    assert!(lag < 5.0, "a job was acked {lag} s after it ended");
    stop.send(true).expect("stop");
    w.await.expect("worker task");
}

/// A worker stopped while it drains a backlog of quick jobs (fetches grown, the next batch
/// fetched while one runs) leaves nothing `Running`: what it fetched and never started is handed
/// back, and a second worker runs the rest, every job exactly once.
#[tokio::test]
async fn a_worker_stopped_mid_backlog_hands_back_what_it_fetched_ahead() {
    let (db, deps) = test_deps().await;
    let total = 5_000i64;
    let mut tx = db.pool.begin().await.expect("begin");
    for n in 0..total {
        let job = Slow {
            key: format!("backlog-{n}"),
            millis: 0,
        };
        jobs::enqueue(&mut tx, &job, None).await.expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let (stop, shutdown) = watch::channel(false);
    let w = tokio::spawn(worker::supervise::<Slow>(deps.clone(), shutdown));
    eventually(60, "a tenth of the backlog run", || async {
        let runs: i64 = db.scalar("SELECT count(*) FROM test_runs").await;
        (runs >= total / 10).then_some(())
    })
    .await;
    stop.send(true).expect("stop");
    w.await.expect("worker task");
    let (running, done, runs): (i64, i64, i64) = db
        .row(
            "SELECT (SELECT count(*) FROM apalis.jobs WHERE status IN ('Running', 'Queued')),
                    (SELECT count(*) FROM apalis.jobs WHERE status = 'Done'),
                    (SELECT count(*) FROM test_runs)",
        )
        .await;
    assert_eq!(running, 0, "jobs left in the stopped worker's hands");
    assert_eq!(done, runs, "every run acked, nothing acked unrun");
    println!("stopped with {done} of {total} done");
    let (stop, shutdown) = watch::channel(false);
    let w = tokio::spawn(worker::supervise::<Slow>(deps.clone(), shutdown));
    eventually(60, "the rest of the backlog", || async {
        let done: i64 = db
            .scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Done'")
            .await;
        (done == total).then_some(())
    })
    .await;
    stop.send(true).expect("stop");
    w.await.expect("worker task");
    let (runs, keys): (i64, i64) = db
        .row("SELECT count(*), count(DISTINCT key) FROM test_runs")
        .await;
    assert_eq!((runs, keys), (total, total), "every job run exactly once");
}

#[tokio::test]
async fn each_worker_start_takes_a_new_name() {
    let (db, deps) = test_deps().await;
    for started in 1..=2i64 {
        let (stop, shutdown) = watch::channel(false);
        let w = tokio::spawn(worker::supervise::<Slow>(deps.clone(), shutdown));
        eventually(10, "the worker to register", || async {
            let n: i64 = db
                .scalar("SELECT count(*) FROM apalis.workers WHERE worker_type = 'test_slow'")
                .await;
            (n >= started).then_some(())
        })
        .await;
        stop.send(true).expect("stop");
        w.await.expect("worker task");
    }
    let names: Vec<String> = db
        .column("SELECT id FROM apalis.workers WHERE worker_type = 'test_slow'")
        .await;
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test]
async fn a_known_worker_name_is_refused_and_registering_holds_no_lock() {
    let db = TestDb::seeded().await;
    let mut conn = db.pool.acquire().await.expect("conn");
    use agent_meter::store::queue::register_worker;
    register_worker(&mut conn, "test_slow", "twin@1-abc", "layers")
        .await
        .expect("first registration");
    let again = register_worker(&mut conn, "test_slow", "twin@1-abc", "layers").await;
    assert!(
        matches!(again, Err(apalis_postgres::Error::WorkerAlreadyExists(ref n)) if n == "twin@1-abc"),
        "{again:?}"
    );
    // apalis's own statement would have left a session advisory lock on this pooled connection.
    let held: i64 = scalar_on(
        &mut conn,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(held, 0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_jobs_and_leaves_nothing_running() {
    let (db, deps) = test_deps().await;
    let (stop, shutdown) = watch::channel(false);
    let w = tokio::spawn(worker::supervise::<Slow>(deps.clone(), shutdown));
    for i in 0..3 {
        jobs::enqueue_now(
            &db.pool,
            &Slow {
                key: format!("s{i}"),
                millis: 1500,
            },
            None,
        )
        .await
        .expect("enqueue");
    }
    eventually(10, "a job to be running", || async {
        let n: i64 = db
            .scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Running'")
            .await;
        (n > 0).then_some(())
    })
    .await;
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), w)
        .await
        .expect("worker stops")
        .expect("worker task");
    let running = db
        .count("SELECT count(*) FROM apalis.jobs WHERE status IN ('Running', 'Queued')")
        .await;
    assert_eq!(running, 0);
    let done = db
        .count("SELECT count(*) FROM apalis.jobs WHERE status = 'Done'")
        .await;
    let finished = db.count("SELECT count(*) FROM test_runs").await;
    assert!(done >= 1, "the in-flight job finished");
    assert_eq!(done, finished, "every Done job really ran to the end");
}

#[tokio::test]
async fn a_job_that_outlives_its_timeout_is_retried_later_not_at_once() {
    let (db, deps) = test_deps().await;
    let (stop, shutdown) = watch::channel(false);
    let w = tokio::spawn(worker::supervise::<Slow>(deps.clone(), shutdown));
    // The test config's JOB_TIMEOUT_SECS is 3.
    jobs::enqueue_now(
        &db.pool,
        &Slow {
            key: "hung".into(),
            millis: 60_000,
        },
        None,
    )
    .await
    .expect("enqueue");
    let (result, ahead): (serde_json::Value, f64) = db
        .row_within(
            10,
            "the timeout to be recorded",
            "SELECT j.last_result, EXTRACT(EPOCH FROM j.run_at - f.at)::float8
                   FROM apalis.jobs j JOIN job_failures f ON f.job_id = j.id
                  WHERE j.status = 'Failed'",
        )
        .await;
    assert!(result.to_string().contains("timed out"), "{result}");
    assert!(ahead > 3.0, "retry scheduled {ahead} s ahead");
    stop.send(true).expect("stop");
    w.await.expect("worker task");
}

#[tokio::test]
async fn a_retry_is_deferred_by_a_wait_with_nanosecond_digits() {
    // A breaker's remaining open time comes from `Instant`s; sqlx cannot encode such a Duration
    // as an interval, which once left every circuit-open retry undeferred.
    let db = TestDb::seeded().await;
    let id = pending_job(&db.pool).await;
    sqlx::query("UPDATE apalis.jobs SET run_at = now() WHERE id = $1")
        .bind(&id)
        .execute(&db.pool)
        .await
        .expect("due now");
    agent_meter::jobs::defer(&db.pool, &id, Duration::new(26, 354_128_588))
        .await
        .expect("defer");
    let wait: f64 = db
        .scalar_with(
            "SELECT extract(epoch from run_at - now())::float8 FROM apalis.jobs WHERE id = $1",
            &id,
        )
        .await;
    // 26.35 s from the defer, read a moment later (a loaded machine may take a while).
    assert!((24.0..=26.4).contains(&wait), "deferred by {wait} s");
}
