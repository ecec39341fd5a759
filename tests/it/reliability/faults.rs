//! Check 6: provider faults. Gemini down: the circuit opens and Gemini sees a handful of calls,
//! not one per job; when it is back every job completes, each paid for once. Gemini refusing
//! (400): each job fails at once with its reason, one call each, nothing metered.

use std::time::{Duration, Instant};

use wiremock::ResponseTemplate;

use super::support::*;
use crate::helpers::*;

const JOBS: usize = 30;

#[tokio::test]
async fn an_outage_opens_the_circuit_and_recovery_completes_every_job() {
    let mocks = Mocks::start().await;
    gemini_replying(ResponseTemplate::new(503).set_body_string("overloaded"))
        .mount(&mocks.gemini)
        .await;
    let app = TestApp::spawn_with_mocks(
        &mocks,
        &[
            ("WORKER_CONCURRENCY", "4"),
            ("PROVIDER_BREAKER_OPEN_SECS", "5"),
        ],
    )
    .await;
    enqueue_scans(&app.db.pool, 0..JOBS).await;

    // The outage: watch until the circuit is open and 3 s pass without a new call.
    let started = Instant::now();
    let (mut seen, mut quiet_since) = (0, Instant::now());
    while quiet_since.elapsed() < Duration::from_secs(3) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Gemini kept being called: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = requests(&mocks.gemini).await;
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        }
    }
    let outage_calls = requests(&mocks.gemini).await;
    let failed_attempts = app.db.count("SELECT count(*) FROM job_failures").await;

    // Gemini is back.
    mocks.gemini.reset().await;
    gemini_replying(ResponseTemplate::new(200).set_body_json(gemini_solar_answer()))
        .mount(&mocks.gemini)
        .await;
    let recovered = Instant::now();
    while done(&app.db.pool, "solar_ocr_scan").await < JOBS as i64 {
        assert!(
            recovered.elapsed() < Duration::from_secs(120),
            "not done 120 s after recovery: {:?}, Gemini calls {}",
            statuses(&app.db.pool, "solar_ocr_scan").await,
            requests(&mocks.gemini).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovery_calls = requests(&mocks.gemini).await;
    let (rows, distinct) = usage(&app.db.pool, "solar_ocr_scan").await;
    println!(
        "reliability 6: outage over {JOBS} jobs: Gemini saw {outage_calls} calls ({failed_attempts} failed \
         attempts recorded, most refused by the open circuit); after recovery all done in {:.1} s with \
         {recovery_calls} calls; usage rows {rows} ({distinct} distinct)",
        recovered.elapsed().as_secs_f64()
    );
    assert!(
        outage_calls <= 10,
        "a handful of calls during the outage, not one per job: {outage_calls}"
    );
    assert!(
        failed_attempts >= JOBS as i64,
        "every job tried and was refused"
    );
    assert_eq!(
        recovery_calls, JOBS,
        "one paid call per job once Gemini is back"
    );
    assert_eq!((rows, distinct), (JOBS as i64, JOBS as i64));
}

#[tokio::test]
async fn permanent_provider_errors_are_not_retried() {
    let mocks = Mocks::gemini_refusing("Unsupported image").await;
    let app = TestApp::spawn_with_mocks(&mocks, &[("WORKER_CONCURRENCY", "4")]).await;
    enqueue_scans(&app.db.pool, 0..10).await;
    let killed =
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'solar_ocr_scan' AND status = 'Killed'";
    app.db
        .count_reaches(killed, 10, 30, "every scan to fail")
        .await;
    let reasons = app
        .db
        .count("SELECT count(*) FROM apalis.jobs WHERE status = 'Killed' AND last_result::text LIKE '%Unsupported image%'")
        .await;
    let calls = requests(&mocks.gemini).await;
    let (rows, _) = usage(&app.db.pool, "solar_ocr_scan").await;
    println!(
        "reliability 6: 10 refused scans: Gemini calls {calls}; killed with the reason {reasons}; usage rows {rows}"
    );
    assert_eq!(calls, 10, "one call per job: a 400 is not retried");
    assert_eq!(reasons, 10);
    assert_eq!(rows, 0);
}
