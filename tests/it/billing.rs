//! Billing: prices over time, monthly invoices, finalization, the daily Vapi sync.

use agent_meter::{
    billing,
    jobs::{Deps, sync_calls::SyncCalls},
    store::pricing,
};
use chrono_tz::America::Phoenix;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::*;

const SETUP_FEES: &str = "SELECT count(*) FROM invoice_lines WHERE kind = 'setup_fee'";

/// (kind, metric, quantity, unit price, amount) of the agent's invoice for `m`, and its total.
async fn invoice(
    db: &TestDb,
    agent: uuid::Uuid,
    m: &str,
) -> (
    Vec<(String, String, Decimal, Decimal, Decimal)>,
    Decimal,
    String,
) {
    let (id, total, status): (uuid::Uuid, Decimal, String) = sqlx::query_as(
        "SELECT id, total_usd, status FROM invoices WHERE agent_id = $1 AND period_start = $2",
    )
    .bind(agent)
    .bind(month(m).first_day)
    .fetch_one(&db.pool)
    .await
    .expect("invoice");
    let lines = sqlx::query_as(
        "SELECT kind, metric_type, quantity, unit_price_usd, amount_usd FROM invoice_lines
          WHERE invoice_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .expect("lines");
    (lines, total, status)
}

async fn only(db: &TestDb, phone: &str) -> (uuid::Uuid, String) {
    let agent = db.agent_id(phone).await;
    let email: String = db.email_of(agent).await;
    (agent, email)
}

/// The first agent with three solar scans in November 2026, rolled up.
async fn three_scans_rolled_up() -> (TestDb, uuid::Uuid, String) {
    let db = TestDb::seeded().await;
    let (agent, email) = only(&db, PHONE_1).await;
    for key in ["s0", "s1", "s2"] {
        add_usage(&db.pool, agent, SCAN, "2026-11-20T18:00:00Z", key).await;
    }
    rollup(&db.pool, "2026-11", Some(&email)).await;
    (db, agent, email)
}

#[tokio::test]
async fn three_scans_bill_23_cents_and_the_first_invoice_carries_subscription_and_setup() {
    let (db, agent, _) = three_scans_rolled_up().await;
    let (lines, total, status) = invoice(&db, agent, "2026-11").await;
    assert_eq!(status, "draft");
    assert_eq!(
        lines,
        vec![
            (
                "subscription".into(),
                "subscription".into(),
                d("1"),
                d("249"),
                d("249.00")
            ),
            (
                "setup_fee".into(),
                "setup_fee".into(),
                d("1"),
                d("500"),
                d("500.00")
            ),
            (
                "usage".into(),
                "solar_ocr_scan".into(),
                d("3"),
                d("0.075"),
                d("0.23")
            ),
        ]
    );
    assert_eq!(total, d("749.23"));
}

#[tokio::test]
async fn a_thousand_scans_bill_75_dollars_not_80() {
    let db = TestDb::seeded().await;
    let (agent, email) = only(&db, PHONE_1).await;
    sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd, occurred_at, idempotency_key)
         SELECT $1, 'solar_ocr_scan', 1, 0.075, 0.075, '2026-11-15T12:00:00Z', 'scan-' || g FROM generate_series(1, 1000) g",
    )
    .bind(agent)
    .execute(&db.pool)
    .await
    .expect("scans");
    rollup(&db.pool, "2026-11", Some(&email)).await;
    let (lines, _, _) = invoice(&db, agent, "2026-11").await;
    let scans = lines
        .iter()
        .find(|l| l.1 == "solar_ocr_scan")
        .expect("scan line");
    assert_eq!((scans.2, scans.4), (d("1000"), d("75.00")));
}

#[tokio::test]
async fn a_price_change_mid_month_gives_two_usage_lines() {
    let db = TestDb::seeded().await;
    let (agent, email) = only(&db, PHONE_1).await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let from = chrono::NaiveDate::from_ymd_opt(2026, 11, 16).expect("date");
    pricing::set(
        &mut conn,
        None,
        "vapi_call_minutes",
        d("0.25"),
        None,
        None,
        from,
    )
    .await
    .expect("new price");
    // The previous range was closed the same day; an overlapping insert is refused by the database.
    let overlap = sqlx::query(
        "INSERT INTO pricing_config (metric_type, unit, unit_price_usd, effective_from) VALUES ('vapi_call_minutes', 'minute', 1, '2026-11-20')",
    )
    .execute(&db.pool)
    .await
    .expect_err("overlap rejected");
    assert!(
        overlap.to_string().contains("pricing_config_no_overlap"),
        "{overlap}"
    );
    let earlier = pricing::set(
        &mut conn,
        None,
        "vapi_call_minutes",
        d("0.3"),
        None,
        None,
        from.pred_opt().expect("d"),
    )
    .await;
    match earlier {
        Err(pricing::SetPriceError::LaterPriceExists(metric, day)) => {
            assert_eq!((metric.as_str(), day), ("vapi_call_minutes", from));
        }
        other => panic!("prices change in date order, got {other:?}"),
    }
    drop(conn);

    let app = TestApp::spawn_on(
        db,
        agent_meter::app::Roles {
            web: true,
            worker: true,
            clock: false,
        },
        &[],
    )
    .await;
    let mut early = end_of_call_report("call-early", PHONE_1);
    early["message"]["startedAt"] = json!("2026-11-10T17:00:00Z");
    early["message"]["endedAt"] = json!("2026-11-10T17:02:00Z");
    app.post(&early).await;
    app.post(&end_of_call_report("call-late", PHONE_1)).await; // 2026-11-20, 2.5 min
    drain(&app.db.pool, 15).await;
    rollup(&app.db.pool, "2026-11", Some(&email)).await;
    let (lines, total, _) = invoice(&app.db, agent, "2026-11").await;
    let minutes: Vec<_> = lines
        .iter()
        .filter(|l| l.1 == "vapi_call_minutes")
        .collect();
    assert_eq!(minutes.len(), 2, "{lines:?}");
    assert_eq!(
        (minutes[0].2, minutes[0].3, minutes[0].4),
        (d("2"), d("0.2"), d("0.40"))
    );
    assert_eq!(
        (minutes[1].2, minutes[1].3, minutes[1].4),
        (d("2.5"), d("0.25"), d("0.63"))
    );
    assert_eq!(total, d("749.00") + d("0.40") + d("0.63"));
}

#[tokio::test]
async fn the_setup_fee_appears_once_across_months_and_late_usage_becomes_an_adjustment() {
    let db = TestDb::seeded().await;
    let (agent, email) = only(&db, PHONE_1).await;
    add_usage(&db.pool, agent, SCAN, "2026-11-20T18:00:00Z", "nov-1").await;
    finalize(&db.pool, "2026-11", Some(&email))
        .await
        .expect("finalize nov");
    let (nov_lines, nov_total, status) = invoice(&db, agent, "2026-11").await;
    assert_eq!((status.as_str(), nov_total), ("finalized", d("749.08")));

    // A November scan that arrives after November was finalized, and December usage.
    add_usage(&db.pool, agent, SCAN, "2026-11-29T18:00:00Z", "nov-late").await;
    add_usage(&db.pool, agent, SCAN, "2026-12-05T18:00:00Z", "dec-1").await;
    for m in ["2026-11", "2026-12"] {
        rollup(&db.pool, m, Some(&email)).await;
    }
    assert_eq!(
        invoice(&db, agent, "2026-11").await,
        (nov_lines, nov_total, "finalized".into()),
        "a finalized invoice never changes"
    );
    let (dec, dec_total, _) = invoice(&db, agent, "2026-12").await;
    let kinds: Vec<&str> = dec.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["subscription", "usage", "adjustment"],
        "{dec:?}"
    );
    assert_eq!(dec_total, d("249.00") + d("0.08") + d("0.08"));
    let fees = db.count(SETUP_FEES).await;
    assert_eq!(fees, 1);
    // Finalizing out of order is refused.
    rollup(&db.pool, "2027-01", Some(&email)).await;
    let refused = finalize(&db.pool, "2027-01", Some(&email))
        .await
        .expect_err("out of order");
    assert!(
        refused.to_string().contains(
            "2026-12 is not finalized (missing or still a draft); finalize it before 2027-01"
        ),
        "{refused}"
    );
}

#[tokio::test]
async fn a_call_ending_at_3_utc_on_december_1st_is_billed_in_november_in_phoenix() {
    let db = TestDb::seeded().await;
    let (agent, email) = only(&db, PHONE_1).await;
    let ten_minutes = ("vapi_call_minutes", "10", "0.20");
    add_usage(
        &db.pool,
        agent,
        ten_minutes,
        "2026-12-01T03:00:00Z",
        "vapi_call:x",
    )
    .await;
    for m in ["2026-11", "2026-12"] {
        rollup(&db.pool, m, Some(&email)).await;
    }
    let (nov, _, _) = invoice(&db, agent, "2026-11").await;
    let (dec, _, _) = invoice(&db, agent, "2026-12").await;
    assert!(
        nov.iter()
            .any(|l| l.1 == "vapi_call_minutes" && l.4 == d("2.00")),
        "{nov:?}"
    );
    assert!(!dec.iter().any(|l| l.1 == "vapi_call_minutes"), "{dec:?}");
}

#[tokio::test]
async fn rollup_twice_and_concurrently_gives_one_identical_invoice_per_agent() {
    let db = TestDb::seeded().await;
    let (agent, _) = only(&db, PHONE_1).await;
    let lookup = ("water_lookup", "1", "0");
    add_usage(&db.pool, agent, lookup, "2026-11-20T18:00:00Z", "w1").await;
    let m = month("2026-11");
    let (a, b, c) = tokio::join!(
        billing::rollup(&db.pool, m, Phoenix, None),
        billing::rollup(&db.pool, m, Phoenix, None),
        billing::rollup(&db.pool, m, Phoenix, None)
    );
    let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
    assert_eq!(a.len(), 5);
    assert_eq!(a, b);
    assert_eq!(b, c);
    let first = invoice(&db, agent, "2026-11").await;
    billing::rollup(&db.pool, m, Phoenix, None)
        .await
        .expect("again");
    assert_eq!(invoice(&db, agent, "2026-11").await, first);
    assert_eq!(db.count("SELECT count(*) FROM invoices").await, 5);
    assert_eq!(db.count(SETUP_FEES).await, 5);
}

#[tokio::test]
async fn cancelled_and_not_yet_started_agents_get_no_invoice() {
    let db = TestDb::seeded().await;
    sqlx::query("UPDATE agents SET cancelled_on = '2026-10-31', status = 'cancelled' WHERE vapi_phone_number_id = $1")
        .bind(PHONE_1)
        .execute(&db.pool)
        .await
        .expect("cancel");
    sqlx::query(
        "UPDATE agents SET billing_starts_on = '2026-12-01' WHERE vapi_phone_number_id = $1",
    )
    .bind(PHONE_2)
    .execute(&db.pool)
    .await
    .expect("later start");
    assert_eq!(rollup(&db.pool, "2026-11", None).await.len(), 3);
}

fn vapi_call(id: &str, started: &str, ended: &str) -> Value {
    json!({"id": id, "phoneNumberId": PHONE_1, "status": "ended", "customer": {"number": "+16025550123"},
           "startedAt": started, "endedAt": ended, "endedReason": "customer-ended-call", "cost": 0.31,
           "createdAt": started, "updatedAt": ended})
}

/// A seeded database, its first agent, and deps whose providers point at `mocks`.
async fn with_mocks() -> (Mocks, TestDb, uuid::Uuid, Deps) {
    let mocks = Mocks::start().await;
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let vars: Vec<(String, String)> = mocks.config();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let deps = deps_with(&db.pool, &borrowed);
    (mocks, db, agent, deps)
}

/// Call `id` of `agent`, ended `ended` after `seconds`, metered by its webhook at 0.20 a minute.
async fn metered_call(db: &TestDb, agent: uuid::Uuid, id: &str, seconds: i32, ended: &str) {
    let minutes = (Decimal::from(seconds) / d("60")).to_string();
    let key = format!("vapi_call:{id}");
    add_usage(
        &db.pool,
        agent,
        ("vapi_call_minutes", &minutes, "0.20"),
        ended,
        &key,
    )
    .await;
    add_ended_call(&db.pool, agent, id, seconds, ended).await;
}

#[tokio::test]
async fn sync_meters_a_call_whose_webhook_never_came_and_corrects_a_changed_duration() {
    let (mocks, db, agent, deps) = with_mocks().await;
    // The webhook metered call A as 2 minutes; Vapi's final record says 3. Call B never reached us.
    metered_call(&db, agent, "call-a", 120, "2026-11-20T17:02:00Z").await;
    let day = json!([
        vapi_call("call-b", "2026-11-20T18:00:00Z", "2026-11-20T18:01:30Z"),
        vapi_call("call-a", "2026-11-20T17:00:00Z", "2026-11-20T17:03:00Z"),
    ]);
    vapi_lists(&mocks, day).await;

    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
    let report = day_sync(date).sync(&deps).await.expect("sync");
    assert_eq!(
        (report.seen, report.new, report.metered, report.corrected),
        (2, 1, 1, 1)
    );
    assert_eq!(
        usage_rows(&db.pool, None).await,
        vec![
            ("vapi_call:call-a".into(), d("2"), d("0.2")),
            ("vapi_call:call-a:rev1".into(), d("-2"), d("0.2")),
            ("vapi_call:call-a:v2".into(), d("3"), d("0.2")),
            ("vapi_call:call-b".into(), d("1.5"), d("0.2")),
        ]
    );
    // A second sync changes nothing.
    let again = day_sync(date).sync(&deps).await.expect("sync again");
    assert_eq!(
        (again.seen, again.new, again.metered, again.corrected),
        (2, 0, 0, 0)
    );
    assert_eq!(db.count(USAGE_ROWS).await, 4);
}

/// Issue 14, item 4: a reversal nets the row it reverses exactly (its time, so its month; its
/// price; its quantity, cost and provider cost negated), and Vapi's cost is counted once.
#[tokio::test]
async fn a_correction_reverses_in_the_reversed_rows_month_and_counts_vapis_cost_once() {
    let (mocks, db, agent, deps) = with_mocks().await;
    // Billed as 2 minutes at 0.20 on the last evening of November, with Vapi's cost then 0.25.
    sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          provider_cost_usd, occurred_at, idempotency_key)
         VALUES ($1, 'vapi_call_minutes', 2, 0.20, 0.40, 0.25, '2026-12-01T06:50:00Z', 'vapi_call:late-call')",
    )
    .bind(agent)
    .execute(&db.pool)
    .await
    .expect("billed row");
    add_ended_call(&db.pool, agent, "late-call", 120, "2026-12-01T06:50:00Z").await;
    // Vapi's final record: 3 minutes, ending after midnight in Phoenix (another month), cost 0.31.
    vapi_lists(
        &mocks,
        json!([vapi_call(
            "late-call",
            "2026-12-01T06:48:00Z",
            "2026-12-01T07:51:00Z"
        )]),
    )
    .await;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).expect("date");
    day_sync(date).sync(&deps).await.expect("sync");
    type Row = (
        String,
        Decimal,
        Decimal,
        Decimal,
        Option<Decimal>,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Row> = db
        .rows(
            "SELECT idempotency_key, quantity, unit_price_usd, cost_usd, provider_cost_usd,
                    occurred_at
               FROM agent_usage_metrics ORDER BY idempotency_key",
        )
        .await;
    let (billed, reversal, rebilled) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(reversal.0, "vapi_call:late-call:rev1");
    assert_eq!(
        (reversal.1, reversal.2, reversal.3),
        (d("-2"), d("0.20"), d("-0.40"))
    );
    assert_eq!(reversal.4, Some(d("-0.25")), "provider cost reversed too");
    assert_eq!(
        reversal.5, billed.5,
        "the reversed row's time, so its month"
    );
    assert_eq!(rebilled.4, Some(d("0.31")));
    let provider_total: Decimal = rows.iter().filter_map(|r| r.4).sum();
    assert_eq!(provider_total, d("0.31"), "Vapi's final cost, once");
}

/// Issue 21, item 4: any number of corrections net to the latest duration (a zero-minute entry's
/// reversal is zero too, so reversals are told by what they reverse, not by their sign).
#[tokio::test]
async fn every_correction_nets_to_vapis_latest_duration() {
    let (mocks, db, agent, deps) = with_mocks().await;
    metered_call(&db, agent, "short", 0, "2026-11-20T17:00:00Z").await;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
    for (ended, minutes) in [
        ("2026-11-20T17:00:30Z", "0.5"),
        ("2026-11-20T17:01:30Z", "1.5"),
        ("2026-11-20T17:01:30Z", "1.5"),
        ("2026-11-20T17:00:06Z", "0.1"),
    ] {
        mocks.vapi.reset().await;
        vapi_lists(
            &mocks,
            json!([vapi_call("short", "2026-11-20T17:00:00Z", ended)]),
        )
        .await;
        day_sync(date).sync(&deps).await.expect("sync");
        let (billed, cost): (Decimal, Decimal) = sqlx::query_as(
            "SELECT sum(quantity), sum(cost_usd) FROM agent_usage_metrics WHERE agent_id = $1",
        )
        .bind(agent)
        .fetch_one(&db.pool)
        .await
        .expect("sum");
        assert_eq!(billed, d(minutes), "after the sync saw {ended}");
        assert_eq!(cost, d(minutes) * d("0.20"));
    }
    let keys = db
        .strings(
            "SELECT idempotency_key FROM agent_usage_metrics ORDER BY created_at, idempotency_key",
        )
        .await;
    assert_eq!(
        keys,
        [
            "vapi_call:short",
            "vapi_call:short:rev1",
            "vapi_call:short:v2",
            "vapi_call:short:rev2",
            "vapi_call:short:v3",
            "vapi_call:short:rev3",
            "vapi_call:short:v4"
        ]
    );
}

#[tokio::test]
async fn the_clock_enqueues_a_missed_tick_once_per_period() {
    let db = TestDb::seeded().await;
    let deps = deps_with(&db.pool, &[]);
    let schedule = agent_meter::app::clock::Schedule::parse(agent_meter::app::clock::SCHEDULE_TOML)
        .expect("schedule");
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-15T12:00:00Z")
        .expect("t")
        .with_timezone(&chrono::Utc);
    agent_meter::app::clock::catch_up(&deps, &schedule, now).await;
    agent_meter::app::clock::catch_up(&deps, &schedule, now).await;
    let keys = db
        .strings("SELECT idempotency_key FROM apalis.jobs ORDER BY 1")
        .await;
    assert_eq!(
        keys,
        vec![
            "invoice-rollup:2026-11".to_string(),
            "prune_jobs:2026-12-15T11:30:00Z".to_string(),
            "vapi-sync:2026-12-14".to_string(),
        ]
    );
}

/// Issue 14, item 2: a clock that was down for months replays, in order, every tick it missed
/// since the last one it recorded (within CLOCK_CATCH_UP_DAYS), once, so no month goes
/// uninvoiced; a first start replays only the last tick (above).
#[tokio::test]
async fn a_clock_back_from_a_long_outage_replays_every_missed_tick_in_order_once() {
    let db = TestDb::seeded().await;
    let deps = deps_with(&db.pool, &[]);
    let schedule = agent_meter::app::clock::Schedule::parse(
        "[[entry]]\njob = \"invoice_rollup\"\ncron = \"0 0 2 1 * *\"",
    )
    .expect("schedule");
    // The clock last ran on June 1st (rolling up May), then nothing until mid-September.
    assert!(
        agent_meter::app::clock::enqueue_tick(&deps, "invoice_rollup", at("2026-06-01T09:00:00Z"))
            .await
            .expect("june tick")
    );
    agent_meter::app::clock::catch_up(&deps, &schedule, at("2026-09-15T12:00:00Z")).await;
    agent_meter::app::clock::catch_up(&deps, &schedule, at("2026-09-15T12:05:00Z")).await;
    let queued = db
        .strings(
            "SELECT idempotency_key FROM apalis.jobs
              WHERE job_type = 'invoice_rollup' ORDER BY run_at",
        )
        .await;
    assert_eq!(
        queued,
        [
            "invoice-rollup:2026-05",
            "invoice-rollup:2026-06",
            "invoice-rollup:2026-07",
            "invoice-rollup:2026-08"
        ],
        "every missed month once, oldest first"
    );
    // Each is due at its own tick (02:00 on the 1st in Phoenix), so the queue, which takes the
    // earliest run_at first, runs them in that order however fast they were queued.
    let due = db
        .strings(
            "SELECT to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM apalis.jobs
              WHERE job_type = 'invoice_rollup' ORDER BY run_at",
        )
        .await;
    assert_eq!(
        due,
        [
            "2026-06-01 09:00",
            "2026-07-01 09:00",
            "2026-08-01 09:00",
            "2026-09-01 09:00"
        ]
    );
    // The look-back bounds a very long outage.
    let deps = deps_with(&db.pool, &[("CLOCK_CATCH_UP_DAYS", "40")]);
    agent_meter::app::clock::catch_up(&deps, &schedule, at("2027-03-15T12:00:00Z")).await;
    let latest = db
        .strings(
            "SELECT idempotency_key FROM apalis.jobs
              WHERE job_type = 'invoice_rollup' ORDER BY run_at DESC LIMIT 2",
        )
        .await;
    // 40 days back from March 15th reaches only the March 1st tick (rolling up February);
    // September to January are beyond the look-back, as configured.
    assert_eq!(latest, ["invoice-rollup:2027-02", "invoice-rollup:2026-08"]);
}

#[tokio::test]
async fn invoices_show_prints_the_documented_json_shape() {
    let (db, _, email) = three_scans_rolled_up().await;
    let out = agent_meter_on(
        &db,
        &[
            "invoices", "show", "--month", "2026-11", "--agent", &email, "--format", "json",
        ],
    )
    .await;
    let shown: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(shown[0]["period"], "2026-11");
    assert_eq!(shown[0]["status"], "draft");
    assert_eq!(shown[0]["agency_name"], "Flagstaff Family Insurance");
    assert_eq!(shown[0]["total"], "749.23");
    assert_eq!(
        shown[0]["lines"][2],
        json!({"kind": "usage", "metric_type": "solar_ocr_scan", "quantity": "3", "unit_price": "0.075", "amount": "0.23"})
    );
    let usage = agent_meter_on(&db, &["usage", "--month", "2026-11", "--format", "csv"]).await;
    let text = String::from_utf8_lossy(&usage);
    assert_has(
        &text,
        "Flagstaff Family Insurance,solar_ocr_scan,3,3,0.23,0.00,0.23",
    );
}

#[tokio::test]
async fn the_daily_sync_fans_out_one_job_per_slice_of_the_day_once() {
    let db = TestDb::seeded().await;
    let deps = deps_with(&db.pool, &[]);
    let day = day_sync(chrono::NaiveDate::from_ymd_opt(2026, 11, 27).expect("date"));
    assert_eq!(day.fan_out(&deps).await.expect("fan out"), 24);
    // A re-run (the day's job retried after a crash) queues nothing new.
    assert_eq!(day.fan_out(&deps).await.expect("again"), 0);
    let keys = db
        .strings("SELECT idempotency_key FROM apalis.jobs WHERE job_type = 'sync_calls' ORDER BY 1")
        .await;
    let expected: Vec<String> = (0..24)
        .map(|s| format!("vapi-sync:2026-11-27:s{s:02}"))
        .collect();
    assert_eq!(keys, expected);
}

/// Issue 14, item 5: reports are per agent; two agencies with the same name stay apart.
#[tokio::test]
async fn usage_is_reported_per_agent_even_when_two_agencies_share_a_name() {
    let db = TestDb::seeded().await;
    let (a, b) = db.two_agents().await;
    db.execute(
        "UPDATE agents SET agency_name = 'Desert Insurance'
          WHERE vapi_phone_number_id IN ('ph_placeholder_client1', 'ph_placeholder_client2')",
    )
    .await;
    for (agent, lookups, key) in [(a, "1", "k-a"), (b, "2", "k-b")] {
        let water = ("water_lookup", lookups, "0.00");
        add_usage(&db.pool, agent, water, "2026-11-10T17:00:00Z", key).await;
    }
    let out = agent_meter_on(&db, &["usage", "--month", "2026-11", "--format", "json"]).await;
    let rows: Value = serde_json::from_slice(&out).expect("json");
    let mut per_agent: Vec<(String, String)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["agent_id"].as_str().unwrap_or("").to_string(),
                r["quantity"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    per_agent.sort();
    let mut want = vec![
        (a.to_string(), "1".to_string()),
        (b.to_string(), "2".to_string()),
    ];
    want.sort();
    assert_eq!(per_agent, want);
}

/// Issue 14, item 2: finalizing in order. A month that has not ended cannot be finalized; a
/// month whose predecessor (since billing started) is not final is refused, naming it; the setup
/// fee belongs to the month billing starts, whatever order rollups run in.
#[tokio::test]
async fn finalize_keeps_months_in_order_and_the_setup_fee_in_the_first_month() {
    let db = TestDb::seeded().await;
    let (agent, email) = only(&db, PHONE_1).await;
    let mid_november = at("2026-11-15T12:00:00Z");
    let e = billing::finalize(
        &db.pool,
        month("2026-11"),
        Phoenix,
        Some(&email),
        mid_november,
    )
    .await
    .expect_err("not ended");
    assert!(e.to_string().contains("2026-11 has not ended yet"), "{e}");

    // December rolled up before November: the setup fee still belongs to November.
    rollup(&db.pool, "2026-12", Some(&email)).await;
    let e = finalize(&db.pool, "2026-12", Some(&email))
        .await
        .expect_err("november is missing");
    assert!(
        e.to_string().contains("2026-11 is not finalized") && e.to_string().contains(&email),
        "{e}"
    );
    rollup(&db.pool, "2026-11", Some(&email)).await;
    let (dec_lines, ..) = invoice(&db, agent, "2026-12").await;
    assert!(
        dec_lines.iter().all(|l| l.0 != "setup_fee"),
        "{dec_lines:?}"
    );
    let (nov_lines, ..) = invoice(&db, agent, "2026-11").await;
    assert_eq!(
        nov_lines.iter().filter(|l| l.0 == "setup_fee").count(),
        1,
        "{nov_lines:?}"
    );

    // In order, both finalize.
    for m in ["2026-11", "2026-12"] {
        finalize(&db.pool, m, Some(&email)).await.expect(m);
    }
    assert_eq!(db.count(SETUP_FEES).await, 1);
}

/// Web calls have no phone number: the daily sync routes them by the agent's saved assistant,
/// and leaves calls on another agent's number to that agent.
#[tokio::test]
async fn the_daily_sync_finds_web_calls_by_the_agents_assistant() {
    let (mocks, db, agent, deps) = with_mocks().await;
    sqlx::query("UPDATE agents SET vapi_assistant_id = 'asst-web' WHERE id = $1")
        .bind(agent)
        .execute(&db.pool)
        .await
        .expect("assistant");
    let mut web = vapi_call("web-1", "2026-11-20T18:00:00Z", "2026-11-20T18:02:00Z");
    web.as_object_mut().expect("call").remove("phoneNumberId");
    web["assistantId"] = json!("asst-web");
    let mut elsewhere = vapi_call("other-1", "2026-11-20T19:00:00Z", "2026-11-20T19:01:00Z");
    elsewhere["phoneNumberId"] = json!(PHONE_2);
    elsewhere["assistantId"] = json!("asst-web");
    vapi_lists(&mocks, json!([web, elsewhere])).await;
    let report = SyncCalls {
        date: "2026-11-20".parse().expect("date"),
        agent_id: Some(agent),
        slice: None,
    }
    .sync(&deps)
    .await
    .expect("sync");
    assert_eq!((report.seen, report.metered), (1, 1), "{report:?}");
    let keys = db
        .strings(
            "SELECT idempotency_key FROM agent_usage_metrics u JOIN agents a ON a.id = u.agent_id
              WHERE a.vapi_phone_number_id = 'ph_placeholder_client1' ORDER BY 1",
        )
        .await;
    assert_eq!(keys, vec!["vapi_call:web-1".to_string()]);
}
