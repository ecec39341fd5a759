//! Every call, whatever its shape (issue 22): built from Vapi's published `Call` schema
//! (`status`, `startedAt` and `endedAt` optional; `endedReason` e.g. `customer-did-not-answer`).

use agent_meter::jobs::{
    Deps, Job, JobError,
    sync_calls::{SyncCalls, SyncReport},
};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::sync::Arc;
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path},
};

use crate::{cli::run_line, helpers::*};

/// Counts the metering jobs that finished.
const METERING_DONE: &str =
    "SELECT count(*) FROM apalis.jobs WHERE job_type = 'meter_call' AND status = 'Done'";

const DAY: &str = "2026-11-20";

fn day() -> NaiveDate {
    DAY.parse().expect("day")
}

/// An answered call on `phone`, 90 s long.
fn answered(id: &str, phone: &str) -> Value {
    json!({"id": id, "orgId": "org-1", "type": "inboundPhoneCall", "phoneNumberId": phone, "status": "ended",
           "customer": {"number": "+16025550123"},
           "startedAt": "2026-11-20T17:00:00Z", "endedAt": "2026-11-20T17:01:30Z",
           "endedReason": "customer-ended-call", "cost": 0.12,
           "createdAt": "2026-11-20T16:59:50Z", "updatedAt": "2026-11-20T17:01:31Z"})
}

/// An outbound call nobody answered: ended, with a reason, never started.
fn unanswered(id: &str, phone: &str) -> Value {
    json!({"id": id, "orgId": "org-1", "type": "outboundPhoneCall", "phoneNumberId": phone, "status": "ended",
           "customer": {"number": "+16025550124"},
           "endedAt": "2026-11-20T18:00:40Z", "endedReason": "customer-did-not-answer",
           "cost": 0, "createdAt": "2026-11-20T18:00:00Z", "updatedAt": "2026-11-20T18:00:41Z"})
}

/// The whole day's sync, every agency, as `sync-calls --date` runs it.
async fn sync_day(db: &TestDb, mocks: &Mocks) -> Result<SyncReport, JobError> {
    SyncCalls {
        date: day(),
        agent_id: None,
        slice: None,
    }
    .sync(&deps(db, mocks))
    .await
}

fn deps(db: &TestDb, mocks: &Mocks) -> Deps {
    let vars = mocks.config();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Deps::new(db.pool.clone(), Arc::new(test_config(&borrowed)))
}

/// (call, status, ended reason, billed minutes) for every call, by Vapi id.
async fn calls_and_minutes(
    db: &TestDb,
) -> Vec<(String, Option<String>, Option<String>, Option<Decimal>)> {
    db.rows("SELECT c.vapi_call_id, c.status, c.ended_reason,
                (SELECT sum(u.quantity) FROM agent_usage_metrics u
                  WHERE u.agent_id = c.agent_id AND u.idempotency_key = 'vapi_call:' || c.vapi_call_id)
           FROM calls c ORDER BY c.vapi_call_id").await
}

/// A day on which the first agency had an unanswered and an answered call, and the second one
/// a call we cannot store (a customer number with U+0000, which PostgreSQL refuses), then
/// `more` of its calls.
async fn a_day_with_a_bad_call(more: &[Value]) -> (Mocks, TestDb) {
    let mocks = Mocks::start().await;
    let db = TestDb::seeded().await;
    let mut bad = answered("call-bad", PHONE_2);
    bad["customer"]["number"] = json!("+1602\u{0000}555");
    let day: Vec<Value> = [
        unanswered("call-nobody", PHONE_1),
        answered("call-answered", PHONE_1),
        bad,
    ]
    .into_iter()
    .chain(more.iter().cloned())
    .collect();
    vapi_lists(&mocks, Value::Array(day)).await;
    (mocks, db)
}

/// The bad call is logged and counted; the rest of the day goes on.
#[tokio::test]
async fn an_unanswered_call_is_billed_zero_minutes_and_never_halts_the_sync() {
    let (mocks, db) = a_day_with_a_bad_call(&[answered("call-two", PHONE_2)]).await;
    let report = sync_day(&db, &mocks).await.expect("the day is synced");
    assert_eq!(
        (
            report.agents,
            report.seen,
            report.metered,
            report.not_connected,
            report.failed
        ),
        (5, 4, 3, 1, 1),
        "{report:?}"
    );
    assert_eq!(
        calls_and_minutes(&db).await,
        [
            (
                "call-answered".into(),
                Some("ended".into()),
                Some("customer-ended-call".into()),
                Some(Decimal::new(15, 1))
            ),
            (
                "call-nobody".into(),
                Some("ended".into()),
                Some("customer-did-not-answer".into()),
                Some(Decimal::ZERO)
            ),
            (
                "call-two".into(),
                Some("ended".into()),
                Some("customer-ended-call".into()),
                Some(Decimal::new(15, 1))
            ),
        ]
    );
    // Again: nothing new, nothing failed twice over, nothing billed twice.
    let again = sync_day(&db, &mocks).await.expect("again");
    assert_eq!((again.metered, again.corrected), (0, 0), "{again:?}");
    assert_eq!(db.count(USAGE_ROWS).await, 3);
}

#[tokio::test]
async fn sync_calls_prints_each_agency_and_names_the_one_not_fully_synced() {
    let (mocks, db) = a_day_with_a_bad_call(&[]).await;
    let out = crate::cli::agent_meter()
        .args(["sync-calls", "--date", DAY])
        .env("DATABASE_URL", &db.url)
        .envs(mocks.config())
        .output()
        .await
        .expect("run");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert_has(
        &stdout,
        "client1@agent-meter.example: 2 found, 2 new, 2 metered, 0 corrected, 1 not connected, 0 failed",
    );
    assert_has(
        &stdout,
        "client2@agent-meter.example: 1 found, 0 new, 0 metered, 0 corrected, 0 not connected, 1 failed",
    );
    assert_has(&stdout, "client5@agent-meter.example: 0 found");
    assert!(
        stderr.contains(
            "not everything was synced for: client2@agent-meter.example (the others were)"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_a_vapi_key_the_daily_sync_is_skipped_quietly() {
    let db = TestDb::seeded().await;
    let deps = Deps::new(db.pool.clone(), Arc::new(test_config(&[])));
    SyncCalls {
        date: day(),
        agent_id: None,
        slice: None,
    }
    .run(&deps)
    .await
    .expect("skipped, not failed");
    assert_eq!(
        db.count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'sync_calls'")
            .await,
        0,
        "no per-agency jobs to fail"
    );
    let out = crate::cli::agent_meter()
        .args(["sync-calls", "--date", DAY])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("VAPI_API_KEY is not set"));
}

/// The webhook's report of an unanswered call: stored with its reason, a 0-minute row, and its
/// `meter_call` job done (never failed, never killed).
#[tokio::test]
async fn a_report_of_a_call_nobody_answered_is_metered_zero_minutes() {
    let app = TestApp::spawn().await;
    let report = json!({"message": {
        "type": "end-of-call-report",
        "call": {"id": "call-nobody", "type": "outboundPhoneCall", "phoneNumberId": PHONE_1,
                 "customer": {"number": "+16025550124"}},
        "endedAt": "2026-11-20T18:00:40.000Z",
        "endedReason": "customer-did-not-answer",
        "cost": 0,
        "artifact": {},
        "analysis": {}
    }});
    assert_eq!(app.post(&report).await.status(), 200);
    drain(&app.db.pool, 20).await;
    assert_eq!(
        calls_and_minutes(&app.db).await,
        [(
            "call-nobody".into(),
            Some("ended".into()),
            Some("customer-did-not-answer".into()),
            Some(Decimal::ZERO)
        )]
    );
    assert_eq!(app.db.count(METERING_DONE).await, 1);
}

/// Statuses only move forward, whatever order Vapi's messages arrive in; in-progress again after
/// forwarding (the forwarded leg connects) is taken.
#[tokio::test]
async fn call_statuses_only_move_forward() {
    let app = TestApp::spawn_web_only().await;
    let status = |s: &str, at: u64| {
        json!({"message": {"type": "status-update", "status": s, "timestamp": at,
               "call": {"id": "c-order", "phoneNumberId": PHONE_1}}})
    };
    let read = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM calls WHERE vapi_call_id = 'c-order'")
            .fetch_one(&app.db.pool)
            .await
            .expect("call")
    };
    for (s, at, expected) in [
        ("in-progress", 3, "in-progress"),
        ("ringing", 2, "in-progress"),
        ("queued", 1, "in-progress"),
        ("forwarding", 4, "forwarding"),
        ("ringing", 5, "forwarding"),
        ("in-progress", 6, "in-progress"),
        ("forwarding", 7, "forwarding"),
        ("ended", 8, "ended"),
        ("in-progress", 9, "ended"),
    ] {
        assert_eq!(app.post(&status(s, at)).await.status(), 200);
        assert_eq!(read().await, expected, "after {s} at {at}");
    }
    // A redelivered message (same stamp) is a duplicate.
    let again: Value = app
        .post(&status("in-progress", 6))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["duplicate"], true, "{again}");
}

/// Routing prefers the agency our own answer named, then the number, then the saved assistant.
#[tokio::test]
async fn our_own_agent_id_routes_before_the_number_and_the_assistant() {
    let app = TestApp::spawn_web_only().await;
    let (a, b) = app.db.two_agents().await;
    let msg = json!({"message": {"type": "status-update", "status": "in-progress",
        "call": {"id": "c-route", "phoneNumberId": PHONE_1,
                 "assistantOverrides": {"variableValues": {"agent_id": b.to_string()}}}}});
    assert_eq!(app.post(&msg).await.status(), 200);
    let owner: uuid::Uuid = app
        .db
        .scalar("SELECT agent_id FROM calls WHERE vapi_call_id = 'c-route'")
        .await;
    assert_eq!(owner, b);
    assert_ne!(owner, a);
}

/// A Vapi assistant belongs to one agency: a second is refused, naming the owner.
#[tokio::test]
async fn a_vapi_assistant_has_one_owner() {
    let db = TestDb::seeded().await;
    let run = async |args: &[&str]| crate::cli::run_on(&db.url, args).await;
    let give = async |who: &str, assistant: &str| {
        let email = format!("{who}@agent-meter.example");
        run(&["agents", "set", &email, "--vapi-assistant-id", assistant]).await
    };
    let (ok, _, err) = give("client2", "asst-shared").await;
    assert!(ok, "{err}");
    let (ok, _, err) = give("client3", "asst-shared").await;
    assert!(
        !ok && err.contains("Vapi assistant asst-shared belongs to client2@agent-meter.example"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "agents",
        "add",
        "--agency-name",
        "Kingman Insurance",
        "--email",
        "k@agent-meter.example",
        "--vapi-assistant-id",
        "asst-shared",
    ])
    .await;
    assert!(
        !ok && err.contains("belongs to client2@agent-meter.example"),
        "{err}"
    );
    let (ok, _, err) = run_line(
        &db.url,
        "agents add --agency-name Dup --email client2@agent-meter.example",
    )
    .await;
    assert!(
        !ok && err.contains("an agent with that email already exists"),
        "{err}"
    );
    // Cleared, it can be given to another.
    let (ok, _, err) = give("client2", "").await;
    assert!(ok, "{err}");
    let (ok, _, err) = give("client3", "asst-shared").await;
    assert!(ok, "{err}");
}

/// A web call with our transient assistant: it names agency `agent` in its metadata.
fn web_with_our_assistant(id: &str, agent: uuid::Uuid) -> Value {
    let mut call = answered(id, PHONE_1);
    call.as_object_mut().expect("call").remove("phoneNumberId");
    call["type"] = json!("webCall");
    call["assistant"] = json!({"name": "Flagstaff", "metadata": {"agent_id": agent.to_string()}});
    call
}

/// A web call on a saved assistant (no number).
fn web_with_saved_assistant(id: &str, assistant: &str) -> Value {
    let mut call = answered(id, PHONE_1);
    call.as_object_mut().expect("call").remove("phoneNumberId");
    call["type"] = json!("webCall");
    call["assistantId"] = json!(assistant);
    call
}

/// A squad's web call: no number, no assistant of ours.
fn squad_web_call(id: &str) -> Value {
    let mut call = web_with_saved_assistant(id, "unused");
    call.as_object_mut().expect("call").remove("assistantId");
    call["squadId"] = json!("squad-x");
    call
}

/// Every call shape these tests replay is a `Call` by Vapi's published schema.
#[test]
fn every_call_shape_here_is_a_call_by_vapis_schema() {
    let Some(spec) = crate::vapi_schema::spec() else {
        println!("SKIPPED: Vapi's OpenAPI document not found");
        return;
    };
    for call in [
        answered("a", PHONE_1),
        unanswered("b", PHONE_1),
        web_with_our_assistant("c", uuid::Uuid::nil()),
        web_with_saved_assistant("d", "asst-b"),
        squad_web_call("e"),
    ] {
        crate::vapi_schema::assert_valid(&spec, "Call", &call);
    }
}

/// The daily sync lists the organisation once and routes each call by the webhook's rules: a web
/// call with our transient assistant (its `metadata.agent_id`) is found, a call on a number no
/// agency owns is counted unroutable, and a call one agency recorded first is never stored or
/// billed for another.
#[tokio::test]
async fn the_sync_routes_every_call_shape_to_one_agency() {
    let mocks = Mocks::start().await;
    let db = TestDb::seeded().await;
    let (a, b) = db.two_agents().await;
    db.execute_with(
        "UPDATE agents SET vapi_assistant_id = 'asst-b' WHERE id = $1",
        b,
    )
    .await;
    let ours = web_with_our_assistant("web-transient", a);
    // A phone call on A's number whose assistant is B's saved one: the number wins.
    let mut on_a = answered("phone-a", PHONE_1);
    on_a["assistantId"] = json!("asst-b");
    let web_b = web_with_saved_assistant("web-b", "asst-b");
    // Another organisation number, and a squad call: no agency.
    let stranger = answered("stranger", "ph_unknown");
    let squad = squad_web_call("squad-1");
    // B's webhook recorded this call first (as its own); the listing routes it to A by number.
    let first_seen = answered("first-seen", PHONE_1);
    db.execute_with(
        "INSERT INTO calls (agent_id, vapi_call_id, status)
         VALUES ($1, 'first-seen', 'in-progress')",
        b,
    )
    .await;
    vapi_lists(
        &mocks,
        json!([ours, on_a, web_b, stranger, squad, first_seen]),
    )
    .await;
    let report = sync_day(&db, &mocks).await.expect("sync");
    assert_eq!(report.unroutable, 2, "{report:?}");
    // "key owner" of each row, the owner named "a" or "b".
    let owned = |rows: Vec<(String, uuid::Uuid)>| -> Vec<String> {
        let name = |id| match id {
            id if id == a => "a",
            id if id == b => "b",
            _ => "another",
        };
        rows.into_iter()
            .map(|(k, id)| format!("{k} {}", name(id)))
            .collect()
    };
    let calls = db
        .rows("SELECT vapi_call_id, agent_id FROM calls ORDER BY vapi_call_id")
        .await;
    assert_eq!(
        owned(calls),
        ["first-seen b", "phone-a a", "web-b b", "web-transient a"]
    );
    let billed = db
        .rows("SELECT idempotency_key, agent_id FROM agent_usage_metrics ORDER BY idempotency_key")
        .await;
    assert_eq!(
        owned(billed),
        [
            "vapi_call:phone-a a",
            "vapi_call:web-b b",
            "vapi_call:web-transient a"
        ],
        "first-seen is B's call: not billed to A (B's own report bills it)"
    );
}

/// Calls carry their artifacts: a page over the size limit is asked again with fewer calls a
/// page, and nothing is lost.
#[tokio::test]
async fn a_page_too_large_to_read_is_asked_again_with_fewer_calls() {
    let mocks = Mocks::start().await;
    let db = TestDb::seeded().await;
    // 65 MB: over the 64 MB a response may hold.
    let huge = format!("[{}]", " ".repeat(65 * 1024 * 1024));
    Mock::given(method("GET"))
        .and(path("/call"))
        .and(wiremock::matchers::query_param("limit", "1000"))
        .respond_with(ResponseTemplate::new(200).set_body_string(huge))
        .mount(&mocks.vapi)
        .await;
    Mock::given(method("GET"))
        .and(path("/call"))
        .and(wiremock::matchers::query_param("limit", "250"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([answered("c-1", PHONE_1), answered("c-2", PHONE_2)])),
        )
        .mount(&mocks.vapi)
        .await;
    let report = sync_day(&db, &mocks).await.expect("sync");
    assert_eq!((report.seen, report.metered), (2, 2), "{report:?}");
}
