//! Check 8: SIGTERM to a worker process with 20 jobs in flight: it finishes them and exits, none
//! is left `Running` for orphan rescue, and nothing is paid for or billed twice.

use std::time::{Duration, Instant};

use super::support::*;
use crate::helpers::*;

#[tokio::test]
async fn sigterm_with_twenty_jobs_in_flight_leaves_none_running() {
    let db = TestDb::seeded().await;
    let gemini = NumberedGemini::start(Duration::from_secs(2)).await;
    enqueue_scans(&db.pool, 0..20).await;
    let env = env(
        &db,
        &gemini.url,
        &[
            ("WORKER_CONCURRENCY", "20"),
            ("DATABASE_MAX_CONNECTIONS", "30"),
            ("JOB_TIMEOUT_SECS", "5"),
            ("WORKER_HEARTBEAT_SECS", "2"),
            ("WORKER_MISSED_HEARTBEATS", "3"),
        ],
    );
    let mut worker = Proc::start(&["worker"], &env);
    eventually(30, "20 scans in flight", || async {
        (gemini.count() >= 20).then_some(())
    })
    .await;
    let asked = Instant::now();
    worker.term();
    let status = tokio::time::timeout(Duration::from_secs(15), worker.child.wait())
        .await
        .expect("the worker exits within 15 s of SIGTERM")
        .expect("exit status");
    let exit_after = asked.elapsed();
    let left: i64 = db
        .count("SELECT count(*) FROM apalis.jobs WHERE status IN ('Running', 'Queued')")
        .await;
    let done = done(&db.pool, "solar_ocr_scan").await;
    let (rows, distinct) = usage(&db.pool, "solar_ocr_scan").await;
    println!(
        "reliability 8: SIGTERM with 20 in flight: exited {status} after {:.1} s; left running {left}; \
         done {done}; usage rows {rows} ({distinct} distinct); Gemini calls {}",
        exit_after.as_secs_f64(),
        gemini.count()
    );
    assert!(status.success(), "{status}");
    assert_eq!(left, 0, "jobs left for orphan rescue");
    assert_eq!(done, 20, "in-flight jobs finish before the worker exits");
    assert_eq!((rows, distinct), (20, 20));
    assert_eq!(gemini.count(), 20, "no scan paid for twice");
}
