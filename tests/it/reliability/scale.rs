//! Check 7: scale-out. Three worker processes and two web processes on one database share 3,000
//! end-of-call reports: each is metered once, and every worker does a share of the work.

use std::time::{Duration, Instant};

use super::support::*;
use crate::helpers::*;

const REPORTS: usize = 3000;

#[tokio::test]
async fn three_workers_and_two_webs_share_three_thousand_jobs() {
    let db = TestDb::seeded().await;
    let webs = [Proc::web(&db).await, Proc::web(&db).await];
    let workers: Vec<Proc> = (0..3)
        .map(|_| {
            Proc::start(
                &["worker"],
                &env(&db, "http://127.0.0.1:9", &[("WORKER_CONCURRENCY", "4")]),
            )
        })
        .collect();

    let started = Instant::now();
    let answers = send_reports(&[&webs[0].1, &webs[1].1], "scale", REPORTS, 16).await;
    let accepted = answers.iter().filter(|s| (200..300).contains(*s)).count();
    assert_eq!(
        accepted,
        REPORTS,
        "every report accepted: {:?}",
        answers
            .iter()
            .filter(|s| !(200..300).contains(*s))
            .take(5)
            .collect::<Vec<_>>()
    );

    let deadline = Duration::from_secs(120);
    loop {
        let (rows, _) = usage(&db.pool, "vapi_call_minutes").await;
        if rows >= REPORTS as i64 {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "only {rows} of {REPORTS} metered after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let (rows, distinct) = usage(&db.pool, "vapi_call_minutes").await;
    let jobs = statuses(&db.pool, "meter_call").await;
    for w in &workers {
        w.term();
    }
    let mut shares = Vec::new();
    for mut w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(15), w.child.wait()).await;
        shares.push(written_by(&w));
    }
    drop(webs);
    println!(
        "reliability 7: {REPORTS} reports through 2 webs, 3 workers: metered in {:.1} s; usage rows {rows} \
         ({distinct} distinct); jobs {jobs:?}; metered per worker {shares:?}",
        elapsed.as_secs_f64()
    );
    assert_eq!((rows, distinct), (REPORTS as i64, REPORTS as i64));
    assert_eq!(jobs, [("Done".to_string(), REPORTS as i64)]);
    assert_eq!(
        shares.iter().sum::<usize>(),
        REPORTS,
        "every metered row logged by one worker"
    );
    assert!(
        shares.iter().all(|n| *n >= REPORTS / 10),
        "the work is spread across all workers: {shares:?}"
    );
}

/// How many usage rows a worker process wrote, from its JSON log.
fn written_by(w: &Proc) -> usize {
    w.log_text()
        .lines()
        .filter(|l| l.contains("\"message\":\"metered\"") && l.contains("\"written\":true"))
        .count()
}
