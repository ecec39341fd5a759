//! The schema: tenancy shape, the seed's query, seeds, and the tested down migration.

use agent_meter::store::{db, seed};
use rust_decimal::Decimal;
use serde_json::json;

use crate::helpers::*;

/// Every tenant table: those the tenancy tests populate, and the raw webhook events.
fn tenant_tables() -> impl Iterator<Item = &'static str> {
    crate::tenancy::TENANT_TABLES
        .iter()
        .copied()
        .chain(["webhook_events"])
}

/// The design document's "Monthly cost per agent" query, verbatim.
const SEED_MONTHLY_COST: &str = r#"
SELECT 
  a.agency_name,
  a.phone_number,
  COUNT(*) FILTER (WHERE metric_type = 'solar_ocr_scan') as ocr_scans,
  SUM(cost_usd) as total_cost_usd
FROM agents a
LEFT JOIN agent_usage_metrics aum ON a.id = aum.agent_id
WHERE aum.created_at >= date_trunc('month', NOW())
GROUP BY a.id, a.agency_name;
"#;

#[tokio::test]
async fn the_seed_documents_monthly_cost_query_runs_unchanged() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    // The rows and the query share one transaction, so the query's NOW() is the rows'
    // created_at: the month they were made in is the month it reads, even across 00:00 UTC on
    // the 1st.
    let mut tx = db.pool.begin().await.expect("tx");
    for (metric, key, qty, price) in [
        ("solar_ocr_scan", "s1", 1, "0.075"),
        ("solar_ocr_scan", "s2", 1, "0.075"),
        ("solar_ocr_scan", "s3", 1, "0.075"),
        ("vapi_call_minutes", "c1", 2, "0.20"),
    ] {
        sqlx::query(
            "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                              occurred_at, idempotency_key, created_at)
             VALUES ($1, $2, $3, $4::numeric, $3 * $4::numeric, now(), $5, now())",
        )
        .bind(agent)
        .bind(metric)
        .bind(Decimal::from(qty))
        .bind(price)
        .bind(key)
        .execute(&mut *tx)
        .await
        .expect("usage row");
    }
    let rows: Vec<(String, Option<String>, i64, Option<Decimal>)> =
        sqlx::query_as(SEED_MONTHLY_COST)
            .fetch_all(&mut *tx)
            .await
            .expect("seed query runs");
    tx.rollback().await.expect("rollback");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "Flagstaff Family Insurance");
    assert_eq!(rows[0].1.as_deref(), Some("+19285550101"));
    assert_eq!(rows[0].2, 3);
    assert_eq!(rows[0].3, Some(Decimal::new(625, 3)));
}

#[tokio::test]
async fn seeds_are_idempotent_and_hold_the_documented_prices() {
    let db = TestDb::seeded().await;
    seed::run(&db.pool).await.expect("second seed");
    assert_eq!(db.count("SELECT count(*) FROM agents").await, 5);
    assert_eq!(
        db.count("SELECT count(*) FROM agents WHERE phone_number LIKE '+1928%' AND vapi_phone_number_id IS NOT NULL")
            .await,
        5
    );
    let prices: Vec<(String, String, Decimal, chrono::NaiveDate)> = db
        .rows(
            "SELECT metric_type, unit, unit_price_usd, effective_from FROM pricing_config
              ORDER BY metric_type",
        )
        .await;
    let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("date");
    let d = |s: &str| s.parse::<Decimal>().expect("decimal");
    // The subscription, the setup fee and minutes as the design document prices them; each
    // registered tool has its seeded price (its own, from seeds/prices.sql), and nothing else.
    let (tools, others): (Vec<_>, Vec<_>) = prices.into_iter().partition(|p| {
        agent_meter::tools::registry()
            .iter()
            .any(|t| t.metric == p.0)
    });
    assert_eq!(
        others,
        vec![
            ("setup_fee".into(), "once".into(), d("500.00"), day),
            ("subscription".into(), "month".into(), d("249.00"), day),
            ("vapi_call_minutes".into(), "minute".into(), d("0.20"), day),
        ]
    );
    let mut seeded: Vec<&str> = tools.iter().map(|p| p.0.as_str()).collect();
    let mut registered: Vec<&str> = agent_meter::tools::registry()
        .iter()
        .map(|t| t.metric)
        .collect();
    seeded.sort_unstable();
    registered.sort_unstable();
    assert_eq!(seeded, registered, "one seeded price per tool");
    assert!(
        tools.iter().all(|p| p.3 == day && !p.2.is_sign_negative()),
        "{tools:?}"
    );
}

#[tokio::test]
async fn every_tenant_table_has_agent_id_rls_and_tenant_scoped_uniques() {
    let db = TestDb::seeded().await;
    for table in tenant_tables().chain(["agents"]) {
        let rls: bool = db
            .scalar_with(
                "SELECT relrowsecurity FROM pg_class WHERE relname = $1",
                table,
            )
            .await;
        assert!(rls, "RLS enabled on {table}");
    }
    for table in tenant_tables() {
        // Every UNIQUE constraint (not the primary key) includes agent_id.
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT c.conname::text FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
              WHERE t.relname = $1 AND c.contype = 'u'
                AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                 WHERE a.attrelid = t.oid AND a.attname = 'agent_id'
                                   AND a.attnum = ANY (c.conkey))",
        )
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .expect("constraints");
        // The one exception, on purpose: a Vapi call id is Vapi's, global, and a call has one
        // owner (issue 22): the service's own writes (never a tenant's) meet it.
        let missing: Vec<String> = missing
            .into_iter()
            .filter(|c| c != "calls_one_owner_per_call")
            .collect();
        assert!(
            missing.is_empty(),
            "{table}: unique without agent_id: {missing:?}"
        );
        // Every foreign key other than the one to agents (or to shared reference data, the
        // finding kinds) is composite and starts with agent_id.
        let bad_fks: Vec<String> = sqlx::query_scalar(
            "SELECT c.conname::text FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
              WHERE t.relname = $1 AND c.contype = 'f'
                AND c.confrelid NOT IN ('agents'::regclass, 'finding_kinds'::regclass)
                AND NOT (array_length(c.conkey, 1) = 2 AND EXISTS (
                    SELECT 1 FROM pg_attribute a WHERE a.attrelid = t.oid
                      AND a.attname = 'agent_id' AND a.attnum = c.conkey[1]))",
        )
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .expect("fks");
        assert!(
            bad_fks.is_empty(),
            "{table}: non-composite foreign keys {bad_fks:?}"
        );
    }
}

#[tokio::test]
async fn a_tenant_cannot_point_at_another_tenants_row() {
    let db = TestDb::seeded().await;
    let a1 = db.agent_id(PHONE_1).await;
    let a2 = db.agent_id(PHONE_2).await;
    let lead: uuid::Uuid = db
        .scalar_with(
            "INSERT INTO leads (agent_id, phone) VALUES ($1, '+16025550100') RETURNING id",
            a1,
        )
        .await;
    let cross = sqlx::query("INSERT INTO tags (agent_id, lead_id, tag) VALUES ($1, $2, 'solar')")
        .bind(a2)
        .bind(lead)
        .execute(&db.pool)
        .await;
    let err = cross.expect_err("cross-tenant reference must fail");
    assert!(err.to_string().contains("foreign key"), "{err}");
    // The same phone may be a lead of two agents.
    sqlx::query("INSERT INTO leads (agent_id, phone) VALUES ($1, '+16025550100')")
        .bind(a2)
        .execute(&db.pool)
        .await
        .expect("same phone, other tenant");
}

#[tokio::test]
async fn usage_idempotency_key_is_unique_per_agent_and_metric() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let insert = || {
        sqlx::query(
            "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                              occurred_at, idempotency_key, metadata)
             VALUES ($1, 'solar_ocr_scan', 1, 0.075, 0.075, now(), 'tool:abc', $2)",
        )
        .bind(agent)
        .bind(json!({"k": 1}))
        .execute(&db.pool)
    };
    insert().await.expect("first");
    let second = insert().await.expect_err("duplicate key");
    assert!(agent_meter::store::is_unique_violation(&second));
}

#[tokio::test]
async fn the_down_migration_removes_our_schema_and_up_restores_it() {
    let db = TestDb::seeded().await;
    db::MIGRATOR.undo(&db.pool, 0).await.expect("down");
    let left: i64 = db
        .scalar(
            "SELECT count(*) FROM information_schema.tables
          WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        )
        .await;
    assert_eq!(left, 0, "down left tables behind");
    // The queue schema is apalis's own: its rows are untouched, our speed-ups undone.
    assert_eq!(db.count("SELECT count(*) FROM apalis.jobs").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM pg_trigger WHERE tgname = 'agent_meter_release_finished'")
            .await,
        0
    );
    agent_meter::app::migrate(&db.pool).await.expect("up again");
    seed::run(&db.pool).await.expect("seed again");
    assert_eq!(db.count("SELECT count(*) FROM agents").await, 5);
    assert!(db::is_ready(&db.pool).await.expect("ready check"));
}

#[tokio::test]
async fn migrate_is_safe_to_run_twice_and_concurrently() {
    let db = TestDb::empty().await;
    let (a, b) = tokio::join!(agent_meter::app::migrate(&db.pool), db::migrate(&db.pool));
    a.expect("first");
    b.expect("second");
    agent_meter::app::migrate(&db.pool).await.expect("third");
    assert!(db::is_ready(&db.pool).await.expect("ready"));
}

#[tokio::test]
async fn the_queue_fetch_keeps_apalis_order_and_finished_jobs_let_go_of_their_worker() {
    let db = TestDb::seeded().await;
    let pool = &db.pool;
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('w1', 'q', 'PostgresStorage', '', now())",
    )
    .execute(pool)
    .await
    .expect("worker");
    // Oldest first within a priority, higher priority first; the future and the locked wait.
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, run_at, priority, max_attempts) VALUES
           ('old',    'q', '\\x00', 'Pending', now() - interval '3 s', 0, 5),
           ('newer',  'q', '\\x00', 'Pending', now() - interval '2 s', 0, 5),
           ('urgent', 'q', '\\x00', 'Pending', now() - interval '1 s', 1, 5),
           ('later',  'q', '\\x00', 'Pending', now() + interval '1 h', 9, 5),
           ('retry',  'q', '\\x00', 'Failed',  now() - interval '4 s', 0, 5),
           ('spent',  'q', '\\x00', 'Failed',  now() - interval '5 s', 0, 0),
           ('other',  'r', '\\x00', 'Pending', now() - interval '9 s', 0, 5)",
    )
    .execute(pool)
    .await
    .expect("jobs");
    let fetch = |n: i32| {
        sqlx::query_scalar::<_, String>("SELECT id FROM apalis.get_jobs('w1', 'q', $1)")
            .bind(n)
            .fetch_all(pool)
    };
    let mut first = fetch(2).await.expect("fetch");
    first.sort();
    assert_eq!(first, ["retry", "urgent"]);
    let mut rest = fetch(10).await.expect("fetch");
    rest.sort();
    assert_eq!(rest, ["newer", "old"]);
    assert!(fetch(10).await.expect("fetch").is_empty());
    // Fetched is running (migration 0035): no second update per job to say it started.
    let running = db
        .count("SELECT count(*) FROM apalis.jobs WHERE status = 'Running' AND lock_by = 'w1'")
        .await;
    assert_eq!(running, 4);

    db.execute(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() WHERE id IN ('old', 'retry')",
    )
    .await;
    db.execute("UPDATE apalis.jobs SET status = 'Failed' WHERE id = 'newer'")
        .await;
    let held: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, lock_by FROM apalis.jobs WHERE job_type = 'q' AND lock_at IS NOT NULL ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("jobs");
    assert_eq!(
        held,
        [
            ("newer".to_string(), Some("w1".to_string())),
            ("old".to_string(), None),
            ("retry".to_string(), None),
            ("urgent".to_string(), Some("w1".to_string())),
        ],
        "finished jobs release the worker; retryable and running ones keep it for orphan rescue"
    );
}

#[tokio::test]
async fn finished_runs_are_recorded_in_one_statement_and_only_for_the_worker_holding_them() {
    use agent_meter::store::queue::{RunResult, record_results};
    use apalis_core::task::{status::Status, task_id::TaskId};
    let db = TestDb::seeded().await;
    db.execute(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('w1', 'q', 'PostgresStorage', '', now()), ('w2', 'q', 'PostgresStorage', '', now())",
    )
    .await;
    db.execute(
        "INSERT INTO apalis.jobs (id, job_type, job, status, lock_by, lock_at, max_attempts) VALUES
           ('ok',     'q', '\\x00', 'Running', 'w1', now(), 5),
           ('again',  'q', '\\x00', 'Running', 'w1', now(), 5),
           ('killed', 'q', '\\x00', 'Running', 'w1', now(), 5),
           ('moved',  'q', '\\x00', 'Running', 'w2', now(), 5)",
    )
    .await;
    let run = |id: &str, status: Status, result: Result<serde_json::Value, String>| RunResult {
        task_id: TaskId::String(id.to_string()),
        attempt: 1,
        status,
        result,
    };
    let results = [
        run("ok", Status::Done, Ok(serde_json::Value::Null)),
        run("again", Status::Failed, Err("HTTP 503".into())),
        run("killed", Status::Killed, Err("no price".into())),
        // Rescued and taken by another worker meanwhile: not ours to record.
        run("moved", Status::Done, Ok(serde_json::Value::Null)),
    ];
    let refs: Vec<&RunResult> = results.iter().collect();
    let mut conn = db.pool.acquire().await.expect("conn");
    let updated = record_results(&mut conn, "w1", &refs)
        .await
        .expect("record");
    assert_eq!(updated, 3);
    let rows: Vec<(String, String, i32, Option<String>, serde_json::Value, bool)> = sqlx::query_as(
        "SELECT id, status, attempts, lock_by, coalesce(last_result, 'null'), done_at IS NOT NULL
           FROM apalis.jobs WHERE job_type = 'q' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("jobs");
    let w1 = Some("w1".to_string());
    let w2 = Some("w2".to_string());
    assert_eq!(
        rows,
        [
            (
                "again".into(),
                "Failed".into(),
                1,
                w1,
                serde_json::json!({"Err": "HTTP 503"}),
                true
            ),
            (
                "killed".into(),
                "Killed".into(),
                1,
                None,
                serde_json::json!({"Err": "no price"}),
                true
            ),
            (
                "moved".into(),
                "Running".into(),
                0,
                w2,
                serde_json::Value::Null,
                false
            ),
            (
                "ok".into(),
                "Done".into(),
                1,
                None,
                serde_json::json!({"Ok": null}),
                true
            ),
        ]
    );
}

/// Migration 0020 gives findings written before it their call, from the tool-calls message
/// that asked for them; a finding whose message is gone keeps none.
#[tokio::test]
async fn findings_from_before_calls_were_recorded_get_their_call_from_the_stored_message() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let message = json!({"message": {"type": "tool-calls",
        "call": {"id": "call-old", "phoneNumberId": PHONE_1},
        "toolCallList": [{"id": "tc-old-1", "name": "solar_ocr_scan", "arguments": {}},
                         {"id": "tc-old-2", "name": "water_lookup", "arguments": {}}]}});
    sqlx::query(
        "INSERT INTO webhook_events (agent_id, dedupe_key, message_type, vapi_call_id, routing, payload)
         VALUES ($1, 'old-tool-calls', 'tool-calls', 'call-old', 'routed', $2)",
    )
    .bind(agent)
    .bind(&message)
    .execute(&db.pool)
    .await
    .expect("event");
    sqlx::query(
        "INSERT INTO risk_assessments (agent_id, kind, result, idempotency_key)
         VALUES ($1, 'solar', '{}', 'tool_call:tc-old-1'), ($1, 'water', '{}', 'tool_call:tc-old-2'),
                ($1, 'water', '{}', 'tool_call:tc-forgotten')",
    )
    .bind(agent)
    .execute(&db.pool)
    .await
    .expect("findings");
    db::MIGRATOR
        .undo(&db.pool, 20261201000019)
        .await
        .expect("down to 0019");
    agent_meter::app::migrate(&db.pool).await.expect("up again");
    let calls: Vec<(String, Option<String>)> = db
        .rows("SELECT idempotency_key, vapi_call_id FROM risk_assessments ORDER BY idempotency_key")
        .await;
    assert_eq!(
        calls,
        vec![
            ("tool_call:tc-forgotten".to_string(), None),
            (
                "tool_call:tc-old-1".to_string(),
                Some("call-old".to_string())
            ),
            (
                "tool_call:tc-old-2".to_string(),
                Some("call-old".to_string())
            ),
        ]
    );
}
