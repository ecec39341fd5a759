//! Monthly rollup benchmark: invoices for N agents from M usage rows, against the plain
//! `GROUP BY` over the same rows, in one run: the draft rollup, finalizing the month, and a second
//! month that also carries late usage of the first (arrived after it was finalized). Also the
//! month's usage report (the ops page's money view) from the ledger alone and through the daily
//! summary, and the summary's first build and its daily bringing up to date.
//!
//! `cargo bench --bench rollup -- [--rows 10000000] [--agents 1000] [--late-percent 1]`
//!
//! The ledger is loaded in one statement with its secondary indexes dropped, then re-indexed and
//! analyzed, so the measured queries see the same indexes production has. The scratch database
//! (on `BENCH_DATABASE_URL`, default `postgres@127.0.0.1:5432`) is dropped at the end.

mod common;

use std::time::{Duration, Instant};

use agent_meter::{
    billing::{self, Month},
    store::{reports, usage_daily},
};

/// Bulk loads run without the ledger's secondary indexes (rebuilt after, as production has them).
async fn drop_indexes(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "ALTER TABLE agent_usage_metrics DROP CONSTRAINT agent_usage_metrics_agent_id_metric_type_idempotency_key_key;
         DROP INDEX agent_usage_metrics_period; DROP INDEX agent_usage_metrics_late;",
    )
    .execute(pool)
    .await
    .expect("drop indexes for the load");
}

async fn restore_indexes(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "ALTER TABLE agent_usage_metrics ADD CONSTRAINT agent_usage_metrics_agent_id_metric_type_idempotency_key_key
             UNIQUE (agent_id, metric_type, idempotency_key);
         CREATE INDEX agent_usage_metrics_period ON agent_usage_metrics (agent_id, occurred_at);
         CREATE INDEX agent_usage_metrics_late ON agent_usage_metrics (agent_id, created_at);",
    )
    .execute(pool)
    .await
    .expect("re-index");
    // VACUUM refuses to run in the implicit transaction of a multi-statement batch.
    common::execute(pool, "VACUUM ANALYZE agent_usage_metrics").await;
}

/// One timing and its ratio to the plain `GROUP BY` of the same month (target <= 1.50x).
fn report(what: &str, took: Duration, plain: Duration) {
    println!(
        "  {what:<18} {:>8.2} s  {:>6.2}x",
        took.as_secs_f64(),
        took.as_secs_f64() / plain.as_secs_f64()
    );
}

/// `rows` usage rows spread over the month starting at `start` (UTC), round-robin over the
/// agents; three metrics, two call-minute prices (a mid-month change). Keys are `tag:n`.
async fn load_month(pool: &sqlx::PgPool, rows: i64, agents: i64, start: &str, tag: &str) {
    sqlx::query(
        "WITH a AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM agents)
         INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          occurred_at, idempotency_key)
         SELECT a.id, m.metric, m.qty, m.price, m.qty * m.price,
                $3::timestamptz + (g % 2592000) * INTERVAL '1 second',
                $4 || ':' || g
           FROM generate_series(0, $1 - 1) g
           JOIN a ON a.n = g % $2
           CROSS JOIN LATERAL (SELECT CASE (g / $2) % 4 WHEN 0 THEN 'solar_ocr_scan' WHEN 1 THEN 'water_lookup'
                                                 ELSE 'vapi_call_minutes' END AS metric,
                                      CASE (g / $2) % 4 WHEN 0 THEN 1::numeric WHEN 1 THEN 1::numeric
                                                 ELSE ((g % 600) / 60.0)::numeric(18, 6) END AS qty,
                                      CASE (g / $2) % 4 WHEN 0 THEN 0.075 WHEN 1 THEN 0.00
                                                 WHEN 2 THEN 0.20 ELSE 0.25 END AS price) m",
    )
    .bind(rows)
    .bind(agents)
    .bind(start)
    .bind(tag)
    .execute(pool)
    .await
    .expect("usage rows");
}

async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let t = Instant::now();
    let out = f.await;
    (out, t.elapsed())
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("usage: cargo bench --bench rollup -- [--rows N] [--agents N] [--late-percent P]");
        return;
    }
    let rows = common::arg::<i64>("--rows", 10_000_000);
    let agents = common::arg::<i64>("--agents", 1000);
    let late_percent = common::arg::<i64>("--late-percent", 1);
    let scratch = common::Scratch::create("rollup", 8).await;
    let pool = scratch.pool.clone();
    let tz = chrono_tz::America::Phoenix;
    let month = Month::parse("2026-11").expect("month");

    println!("rollup benchmark: {rows} usage rows, {agents} agents, month {month}");
    let load = async {
        sqlx::query(
            "INSERT INTO agents (agency_name, email, billing_starts_on)
             SELECT 'Bench Agency ' || g, 'bench' || g || '@agent-meter.example', DATE '2026-11-01'
               FROM generate_series(1, $1) g",
        )
        .bind(agents)
        .execute(&pool)
        .await
        .expect("agents");
        drop_indexes(&pool).await;
        load_month(&pool, rows, agents, "2026-11-01 07:00:00+00", "nov").await;
        restore_indexes(&pool).await;
    };
    let ((), loaded) = timed(load).await;
    println!("loaded in {:.1} s", loaded.as_secs_f64());

    let plain = |m: Month| {
        let pool = pool.clone();
        async move {
            let groups: Vec<(
                uuid::Uuid,
                String,
                rust_decimal::Decimal,
                rust_decimal::Decimal,
                i64,
            )> = sqlx::query_as(
                "SELECT agent_id, metric_type, unit_price_usd, sum(quantity), count(*)
                   FROM agent_usage_metrics WHERE occurred_at >= $1 AND occurred_at < $2
                  GROUP BY agent_id, metric_type, unit_price_usd",
            )
            .bind(m.start(tz))
            .bind(m.next().start(tz))
            .fetch_all(&pool)
            .await
            .expect("plain group by");
            groups.len()
        }
    };
    let after_both = "2027-01-02T00:00:00Z".parse().expect("time");
    let _ = plain(month).await; // warm the cache for both contenders
    let (groups, plain_time) = timed(plain(month)).await;
    let (invoices, rollup_time) = timed(billing::rollup(&pool, month, tz, None)).await;
    let invoices = invoices.expect("rollup");
    let (_, rerun_time) = timed(billing::rollup(&pool, month, tz, None)).await;
    let (finalized, finalize_time) =
        timed(billing::finalize(&pool, month, tz, None, after_both)).await;
    let finalized = finalized.expect("finalize");
    println!("{month}: {groups} groups, {} invoices", invoices.len());
    report("plain GROUP BY", plain_time, plain_time);
    report("rollup (drafts)", rollup_time, plain_time);
    report("rollup re-run", rerun_time, plain_time);
    report("finalize", finalize_time, plain_time);
    assert_eq!(
        finalized.iter().filter(|o| o.rebuilt).count(),
        invoices.len()
    );
    // The month's usage report: from the ledger alone, then through the summary once built.
    let usage_report = |m: Month| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            reports::usage(&mut conn, m, tz, None)
                .await
                .expect("usage report")
        }
    };
    let summarize = || {
        let pool = pool.clone();
        async move {
            let cut = billing::rollup::ledger_cut(&pool).await.expect("cut");
            let done = usage_daily::refresh(&pool, tz, cut, Duration::from_secs(3600))
                .await
                .expect("summary");
            assert!(done.complete);
            done.rows
        }
    };
    let (from_ledger, ledger_time) = timed(usage_report(month)).await;
    let (summarized, build_time) = timed(summarize()).await;
    let (from_summary, summary_time) = timed(usage_report(month)).await;
    assert_eq!(from_ledger, from_summary, "the same report either way");
    println!(
        "  usage report (money view): ledger alone {:.3} s; summary first build ({summarized} rows) {:.2} s; through the summary {:.3} s",
        ledger_time.as_secs_f64(),
        build_time.as_secs_f64(),
        summary_time.as_secs_f64()
    );

    // The next month: as many rows again, plus late usage of the finalized one.
    let next = month.next();
    let late = rows * late_percent / 100;
    let ((), loaded) = timed(async {
        drop_indexes(&pool).await;
        load_month(&pool, rows, agents, "2026-12-01 07:00:00+00", "dec").await;
        load_month(&pool, late, agents, "2026-11-01 07:00:00+00", "late").await;
        restore_indexes(&pool).await;
    })
    .await;
    println!(
        "{next}: {rows} rows and {late} late rows of {month} loaded in {:.1} s",
        loaded.as_secs_f64()
    );
    let _ = plain(next).await;
    let (_, plain_next) = timed(plain(next)).await;
    let (drafts, rollup_next) = timed(billing::rollup(&pool, next, tz, None)).await;
    drafts.expect("rollup next");
    let (done, finalize_next) = timed(billing::finalize(&pool, next, tz, None, after_both)).await;
    done.expect("finalize next");
    report("plain GROUP BY", plain_next, plain_next);
    report("rollup (drafts)", rollup_next, plain_next);
    report("finalize", finalize_next, plain_next);
    let (_, behind_time) = timed(usage_report(next)).await;
    let (added, daily_time) = timed(summarize()).await;
    let (_, caught_up_time) = timed(usage_report(next)).await;
    println!(
        "  usage report: with the month not yet summarized {:.3} s; bringing the summary up to date ({added} rows) {:.2} s; then {:.3} s",
        behind_time.as_secs_f64(),
        daily_time.as_secs_f64(),
        caught_up_time.as_secs_f64()
    );
    let adjusted: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT COALESCE(sum(l.quantity), 0) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
          WHERE i.period_start = $1 AND l.kind = 'adjustment' AND l.metric_type = 'solar_ocr_scan'",
    )
    .bind(next.first_day)
    .fetch_one(&pool)
    .await
    .expect("adjustments");
    println!("late scans billed as adjustments on {next}: {adjusted}");

    scratch.drop_database().await;
}
