//! Call-flow benchmark, in one run: `cargo bench --bench calls -- [--seconds N] [--jobs N]
//! [--concurrency N] [--pool N]`
//!
//! `--fetch-batch N` sets `WORKER_FETCH_BATCH` (default twice the concurrency).
//!
//! 1. open loop: signed `assistant-request`s for the five seeded agents at 200/s after a 1 s
//!    warm-up (callers cycle through 1,000 numbers: leads are created, then found); latency
//!    counts from each request's scheduled send, so a stall cannot hide;
//! 2. `--jobs` `water_lookup` jobs (distinct tool call ids), enqueued in bulk transactions, run by
//!    the real worker against a local ArcGIS stand-in until all are `Done`: one usage row each;
//! 3. the same metered work without a queue framework: the plainest loop a Rust developer would
//!    write (`--concurrency` tasks, each `SELECT .. FOR UPDATE SKIP LOCKED` one row of a plain
//!    jobs table, run the same `WaterLookup` against the same stand-in, mark it done, commit);
//! 4. as many no-op jobs through the same worker with the same settings;
//! 5. as many no-op jobs through apalis-postgres in its default configuration
//!    (`PostgresStorage::new` with only the queue named, a worker with no options).
//!
//! `--only noop [--rounds N]` runs step 4 alone, N times on fresh jobs (the queue's own cost, for
//! profiling and for the side-by-side with graphile-worker, `benches/graphile`); `--only metered`
//! runs step 2 alone the same way, for 1,000 leads made up front (as `benches/graphile` does).
//!
//! Database: a scratch one on `BENCH_DATABASE_URL` (admin URL), created and dropped.

mod common;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_meter::{
    config::Config,
    http,
    jobs::supervise as worker,
    jobs::{self, Deps, Job, JobError},
    tools::water_lookup::WaterLookup,
};
use apalis::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

const SECRET: &str = "bench-secret";
const RATE: f64 = 200.0;
const ENQUEUE_PER_TX: usize = 1000;

/// A job that does nothing: the queue's own cost, for comparison.
#[derive(Serialize, Deserialize)]
struct Noop {
    n: usize,
}

impl Job for Noop {
    const QUEUE: &'static str = "bench_noop";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, _deps: &Deps) -> Result<(), JobError> {
        Ok(())
    }
}

/// The numbers on the first line of a `/proc` file (after the command name, for `stat`).
fn proc_numbers(path: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    let tail = line.rsplit(')').next().unwrap_or_default();
    tail.split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// CPU seconds used so far by this process (server, worker, load generator) and by the whole
/// machine (PostgreSQL included); zeros where `/proc` is unreadable.
fn cpu_seconds() -> (f64, f64) {
    let (me, all) = (proc_numbers("/proc/self/stat"), proc_numbers("/proc/stat"));
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
    let machine = all.iter().sum::<f64>() - at(&all, 3) - at(&all, 4);
    ((at(&me, 10) + at(&me, 11)) / 100.0, machine / 100.0)
}

/// True when the answer is a 2xx carrying an assistant (not the "not in service" answer).
async fn ask(client: &reqwest::Client, url: &str, n: u64, base: u64) -> bool {
    let body = json!({"message": {"type": "assistant-request",
        "call": {"id": format!("bench-call-{n}"), "phoneNumberId": format!("ph_placeholder_client{}", n % 5 + 1),
                 "customer": {"number": format!("+1{}", base + n % 1000)}}}});
    let sent = client
        .post(url)
        .header("x-vapi-secret", SECRET)
        .json(&body)
        .send()
        .await;
    let Ok(response) = sent.and_then(|r| r.error_for_status()) else {
        return false;
    };
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    answer.get("assistant").is_some() || answer.get("assistantId").is_some()
}

/// Open loop at `RATE` for `secs`; latency counts from each request's scheduled time.
async fn open_loop(url: &str, secs: u64, first: u64, base: u64) -> (f64, Vec<Duration>, usize) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let total = (RATE * secs as f64) as u64;
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + Duration::from_secs_f64(i as f64 / RATE);
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url) = (client.clone(), url.to_string());
        handles.push(tokio::spawn(async move {
            let ok = ask(&client, &url, first + i, base).await;
            ok.then(|| scheduled.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(handles.len());
    for h in handles {
        lat.extend(h.await.expect("request task"));
    }
    let errors = total as usize - lat.len();
    let achieved = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_unstable();
    (achieved, lat, errors)
}

/// A stand-in for the ADWR well layer: two wells near Flagstaff, answered at once.
async fn arcgis_stub() -> String {
    let well = |id: u64, lat: f64, lon: f64| {
        json!({"attributes": {"REGISTRY_ID": id, "OWNER_NAME": "SMITH", "WELL_DEPTH": 420, "WATER_LEVEL": 260,
            "WATER_USE": "DOMESTIC", "INSTALLED": 946684800000i64, "WELL_CANCELLED": "N"},
            "geometry": {"x": lon, "y": lat}})
    };
    let body = json!({"features": [well(55_512_001, 35.1984, -111.6512), well(55_512_002, 35.2001, -111.6490)],
                      "exceededTransferLimit": false})
    .to_string();
    let answer = move || std::future::ready(([("content-type", "application/json")], body.clone()));
    let app = axum::Router::new().route("/layer/0/query", axum::routing::get(answer));
    let (listener, base) = common::loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("{base}/layer/0")
}

/// Enqueues `count` jobs made by `make` (job, idempotency key), `ENQUEUE_PER_TX` per
/// transaction; returns jobs/s.
async fn enqueue_all<J: Job>(
    pool: &PgPool,
    count: usize,
    make: impl Fn(usize) -> (J, String),
) -> f64 {
    let start = Instant::now();
    for first in (0..count).step_by(ENQUEUE_PER_TX) {
        let mut tx = pool.begin().await.expect("begin enqueue");
        for i in first..(first + ENQUEUE_PER_TX).min(count) {
            let (job, key) = make(i);
            jobs::enqueue(&mut tx, &job, Some(&key))
                .await
                .expect("enqueue");
        }
        tx.commit().await.expect("commit enqueue");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// Runs the real worker for `J` until `count` of its jobs are `Done` (checked every 250 ms) or a
/// generous deadline passes. Returns jobs/s (to the last job's `done_at`, so the polling step
/// does not blur it), jobs done, and CPU us per job (here, machine).
async fn drain<J: Job>(deps: &Deps, count: usize) -> (f64, i64, f64, f64) {
    // A bulk enqueue into a young table leaves planner statistics that say "empty"; apalis's ack
    // then scans the whole table per batch. A live system's tables are analyzed by autovacuum.
    common::execute(&deps.pool, "ANALYZE apalis.jobs").await;
    let (stop, shutdown) = watch::channel(false);
    let started_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&deps.pool)
        .await
        .expect("db clock");
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let running = tokio::spawn(worker::supervise::<J>(deps.clone(), shutdown));
    let deadline = Duration::from_secs(60 + count as u64 / 100);
    let (mut done, mut last) = (0i64, None::<chrono::DateTime<chrono::Utc>>);
    while (done as usize) < count && start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        (done, last) = sqlx::query_as(
            "SELECT count(*), max(done_at) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(J::QUEUE)
        .fetch_one(&deps.pool)
        .await
        .expect("count done");
    }
    let cpu1 = cpu_seconds();
    let elapsed = last.map_or(start.elapsed().as_secs_f64(), |last| {
        (last - started_at).as_seconds_f64()
    });
    let _ = stop.send(true);
    let _ = running.await;
    let per_job = |a: f64, b: f64| (b - a) * 1e6 / done.max(1) as f64;
    let (here, machine) = (per_job(cpu0.0, cpu1.0), per_job(cpu0.1, cpu1.1));
    (done as f64 / elapsed, done, here, machine)
}

/// Metered job `i`: tool call `{prefix}_{i}`, for lead `i % leads` and a property address of its
/// own per lead (so properties are upserted over and over, as in production).
fn lookup(leads: &[(Uuid, Uuid)], prefix: &str, i: usize) -> WaterLookup {
    let (agent_id, lead_id) = leads[i % leads.len()];
    WaterLookup {
        call: agent_meter::tools::CallContext {
            agent_id,
            lead_id: Some(lead_id),
            tool_call_id: format!("{prefix}_{i}"),
            vapi_call_id: None,
            requested_at: None,
        },
        place: agent_meter::tools::Place {
            latitude: 35.1983,
            longitude: -111.6513,
            address: Some(format!("{} N Humphreys St, Flagstaff, AZ", i % leads.len())),
        },
        radius_m: 1609,
    }
}

/// `count` metered `water_lookup` jobs (tool call ids `{prefix}_{i}`, job `i` for lead
/// `i % leads`) through the real worker; prints jobs/s, CPU and the one-usage-row-per-job check.
async fn metered(deps: &Deps, leads: &[(Uuid, Uuid)], count: usize, prefix: &str) -> f64 {
    let pool = &deps.pool;
    let enqueued = enqueue_all(pool, count, |i| {
        let job = lookup(leads, prefix, i);
        let key = job.call.key();
        (job, key)
    })
    .await;
    let (metered, done, here, machine) = drain::<WaterLookup>(deps, count).await;
    let (failed, usage, keys): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM apalis.jobs WHERE job_type = 'water_lookup' AND status IN ('Failed', 'Killed')),
                count(*), count(DISTINCT idempotency_key) FROM agent_usage_metrics
          WHERE metric_type = 'water_lookup' AND idempotency_key LIKE $1",
    )
    .bind(format!("%{prefix}\\_%"))
    .fetch_one(pool)
    .await
    .expect("usage rows");
    let once =
        ["MISMATCH", "one per tool call"][usize::from(usage == count as i64 && keys == usage)];
    let lead_count = leads.len();
    println!(
        "metered, apalis (ours):  {metered:>7.0} jobs/s   done {done}/{count}   failed {failed}   usage rows {usage} \
         ({once}; {lead_count} leads)   cpu/job {here:.0} us here, {machine:.0} us machine   enqueue {enqueued:.0}/s   \
         (target >= 3000 jobs/s)"
    );
    metered
}

/// The plain loop: `workers` tasks claim one row at a time with `FOR UPDATE SKIP LOCKED`, run the
/// job while holding the row, mark it done and commit, until the table has nothing left.
/// Returns jobs/s, jobs done, CPU us per job (here, machine).
async fn plain_loop(deps: &Deps, jobs: Vec<WaterLookup>, workers: usize) -> (f64, i64, f64, f64) {
    let pool = &deps.pool;
    sqlx::query(
        "CREATE TABLE bench_plain_jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                        args jsonb NOT NULL, done_at timestamptz)",
    )
    .execute(pool)
    .await
    .expect("plain jobs table");
    // What anyone would add once the table holds finished rows: claims stay on the open ones.
    sqlx::query(
        "CREATE INDEX bench_plain_jobs_open ON bench_plain_jobs (id) WHERE done_at IS NULL",
    )
    .execute(pool)
    .await
    .expect("plain jobs index");
    for chunk in jobs.chunks(ENQUEUE_PER_TX) {
        let args: Vec<serde_json::Value> = chunk
            .iter()
            .map(|j| serde_json::to_value(j).expect("args"))
            .collect();
        sqlx::query("INSERT INTO bench_plain_jobs (args) SELECT * FROM unnest($1::jsonb[])")
            .bind(&args)
            .execute(pool)
            .await
            .expect("plain enqueue");
    }
    common::execute(pool, "ANALYZE bench_plain_jobs").await;
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let deps = deps.clone();
            tokio::spawn(async move {
                let mut done = 0i64;
                loop {
                    let mut tx = deps.pool.begin().await.expect("begin");
                    let claimed: Option<(i64, serde_json::Value)> = sqlx::query_as(
                        "SELECT id, args FROM bench_plain_jobs WHERE done_at IS NULL
                          ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    )
                    .fetch_optional(&mut *tx)
                    .await
                    .expect("claim");
                    let Some((id, args)) = claimed else { break };
                    let job: WaterLookup = serde_json::from_value(args).expect("job");
                    job.run(&deps).await.expect("plain job");
                    sqlx::query("UPDATE bench_plain_jobs SET done_at = now() WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .expect("mark done");
                    tx.commit().await.expect("commit");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.expect("plain worker");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds();
    let per_job = |a: f64, b: f64| (b - a) * 1e6 / done.max(1) as f64;
    (
        done as f64 / elapsed,
        done,
        per_job(cpu0.0, cpu1.0),
        per_job(cpu0.1, cpu1.1),
    )
}

/// No-op jobs through apalis-postgres as its README sets it up: `PostgresStorage::new`, the queue
/// named, a worker with no options. Returns jobs/s (to the last `done_at`) and jobs done.
async fn apalis_default(pool: &PgPool, count: usize) -> (f64, i64) {
    const QUEUE: &str = "bench_noop_default";
    let config = apalis_postgres::Config::default().queue(QUEUE);
    let mut storage = apalis_postgres::PostgresStorage::<Noop>::new(pool).with_config(config);
    let start = Instant::now();
    for first in (0..count).step_by(ENQUEUE_PER_TX) {
        let batch: Vec<Noop> = (first..(first + ENQUEUE_PER_TX).min(count))
            .map(|n| Noop { n })
            .collect();
        storage.push_bulk(batch).await.expect("push_bulk");
    }
    let enqueued = count as f64 / start.elapsed().as_secs_f64();
    common::execute(pool, "ANALYZE apalis.jobs").await;
    async fn noop(_: Noop) -> Result<(), BoxDynError> {
        Ok(())
    }
    let started_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .expect("db clock");
    let worker = WorkerBuilder::new(format!("bench-default-{}", std::process::id()))
        .backend(storage)
        .build(noop);
    let (stop, mut stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
        Ok::<(), WorkerError>(())
    }));
    let deadline = Instant::now() + Duration::from_secs(60 + count as u64 / 100);
    let (mut done, mut last) = (0i64, None::<chrono::DateTime<chrono::Utc>>);
    while (done as usize) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        (done, last) = sqlx::query_as(
            "SELECT count(*), max(done_at) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(QUEUE)
        .fetch_one(pool)
        .await
        .expect("count done");
    }
    let _ = stop.send(true);
    let _ = running.await;
    let elapsed = last.map_or(1.0, |last| (last - started_at).as_seconds_f64());
    println!("  (apalis default enqueue {enqueued:.0}/s with push_bulk)");
    (done as f64 / elapsed, done)
}

#[tokio::main]
async fn main() {
    let seconds = common::arg::<u64>("--seconds", 10);
    let count = common::arg::<u64>("--jobs", 20_000) as usize;
    let concurrency = common::arg::<u64>("--concurrency", 32).max(1);
    let pool_size = common::arg::<u64>("--pool", concurrency + 8) as u32;

    let scratch = common::Scratch::create("calls", pool_size).await;
    let pool = scratch.pool.clone();

    let vars = [
        ("VAPI_WEBHOOK_SECRET", SECRET.to_string()),
        ("ADWR_WELLS_URL", arcgis_stub().await),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
        (
            "WORKER_FETCH_BATCH",
            common::arg::<u64>("--fetch-batch", concurrency * 2).to_string(),
        ),
        ("DISCORD_ENABLED", "false".to_string()),
    ];
    let vars: HashMap<String, String> = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let config = Arc::new(Config::from_vars(vars).expect("config"));
    println!(
        "agent-meter calls benchmark: {seconds} s open loop, {count} jobs per kind, worker concurrency {concurrency} \
         (fetch batch {}), pool {pool_size}, 2 cores shared by server, worker, load and PostgreSQL",
        config.worker.fetch_batch
    );

    let only = common::arg::<String>("--only", String::new());
    if only == "metered" {
        // 1,000 leads over the five seeded agents, as the open loop leaves them (and as
        // benches/graphile makes them).
        let leads: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "INSERT INTO leads (agent_id, phone)
             SELECT a.id, '+1928555' || lpad(g::text, 4, '0')
               FROM generate_series(0, 999) g
               JOIN (SELECT id, row_number() OVER (ORDER BY email) - 1 AS k FROM agents) a
                 ON a.k = g % 5
             RETURNING agent_id, id",
        )
        .fetch_all(&pool)
        .await
        .expect("leads");
        let deps = Deps::new(pool.clone(), config.clone());
        for round in 0..common::arg::<usize>("--rounds", 1) {
            metered(&deps, &leads, count, &format!("call_bench_r{round}")).await;
            common::execute(&pool, "DELETE FROM apalis.jobs").await;
        }
        scratch.drop_database().await;
        return;
    }
    if only == "noop" {
        let deps = Deps::new(pool.clone(), config.clone());
        for round in 0..common::arg::<usize>("--rounds", 1) {
            let base = round * count;
            let enqueued = enqueue_all(&pool, count, |n| {
                (Noop { n: base + n }, format!("noop:{}", base + n))
            })
            .await;
            let (noop, done, here, machine) = drain::<Noop>(&deps, count).await;
            println!(
                "no-op, apalis (ours):    {noop:>7.0} jobs/s   done {done}/{count}   cpu/job {here:.0} us here, \
                 {machine:.0} us machine   enqueue {enqueued:.0}/s"
            );
            common::execute(&pool, "DELETE FROM apalis.jobs").await;
        }
        scratch.drop_database().await;
        return;
    }

    // 1. assistant-request latency, open loop.
    let (listener, base) = common::loopback().await;
    let endpoint = format!("{base}/vapi/webhook");
    let (stop_web, web_shutdown) = watch::channel(false);
    let state = http::AppState::new(pool.clone(), config.clone());
    let server = tokio::spawn(http::serve(listener, state, web_shutdown));
    let _ = open_loop(&endpoint, 1, 1_000_000, 6_025_560_000).await;
    let (achieved, lat, errors) = open_loop(&endpoint, seconds, 0, 6_025_550_000).await;
    println!(
        "assistant-request at {RATE:.0}/s: {achieved:>7.1} req/s   p50 {:>5.2} ms   p99 {:>6.2} ms   max {:>6.2} ms   \
         errors {errors}   (target p99 <= 10 ms)",
        common::percentile_ms(&lat, 0.50),
        common::percentile_ms(&lat, 0.99),
        common::percentile_ms(&lat, 1.0),
    );
    let _ = stop_web.send(true);
    let _ = server.await;

    // 2. metered jobs (water_lookup), for the leads just created, through the real worker.
    let leads: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT agent_id, id FROM leads ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("leads");
    assert!(!leads.is_empty(), "the open loop created no leads");
    let deps = Deps::new(pool.clone(), config.clone());
    let metered = metered(&deps, &leads, count, "call_bench").await;

    // 3. the same work, same stand-in, same rows, through the plain SKIP LOCKED loop.
    let plain_jobs: Vec<WaterLookup> = (0..count)
        .map(|i| lookup(&leads, "call_plain", i))
        .collect();
    let (plain, done, here, machine) = plain_loop(&deps, plain_jobs, concurrency as usize).await;
    let (usage, keys): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM agent_usage_metrics
          WHERE metric_type = 'water_lookup' AND idempotency_key LIKE '%call_plain_%'",
    )
    .fetch_one(&pool)
    .await
    .expect("plain usage rows");
    let once = ["MISMATCH", "one per job"][usize::from(usage == count as i64 && keys == usage)];
    println!(
        "metered, plain loop:     {plain:>7.0} jobs/s   done {done}/{count}   usage rows {usage} ({once})   \
         cpu/job {here:.0} us here, {machine:.0} us machine   ({concurrency} tasks, FOR UPDATE SKIP LOCKED)"
    );

    // 4. the same number of no-op jobs, same worker settings.
    let enqueued = enqueue_all(&pool, count, |n| (Noop { n }, format!("noop:{n}"))).await;
    let (noop, done, here, machine) = drain::<Noop>(&deps, count).await;
    println!(
        "no-op, apalis (ours):    {noop:>7.0} jobs/s   done {done}/{count}   cpu/job {here:.0} us here, \
         {machine:.0} us machine   enqueue {enqueued:.0}/s"
    );

    // 5. no-op jobs through apalis-postgres's default configuration.
    let (default, done) = apalis_default(&pool, count).await;
    println!("no-op, apalis default:   {default:>7.0} jobs/s   done {done}/{count}");

    println!(
        "metered ours / plain loop: {:.2}x (target >= 0.90x)   no-op ours / apalis default: {:.2}x (target >= 2x)",
        metered / plain,
        noop / default
    );

    scratch.drop_database().await;
}
