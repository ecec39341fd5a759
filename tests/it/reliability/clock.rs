//! Check 4: clock races. Two clock processes (two pools, as two processes would have) tick for the
//! same day and month at once, 20 times over: each time exactly one sync job and one invoice
//! rollup job win, each sync fans out one job per slice of the day, and the worker leaves one invoice per
//! agent per month.

use std::sync::Arc;

use agent_meter::{app::clock, jobs::Deps, store::db};
use chrono::{Duration as Days, TimeZone, Utc};

use crate::helpers::*;

const ROUNDS: usize = 20;

#[tokio::test]
async fn two_clocks_racing_twenty_times_give_one_sync_and_one_invoice_each_time() {
    let db = TestDb::seeded().await;
    // Billing starts with the first month the races roll up (ticks from 2025-02 roll up 2025-01),
    // so each agent's setup fee lands on that month's invoice.
    db.execute("UPDATE agents SET billing_starts_on = '2025-01-01'")
        .await;
    let mocks = Mocks::start().await;
    vapi_lists(&mocks, serde_json::json!([])).await;
    let vars = mocks.config();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = Arc::new(test_config(&borrowed));
    let clock_a = Deps::new(
        db::connect(&db.url, 4).await.expect("pool a"),
        config.clone(),
    );
    let clock_b = Deps::new(
        db::connect(&db.url, 4).await.expect("pool b"),
        config.clone(),
    );

    let mut wins = Vec::new();
    for r in 0..ROUNDS {
        let day = Utc
            .with_ymd_and_hms(2026, 6, 1, 10, 0, 0)
            .single()
            .expect("day")
            + Days::days(r as i64);
        let first = chrono::NaiveDate::from_ymd_opt(2025, 2, 1).expect("month");
        let month = first
            .checked_add_months(chrono::Months::new(r as u32))
            .expect("month")
            .and_hms_opt(9, 0, 0)
            .expect("time")
            .and_utc();
        let (sa, sb, ia, ib) = tokio::join!(
            clock::enqueue_tick(&clock_a, "sync_calls", day),
            clock::enqueue_tick(&clock_b, "sync_calls", day),
            clock::enqueue_tick(&clock_a, "invoice_rollup", month),
            clock::enqueue_tick(&clock_b, "invoice_rollup", month),
        );
        let won = |a: anyhow::Result<bool>, b: anyhow::Result<bool>| {
            usize::from(a.expect("clock a")) + usize::from(b.expect("clock b"))
        };
        wins.push((won(sa, sb), won(ia, ib)));
    }
    assert!(
        wins.iter().all(|w| *w == (1, 1)),
        "one winner per race: {wins:?}"
    );

    let mut app = TestApp::spawn_on(
        db,
        agent_meter::app::Roles {
            web: false,
            worker: true,
            clock: false,
        },
        &borrowed,
    )
    .await;
    let expected = (ROUNDS * 5) as i64;
    eventually(90, "every rollup and sync to finish", || async {
        let left: i64 = app
            .db
            .count("SELECT count(*) FROM apalis.jobs WHERE status <> 'Done' AND job_type IN ('sync_calls', 'invoice_rollup')")
            .await;
        (left == 0).then_some(())
    })
    .await;
    // Per kind: the clock's jobs (one per day or month), then the slices of the days they fanned
    // out to.
    let per_kind: Vec<(String, i64)> = app
        .db
        .rows(
            "SELECT job_type || CASE WHEN idempotency_key ~ '^vapi-sync:[0-9-]+:'
                                    THEN ' per slice' ELSE '' END AS kind,
                    count(*)
               FROM apalis.jobs WHERE job_type IN ('sync_calls', 'invoice_rollup')
              GROUP BY 1 ORDER BY 1",
        )
        .await;
    let invoices = app.db.count("SELECT count(*) FROM invoices").await;
    let pairs = app
        .db
        .count("SELECT count(DISTINCT (agent_id, period_start)) FROM invoices")
        .await;
    let setup_fees = app
        .db
        .count("SELECT count(*) FROM invoice_lines WHERE metric_type = 'setup_fee'")
        .await;
    println!(
        "reliability 4: {ROUNDS} races of two clocks: winners per race {:?}; jobs {per_kind:?}; \
         invoices {invoices} ({pairs} agent-months); setup fees {setup_fees}",
        wins[0]
    );
    assert_eq!(
        per_kind,
        [
            ("invoice_rollup".to_string(), ROUNDS as i64),
            ("sync_calls".to_string(), ROUNDS as i64),
            (
                "sync_calls per slice".to_string(),
                (ROUNDS * usize::from(agent_meter::jobs::sync_calls::SLICES)) as i64
            ),
        ]
    );
    assert_eq!((invoices, pairs), (expected, expected));
    assert_eq!(setup_fees, 5, "the setup fee once per agent, ever");
    app.shutdown().await;
}
