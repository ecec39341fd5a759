//! Check 1: workers killed mid-job. 200 solar scans over the five agents, Gemini answering after
//! 300 ms, worker processes killed with SIGKILL at random moments or aborted at a fail point
//! (right after the paid answer; right after the effects commit), a fresh one started each time.
//! Expect every job done once, one usage row per job, none left running, and no answer paid for
//! again once it was saved: each job's saved answer is the last one Gemini gave for it.

use std::time::{Duration, Instant};

use agent_meter::failpoint::{AFTER_EFFECT_COMMIT, AFTER_PROVIDER_ANSWER};

use super::support::*;
use crate::helpers::*;

const JOBS: usize = 200;
const QUEUE: &str = "solar_ocr_scan";

enum Chaos {
    /// SIGKILL this many times, at random moments.
    Kill9(usize),
    /// Arm the fail point at its N-th hit in each process, for this many crashes.
    Failpoint(&'static str, u64, usize),
}

/// A small deterministic generator (xorshift) for the kill moments.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// [`survive`] workers that crash at the fail point `name`'s 20th hit, 5 times.
async fn survive_failpoint(name: &'static str) {
    survive(&format!("fail point {name}"), Chaos::Failpoint(name, 20, 5)).await;
}

async fn survive(label: &str, chaos: Chaos) {
    survive_n(label, JOBS, chaos).await;
}

async fn survive_n(label: &str, jobs: usize, chaos: Chaos) {
    let db = TestDb::seeded().await;
    let gemini = NumberedGemini::start(Duration::from_millis(300)).await;
    enqueue_scans(&db.pool, 0..jobs).await;
    let armed = match &chaos {
        Chaos::Failpoint(name, n, _) => format!("{name}={n}"),
        Chaos::Kill9(_) => String::new(),
    };
    let calm = env(&db, &gemini.url, &[]);
    let chaotic = env(&db, &gemini.url, &[("AGENT_METER_FAILPOINTS", &armed)]);

    let started = Instant::now();
    let deadline = Duration::from_secs(180 + jobs as u64 / 10);
    let mut worker = Proc::start(&["worker"], &chaotic);
    let (mut kills, mut crashes, mut rng) = (0usize, 0usize, 0x9E37_79B9_7F4A_7C15u64);
    // Every kill is made even on a machine fast enough to finish the jobs first (a kill then
    // hits an idle worker, which must break nothing either).
    let kills_wanted = match chaos {
        Chaos::Kill9(times) => times,
        Chaos::Failpoint(..) => 0,
    };
    while done(&db.pool, QUEUE).await < jobs as i64 || kills < kills_wanted {
        assert!(
            started.elapsed() < deadline,
            "{label}: not done after {deadline:?}: {:?}",
            statuses(&db.pool, QUEUE).await
        );
        match chaos {
            Chaos::Kill9(times) if kills < times => {
                let wait = 200 + next(&mut rng) % 1300;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                worker.kill9().await;
                kills += 1;
                worker = Proc::start(&["worker"], &chaotic);
            }
            Chaos::Failpoint(_, _, times) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if worker.exited() {
                    crashes += 1;
                    let env = if crashes < times { &chaotic } else { &calm };
                    worker = Proc::start(&["worker"], env);
                }
            }
            Chaos::Kill9(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let elapsed = started.elapsed();
    worker.term();
    let _ = tokio::time::timeout(Duration::from_secs(15), worker.child.wait()).await;

    let statuses = statuses(&db.pool, QUEUE).await;
    let (rows, distinct) = usage(&db.pool, "solar_ocr_scan").await;
    let findings = db.count("SELECT count(*) FROM risk_assessments").await;
    let saved: Vec<(String, String)> = db
        .rows(
            "SELECT left(result->>'address', 9), result->'scan'->'finding'->>'installer'
               FROM risk_assessments",
        )
        .await;
    let last = gemini.last_serials();
    let paid_again: Vec<&(String, String)> = saved
        .iter()
        .filter(|(marker, installer)| {
            last.get(marker).map(|s| format!("serial-{s}")).as_ref() != Some(installer)
        })
        .collect();
    let calls = gemini.count();
    println!(
        "reliability 1 ({label}): {jobs} jobs, {kills} kills, {crashes} fail-point crashes, {:.1} s; \
         Gemini calls {calls} ({} asked again after an answer was lost, {} after it was saved); \
         usage rows {rows} ({distinct} distinct); findings {findings}; jobs {statuses:?}",
        elapsed.as_secs_f64(),
        calls - jobs,
        paid_again.len(),
    );
    assert_eq!(statuses, [("Done".to_string(), jobs as i64)], "{label}");
    assert_eq!((rows, distinct), (jobs as i64, jobs as i64), "{label}");
    assert_eq!(findings, jobs as i64, "{label}");
    assert!(
        paid_again.is_empty(),
        "{label}: answers paid for after they were saved: {paid_again:?}"
    );
    match chaos {
        Chaos::Kill9(times) => assert_eq!(kills, times),
        Chaos::Failpoint(..) => assert!(crashes >= 1, "{label}: the fail point never fired"),
    }
}

#[tokio::test]
async fn workers_killed_at_random_moments_lose_and_double_bill_nothing() {
    survive("kill -9 x10", Chaos::Kill9(10)).await;
}

#[tokio::test]
async fn a_crash_right_after_the_provider_answer_loses_nothing() {
    survive_failpoint(AFTER_PROVIDER_ANSWER).await;
}

#[tokio::test]
async fn a_crash_right_after_the_effects_commit_bills_once_and_never_pays_again() {
    survive_failpoint(AFTER_EFFECT_COMMIT).await;
}

/// The long soak, opt-in (minutes): `SOAK_JOBS=2000 SOAK_KILLS=60 cargo test soak -- --ignored
/// --nocapture` (those are the defaults).
#[tokio::test]
#[ignore = "soak: several minutes; run with --ignored"]
async fn soak_workers_killed_many_times() {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (jobs, kills) = (var("SOAK_JOBS", 2000), var("SOAK_KILLS", 60));
    survive_n("soak", jobs, Chaos::Kill9(kills)).await;
}
