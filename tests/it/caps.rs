//! Spend caps (issue 26): notices at 50, 80 and 100% once per month (one by one, all at once,
//! and again after the month turns); under `block`, billable tool calls refused before any
//! provider is asked, at most one call past the cap however many arrive at once; `alert` only
//! notifies; a removed cap lifts it all; the CLI, the money view and the portal show it.

use agent_meter::{http::tool_calls::CAP_REACHED, jobs::caps, store::caps::THRESHOLDS};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::America::Phoenix;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::*;

/// `agent-meter agents ...` on `db`: (success, stdout, stderr).
async fn agents(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let all: Vec<&str> = std::iter::once("agents")
        .chain(args.iter().copied())
        .collect();
    crate::cli::run_on(&db.url, &all).await
}

/// A usage row of `cost` for `agent` at `at` (a solar scan's metric; the ledger is what counts).
async fn usage(db: &TestDb, agent: Uuid, cost: &str, at: DateTime<Utc>, key: &str) {
    sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          occurred_at, idempotency_key)
         VALUES ($1, 'solar_ocr_scan', 1, $2::numeric, $2::numeric, $3, $4)",
    )
    .bind(agent)
    .bind(cost)
    .bind(at)
    .bind(key)
    .execute(&db.pool)
    .await
    .expect("usage");
}

/// Runs the notice step as a metering transaction would, at `at`: the thresholds crossed.
async fn notice(db: &TestDb, agent: Uuid, at: DateTime<Utc>) -> usize {
    let mut tx = db.pool.begin().await.expect("tx");
    let n = caps::notice(&mut tx, Phoenix, &[agent], at)
        .await
        .expect("notice");
    tx.commit().await.expect("commit");
    n
}

/// The notes queued for `queue` (`notify_discord`, `notify_ops`), as their texts.
async fn notes(db: &TestDb, queue: &str) -> Vec<String> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT job FROM apalis.jobs WHERE job_type = $1")
        .bind(queue)
        .fetch_all(&db.pool)
        .await
        .expect("jobs");
    rows.iter()
        .map(|j| {
            let v: Value = serde_json::from_slice(j).expect("json");
            v["content"].as_str().expect("content").to_string()
        })
        .collect()
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 19, 0, 0)
        .single()
        .expect("time")
}

#[tokio::test]
async fn thresholds_are_noticed_once_each_one_by_one_all_at_once_and_again_next_month() {
    let db = TestDb::seeded().await;
    let (a, b) = db.two_agents().await;
    let (email_a, email_b) = (db.email_of(a).await, db.email_of(b).await);
    // Agency A has an endpoint: it hears `usage.threshold` too.
    sqlx::query(
        "INSERT INTO webhook_endpoints (agent_id, url, secret) VALUES ($1, 'https://hooks.example.com/a', 'whsec_AAAA')",
    )
    .bind(a)
    .execute(&db.pool)
    .await
    .expect("endpoint");
    for email in [&email_a, &email_b] {
        let (ok, out, err) = agents(&db, &["set", email, "--usage-cap", "10"]).await;
        assert!(ok, "{err}");
        assert!(out.contains("usage cap: $"), "{out}");
    }

    // October 2026, one by one: 60% (50 crossed), again (nothing new), 85% (80), 100%.
    usage(&db, a, "6.00", at(2026, 10, 5), "a1").await;
    assert_eq!(notice(&db, a, at(2026, 10, 5)).await, 1);
    assert_eq!(notice(&db, a, at(2026, 10, 6)).await, 0, "once per month");
    usage(&db, a, "2.50", at(2026, 10, 7), "a2").await;
    assert_eq!(notice(&db, a, at(2026, 10, 7)).await, 1);
    usage(&db, a, "1.50", at(2026, 10, 8), "a3").await;
    assert_eq!(notice(&db, a, at(2026, 10, 8)).await, 1);
    // B, all at once: 120% crosses all three; one note names the highest.
    usage(&db, b, "12.00", at(2026, 10, 9), "b1").await;
    assert_eq!(notice(&db, b, at(2026, 10, 9)).await, 3);

    let recorded: Vec<(Uuid, i32, Decimal)> = db
        .rows(
            "SELECT agent_id, threshold, usage_usd FROM usage_cap_notices
              WHERE month = '2026-10-01' ORDER BY created_at, threshold",
        )
        .await;
    let of = |who: Uuid| -> Vec<i32> {
        recorded
            .iter()
            .filter(|r| r.0 == who)
            .map(|r| r.1)
            .collect()
    };
    assert_eq!(of(a), THRESHOLDS);
    assert_eq!(of(b), THRESHOLDS);
    // One note per crossing event (B's three at once make one), in no promised order.
    let agency = notes(&db, "notify_discord").await;
    assert_eq!(agency.len(), 4, "{agency:?}");
    for (pct, amount) in [
        ("50%", "$6.00"),
        ("80%", "$8.50"),
        ("100%", "$10.00"),
        ("100%", "$12.00"),
    ] {
        let said = format!("is {amount} — {pct} of the $10.00 monthly usage cap");
        assert!(
            agency.iter().any(|n| n.contains(&said)),
            "{said}: {agency:?}"
        );
    }
    let ops = notes(&db, "notify_ops").await;
    assert_eq!(ops.len(), 4);
    assert!(
        ops.iter().all(|n| n.contains(": usage this month")),
        "{ops:?}"
    );
    // A's endpoint got one event per threshold, with the amounts as exact strings.
    let events: Vec<Value> = db
        .column(
            "SELECT payload FROM webhook_messages WHERE type = 'usage.threshold'
              ORDER BY (payload -> 'data' ->> 'threshold_percent')::int",
        )
        .await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["data"]["threshold_percent"], 100);
    assert_eq!(events[0]["data"]["usage_usd"], "6.00");
    assert_eq!(events[0]["data"]["cap_usd"], "10.00");
    assert_eq!(events[0]["data"]["month"], "2026-10");

    // The month turns (in Phoenix: 07:00 UTC on the 1st): November starts from nothing.
    usage(&db, a, "5.00", at(2026, 11, 2), "a4").await;
    let early = Utc
        .with_ymd_and_hms(2026, 11, 1, 6, 59, 0)
        .single()
        .expect("t");
    assert_eq!(
        notice(&db, a, early).await,
        0,
        "still October in Phoenix: nothing new"
    );
    assert_eq!(notice(&db, a, at(2026, 11, 2)).await, 1);
    let november: Vec<i32> = db
        .column("SELECT threshold FROM usage_cap_notices WHERE month = '2026-11-01'")
        .await;
    assert_eq!(november, [50]);
}

/// An app whose FEMA lookups answer at once, priced for agency 1 at $1.00 each, and the FEMA
/// stand-in (to count what was asked).
async fn app_with_paid_lookups() -> (TestApp, MockServer) {
    clear_of_month_turn(Phoenix).await;
    let fema = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/arcgis/rest/services/public/NFHL/MapServer/28/query"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"features": [
            {"attributes": {"FLD_ZONE": "X", "ZONE_SUBTY": null, "SFHA_TF": "F"}}]})),
        )
        .mount(&fema)
        .await;
    let url = format!(
        "{}/arcgis/rest/services/public/NFHL/MapServer/28",
        fema.uri()
    );
    let mocks = Mocks::start().await;
    arcgis_one_well(&mocks).await;
    let app = TestApp::spawn_with_mocks(
        &mocks,
        &[
            ("FEMA_NFHL_URL", url.as_str()),
            ("DISCORD_ENABLED", "false"),
            ("OPS_TOKENS", "anna:tok-anna-0123456789"),
        ],
    )
    .await;
    let agent = app.db.agent_id(PHONE_1).await;
    sqlx::query(
        "INSERT INTO pricing_config (agent_id, metric_type, unit, unit_price_usd, effective_from)
         VALUES ($1, 'flood_zone_lookup', 'lookup', 1.00, DATE '2025-01-01')",
    )
    .bind(agent)
    .execute(&app.db.pool)
    .await
    .expect("price");
    (app, fema)
}

/// Asks for one flood lookup `id` in call `call`: (the result, the error), either empty.
async fn lookup(app: &TestApp, call: &str, id: &str) -> (String, String) {
    let body = app
        .tools_answer(call, json!([{"id": id, "name": "flood_zone_lookup",
            "arguments": {"latitude": 33.4152, "longitude": -111.8315, "address": "9 Salt River Rd, Tempe"}}]))
        .await;
    let field = |f: &str| {
        body["results"][0][f]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (field("result"), field("error"))
}

/// The agency's billed flood lookups: (count, total).
async fn billed(app: &TestApp) -> (i64, Decimal) {
    app.db
        .row(
            "SELECT count(*), COALESCE(sum(cost_usd), 0) FROM agent_usage_metrics
              WHERE metric_type = 'flood_zone_lookup'",
        )
        .await
}

#[tokio::test]
async fn ten_calls_at_once_against_a_cap_of_four_are_billed_at_most_one_past_it() {
    let (app, fema) = app_with_paid_lookups().await;
    let email = app.db.email_of(app.db.agent_id(PHONE_1).await).await;
    // $3.50: the fourth $1.00 lookup is admitted at $3.00 and crosses the cap; no fifth.
    let (ok, _, err) = agents(
        &app.db,
        &[
            "set",
            &email,
            "--usage-cap",
            "3.50",
            "--cap-action",
            "block",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let answers = futures::future::join_all((0..10).map(|i| {
        let app = &app;
        async move { lookup(app, &format!("call-cap-{i}"), &format!("tc-cap-{i}")).await }
    }))
    .await;
    let admitted = answers.iter().filter(|(_, e)| e.is_empty()).count();
    let refused: Vec<&String> = answers
        .iter()
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty())
        .collect();
    assert_eq!((admitted, refused.len()), (4, 6), "{answers:?}");
    assert!(
        refused.iter().all(|e| e.as_str() == CAP_REACHED),
        "{refused:?}"
    );
    drain(&app.db.pool, 30).await;
    assert_eq!(billed(&app).await, (4, Decimal::new(4, 0)));
    assert_eq!(requests(&fema).await, 4, "refused calls never reach FEMA");
    let jobs = app
        .db
        .count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'flood_zone_lookup'")
        .await;
    assert_eq!(jobs, 4, "refused calls queue nothing");
    // Everyone heard of 50, 80 and 100%, once (the ops note and the banner come from these).
    let noticed: Vec<i32> = app
        .db
        .column("SELECT threshold FROM usage_cap_notices ORDER BY threshold")
        .await;
    assert_eq!(noticed, THRESHOLDS);
    // Past the cap it stays refused; a free tool (the water lookup costs nothing) is not.
    let later = lookup(&app, "call-cap-late", "tc-cap-late").await;
    assert_eq!(later.1, CAP_REACHED);
    let water = app
        .tools_answer(
            "call-cap-late",
            json!([{"id": "tc-water", "name": "water_lookup",
            "arguments": {"latitude": 35.1984, "longitude": -111.6513}}]),
        )
        .await;
    assert!(water["results"][0].get("error").is_none(), "{water}");

    // The operator's money view and the agency's portal show it.
    let ops = ops_login(&app, "tok-anna-0123456789").await;
    let money = app.page("/ops/", &cookie_pair(&ops)).await;
    let caps_table = &money[money.find("id=\"caps\"").expect("caps table")..];
    assert!(
        caps_table.contains("4.00") && caps_table.contains("3.50") && caps_table.contains("block"),
        "{caps_table}"
    );
    let portal = app
        .page("/portal/", &portal_cookie(&app, PHONE_1).await)
        .await;
    assert!(portal.contains("id=\"cap-notice\""), "{portal}");
    assert!(
        portal.contains("100% </b>") || portal.contains("100%"),
        "{portal}"
    );
    assert!(portal.contains("$4.00 / $3.50"), "{portal}");
    // The other agency sees no banner of A's.
    let other = app
        .page("/portal/", &portal_cookie(&app, PHONE_2).await)
        .await;
    assert!(!other.contains("cap-notice") && !other.contains("usage-cap"));
}

#[tokio::test]
async fn alert_only_notifies_and_a_removed_cap_lifts_the_block() {
    let (app, fema) = app_with_paid_lookups().await;
    let email = app.db.email_of(app.db.agent_id(PHONE_1).await).await;
    let set = async |args: &[&str]| {
        let mut all = vec!["set", email.as_str()];
        all.extend_from_slice(args);
        agents(&app.db, &all).await
    };
    let (ok, out, err) = set(&["--usage-cap", "$1", "--cap-action", "block"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("usage cap: $0.00 of $1.00 (0%, block)"),
        "{out}"
    );
    assert_eq!(lookup(&app, "call-a", "tc-a1").await.1, "");
    assert_eq!(lookup(&app, "call-a", "tc-a2").await.1, CAP_REACHED);
    // The same call asked again (Vapi redelivers): still its own answer, not refused.
    assert_eq!(lookup(&app, "call-a", "tc-a1").await.1, "");

    // alert: over the cap, calls go on and are billed.
    let (ok, out, _) = set(&["--cap-action", "alert"]).await;
    assert!(ok && out.contains("(100%, alert)"), "{out}");
    assert_eq!(lookup(&app, "call-a", "tc-a3").await.1, "");
    let (ok, out, _) = agents(&app.db, &["list"]).await;
    assert!(ok && out.contains("USAGE CAP"), "{out}");
    drain(&app.db.pool, 30).await;
    assert_eq!(billed(&app).await, (2, Decimal::new(2, 0)));
    let (_, list, _) = agents(&app.db, &["list", "--json"]).await;
    let list: Vec<Value> = serde_json::from_str(&list).expect("json");
    let me = list
        .iter()
        .find(|a| a["email"] == email.as_str())
        .expect("me");
    assert_eq!(
        (
            &me["usage_cap_usd"],
            &me["cap_action"],
            &me["cap_usage_usd"]
        ),
        (&json!("1.00"), &json!("alert"), &json!("2.00"))
    );

    // Back to block, then the cap removed: nothing is refused any more.
    assert!(set(&["--cap-action", "block"]).await.0);
    assert_eq!(lookup(&app, "call-a", "tc-a4").await.1, CAP_REACHED);
    let (ok, out, _) = set(&["--usage-cap", ""]).await;
    assert!(ok && out.contains("usage cap: none"), "{out}");
    assert_eq!(lookup(&app, "call-a", "tc-a5").await.1, "");
    drain(&app.db.pool, 30).await;
    assert_eq!(billed(&app).await.0, 3);
    assert_eq!(requests(&fema).await, 3);

    // Bad caps and actions are refused clearly, changing nothing.
    for (args, says) in [
        (&["--usage-cap=-5"][..], "not a cap"),
        (&["--usage-cap", "0"], "not a cap"),
        (&["--usage-cap", "1.234"], "not a cap"),
        (&["--usage-cap", "lots"], "not an amount"),
        (&["--usage-cap", "1e9999"], "not an amount"),
        (&["--cap-action", "stop"], "possible values"),
    ] {
        let (ok, _, err) = set(args).await;
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    let cap: Option<Decimal> = app
        .db
        .scalar_with("SELECT usage_cap_usd FROM agents WHERE email = $1", email)
        .await;
    assert_eq!(cap, None);
}
