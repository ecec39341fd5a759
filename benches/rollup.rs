//! Monthly rollup benchmark: invoices for N agents from M usage rows, against the plain
//! `GROUP BY` over the same rows, in one run.
//!
//! `cargo bench --bench rollup -- [--rows 10000000] [--agents 1000]`
//!
//! The ledger is loaded in one statement with its secondary indexes dropped, then re-indexed and
//! analyzed, so the measured queries see the same indexes production has. The scratch database
//! (on `BENCH_DATABASE_URL`, default `postgres@127.0.0.1:5432`) is dropped at the end.

mod common;

use std::time::{Duration, Instant};

use agent_meter::billing::{self, Month};

fn arg(name: &str, default: i64) -> i64 {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let t = Instant::now();
    let out = f.await;
    (out, t.elapsed())
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("usage: cargo bench --bench rollup -- [--rows N] [--agents N]");
        return;
    }
    let rows = arg("--rows", 10_000_000);
    let agents = arg("--agents", 1000);
    let scratch = common::Scratch::create("rollup", 8).await;
    let pool = scratch.pool.clone();
    let tz = chrono_tz::America::Phoenix;
    let month = Month::parse("2026-11").expect("month");

    println!("rollup benchmark: {rows} usage rows, {agents} agents, month {month}");
    let load = async {
        sqlx::query(
            "INSERT INTO agents (agency_name, email, billing_starts_on)
             SELECT 'Bench Agency ' || g, 'bench' || g || '@agent-meter.example', DATE '2026-01-01'
               FROM generate_series(1, $1) g",
        )
        .bind(agents)
        .execute(&pool)
        .await
        .expect("agents");
        sqlx::raw_sql(
            "ALTER TABLE agent_usage_metrics DROP CONSTRAINT agent_usage_metrics_agent_id_metric_type_idempotency_key_key;
             DROP INDEX agent_usage_metrics_period; DROP INDEX agent_usage_metrics_late;",
        )
        .execute(&pool)
        .await
        .expect("drop indexes for the load");
        // Spread over the month; three metrics, two call-minute prices (a mid-month change).
        sqlx::query(
            "WITH a AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM agents)
             INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                              occurred_at, idempotency_key)
             SELECT a.id, m.metric, m.qty, m.price, m.qty * m.price,
                    TIMESTAMPTZ '2026-11-01 07:00:00+00' + (g % 2592000) * INTERVAL '1 second',
                    'bench:' || g
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
        .execute(&pool)
        .await
        .expect("usage rows");
        sqlx::raw_sql(
            "ALTER TABLE agent_usage_metrics ADD CONSTRAINT agent_usage_metrics_agent_id_metric_type_idempotency_key_key
                 UNIQUE (agent_id, metric_type, idempotency_key);
             CREATE INDEX agent_usage_metrics_period ON agent_usage_metrics (agent_id, occurred_at);
             CREATE INDEX agent_usage_metrics_late ON agent_usage_metrics (agent_id, created_at);",
        )
        .execute(&pool)
        .await
        .expect("re-index");
        // VACUUM refuses to run in the implicit transaction of a multi-statement batch.
        sqlx::query("VACUUM ANALYZE agent_usage_metrics")
            .execute(&pool)
            .await
            .expect("vacuum analyze");
    };
    let ((), loaded) = timed(load).await;
    println!("loaded in {:.1} s", loaded.as_secs_f64());

    let plain = || async {
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
        .bind(month.start(tz))
        .bind(month.next().start(tz))
        .fetch_all(&pool)
        .await
        .expect("plain group by");
        groups.len()
    };
    let _ = plain().await; // warm the cache for both contenders
    let (groups, plain_time) = timed(plain()).await;
    let (invoices, rollup_time) = timed(billing::rollup(&pool, month, tz, None)).await;
    let invoices = invoices.expect("rollup");
    let (_, rerun_time) = timed(billing::rollup(&pool, month, tz, None)).await;
    println!(
        "plain GROUP BY:        {:>8.2} s  ({groups} groups)",
        plain_time.as_secs_f64()
    );
    println!(
        "rollup (invoices):     {:>8.2} s  ({} invoices)",
        rollup_time.as_secs_f64(),
        invoices.len()
    );
    println!("rollup re-run:         {:>8.2} s", rerun_time.as_secs_f64());
    println!(
        "ratio rollup / plain:  {:>8.2}x  (target <= 1.50x)",
        rollup_time.as_secs_f64() / plain_time.as_secs_f64()
    );

    scratch.drop_database().await;
}
