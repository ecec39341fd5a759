//! Ingest benchmark: sustained `end-of-call-report` deliveries over loopback against the raw
//! PostgreSQL figure for the same writes, in one run.
//!
//! `cargo bench --bench ingest -- [--seconds N] [--clients N]`
//!
//! 1. closed loop: N clients post unique, authenticated reports as fast as answers come back;
//! 2. raw: pgbench (or, without it, the same loop in-process) runs one transaction inserting the
//!    event row and the job row, with the same number of clients;
//! 3. open loop at half the raw rate: requests are sent on a fixed schedule and latency is timed
//!    from the scheduled send, so a stall cannot hide (no coordinated omission).
//!
//! The server database is `BENCH_DATABASE_URL` (an admin URL; a fresh database is created and
//! dropped), default `postgres://postgres@127.0.0.1:5432/postgres`.

mod common;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_meter::{config::Config, http};
use sqlx::{Connection, PgConnection};
use tokio::sync::{Semaphore, watch};

const SECRET: &str = "bench-secret";
const PHONE: &str = "ph_placeholder_client1";

struct Args {
    seconds: u64,
    clients: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 10,
        clients: 8,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse().ok());
        match (argv[i].as_str(), value) {
            ("--seconds", Some(v)) => a.seconds = v,
            ("--clients", Some(v)) => a.clients = v as usize,
            ("--help" | "-h", _) => {
                println!("usage: cargo bench --bench ingest -- [--seconds N] [--clients N]");
                std::process::exit(0);
            }
            _ => {}
        }
        i += 1;
    }
    a
}

fn report(call_id: &str) -> String {
    serde_json::json!({"message": {
        "type": "end-of-call-report",
        "call": {"id": call_id, "phoneNumberId": PHONE, "customer": {"number": "+16025550199"}},
        "startedAt": "2026-11-20T17:00:00.000Z",
        "endedAt": "2026-11-20T17:02:30.000Z",
        "endedReason": "customer-ended-call",
        "cost": 0.42,
        "artifact": {"transcript": "AI: Hola, gracias por llamar. User: I need a quote for my house in Flagstaff."},
        "analysis": {"summary": "Caller asked for a homeowner quote."}
    }})
    .to_string()
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> bool {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-vapi-secret", SECRET)
        .body(body)
        .send()
        .await
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// Closed loop: `clients` tasks, each sending the next request when the last one is answered.
async fn closed_loop(
    url: &str,
    clients: usize,
    dur: Duration,
    tag: &str,
) -> (f64, Vec<Duration>, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .build()
        .expect("client");
    let start = Instant::now();
    let tasks = (0..clients).map(|c| {
        let client = client.clone();
        let url = url.to_string();
        let tag = tag.to_string();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut n = 0u64;
            while start.elapsed() < dur {
                n += 1;
                let t = Instant::now();
                if post(&client, &url, report(&format!("{tag}-{c}-{n}"))).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        })
    });
    let mut all = Vec::new();
    let mut errors = 0;
    for t in futures::future::join_all(tasks).await {
        let (lat, e) = t.expect("client task");
        all.extend(lat);
        errors += e;
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_unstable();
    (rate, all, errors)
}

/// Open loop at `rate` requests/s; latency counts from each request's scheduled time.
async fn open_loop(url: &str, rate: f64, dur: Duration) -> (f64, Vec<Duration>, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let in_flight = Arc::new(Semaphore::new(512));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let total = (rate * dur.as_secs_f64()) as u64;
    let mut handles = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        let client = client.clone();
        let url = url.to_string();
        handles.push(tokio::spawn(async move {
            let ok = post(&client, &url, report(&format!("open-{n}"))).await;
            drop(permit);
            ok.then(|| scheduled.elapsed())
        }));
    }
    let mut lat = Vec::new();
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

fn pgbench_binary() -> Option<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("pgbench"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench")))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// The same writes as one ingest, without our service: the event row and the job row in one
/// transaction (the job insert fires apalis's NOTIFY trigger, as ours does).
fn raw_transaction_sql(agent_id: &str) -> String {
    let payload = report("raw").replace('\'', "''");
    format!(
        "BEGIN;\n\
         INSERT INTO webhook_events (agent_id, dedupe_key, message_type, vapi_call_id, routing, payload) \
         VALUES ('{agent_id}', 'raw-' || gen_random_uuid(), 'end-of-call-report', 'raw', 'routed', '{payload}'::jsonb);\n\
         INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) \
         VALUES (gen_random_uuid()::text, 'bench_raw', '\\x7b7d', 'Pending', 0, 8, now(), 0);\n\
         COMMIT;\n"
    )
}

async fn raw_postgres(
    url: &str,
    agent_id: &str,
    clients: usize,
    dur: Duration,
) -> (f64, &'static str) {
    let sql = raw_transaction_sql(agent_id);
    if let Some(pgbench) = pgbench_binary() {
        let script =
            std::env::temp_dir().join(format!("agent-meter-bench-{}.sql", std::process::id()));
        std::fs::write(&script, &sql).expect("write pgbench script");
        let out = tokio::process::Command::new(pgbench)
            .args([
                "-n",
                "-M",
                "prepared",
                "-c",
                &clients.to_string(),
                "-j",
                &clients.to_string(),
            ])
            .args(["-T", &dur.as_secs().to_string(), "-f"])
            .arg(&script)
            .arg(url)
            .output()
            .await
            .expect("run pgbench");
        let _ = std::fs::remove_file(&script);
        let text = String::from_utf8_lossy(&out.stdout);
        let tps = text
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
            .and_then(|v| v.parse().ok());
        if let Some(tps) = tps {
            return (tps, "pgbench");
        }
        eprintln!(
            "pgbench gave no tps ({}); using the in-process loop",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let start = Instant::now();
    let tasks = (0..clients).map(|_| {
        let url = url.to_string();
        let sql = sql.clone();
        tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.expect("connect");
            let mut n = 0u64;
            while start.elapsed() < dur {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut conn)
                    .await
                    .expect("raw transaction");
                n += 1;
            }
            n
        })
    });
    let total: u64 = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("raw task"))
        .sum();
    (total as f64 / start.elapsed().as_secs_f64(), "sqlx loop")
}

#[tokio::main]
async fn main() {
    let a = args();
    let dur = Duration::from_secs(a.seconds);
    let scratch = common::Scratch::create("ingest", 16).await;
    let (url, pool) = (scratch.url.clone(), scratch.pool.clone());
    let agent_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM agents WHERE vapi_phone_number_id = $1")
            .bind(PHONE)
            .fetch_one(&pool)
            .await
            .expect("agent");

    let vars: HashMap<String, String> =
        [("VAPI_WEBHOOK_SECRET".to_string(), SECRET.to_string())].into();
    let config = Arc::new(Config::from_vars(vars).expect("config"));
    let (listener, base) = common::loopback().await;
    let endpoint = format!("{base}/vapi/webhook");
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(http::serve(
        listener,
        http::AppState::new(pool.clone(), config),
        shutdown,
    ));

    println!(
        "agent-meter ingest benchmark: {} s per phase, {} clients, 2 cores shared by server, load and PostgreSQL",
        a.seconds, a.clients
    );
    let _ = closed_loop(&endpoint, a.clients, Duration::from_secs(2), "warm").await;
    let (ingest, lat, errors) = closed_loop(&endpoint, a.clients, dur, "closed").await;
    println!(
        "ingest (closed loop):        {ingest:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {errors}",
        common::percentile_ms(&lat, 0.50),
        common::percentile_ms(&lat, 0.99),
    );
    let (raw, how) = raw_postgres(&url, &agent_id.to_string(), a.clients, dur).await;
    println!(
        "raw PostgreSQL ({how:>9}):  {raw:>8.0} tx/s    (event row + job row, one transaction)"
    );
    let ratio = ingest / raw;
    println!("ratio ingest / raw:          {ratio:>8.2}x    (target >= 0.60x)");
    let half = raw / 2.0;
    let (achieved, lat, errors) = open_loop(&endpoint, half, dur).await;
    let p99 = common::percentile_ms(&lat, 0.99);
    println!(
        "open loop at half raw rate:  {achieved:>8.0} req/s   p50 {:>6.2} ms   p99 {p99:>6.2} ms   errors {errors}   (target p99 <= 25 ms)",
        common::percentile_ms(&lat, 0.50),
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE vapi_call_id <> 'raw'")
            .fetch_one(&pool)
            .await
            .expect("count");
    println!("events stored by the service: {stored}");

    let _ = stop.send(true);
    let _ = server.await;
    scratch.drop_database().await;
}
