//! Check 2: PostgreSQL restarted under load. 2,000 signed end-of-call reports at a steady 200/s
//! while a private server is restarted twice (immediate, then fast mode). During each outage the
//! webhook answers 503 (never 500), the service recovers by itself within 10 s, every report
//! answered 2xx is stored and metered, and the ones refused with 503 are taken when Vapi sends
//! them again: 2,000 usage rows, none twice.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use agent_meter::{
    app,
    store::{db, seed},
};
use tokio::sync::watch;

use super::support::*;
use crate::helpers::*;

const REPORTS: usize = 2000;
const RATE: f64 = 200.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_twice_under_load_loses_and_duplicates_nothing() {
    let (cluster, stopper) = private_cluster().await;
    let admin = cluster.admin_url();
    let url = format!("postgres://postgres@127.0.0.1:{}/reliability", cluster.port);
    db::create_database_if_missing(
        <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("admin"),
        "reliability",
    )
    .await
    .expect("database");
    let pool = db::connect(&url, 20).await.expect("pool");
    agent_meter::app::migrate(&pool).await.expect("migrate");
    seed::run(&pool).await.expect("seed");

    let config = Arc::new(test_config(&[("JOB_BACKOFF_BASE_MS", "100")]));
    let (listener, base) = loopback().await;
    let endpoint = format!("{base}/vapi/webhook");
    let (stop, shutdown) = watch::channel(false);
    let service = tokio::spawn(app::run(
        pool.clone(),
        config,
        app::Roles {
            web: true,
            worker: true,
            clock: false,
        },
        Some(listener),
        shutdown,
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let send = {
        let (http, endpoint) = (http.clone(), endpoint.clone());
        move |i: usize| {
            let (http, endpoint) = (http.clone(), endpoint.clone());
            async move {
                let body = end_of_call_report(&format!("restart-{i}"), PHONES[i % 5]);
                let status = http
                    .post(&endpoint)
                    .header("x-vapi-secret", SHARED_SECRET)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                (i, status, Instant::now())
            }
        }
    };

    // The restarts, at 2.5 s and 6 s into the run.
    let started = Instant::now();
    let restarts = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut windows = Vec::new();
            for (at, mode) in [(2.5, "immediate"), (6.0, "fast")] {
                tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
                let down = Instant::now();
                cluster.restart(mode).await.expect("restart");
                windows.push((mode, down, Instant::now()));
            }
            windows
        })
    };
    let mut sends = Vec::with_capacity(REPORTS);
    for i in 0..REPORTS {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / RATE)).into()).await;
        sends.push(tokio::spawn(send(i)));
    }
    let mut answers = Vec::with_capacity(REPORTS);
    for s in sends {
        answers.push(s.await.expect("request task"));
    }
    let windows = restarts.await.expect("restarts");

    let mut by_status = std::collections::BTreeMap::new();
    for (_, s, _) in &answers {
        *by_status.entry(*s).or_insert(0usize) += 1;
    }
    assert!(
        answers
            .iter()
            .all(|(_, s, _)| (200..300).contains(s) || *s == 503),
        "only 2xx or 503 while the server restarts: {by_status:?}"
    );

    // Every report answered 2xx was stored with its job.
    let accepted: Vec<String> = answers
        .iter()
        .filter(|(_, s, _)| (200..300).contains(s))
        .map(|(i, _, _)| format!("restart-{i}"))
        .collect();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM calls WHERE vapi_call_id = ANY($1)")
        .bind(&accepted)
        .fetch_one(&pool)
        .await
        .expect("stored");
    assert_eq!(
        stored,
        accepted.len() as i64,
        "a report answered 2xx was lost"
    );

    // Vapi sends the refused ones again.
    let refused: Vec<usize> = answers
        .iter()
        .filter(|(_, s, _)| *s == 503)
        .map(|(i, _, _)| *i)
        .collect();
    // As Vapi would, each is sent until it is taken: a restart that ended near the end of the
    // load may leave the service recovering when the resends start.
    let mut resent = Vec::with_capacity(refused.len());
    for i in &refused {
        let taken = eventually(30, "a resent report to be taken", || async {
            let (i, status, at) = send(*i).await;
            (200..300).contains(&status).then_some((i, status, at))
        })
        .await;
        resent.push(taken);
    }
    // Recovery: from the server being back to the first report answered 2xx after it.
    let recoveries: Vec<(&str, f64, f64)> = windows
        .iter()
        .map(|(mode, down, up)| {
            let first_ok = answers
                .iter()
                .chain(&resent)
                .filter(|(_, s, at)| (200..300).contains(s) && at > up)
                .map(|(_, _, at)| *at)
                .min();
            let recovered = first_ok.map_or(f64::INFINITY, |at| (at - *up).as_secs_f64());
            (*mode, (*up - *down).as_secs_f64(), recovered)
        })
        .collect();
    assert!(
        recoveries.iter().all(|(_, _, r)| *r <= 10.0),
        "recovery took too long: {recoveries:?}"
    );
    let metered = Instant::now();
    loop {
        let (rows, distinct) = usage(&pool, "vapi_call_minutes").await;
        if rows >= REPORTS as i64 {
            assert_eq!(
                (rows, distinct),
                (REPORTS as i64, REPORTS as i64),
                "a report metered twice"
            );
            break;
        }
        assert!(
            metered.elapsed() < Duration::from_secs(90),
            "only {rows} of {REPORTS} metered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events")
        .fetch_one(&pool)
        .await
        .expect("events");
    println!(
        "reliability 2: {REPORTS} reports at {RATE:.0}/s, server restarted (mode, down s, recovered s after up): \
         {recoveries:?}; answers {by_status:?}; {} resent after 503; events {events}; usage rows {REPORTS}, none twice",
        refused.len()
    );
    assert_eq!(events, REPORTS as i64, "one event per report");

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), service).await;
    pool.close().await;
    drop(stopper);
}
