//! Call-flow benchmark: `assistant-request` latency and metered-job throughput, in one run.
//!
//! `cargo bench --bench calls -- [--seconds N] [--jobs N] [--concurrency N] [--pool N]`
//!
//! 1. open loop: signed `assistant-request`s for the five seeded agents (callers cycle through
//!    1,000 numbers, so leads are both created and found) at 200 requests/s; latency counts from
//!    each request's scheduled send, so a stall cannot hide;
//! 2. metered jobs: `--jobs` `water_lookup` jobs (distinct tool call ids), enqueued in bulk
//!    transactions, then run by the real worker against a local ArcGIS stand-in that answers at
//!    once, until every one is `Done`; every job must leave exactly one usage row;
//! 3. the same number of no-op jobs through the same worker, with the same settings.
//!
//! The server database is `BENCH_DATABASE_URL` (an admin URL; a fresh database is created and
//! dropped), default `postgres://postgres@127.0.0.1:5432/postgres`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_meter::{
    config::Config,
    db, http,
    jobs::{self, Deps, Job, JobError, water_lookup::WaterLookup},
    seed, worker,
};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

const SECRET: &str = "bench-secret";
const RATE: f64 = 200.0;
const ENQUEUE_TX: usize = 1000;

struct Args {
    seconds: u64,
    jobs: usize,
    concurrency: usize,
    pool: u32,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 10,
        jobs: 20_000,
        concurrency: 32,
        pool: 0,
    };
    let argv: Vec<String> = std::env::args().collect();
    for (i, flag) in argv.iter().enumerate() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--seconds", Some(v)) => a.seconds = v,
            ("--jobs", Some(v)) => a.jobs = v as usize,
            ("--concurrency", Some(v)) => a.concurrency = v.max(1) as usize,
            ("--pool", Some(v)) => a.pool = v as u32,
            ("--help" | "-h", _) => {
                println!(
                    "usage: cargo bench --bench calls -- [--seconds N] [--jobs N] [--concurrency N] [--pool N]"
                );
                std::process::exit(0);
            }
            _ => {}
        }
    }
    if a.pool == 0 {
        a.pool = a.concurrency as u32 + 8;
    }
    a
}

/// A job that does nothing: the queue's own cost, for comparison.
#[derive(Serialize, Deserialize)]
struct Noop {
    n: u64,
}

impl Job for Noop {
    const QUEUE: &'static str = "bench_noop";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, _deps: &Deps) -> Result<(), JobError> {
        Ok(())
    }
}

static MODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[derive(Serialize, Deserialize)]
struct Exp(WaterLookup);

const CTE: &str = "WITH prop AS (
    INSERT INTO properties (agent_id, lead_id, address) VALUES ($1, $2, $3)
    ON CONFLICT (agent_id, lead_id, address) DO UPDATE SET water_source = 'private_well'
    RETURNING id),
 ra AS (
    INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, idempotency_key, result)
    SELECT $1, $2, prop.id, 'water', $4, $5 FROM prop
    ON CONFLICT (agent_id, kind, idempotency_key) DO NOTHING
    RETURNING id, created_at),
 price AS (
    SELECT p.id, p.unit_price_usd FROM pricing_config p, ra
     WHERE p.metric_type = 'water_lookup' AND (p.agent_id = $1 OR p.agent_id IS NULL)
       AND p.effective_from <= (ra.created_at AT TIME ZONE 'America/Phoenix')::date
       AND (p.effective_to IS NULL OR p.effective_to > (ra.created_at AT TIME ZONE 'America/Phoenix')::date)
     ORDER BY p.agent_id NULLS LAST, p.effective_from DESC LIMIT 1)
 INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd, occurred_at, idempotency_key, metadata)
 SELECT $1, 'water_lookup', 1, price.unit_price_usd, price.unit_price_usd, ra.created_at, $4,
        jsonb_build_object('tool_call_id', $6::text, 'pricing_config_id', price.id, 'risk_assessment_id', ra.id)
   FROM ra, price
 ON CONFLICT (agent_id, metric_type, idempotency_key) DO NOTHING";

impl Job for Exp {
    const QUEUE: &'static str = "bench_exp";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        use agent_meter::{
            providers::arcgis,
            store::{findings, leads, pricing, usage},
        };
        let mode = MODE.load(std::sync::atomic::Ordering::Relaxed);
        let j = self.0;
        let key = j.idempotency_key();
        let mut conn = deps.pool.acquire().await?;
        let saved = findings::find(&mut conn, j.agent_id, findings::WATER, &key).await?;
        drop(conn);
        assert!(saved.is_none());
        let wells = if mode == 9 {
            vec![]
        } else {
            deps.providers
                .arcgis
                .wells_near(j.latitude, j.longitude, j.radius_m)
                .await?
        };
        let summary = arcgis::summarize(&wells, j.latitude, j.longitude);
        let result = serde_json::json!({"summary": summary, "latitude": j.latitude});
        if mode >= 3 {
            sqlx::query(CTE)
                .bind(j.agent_id)
                .bind(j.lead_id)
                .bind(&j.address)
                .bind(&key)
                .bind(&result)
                .bind(&j.tool_call_id)
                .execute(&deps.pool)
                .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind("agent_meter_tool_results")
                .bind(&j.tool_call_id)
                .execute(&deps.pool)
                .await?;
            return Ok(());
        }
        let mut tx = deps.pool.begin().await?;
        let property =
            leads::property_for(&mut tx, j.agent_id, j.lead_id, j.address.as_deref()).await?;
        let f = findings::save_once(
            &mut tx,
            &findings::NewFinding {
                agent_id: j.agent_id,
                lead_id: j.lead_id,
                property_id: property,
                kind: findings::WATER,
                idempotency_key: &key,
                result,
            },
        )
        .await?;
        if mode <= 1 {
            tx.commit().await?;
            tx = deps.pool.begin().await?;
        }
        if let Some(p) = f.property_id {
            leads::update_property(&mut tx, j.agent_id, p, None, Some("private_well")).await?;
        }
        let price = pricing::price_at(
            &mut tx,
            j.agent_id,
            "water_lookup",
            f.created_at,
            deps.config.billing_timezone,
        )
        .await?
        .ok_or_else(|| JobError::Permanent("no price".into()))?;
        usage::insert_once(&mut tx, &usage::NewUsage { agent_id: j.agent_id, metric_type: "water_lookup", quantity: rust_decimal::Decimal::ONE,
            unit_price_usd: price.unit_price_usd, provider_cost_usd: None, occurred_at: f.created_at, idempotency_key: &key,
            metadata: serde_json::json!({"tool_call_id": j.tool_call_id, "pricing_config_id": price.id}) }).await?;
        if mode == 0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind("agent_meter_tool_results")
                .bind(&j.tool_call_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if mode != 0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind("agent_meter_tool_results")
                .bind(&j.tool_call_id)
                .execute(&deps.pool)
                .await?;
        }
        Ok(())
    }
}

fn cpu() -> (f64, f64) {
    let me = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let f: Vec<&str> = me
        .rsplit(')')
        .next()
        .expect("x")
        .split_whitespace()
        .collect();
    let mine = (f[11].parse::<f64>().expect("u") + f[12].parse::<f64>().expect("s")) / 100.0;
    let all = std::fs::read_to_string("/proc/stat").expect("stat");
    let v: Vec<f64> = all
        .lines()
        .next()
        .expect("l")
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("n"))
        .collect();
    let busy = (v.iter().sum::<f64>() - v[3] - v[4]) / 100.0;
    (mine, busy)
}

async fn measured<J: Job>(what: &str, deps: &Deps, n: usize) {
    let c0 = cpu();
    let (rate, done, _) = drain::<J>(deps, n).await;
    let c1 = cpu();
    println!(
        "{what:<44} {rate:>6.0} jobs/s  done {done}  cpu/job: bench {:>4.0} us, machine {:>5.0} us",
        (c1.0 - c0.0) * 1e6 / n as f64,
        (c1.1 - c0.1) * 1e6 / n as f64
    );
}

async fn experiments(url: &str, config: &Arc<Config>, jobs_n: usize, conc: u32) {
    let leads: Vec<(Uuid, Uuid)> = {
        let p = db::connect(url, 2).await.expect("pool");
        sqlx::query_as("SELECT agent_id, id FROM leads ORDER BY id")
            .fetch_all(&p)
            .await
            .expect("leads")
    };
    let skip: usize = std::env::var("BENCH_EXP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let runs: [(u8, &str, u8); 10] = [
        (0, "lib flow copy (2 tx, notify in tx)", 0),
        (1, "2 tx, notify after commit", 0),
        (2, "1 tx, notify after commit", 0),
        (3, "1 CTE statement, notify after", 0),
        (9, "1 CTE statement, no http", 0),
        (3, "1 CTE statement, no test_before_acquire", 1),
        (3, "1 CTE statement, synchronous_commit off", 2),
        (100, "noop", 0),
        (100, "noop, no test_before_acquire", 1),
        (100, "noop, synchronous_commit off", 2),
    ];
    for (k, (mode, what, pool_kind)) in runs.into_iter().enumerate().skip(skip) {
        let opts = url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("url");
        let pool = match pool_kind {
            0 => db::connect(url, conc + 8).await.expect("pool"),
            1 => sqlx::postgres::PgPoolOptions::new()
                .max_connections(conc + 8)
                .connect_with(opts)
                .await
                .expect("pool"),
            _ => sqlx::postgres::PgPoolOptions::new()
                .max_connections(conc + 8)
                .test_before_acquire(true)
                .connect_with(opts.options([("synchronous_commit", "off")]))
                .await
                .expect("pool"),
        };
        let deps = Deps::new(pool.clone(), config.clone());
        MODE.store(mode, std::sync::atomic::Ordering::Relaxed);
        let off = (k + 1) * 1_000_000;
        if mode == 100 {
            enqueue_all(&pool, jobs_n, |i| {
                (Noop { n: i as u64 }, format!("noopx:{}", off + i))
            })
            .await;
            measured::<Noop>(what, &deps, jobs_n).await;
        } else {
            enqueue_all(&pool, jobs_n, |i| {
                let (agent_id, lead_id) = leads[i % leads.len()];
                let job = Exp(WaterLookup {
                    agent_id,
                    lead_id: Some(lead_id),
                    tool_call_id: format!("exp_{}", off + i),
                    latitude: 35.1983,
                    longitude: -111.6513,
                    radius_m: 1609,
                    address: Some(format!("{} N Humphreys St, Flagstaff, AZ", i % leads.len())),
                });
                (job, format!("exp:{}", off + i))
            })
            .await;
            measured::<Exp>(what, &deps, jobs_n).await;
        }
        sqlx::query("DELETE FROM apalis.jobs WHERE job_type IN ('bench_exp', 'bench_noop')")
            .execute(&pool)
            .await
            .expect("clean");
        pool.close().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn assistant_request(n: u64) -> String {
    serde_json::json!({"message": {
        "type": "assistant-request",
        "call": {"id": format!("bench-call-{n}"),
                 "phoneNumberId": format!("ph_placeholder_client{}", n % 5 + 1),
                 "customer": {"number": format!("+1602555{:04}", n % 1000)}}
    }})
    .to_string()
}

/// True when the answer is a 2xx carrying an assistant (not the "not in service" error).
async fn ask(client: &reqwest::Client, url: &str, body: String) -> bool {
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-vapi-secret", SECRET)
        .body(body)
        .send()
        .await;
    let Ok(response) = sent.and_then(|r| r.error_for_status()) else {
        return false;
    };
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    answer.get("assistant").is_some() || answer.get("assistantId").is_some()
}

/// Open loop at `rate` requests/s; latency counts from each request's scheduled time.
async fn open_loop(url: &str, rate: f64, dur: Duration) -> (f64, Vec<Duration>, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let total = (rate * dur.as_secs_f64()) as u64;
    let mut handles = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let url = url.to_string();
        handles.push(tokio::spawn(async move {
            let ok = ask(&client, &url, assistant_request(n)).await;
            ok.then(|| scheduled.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(handles.len());
    let mut errors = 0;
    for h in handles {
        match h.await.expect("request task") {
            Some(l) => lat.push(l),
            None => errors += 1,
        }
    }
    let achieved = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_unstable();
    (achieved, lat, errors)
}

/// A stand-in for the ADWR well layer: two wells near Flagstaff, answered at once.
async fn arcgis_stub() -> String {
    let well = |id: u64, lat: f64, lon: f64| {
        serde_json::json!({"attributes": {"REGISTRY_ID": id, "OWNER_NAME": "SMITH", "WELL_DEPTH": 420,
            "WATER_LEVEL": 260, "WATER_USE": "DOMESTIC", "INSTALLED": 946684800000i64,
            "WELL_CANCELLED": "N"}, "geometry": {"x": lon, "y": lat}})
    };
    let body = serde_json::json!({"features": [well(55_512_001, 35.1984, -111.6512),
        well(55_512_002, 35.2001, -111.6490)], "exceededTransferLimit": false})
    .to_string();
    let app = axum::Router::new().route(
        "/layer/0/query",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind arcgis stub");
    let addr = listener.local_addr().expect("stub addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/layer/0")
}

/// Enqueues `count` jobs made by `make`, `ENQUEUE_TX` per transaction; returns jobs/s.
async fn enqueue_all<J: Job>(
    pool: &PgPool,
    count: usize,
    make: impl Fn(usize) -> (J, String),
) -> f64 {
    let start = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(ENQUEUE_TX) {
        let mut tx = pool.begin().await.expect("begin enqueue");
        for &i in chunk {
            let (job, key) = make(i);
            jobs::enqueue(&mut tx, &job, Some(&key))
                .await
                .expect("enqueue");
        }
        tx.commit().await.expect("commit enqueue");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// Runs the real worker for `J` until `count` of its jobs are `Done`; returns jobs/s and whether
/// all finished (gives up after a generous deadline so a stuck queue still reports).
async fn drain<J: Job>(deps: &Deps, count: usize) -> (f64, i64, bool) {
    let (stop, shutdown) = watch::channel(false);
    let start = Instant::now();
    let running = tokio::spawn(worker::supervise::<J>(deps.clone(), shutdown));
    let deadline = Duration::from_secs(60 + count as u64 / 100);
    let mut done = 0;
    while (done as usize) < count && start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        done = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(J::QUEUE)
        .fetch_one(&deps.pool)
        .await
        .expect("count done");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = running.await;
    (done as f64 / elapsed, done, done as usize >= count)
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::main]
async fn main() {
    let a = args();
    let admin = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("am_bench_calls_{}", std::process::id());
    let conn = PgConnection::connect(&admin)
        .await
        .expect("connect to BENCH_DATABASE_URL");
    db::create_database_if_missing(conn, &name)
        .await
        .expect("create bench db");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    let pool = db::connect(&url, a.pool).await.expect("pool");
    db::migrate(&pool).await.expect("migrate");
    seed::run(&pool).await.expect("seed");

    let wells_url = arcgis_stub().await;
    let vars: HashMap<String, String> = [
        ("VAPI_WEBHOOK_SECRET", SECRET.to_string()),
        ("ADWR_WELLS_URL", wells_url),
        ("WORKER_CONCURRENCY", a.concurrency.to_string()),
        ("DISCORD_ENABLED", "false".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = Arc::new(Config::from_vars(vars).expect("config"));
    println!(
        "agent-meter calls benchmark: {} s open loop, {} jobs per kind, worker concurrency {} (= batch), pool {}, 2 cores shared by everything",
        a.seconds, a.jobs, a.concurrency, a.pool
    );

    // 1. assistant-request latency, open loop.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!(
        "http://{}/vapi/webhook",
        listener.local_addr().expect("addr")
    );
    let (stop_web, web_shutdown) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        http::AppState::new(pool.clone(), config.clone()),
        web_shutdown,
    ));
    let (achieved, lat, errors) = open_loop(&endpoint, RATE, Duration::from_secs(a.seconds)).await;
    println!(
        "assistant-request, open loop {RATE:.0}/s: {achieved:>7.1} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms   errors {errors}   (target p99 <= 10 ms)",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
    println!(
        "  leads: {} (callers cycle through 1,000 numbers)",
        count(&pool, "SELECT count(*) FROM leads").await
    );
    let _ = stop_web.send(true);
    let _ = server.await;

    // 2. metered jobs (water_lookup) through the real worker.
    let leads: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT agent_id, id FROM leads ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("leads");
    let agents: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM agents ORDER BY email")
        .fetch_all(&pool)
        .await
        .expect("agents");
    let enqueue_rate = enqueue_all(&pool, a.jobs, |i| {
        let (agent_id, lead_id) = match leads.get(i % leads.len().max(1)) {
            Some(&(agent, lead)) => (agent, Some(lead)),
            None => (agents[i % agents.len()], None),
        };
        let job = WaterLookup {
            agent_id,
            lead_id,
            tool_call_id: format!("call_bench_{i}"),
            latitude: 35.1983,
            longitude: -111.6513,
            radius_m: 1609,
            address: Some(format!(
                "{} N Humphreys St, Flagstaff, AZ",
                i % leads.len().max(1)
            )),
        };
        let key = job.idempotency_key();
        (job, key)
    })
    .await;
    let deps = Deps::new(pool.clone(), config.clone());
    let (metered, done, all) = drain::<WaterLookup>(&deps, a.jobs).await;
    let (usage, keys): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM agent_usage_metrics
          WHERE metric_type = 'water_lookup'",
    )
    .fetch_one(&pool)
    .await
    .expect("usage rows");
    let failed = count(
        &pool,
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'water_lookup' AND status IN ('Failed', 'Killed')",
    )
    .await;
    println!(
        "metered jobs (water_lookup):   {metered:>7.0} jobs/s   done {done}/{}{}   failed {failed}   usage rows {usage} ({})   enqueue {enqueue_rate:.0}/s   (target >= 2000 jobs/s)",
        a.jobs,
        if all { "" } else { " (gave up)" },
        if usage == a.jobs as i64 && keys == usage {
            "one per tool call"
        } else {
            "MISMATCH"
        },
    );

    // 3. the same number of no-op jobs, same worker settings.
    let enqueue_rate = enqueue_all(&pool, a.jobs, |i| {
        (Noop { n: i as u64 }, format!("noop:{i}"))
    })
    .await;
    let (noop, done, all) = drain::<Noop>(&deps, a.jobs).await;
    println!(
        "no-op jobs (bench_noop):       {noop:>7.0} jobs/s   done {done}/{}{}   enqueue {enqueue_rate:.0}/s",
        a.jobs,
        if all { "" } else { " (gave up)" },
    );
    println!(
        "ratio metered / no-op:         {:>7.2}x        (target >= 0.50x)",
        metered / noop
    );

    if std::env::var("BENCH_EXP").is_ok() {
        pool.close().await;
        experiments(&url, &config, a.jobs, a.concurrency as u32).await;
    }
    pool.close().await;
    if let Ok(mut c) = PgConnection::connect(&admin).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
    }
}
