//! An agency's whole life (issue 21): pause, resume, cancel, reactivate and the billing start,
//! through the binary where an operator would use it; billed and enforced from one place.
//!
//! Dates: the seeded agencies bill from 2026-11-01 and every date here is fixed, so a test means
//! the same whatever day it runs. Moves whose meaning depends on "today" (a reactivation's month)
//! are made through `lifecycle::apply` with a fixed `now`.

use agent_meter::{
    billing,
    lifecycle::{self, Move, MoveError, Moved, State},
    store::{agents, portal, reports},
};
use chrono::Utc;
use chrono_tz::America::Phoenix;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::{
    cli::{run_line, run_ok, run_on},
    helpers::*,
};

const EMAIL_1: &str = "client1@agent-meter.example";

/// Makes `mv` on the first agency, as `test`, at `now`.
async fn apply(db: &TestDb, mv: Move, now: &str) -> Result<Moved, MoveError> {
    lifecycle::apply(&db.pool, EMAIL_1, mv, "test", Phoenix, at(now)).await
}

/// A day.
fn day(s: &str) -> chrono::NaiveDate {
    s.parse().expect("day")
}

/// The invoices of the agent with `email`: (month, status, [(kind, amount)]), by month.
async fn invoices_of(db: &TestDb, email: &str) -> Vec<(String, String, Vec<(String, String)>)> {
    let heads: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT i.id, to_char(i.period_start, 'YYYY-MM'), i.status FROM invoices i
           JOIN agents a ON a.id = i.agent_id WHERE a.email = $1 ORDER BY i.period_start",
    )
    .bind(email)
    .fetch_all(&db.pool)
    .await
    .expect("invoices");
    let mut out = Vec::new();
    for (id, m, status) in heads {
        let lines: Vec<(String, Decimal)> = sqlx::query_as(
            "SELECT kind, amount_usd FROM invoice_lines WHERE invoice_id = $1 ORDER BY position, kind",
        )
        .bind(id)
        .fetch_all(&db.pool)
        .await
        .expect("lines");
        out.push((
            m,
            status,
            lines.into_iter().map(|(k, a)| (k, a.to_string())).collect(),
        ));
    }
    out
}

fn lines(l: &[(&str, &str)]) -> Vec<(String, String)> {
    l.iter()
        .map(|(k, a)| (k.to_string(), a.to_string()))
        .collect()
}

async fn list_json(db: &TestDb) -> Vec<Value> {
    let (ok, out, err) = run_on(&db.url, &["agents", "list", "--json"]).await;
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out)
        .expect("json")
        .as_array()
        .expect("array")
        .clone()
}

async fn listed(db: &TestDb, email: &str) -> Value {
    list_json(db)
        .await
        .into_iter()
        .find(|a| a["email"] == email)
        .expect("listed")
}

#[tokio::test]
async fn a_cancelled_agency_is_billed_through_its_cancellation_month_and_never_after() {
    let db = TestDb::seeded().await;
    let out = run_ok(
        &db.url,
        &format!("agents cancel {EMAIL_1} --on 2026-11-20 --actor dana"),
    )
    .await;
    assert_has_all(&out, &["active -> cancelled", "billed through 2026-11"]);
    let a = listed(&db, EMAIL_1).await;
    assert_eq!(
        (&a["status"], &a["billing_starts_on"], &a["cancelled_on"]),
        (
            &json!("cancelled"),
            &json!("2026-11-01"),
            &json!("2026-11-20")
        )
    );
    let (ok, out, _) = run_on(&db.url, &["agents", "list"]).await;
    assert!(
        ok && out.contains("cancelled 2026-11-01 2026-11-20"),
        "{out}"
    );
    // The move is audited with who made it.
    let audit: Vec<(String, String, String, String)> = db
        .rows("SELECT action, from_state, to_state, actor FROM agent_lifecycle_events")
        .await;
    assert_eq!(
        audit,
        [(
            "cancel".to_string(),
            "active".to_string(),
            "cancelled".to_string(),
            "cli:dana".to_string()
        )]
    );

    for m in ["2026-11", "2026-12", "2027-01"] {
        run_ok(&db.url, &format!("invoices rollup --month {m}")).await;
    }
    assert_eq!(
        invoices_of(&db, EMAIL_1).await,
        [(
            "2026-11".to_string(),
            "draft".to_string(),
            lines(&[("subscription", "249.00"), ("setup_fee", "500.00")])
        )],
        "November whole, nothing after"
    );
    // Every other agency is billed each month; MRR counts the cancelled one only in November.
    let others: i64 = db
        .count("SELECT count(*) FROM invoices WHERE period_start = '2027-01-01'")
        .await;
    assert_eq!(others, 4);
    let mut conn = db.pool.acquire().await.expect("conn");
    let nov = reports::mrr(&mut conn, month("2026-11").first_day)
        .await
        .expect("mrr");
    let dec = reports::mrr(&mut conn, month("2026-12").first_day)
        .await
        .expect("mrr");
    assert_eq!((nov, dec), (Decimal::from(5 * 249), Decimal::from(4 * 249)));
    // So does the money view.
    let agent = db.agent_id(PHONE_1).await;
    for (m, rows, listed) in [("2026-11", 5, true), ("2026-12", 4, false)] {
        let money = reports::money(&mut conn, month(m), Phoenix)
            .await
            .expect("money");
        assert_eq!(money.len(), rows, "{m}");
        assert_eq!(money.iter().any(|r| r.agent_id == agent), listed, "{m}");
    }
}

#[tokio::test]
async fn impossible_moves_are_refused_with_their_reason() {
    let db = TestDb::seeded().await;
    let refused = async |args: &[&str], why: &str| {
        let (ok, out, err) = run_on(&db.url, args).await;
        assert!(!ok && err.contains(why), "{args:?}: {out}{err}");
    };
    refused(
        &["agents", "reactivate", EMAIL_1],
        "is active, not cancelled; nothing to reactivate",
    )
    .await;
    refused(&["agents", "resume", EMAIL_1], "is not paused").await;
    refused(
        &["agents", "cancel", EMAIL_1, "--on", "2026-10-31"],
        "before its billing starts on 2026-11-01",
    )
    .await;
    refused(
        &["agents", "pause", "nobody@example.com"],
        "no agent with email nobody@example.com",
    )
    .await;
    refused(
        &["agents", "cancel", "--on", "2026-13-01", EMAIL_1],
        "invalid value",
    )
    .await;

    let (ok, out, err) = run_on(&db.url, &["agents", "pause", EMAIL_1]).await;
    assert!(
        ok && out.contains("active -> paused") && out.contains("still billed"),
        "{err}"
    );
    refused(&["agents", "pause", EMAIL_1], "is already paused").await;
    assert_eq!(listed(&db, EMAIL_1).await["status"], "paused");
    // Paused is still billed.
    run_ok(
        &db.url,
        &format!("invoices rollup --month 2026-11 --agent {EMAIL_1}"),
    )
    .await;
    assert_eq!(invoices_of(&db, EMAIL_1).await.len(), 1);
    let (ok, out, err) = run_on(&db.url, &["agents", "resume", EMAIL_1]).await;
    assert!(ok && out.contains("paused -> active"), "{err}");

    // A past day is refused once usage occurred on or after it.
    let agent = db.agent_id(PHONE_1).await;
    add_usage(
        &db.pool,
        agent,
        SCAN,
        "2026-11-25T18:00:00Z",
        "scan-late-nov",
    )
    .await;
    refused(
        &["agents", "cancel", EMAIL_1, "--on", "2026-11-20"],
        "1 usage row(s) occurred on or after that day",
    )
    .await;
    run_ok(&db.url, &format!("agents cancel {EMAIL_1} --on 2026-11-26")).await;
    refused(
        &["agents", "cancel", EMAIL_1],
        "was already cancelled on 2026-11-26",
    )
    .await;
    refused(
        &["agents", "pause", EMAIL_1],
        "was cancelled on 2026-11-26; reactivate it first",
    )
    .await;
    // `agents set --status` goes through the same moves.
    refused(
        &["agents", "set", EMAIL_1, "--status", "paused"],
        "reactivate it first",
    )
    .await;
    let moves = db
        .count("SELECT count(*) FROM agent_lifecycle_events")
        .await;
    assert_eq!(moves, 3, "pause, resume, cancel: refusals change nothing");
}

#[tokio::test]
async fn the_billing_start_moves_until_an_invoice_is_final() {
    let db = TestDb::seeded().await;
    let set_start = |day: &str| format!("agents set {EMAIL_1} --billing-starts-on {day}");
    let out = run_ok(&db.url, &set_start("2026-10-15")).await;
    assert_has(&out, "the setup fee and first subscription are 2026-10's");
    assert_eq!(
        listed(&db, EMAIL_1).await["billing_starts_on"],
        "2026-10-15"
    );
    for m in ["2026-10", "2026-11"] {
        run_ok(
            &db.url,
            &format!("invoices rollup --month {m} --agent {EMAIL_1}"),
        )
        .await;
    }
    let invoices = invoices_of(&db, EMAIL_1).await;
    assert_eq!(
        invoices
            .iter()
            .map(|i| (i.0.as_str(), i.2.len()))
            .collect::<Vec<_>>(),
        [("2026-10", 2), ("2026-11", 1)],
        "{invoices:?}"
    );
    // Moving it later drops the draft of a month no longer billed.
    run_ok(&db.url, &set_start("2026-11-01")).await;
    assert_eq!(
        invoices_of(&db, EMAIL_1)
            .await
            .iter()
            .map(|i| i.0.as_str().to_string())
            .collect::<Vec<_>>(),
        ["2026-11"]
    );
    run_ok(
        &db.url,
        &format!("invoices finalize --month 2026-11 --agent {EMAIL_1}"),
    )
    .await;
    let (ok, _, err) = run_line(&db.url, &set_start("2026-10-01")).await;
    assert!(
        !ok && err.contains("its invoice for 2026-11 is finalized"),
        "{err}"
    );
}

/// The months a reactivation leaves out, with a clock of the test's own.
#[tokio::test]
async fn a_reactivation_bills_again_from_its_month_without_a_second_setup_fee() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    // Cancelled in November (a scheduled cancellation first, then its day comes).
    let cancel_on = |d: &str| Move::Cancel(Some(day(d)));
    let scheduled = apply(&db, cancel_on("2026-11-20"), "2026-11-10T12:00:00Z")
        .await
        .expect("schedule");
    assert_eq!(
        (scheduled.from, scheduled.to),
        (State::Active, State::Active)
    );
    let a = agents::find(&mut db.pool.acquire().await.expect("conn"), agent)
        .await
        .expect("find")
        .expect("agent");
    assert_eq!(a.state(at("2026-11-20T06:59:59Z"), Phoenix), State::Active);
    assert_eq!(
        a.state(at("2026-11-20T07:00:00Z"), Phoenix),
        State::Cancelled
    );
    // Back in February: December and January are not billed.
    let back = apply(&db, Move::Reactivate, "2027-02-10T18:00:00Z")
        .await
        .expect("reactivate");
    assert_eq!((back.from, back.to), (State::Cancelled, State::Active));
    assert!(
        back.summary
            .contains("billed again from 2027-02 (not 2026-12 through 2027-01)"),
        "{}",
        back.summary
    );
    for m in ["2026-11", "2026-12", "2027-01", "2027-02", "2027-03"] {
        rollup(&db.pool, m, Some(EMAIL_1)).await;
    }
    let months: Vec<(String, Vec<(String, String)>)> = invoices_of(&db, EMAIL_1)
        .await
        .into_iter()
        .map(|(m, _, l)| (m, l))
        .collect();
    assert_eq!(
        months,
        [
            (
                "2026-11".to_string(),
                lines(&[("subscription", "249.00"), ("setup_fee", "500.00")])
            ),
            ("2027-02".to_string(), lines(&[("subscription", "249.00")])),
            ("2027-03".to_string(), lines(&[("subscription", "249.00")])),
        ]
    );
    // Finalizing in order skips the months it did not pay for.
    for m in ["2026-11", "2027-02"] {
        finalize(&db.pool, m, Some(EMAIL_1))
            .await
            .expect("finalize");
    }
    // A cancellation before the reactivation is refused; a withdrawn schedule leaves no gap.
    let early = apply(&db, cancel_on("2027-02-01"), "2027-03-05T18:00:00Z").await;
    assert!(
        matches!(&early, Err(MoveError::Refused(why)) if why.contains("before its billing starts on 2027-02-10")),
        "{early:?}"
    );
    apply(&db, cancel_on("2027-04-30"), "2027-03-05T18:00:00Z")
        .await
        .expect("schedule");
    let withdrawn = apply(&db, Move::Reactivate, "2027-03-06T18:00:00Z")
        .await
        .expect("withdraw");
    assert!(
        withdrawn.summary.contains("withdrawn"),
        "{}",
        withdrawn.summary
    );
    assert_eq!(db.count("SELECT count(*) FROM agent_billing_gaps").await, 1);
}

#[tokio::test]
async fn a_past_cancellation_is_refused_under_a_later_final_invoice() {
    let db = TestDb::seeded().await;
    for m in ["2026-11", "2026-12"] {
        rollup(&db.pool, m, Some(EMAIL_1)).await;
        finalize(&db.pool, m, Some(EMAIL_1))
            .await
            .expect("finalize");
    }
    let cancel = Move::Cancel(Some(day("2026-11-15")));
    let refused = apply(&db, cancel, "2027-06-01T00:00:00Z").await;
    assert!(
        matches!(&refused, Err(MoveError::Refused(why)) if why.contains("its invoice for 2026-12, after that month, is finalized")),
        "{refused:?}"
    );
}

/// Enforcement from the day of the cancellation: calls, tool calls, API tokens, the portal.
#[tokio::test]
async fn a_cancelled_agency_can_do_nothing_but_read_its_invoices() {
    let app = TestApp::spawn().await;
    let agent = app.db.agent_id(PHONE_1).await;
    let token = {
        let mut conn = app.db.pool.acquire().await.expect("conn");
        agents::new_token(&mut conn, agent).await.expect("token")
    };
    let me = |token: String| {
        let base = app.base.clone();
        async move {
            client()
                .get(format!("{base}/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(token.clone()).await, 200);
    // A call that started before the cancellation, reported afterwards, is still billed.
    let before = end_of_call_report("call-before", PHONE_1);

    run_ok(&app.db.url, &format!("agents cancel {EMAIL_1}")).await;
    // The routing cache holds an agent for 2 s: wait until the web sees the cancellation.
    let answer = eventually(10, "the cancellation is seen", || async {
        let resp = app
            .post(&assistant_request("call-after", PHONE_1, "+16025550111"))
            .await;
        let body: Value = resp.json().await.expect("json");
        body.get("error").is_some().then_some(body)
    })
    .await;
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("not in service")),
        "{answer}"
    );
    let water = json!({"id": "tc-after", "type": "function",
                       "function": {"name": "water_lookup",
                                    "arguments": {"latitude": 35.2, "longitude": -111.6}}});
    let tools = app.tools_answer("call-after", json!([water])).await;
    assert!(tools["results"][0]["error"].is_string(), "{tools}");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'water_lookup'")
            .await,
        0,
        "no job for a refused tool call"
    );
    // A call that starts after the cancellation is stored, never metered.
    let now = Utc::now().to_rfc3339();
    let mut after = end_of_call_report("call-after", PHONE_1);
    after["message"]["startedAt"] = json!(now);
    after["message"]["endedAt"] = json!(now);
    for report in [&before, &after] {
        assert_eq!(app.post(report).await.status(), 200);
    }
    assert_eq!(app.db.count("SELECT count(*) FROM calls").await, 2);
    drain(&app.db.pool, 20).await;
    let billed = app
        .db
        .strings("SELECT idempotency_key FROM agent_usage_metrics")
        .await;
    assert_eq!(billed, ["vapi_call:call-before"]);
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM apalis.jobs WHERE job_type = 'meter_call' AND status = 'Done'"
            )
            .await,
        2,
        "both reports' jobs finished, neither failed"
    );
    assert_eq!(me(token).await, 401, "its API token is refused");

    // It signs in with a new link and sees its invoices, and nothing else.
    let link = {
        let mut conn = app.db.pool.acquire().await.expect("conn");
        portal::create_link(&mut conn, agent, std::time::Duration::from_secs(3600))
            .await
            .expect("link")
    };
    let cookie = portal_sign_in(&app, link).await;
    let get = |path: &'static str| {
        let (base, cookie) = (app.base.clone(), cookie.clone());
        async move {
            let resp = client()
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .expect("send");
            let location = resp
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            (resp.status().as_u16(), location)
        }
    };
    for path in [
        "/portal/",
        "/portal/calls",
        "/portal/leads",
        "/portal/usage",
    ] {
        assert_eq!(
            get(path).await,
            (303, Some("/portal/invoices".to_string())),
            "{path}"
        );
    }
    assert_eq!(get("/portal/invoices").await.0, 200);
}

/// Found by the ledger property test: the billing start moved to an earlier month while the old
/// first month had a draft. That draft held every earlier row (nothing was billed before it) and
/// the setup fee, so the new first month's draft shared its rows and got no setup fee, and once
/// both were finalized in order the fee was never billed. Such drafts now go with the move.
#[tokio::test]
async fn moving_the_billing_start_earlier_leaves_no_stale_draft_of_the_old_first_month() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let now = "2027-02-10T12:00:00Z";
    let start_on = |d: &str| Move::BillingStartsOn(day(d));
    apply(&db, start_on("2026-12-15"), now)
        .await
        .expect("start in December");
    add_usage(&db.pool, agent, SCAN, "2026-11-20T18:00:00Z", "nov-scan").await;
    // December, the first month.
    rollup(&db.pool, "2026-12", Some(EMAIL_1)).await;
    apply(&db, start_on("2026-11-10"), now)
        .await
        .expect("start in November");
    for m in ["2026-11", "2026-12"] {
        billing::finalize(&db.pool, month(m), Phoenix, Some(EMAIL_1), at(now))
            .await
            .expect("finalize");
    }
    assert_eq!(db.count(NOT_HELD_ONCE).await, 0);
    assert_eq!(
        invoices_of(&db, EMAIL_1).await,
        [
            (
                "2026-11".to_string(),
                "finalized".to_string(),
                lines(&[
                    ("subscription", "249.00"),
                    ("setup_fee", "500.00"),
                    ("usage", "0.08")
                ])
            ),
            (
                "2026-12".to_string(),
                "finalized".to_string(),
                lines(&[("subscription", "249.00")])
            )
        ]
    );
}
