//! Agency portal benchmark: how long each portal page takes for an agency with a long history,
//! over real HTTP, as the tenant role (Row Level Security applies, as in production), and the
//! operator's `/ops/` page over all of them; also the agency API's lead pages.
//!
//! `cargo bench --bench portal -- [--calls 20000] [--agencies 5] [--requests 20]`
//!
//! Every agency gets `--calls` calls, each with a lead, a property, a finding, a tag, a minutes
//! row and a scan row, and one call in a hundred a duration correction (a reversal and a
//! re-bill); every earlier month is rolled up, the ledger's daily summary is up to date (as the
//! daily `prune_jobs` leaves it), and the queue holds 14 days of finished jobs (one failed scan
//! in fifty). Each page is fetched twice to warm up, then `--requests` times; p50
//! and the slowest are printed (target: p50 <= 100 ms on every page, the deepest calls and
//! leads pages included). The scratch database is dropped at the end.

mod common;

use std::{collections::HashMap, sync::Arc, time::Instant};

use agent_meter::{
    billing::{self, Month},
    config::Config,
    http,
    store::{agents, sessions},
};
use tokio::sync::watch;
use uuid::Uuid;

/// `calls` calls per agency with everything the portal shows about them, for `agencies` agencies.
async fn load(pool: &sqlx::PgPool, calls: i64, agencies: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE a AS SELECT id FROM agents ORDER BY id LIMIT {agencies};
         INSERT INTO leads (agent_id, phone, name)
         SELECT a.id, '+1480' || lpad(g::text, 7, '0'), 'Lead ' || g FROM a, generate_series(1, {calls}) g;
         INSERT INTO properties (agent_id, lead_id, address, facts)
         SELECT agent_id, id, name || ' Saguaro Way', '{{\"has_solar\": true, \"water_source\": \"well\"}}' FROM leads;
         INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, result, idempotency_key, vapi_call_id)
         SELECT p.agent_id, p.lead_id, p.id, 'solar', '{{}}', 'bench:' || p.id, 'bench-' || l.phone
           FROM properties p JOIN leads l ON l.id = p.lead_id;
         INSERT INTO tags (agent_id, lead_id, tag) SELECT agent_id, id, 'solar' FROM leads;
         INSERT INTO calls (agent_id, vapi_call_id, lead_id, customer_number, started_at, ended_at, duration_seconds)
         SELECT l.agent_id, 'bench-' || l.phone, l.id, l.phone, now() - g.n * interval '10 minutes',
                now() - g.n * interval '10 minutes' + interval '5 minutes', 300
           FROM leads l, LATERAL (SELECT substr(l.phone, 6)::int AS n) g;
         INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          provider_cost_usd, occurred_at, idempotency_key)
         SELECT agent_id, 'vapi_call_minutes', 5, 0.20, 1.00, 0.45, ended_at, 'vapi_call:' || vapi_call_id FROM calls
         UNION ALL
         SELECT agent_id, 'solar_ocr_scan', 1, 0.075, 0.075, 0.01, ended_at, 'scan:' || vapi_call_id FROM calls;
         INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          occurred_at, idempotency_key, metadata, corrects)
         SELECT c.agent_id, 'vapi_call_minutes', v.q, 0.20, v.q * 0.20, c.ended_at,
                'vapi_call:' || c.vapi_call_id || v.suffix,
                jsonb_build_object('corrects', 'vapi_call:' || c.vapi_call_id), 'vapi_call:' || c.vapi_call_id
           FROM calls c, (VALUES (-5, ':rev1'), (6, ':v2')) v(q, suffix)
          WHERE substr(c.customer_number, 6)::int % 100 = 0;"
    )))
    .execute(pool)
    .await
    .expect("load");
    // The agencies bill from the first month with data, and every month before the running one
    // is rolled up, as the 1st-of-month clock would have done.
    let tz = chrono_tz::America::Phoenix;
    let first: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT min(occurred_at) FROM agent_usage_metrics")
            .fetch_one(pool)
            .await
            .expect("first usage");
    let running = Month::containing(chrono::Utc::now(), tz);
    let mut month = Month::containing(first, tz);
    sqlx::query("UPDATE agents SET billing_starts_on = $1")
        .bind(month.first_day)
        .execute(pool)
        .await
        .expect("billing start");
    while month < running {
        billing::rollup(pool, month, tz, None)
            .await
            .expect("rollup");
        month = month.next();
    }
    // The ledger's daily summary as the daily prune_jobs leaves it.
    let cut = agent_meter::billing::rollup::ledger_cut(pool)
        .await
        .expect("cut");
    agent_meter::store::usage_daily::refresh(pool, tz, cut, std::time::Duration::from_secs(600))
        .await
        .expect("daily summary");
    // The queue as 14 days of work leaves it (finished jobs are pruned after 14 days): a
    // finished job per call and per scan in that window, and one failed scan in fifty.
    sqlx::raw_sql(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, done_at, last_result)
         SELECT 'bench-' || c.id || '-' || k.kind, k.kind,
                convert_to(jsonb_build_object('agent_id', c.agent_id, 'vapi_call_id', c.vapi_call_id)::text, 'UTF8'),
                CASE WHEN k.kind = 'solar_ocr_scan' AND substr(c.customer_number, 6)::int % 50 = 0
                     THEN 'Killed' ELSE 'Done' END,
                1, 5, c.ended_at, c.ended_at + interval '2 seconds',
                CASE WHEN k.kind = 'solar_ocr_scan' AND substr(c.customer_number, 6)::int % 50 = 0
                     THEN '{\"Err\": \"Gemini answered 400\"}'::jsonb ELSE '{\"Ok\": null}'::jsonb END
           FROM calls c, (VALUES ('meter_call'), ('solar_ocr_scan')) k(kind)
          WHERE c.ended_at >= now() - interval '14 days'",
    )
    .execute(pool)
    .await
    .expect("queue");
    // VACUUM refuses to run in the implicit transaction of a multi-statement batch.
    common::execute(pool, "VACUUM ANALYZE").await;
}

#[tokio::main]
async fn main() {
    let calls = common::arg::<i64>("--calls", 20_000).max(1);
    let agencies = common::arg::<i64>("--agencies", 5).clamp(1, 5);
    let requests = common::arg::<i64>("--requests", 20).max(1) as usize;
    let scratch = common::Scratch::create("portal", 8).await;
    let pool = scratch.pool.clone();
    let started = Instant::now();
    load(&pool, calls, agencies).await;
    println!(
        "agent-meter portal benchmark: {agencies} agencies x {calls} calls (leads, findings, tags, \
         2 usage rows each, 1 % corrected), loaded in {:.0} s; {requests} requests per page",
        started.elapsed().as_secs_f64()
    );

    let vars: HashMap<String, String> = [
        ("VAPI_WEBHOOK_SECRET", "bench-secret"),
        ("OPS_TOKENS", "bench:bench-ops-token-0123456789"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Arc::new(Config::from_vars(vars).expect("config"));
    let (listener, base) = common::loopback().await;
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        http::AppState::new(pool.clone(), config.clone()),
        shutdown,
    ));

    let agent: Uuid = sqlx::query_scalar("SELECT id FROM agents ORDER BY id LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("agent");
    let mut conn = pool.acquire().await.expect("conn");
    let session = sessions::PORTAL
        .create(&mut conn, agent, std::time::Duration::from_secs(3600))
        .await
        .expect("session");
    let bench_operator = config.ops_tokens[0].clone();
    let ops = sessions::OPS
        .create_bound(
            &mut conn,
            "bench",
            std::time::Duration::from_secs(3600),
            |id| bench_operator.session_mac(id),
        )
        .await
        .expect("ops session");
    let token = agents::new_token(&mut conn, agent).await.expect("token");
    // `/v1/leads` half-way through the agency's leads, by the cursor a client would hold there.
    let (at, id): (chrono::DateTime<chrono::Utc>, Uuid) = sqlx::query_as(
        "SELECT created_at, id FROM leads WHERE agent_id = $1 ORDER BY created_at, id
          OFFSET $2 LIMIT 1",
    )
    .bind(agent)
    .bind(calls / 2)
    .fetch_one(&mut *conn)
    .await
    .expect("a lead half-way");
    drop(conn);
    let agency = (
        "cookie",
        format!("{}={session}", http::portal::SESSION_COOKIE),
    );
    let operator = ("cookie", format!("{}={ops}", http::ops::SESSION_COOKIE));
    let api = ("authorization", format!("Bearer {token}"));
    let deepest = (calls - 1) / 100;
    let cursor = format!("{}_{id}", at.to_rfc3339()).replace('+', "%2B");
    let pages = [
        ("/portal/".to_string(), &agency),
        ("/portal/calls".to_string(), &agency),
        (format!("/portal/calls?page={deepest}"), &agency),
        ("/portal/leads".to_string(), &agency),
        (format!("/portal/leads?page={deepest}"), &agency),
        ("/portal/usage".to_string(), &agency),
        ("/portal/invoices".to_string(), &agency),
        // The agency's API: the first page of leads and one half-way, by cursor.
        ("/v1/leads".to_string(), &api),
        (format!("/v1/leads?cursor={cursor}"), &api),
        (format!("/v1/leads/{id}"), &api),
        // The operator's page: queues, failures and every agency's money for the month.
        ("/ops/".to_string(), &operator),
    ];
    let client = reqwest::Client::new();
    let mut worst_p50: f64 = 0.0;
    for (page, (header, value)) in &pages {
        let mut took = Vec::with_capacity(requests);
        for i in 0..requests + 2 {
            let t = Instant::now();
            let r = client
                .get(format!("{base}{page}"))
                .header(*header, value.as_str())
                .send()
                .await
                .expect("get");
            let status = r.status();
            let body = r.text().await.expect("body");
            assert!(status.is_success(), "{page}: {status} {body}");
            if i >= 2 {
                took.push(t.elapsed());
            }
        }
        took.sort();
        let p50 = common::percentile_ms(&took, 0.5);
        worst_p50 = worst_p50.max(p50);
        let shown = if page.contains("cursor=") {
            "/v1/leads?cursor=(half-way)"
        } else if page.starts_with("/v1/leads/") {
            "/v1/leads/{id}"
        } else {
            page.as_str()
        };
        println!(
            "  {shown:<28} p50 {p50:>7.1} ms   max {:>7.1} ms",
            common::percentile_ms(&took, 1.0)
        );
    }
    println!("slowest page p50 {worst_p50:.1} ms (target <= 100 ms)");
    let _ = stop.send(true);
    let _ = server.await;
    scratch.drop_database().await;
}
