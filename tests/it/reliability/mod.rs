//! The reliability suite (issue 7; failure modes from `shared/notes/reliability.md`). Each check
//! prints its figures (`cargo test reliability -- --nocapture` shows them) and fails on a mismatch.
//!
//! | check | where |
//! | --- | --- |
//! | 1 worker killed mid-job, fail points | `crash` |
//! | 2 PostgreSQL restarted under load | `restart` |
//! | 3 duplicates (100 sequential / concurrent reports, tool call twice, webhook vs sync) | `webhook::hundred_*`, `calls::*duplicate*`, `billing::*sync*` |
//! | 4 clock races x20 | `clock` |
//! | 5 hostile input, forged signatures, slow body | `hostile` |
//! | 6 provider outage with the circuit open, permanent errors | `faults` |
//! | 7 scale-out: 3 workers + 2 webs | `scale` |
//! | 8 SIGTERM with jobs in flight | `shutdown` |
//!
//! Below: a dead worker's jobs rescued after the orphan window; connections killed under a live
//! service.

mod clock;
mod crash;
mod faults;
mod hostile;
mod restart;
mod scale;
mod shutdown;
pub mod support;

use std::time::Duration;

use agent_meter::app::Roles;
use tokio::sync::watch;

use crate::helpers::*;

/// A job locked by a worker whose heartbeat just stopped is re-queued once the configured orphan
/// window (here 2 s x 2) has passed, not before, and completed by a live worker.
#[tokio::test]
async fn jobs_of_a_dead_worker_are_rescued_after_the_orphan_window() {
    let app = TestApp::spawn_web_only().await;
    app.post(&end_of_call_report("call-orphan", PHONE_1)).await;
    // Simulate a worker that took the job and died: registered, silent, job Running under it.
    app.db
        .execute(
            "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('dead-worker', 'meter_call', 'PostgresStorage', '', now())",
        )
        .await;
    app.db
        .execute(
            "UPDATE apalis.jobs SET status = 'Running', lock_by = 'dead-worker', lock_at = now()",
        )
        .await;

    let config = app.config.clone();
    assert_eq!(config.worker.orphan_window(), Duration::from_secs(4));
    let deps = agent_meter::jobs::Deps::new(app.db.pool.clone(), config);
    let (stop, shutdown) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let w = tokio::spawn(agent_meter::jobs::supervise::supervise::<
        agent_meter::jobs::meter_call::MeterCall,
    >(deps, shutdown));
    let lock_by: Option<String> = app
        .db
        .scalar_within(
            20,
            "the orphan to be run to Done",
            "SELECT lock_by FROM apalis.jobs WHERE status = 'Done'",
        )
        .await;
    // Run by the live worker, which let go of the finished job (migration 0007).
    assert_eq!(lock_by, None);
    // Not before the dead worker's heartbeat had been silent for the whole window.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "rescued after {:?}",
        started.elapsed()
    );
    assert_eq!(app.db.count(USAGE_ROWS).await, 1);
    stop.send(true).expect("stop");
    w.await.expect("worker");
}

/// Killing every database connection (as a restart or failover does) must not stop the service:
/// the supervisor restarts the worker under a new name and the web answers again.
#[tokio::test]
async fn service_recovers_by_itself_after_its_connections_are_killed() {
    let mut app = TestApp::spawn_with(
        Roles {
            web: true,
            worker: true,
            clock: false,
        },
        &[],
    )
    .await;
    app.post(&end_of_call_report("call-before", PHONE_1)).await;
    app.db
        .count_reaches(USAGE_ROWS, 1, 10, "the first call to be metered")
        .await;

    // A three-second outage: no new connections, every existing one killed.
    let admin = sqlx::PgPool::connect(&admin_url()).await.expect("admin");
    let allow = |on: bool| {
        let sql = format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {on}", app.db.name);
        let admin = admin.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .expect("alter")
        }
    };
    allow(false).await;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&app.db.name)
    .execute(&admin)
    .await
    .expect("terminate");
    let during = app.post(&end_of_call_report("call-during", PHONE_1)).await;
    assert_eq!(
        during.status(),
        503,
        "an unstorable event is never acknowledged"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    allow(true).await;

    // The web path answers 200 again within seconds (a 503 in between is allowed: never a 200
    // for an unstored event).
    eventually(15, "the webhook to answer 200 again", || async {
        let resp = app.post(&end_of_call_report("call-after", PHONE_1)).await;
        assert!(
            resp.status() == 200 || resp.status() == 503,
            "{}",
            resp.status()
        );
        (resp.status() == 200).then_some(())
    })
    .await;
    eventually(30, "the call after the outage to be metered", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_usage_metrics")
            .fetch_one(&app.db.pool)
            .await
            .ok()?;
        (n == 2).then_some(())
    })
    .await;
    let names = app
        .db
        .count("SELECT count(*) FROM apalis.workers WHERE worker_type = 'meter_call'")
        .await;
    assert!(
        names >= 2,
        "the supervisor restarted the worker under a new name ({names} names)"
    );
    app.shutdown().await;
}
