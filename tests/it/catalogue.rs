//! The job catalogue (`jobs/README.md`, `jobs/schedule.toml`) agrees with the code.

use agent_meter::{app::clock, tools};

#[test]
fn jobs_readme_lists_every_queue() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/README.md"))
        .expect("jobs/README.md");
    let listed: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let mut registered = tools::queues();
    let mut documented = listed.clone();
    registered.sort_unstable();
    documented.sort_unstable();
    assert_eq!(
        documented, registered,
        "jobs/README.md rows vs src/worker.rs"
    );
}

#[test]
fn schedule_parses_and_names_registered_jobs() {
    let schedule = clock::Schedule::parse(clock::SCHEDULE_TOML).expect("schedule.toml is valid");
    assert!(!schedule.entries.is_empty());
    for e in &schedule.entries {
        assert!(
            tools::queues().contains(&e.job.as_str()),
            "{} is not registered",
            e.job
        );
    }
    assert!(clock::Schedule::parse("[[entry]]\njob = \"nope\"\ncron = \"0 0 * * * *\"").is_err());
    assert!(
        clock::Schedule::parse("[[entry]]\njob = \"prune_jobs\"\ncron = \"every day\"").is_err()
    );
}

#[tokio::test]
async fn two_clocks_ticking_at_once_enqueue_one_job() {
    let db = crate::helpers::TestDb::seeded().await;
    let deps = agent_meter::jobs::Deps::new(
        db.pool.clone(),
        std::sync::Arc::new(crate::helpers::test_config(&[])),
    );
    let tick = chrono::DateTime::parse_from_rfc3339("2026-11-28T11:30:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let (a, b) = tokio::join!(
        clock::enqueue_tick(&deps, "prune_jobs", tick),
        clock::enqueue_tick(&deps, "prune_jobs", tick)
    );
    let mut wins = [a.expect("first clock"), b.expect("second clock")];
    wins.sort_unstable();
    assert_eq!(wins, [false, true]);
    assert_eq!(
        db.count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'prune_jobs'")
            .await,
        1
    );
    // The next tick is a new job.
    assert!(
        clock::enqueue_tick(&deps, "prune_jobs", tick + chrono::Duration::days(1))
            .await
            .expect("next")
    );
}

/// The daily housekeeping: old finished jobs go, failed ones stay, and the ledger's daily summary
/// is brought up to date in the billing zone.
#[tokio::test]
async fn prune_jobs_deletes_only_old_finished_jobs() {
    let db = crate::helpers::TestDb::seeded().await;
    let agent = db.agent_id(crate::helpers::PHONE_1).await;
    sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          occurred_at, idempotency_key)
         VALUES ($1, 'solar_ocr_scan', 1, 0.075, 0.075, '2026-11-20T12:00:00Z', 'housekeeping')",
    )
    .bind(agent)
    .execute(&db.pool)
    .await
    .expect("a usage row");
    db.execute(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at,
                                  done_at)
         VALUES ('old-done', 'x', '\\x7b7d', 'Done', 1, 3, now(), now() - interval '30 days'),
                ('new-done', 'x', '\\x7b7d', 'Done', 1, 3, now(), now() - interval '1 day'),
                ('old-failed', 'x', '\\x7b7d', 'Failed', 3, 3, now(), now() - interval '30 days')",
    )
    .await;
    let deps = agent_meter::jobs::Deps::new(
        db.pool.clone(),
        std::sync::Arc::new(crate::helpers::test_config(&[])),
    );
    use agent_meter::jobs::Job;
    agent_meter::jobs::prune_jobs::PruneJobs::default()
        .run(&deps)
        .await
        .expect("prune");
    let left: Vec<String> = db.column("SELECT id FROM apalis.jobs ORDER BY id").await;
    assert_eq!(left, vec!["new-done".to_string(), "old-failed".to_string()]);
    let (zone, summarized, days): (String, bool, Vec<String>) = db
        .row(
            "SELECT t.time_zone, t.through >= (SELECT created_at FROM agent_usage_metrics
                                            WHERE idempotency_key = 'housekeeping'),
                ARRAY(SELECT day::text || ' ' || events FROM usage_daily
                       WHERE time_zone = t.time_zone ORDER BY day)
           FROM usage_daily_through t",
        )
        .await;
    assert_eq!(
        (zone.as_str(), summarized, days),
        ("America/Phoenix", true, vec!["2026-11-20 1".to_string()])
    );
}
