//! Outbound webhooks' fairness (issue 25): `--events` events (10,000) spread over `--endpoints`
//! agencies (100), one endpoint each, of which `--slow` (10) take 2 s to answer and `--failing`
//! (5) answer 500. A real worker delivers them to a loopback receiver; the figure is the time
//! from an event's commit to its arrival at the healthy endpoints (p50, p99) and how long the
//! healthy ones took in all. `cargo bench --bench webhooks [-- --events N ...]`.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_meter::{app::Roles, config::Config, store::outbound};
use axum::{Router, extract::Path, http::HeaderMap, http::StatusCode};
use common::{Scratch, arg, loopback, percentile_ms};
use uuid::Uuid;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

#[tokio::main]
async fn main() {
    let events: usize = arg("--events", 10_000);
    let endpoints: usize = arg("--endpoints", 100);
    let slow: usize = arg("--slow", 10);
    let failing: usize = arg("--failing", 5);
    let scratch = Scratch::create("webhooks", 30).await;
    let pool = scratch.pool.clone();

    // The agencies' systems: /ok answers at once, /slow after 2 s, /fail with a 500.
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let app = Router::new().route(
        "/{kind}/{n}",
        axum::routing::post(
            move |Path((kind, _n)): Path<(String, usize)>, headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    match kind.as_str() {
                        "slow" => tokio::time::sleep(Duration::from_secs(2)).await,
                        "fail" => return StatusCode::INTERNAL_SERVER_ERROR,
                        _ => {}
                    }
                    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                        seen.lock()
                            .expect("lock")
                            .entry(id.to_string())
                            .or_insert_with(Instant::now);
                    }
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let (listener, base) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    // One agency and one endpoint per slot.
    let mut agencies: Vec<(Uuid, bool)> = Vec::with_capacity(endpoints);
    for n in 0..endpoints {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO agents (agency_name, email) VALUES ($1, $2) RETURNING id",
        )
        .bind(format!("Bench Agency {n}"))
        .bind(format!("bench{n}@agent-meter.example"))
        .fetch_one(&pool)
        .await
        .expect("agent");
        let kind = match n {
            n if n < slow => "slow",
            n if n < slow + failing => "fail",
            _ => "ok",
        };
        let mut conn = pool.acquire().await.expect("conn");
        let secret = agent_meter::providers::outbound::new_secret().expect("secret");
        outbound::add_endpoint(&mut conn, id, &format!("{base}/{kind}/{n}"), None, &secret)
            .await
            .expect("endpoint");
        agencies.push((id, kind == "ok"));
    }

    // A worker, as deployed (default concurrency), on loopback endpoints.
    // `--concurrency N` sets OUTBOUND_CONCURRENCY (0, the default: the service's own default).
    let mut vars: HashMap<String, String> = [
        ("OUTBOUND_ALLOW_PRIVATE", "true"),
        ("OUTBOUND_RETRY_SCHEDULE", "0,5,300"),
        ("LOG_FORMAT", "json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let concurrency: usize = arg("--concurrency", 0);
    if concurrency > 0 {
        vars.insert("OUTBOUND_CONCURRENCY".into(), concurrency.to_string());
    }
    let config = Arc::new(Config::from_vars(vars).expect("config"));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let roles = Roles {
        web: false,
        worker: true,
        clock: false,
    };
    let worker = tokio::spawn(agent_meter::app::run(
        pool.clone(),
        config,
        roles,
        None,
        shutdown,
    ));

    // A running service: both delivery lanes' workers registered before the first event.
    let up = Instant::now() + Duration::from_secs(60);
    loop {
        let lanes: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT worker_type) FROM apalis.workers WHERE worker_type = ANY($1)",
        )
        .bind([outbound::QUEUE, outbound::SLOW_QUEUE])
        .fetch_one(&pool)
        .await
        .expect("workers");
        if lanes == 2 || Instant::now() > up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The events, 100 to a transaction, round-robin over the agencies; when each committed.
    let started = Instant::now();
    let mut committed: HashMap<String, Instant> = HashMap::with_capacity(events);
    let mut healthy = 0usize;
    for batch in (0..events).collect::<Vec<_>>().chunks(100) {
        let mut tx = pool.begin().await.expect("tx");
        let mut ids = Vec::with_capacity(batch.len());
        for &i in batch {
            let (agent, ok) = agencies[i % agencies.len()];
            let id = format!("msg_bench_{i}");
            let data = serde_json::json!({"n": i});
            outbound::emit(&mut tx, agent, &id, "call.ended", data)
                .await
                .expect("emit");
            if ok {
                healthy += 1;
                ids.push(id);
            }
        }
        tx.commit().await.expect("commit");
        let now = Instant::now();
        committed.extend(ids.into_iter().map(|id| (id, now)));
    }
    let emitted = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let arrived = arrivals
            .lock()
            .expect("lock")
            .keys()
            .filter(|id| committed.contains_key(*id))
            .count();
        if arrived >= healthy || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_healthy = started.elapsed();
    let mut latencies: Vec<Duration> = {
        let arrivals = arrivals.lock().expect("lock");
        committed
            .iter()
            .filter_map(|(id, at)| {
                arrivals
                    .get(id)
                    .map(|got| got.saturating_duration_since(*at))
            })
            .collect()
    };
    latencies.sort_unstable();
    println!(
        "webhooks: {events} events to {endpoints} endpoints ({slow} taking 2 s, {failing} failing); \
         emitted in {:.1} s; healthy: {}/{healthy} delivered, all within {:.1} s of the first event; \
         event to delivery p50 {:.0} ms, p99 {:.0} ms",
        emitted.as_secs_f64(),
        latencies.len(),
        all_healthy.as_secs_f64(),
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    scratch.drop_database().await;
}
