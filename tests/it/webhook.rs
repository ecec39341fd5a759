//! `POST /vapi/webhook`: authentication, storage, dedupe, routing, validation, probes.

use agent_meter::http::auth::sign;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

use crate::helpers::*;

fn hmac_headers(body: &[u8], timestamp: i64) -> Vec<(&'static str, String)> {
    vec![
        ("x-timestamp", timestamp.to_string()),
        ("x-signature", sign(HMAC_SECRET, timestamp, body)),
    ]
}

/// POSTs `body` to `url` as `content_type`, with the shared secret.
async fn post_as(url: String, content_type: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .header("x-vapi-secret", SHARED_SECRET)
        .body(body.to_string())
        .send()
        .await
        .expect("send")
}

const CALLS: &str = "SELECT count(*) FROM calls";
const EVENTS: &str = "SELECT count(*) FROM webhook_events";
const JOBS: &str = "SELECT count(*) FROM apalis.jobs";
const LEADS: &str = "SELECT count(*) FROM leads";

/// The bytes of an `end-of-call-report` for `call_id` on the first agent's number.
fn report_bytes(call_id: &str) -> Vec<u8> {
    end_of_call_report(call_id, PHONE_1)
        .to_string()
        .into_bytes()
}

/// Asserts that no webhook event was stored.
async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.db.count(EVENTS).await, 0);
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("JSON error body");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_string()
}

#[tokio::test]
async fn end_of_call_report_is_stored_with_its_job_in_one_go() {
    let app = TestApp::spawn_web_only().await;
    let resp = app.post(&end_of_call_report("call-a", PHONE_1)).await;
    assert_eq!(resp.status(), 200);

    let agent = app.db.agent_id(PHONE_1).await;
    let (agent_id, status, duration, reason, cost, customer): (
        uuid::Uuid,
        String,
        Decimal,
        String,
        Decimal,
        String,
    ) = app
        .db
        .row(
            "SELECT agent_id, status, duration_seconds, ended_reason, vapi_cost_usd,
                    customer_number
               FROM calls WHERE vapi_call_id = 'call-a'",
        )
        .await;
    assert_eq!(agent_id, agent);
    assert_eq!(status, "ended");
    assert_eq!(duration, Decimal::from(150));
    assert_eq!(reason, "customer-ended-call");
    assert_eq!(cost, Decimal::new(42, 2));
    assert_eq!(customer, "+16025550199");

    let (event_type, routing, payload): (String, String, Value) = app
        .db
        .row("SELECT message_type, routing, payload FROM webhook_events")
        .await;
    assert_eq!(
        (event_type.as_str(), routing.as_str()),
        ("end-of-call-report", "routed")
    );
    assert_eq!(
        payload["message"]["artifact"]["transcript"],
        "AI: Hola! ..."
    );

    let (queue, max_attempts, args): (String, i32, Vec<u8>) = app
        .db
        .row("SELECT job_type, max_attempts, job FROM apalis.jobs")
        .await;
    assert_eq!(queue, "meter_call");
    assert_eq!(max_attempts, 8);
    let args: Value = serde_json::from_slice(&args).expect("JSON job args");
    assert_eq!(args["vapi_call_id"], "call-a");
}

#[tokio::test]
async fn hundred_sequential_deliveries_give_one_call_one_event_one_job() {
    let app = TestApp::spawn_web_only().await;
    let report = end_of_call_report("call-seq", PHONE_1);
    for i in 0..100 {
        let resp = app.post(&report).await;
        assert_eq!(resp.status(), 200, "delivery {i}");
    }
    assert_eq!(app.db.counts(&[CALLS, EVENTS, JOBS]).await, [1, 1, 1]);
}

#[tokio::test]
async fn hundred_concurrent_deliveries_meter_once() {
    let app = TestApp::spawn().await;
    let report = end_of_call_report("call-conc", PHONE_1);
    let sends = (0..100).map(|_| app.post(&report));
    let statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    drain(&app.db.pool, 20).await;
    assert_eq!(app.db.counts(&[CALLS, EVENTS, USAGE_ROWS]).await, [1, 1, 1]);
}

#[tokio::test]
async fn duplicate_delivery_answers_ok_and_says_so() {
    let app = TestApp::spawn_web_only().await;
    let report = end_of_call_report("call-dup", PHONE_1);
    let first = app.answer(&report).await;
    let second = app.answer(&report).await;
    assert_eq!(first.get("duplicate"), None);
    assert_eq!(second["duplicate"], true);
}

#[tokio::test]
async fn missing_or_wrong_shared_secret_is_401_and_stores_nothing() {
    let app = TestApp::spawn_web_only().await;
    let body = report_bytes("c");
    let none = app.post_raw(body.clone(), &[]).await;
    assert_eq!(none.status(), 401);
    assert_eq!(error_code(none).await, "unauthorized");
    let wrong = app
        .post_raw(body, &[("x-vapi-secret", format!("{SHARED_SECRET}x"))])
        .await;
    assert_eq!(wrong.status(), 401);
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn valid_hmac_signature_is_accepted() {
    let app = TestApp::spawn_web_only().await;
    let body = report_bytes("c-hmac");
    let now = chrono::Utc::now().timestamp();
    let resp = app.post_raw(body.clone(), &hmac_headers(&body, now)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.db.count(CALLS).await, 1);
}

#[tokio::test]
async fn forged_signature_is_401() {
    let app = TestApp::spawn_web_only().await;
    let body = report_bytes("c-forged");
    let now = chrono::Utc::now().timestamp();
    // Signed for another body: the signature covers the exact bytes.
    let mut headers = hmac_headers(b"{\"message\":{}}", now);
    let resp = app.post_raw(body.clone(), &headers).await;
    assert_eq!(resp.status(), 401);
    // Signed with another key.
    headers[1].1 = sign("not-the-key", now, &body);
    assert_eq!(app.post_raw(body, &headers).await.status(), 401);
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn stale_signature_is_401() {
    let app = TestApp::spawn_web_only().await;
    let body = report_bytes("c-stale");
    let old = chrono::Utc::now().timestamp() - 301;
    let resp = app.post_raw(body.clone(), &hmac_headers(&body, old)).await;
    assert_eq!(resp.status(), 401);
    let future = chrono::Utc::now().timestamp() + 310;
    assert_eq!(
        app.post_raw(body.clone(), &hmac_headers(&body, future))
            .await
            .status(),
        401
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn unknown_phone_number_is_stored_unroutable_without_call_or_usage() {
    let app = TestApp::spawn().await;
    let resp = app
        .post(&end_of_call_report("c-unknown", "ph_nobody"))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["routed"], false);
    let routing: (Option<uuid::Uuid>, String) = app
        .db
        .row("SELECT agent_id, routing FROM webhook_events")
        .await;
    assert_eq!(routing, (None, "unroutable".to_string()));
    // A redelivery of the unroutable message is still a duplicate.
    app.post(&end_of_call_report("c-unknown", "ph_nobody"))
        .await;
    let stored = app
        .db
        .counts(&[EVENTS, CALLS, LEADS, JOBS, USAGE_ROWS])
        .await;
    assert_eq!(stored, [1, 0, 0, 0, 0]);
}

#[tokio::test]
async fn status_update_sets_status_and_never_reopens_an_ended_call() {
    let app = TestApp::spawn_web_only().await;
    let status = |s: &str| {
        json!({"message": {"type": "status-update", "status": s,
               "call": {"id": "c-st", "phoneNumberId": PHONE_1}}})
    };
    assert_eq!(app.post(&status("ringing")).await.status(), 200);
    let read = || {
        app.db
            .scalar::<String>("SELECT status FROM calls WHERE vapi_call_id = 'c-st'")
    };
    assert_eq!(read().await, "ringing");
    app.post(&status("in-progress")).await;
    assert_eq!(read().await, "in-progress");
    app.post(&end_of_call_report("c-st", PHONE_1)).await;
    assert_eq!(read().await, "ended");
    // A late, out-of-order status does not reopen the call.
    let late = json!({"message": {"type": "status-update", "status": "forwarding",
                       "call": {"id": "c-st", "phoneNumberId": PHONE_1}}});
    assert_eq!(app.post(&late).await.status(), 200);
    assert_eq!(read().await, "ended");
}

#[tokio::test]
async fn other_message_types_are_stored_and_answered_ok() {
    let app = TestApp::spawn_web_only().await;
    let msg = json!({"message": {"type": "speech-update", "status": "started", "role": "assistant",
                     "call": {"id": "c-x", "phoneNumberId": PHONE_1}}});
    assert_eq!(app.post(&msg).await.status(), 200);
    let never_seen = json!({"message": {"type": "brand-new-type-2027"}});
    assert_eq!(app.post(&never_seen).await.status(), 200);
    assert_eq!(app.db.counts(&[EVENTS, JOBS]).await, [2, 0]);
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    let app = TestApp::spawn_web_only().await;
    let resp = app
        .post_raw(
            b"{\"message\": ".to_vec(),
            &[("x-vapi-secret", SHARED_SECRET.into())],
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "invalid_json");
}

#[tokio::test]
async fn missing_fields_are_400() {
    let app = TestApp::spawn_web_only().await;
    for (body, code) in [
        (json!({"not_message": {}}), "invalid_message"),
        (json!({"message": {"call": {"id": "x"}}}), "invalid_message"),
        (
            json!({"message": {"type": "status-update", "call": {"id": "x", "phoneNumberId": PHONE_1}}}),
            "invalid_message",
        ),
        (
            json!({"message": {"type": "end-of-call-report", "call": {"id": "x"}, "startedAt": "yesterday"}}),
            "invalid_message",
        ),
        (json!([1, 2, 3]), "invalid_message"),
    ] {
        let resp = app.post(&body).await;
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(error_code(resp).await, code, "{body}");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn wrong_content_type_is_400() {
    let app = TestApp::spawn_web_only().await;
    let url = format!("{}/vapi/webhook", app.base);
    let resp = post_as(url, "text/plain", end_of_call_report("c", PHONE_1)).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "unsupported_content_type");
}

#[tokio::test]
async fn body_one_byte_over_the_limit_is_413_and_at_the_limit_is_accepted() {
    let limit = 4096;
    let app = TestApp::spawn_web_only_with(&[("WEBHOOK_MAX_BODY_BYTES", "4096")]).await;
    let padded = |len: usize| {
        let mut body = end_of_call_report("c-big", PHONE_1);
        let base = body.to_string().len() + r#","pad":"""#.len();
        body["message"]["pad"] = Value::String("x".repeat(len - base));
        let bytes = body.to_string().into_bytes();
        assert_eq!(bytes.len(), len);
        bytes
    };
    let secret = [("x-vapi-secret", SHARED_SECRET.to_string())];
    let over = app.post_raw(padded(limit + 1), &secret).await;
    assert_eq!(over.status(), 413);
    assert_eq!(error_code(over).await, "body_too_large");
    assert_eq!(app.post_raw(padded(limit), &secret).await.status(), 200);
}

#[tokio::test]
async fn seed_path_serves_the_same_webhook() {
    let app = TestApp::spawn_web_only().await;
    let url = format!("{}/functions/v1/vapi-handler", app.base);
    let report = end_of_call_report("c-seedpath", PHONE_1);
    assert_eq!(post_as(url, "application/json", report).await.status(), 200);
    assert_eq!(app.db.count(CALLS).await, 1);
}

#[tokio::test]
async fn unreachable_database_is_503_never_200() {
    // A pool pointing at a port where no PostgreSQL listens.
    let pool = PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:9/nowhere")
        .expect("lazy pool");
    let (base, _stop) = serve_web_on(pool).await;
    let report = end_of_call_report("c", PHONE_1);
    let resp = post_as(format!("{base}/vapi/webhook"), "application/json", report).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(error_code(resp).await, "database_unavailable");
    let ready = get_url(format!("{base}/readyz")).await;
    assert_eq!(ready.status(), 503);
    assert_eq!(get_url(format!("{base}/healthz")).await.status(), 200);
}

#[tokio::test]
async fn readyz_needs_migrations() {
    let db = TestDb::empty().await;
    let (base, _stop) = serve_web_on(db.pool.clone()).await;
    let before = get_url(format!("{base}/readyz")).await;
    assert_eq!(before.status(), 503);
    assert_eq!(error_code(before).await, "not_migrated");
    agent_meter::app::migrate(&db.pool).await.expect("migrate");
    assert_eq!(get_url(format!("{base}/readyz")).await.status(), 200);
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let app = TestApp::spawn_web_only().await;
    let resp = app.get("/nope").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "not_found");
}

#[tokio::test]
async fn metrics_count_webhooks_jobs_usage_and_queue_depth() {
    let app = TestApp::spawn().await;
    app.post(&end_of_call_report("call-metrics", PHONE_1)).await;
    app.post_raw(b"{".to_vec(), &[("x-vapi-secret", SHARED_SECRET.into())])
        .await;
    drain(&app.db.pool, 15).await;
    let text = eventually(10, "the metered job to be counted", || async {
        let text = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("agent_meter_usage_recorded_total")
            .then_some(text)
    })
    .await;
    for needle in [
        "agent_meter_webhook_requests_total{type=\"end-of-call-report\",status=\"200\"}",
        "agent_meter_webhook_requests_total{type=\"unparsed\",status=\"400\"}",
        "agent_meter_jobs_total{kind=\"meter_call\",outcome=\"done\"}",
        "agent_meter_job_duration_seconds_bucket{kind=\"meter_call\"",
        "agent_meter_usage_recorded_total{metric=\"vapi_call_minutes\"}",
        "agent_meter_queue_depth{kind=\"meter_call\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

/// `/metrics` behind `METRICS_TOKEN`; a scrape reads statuses only (a job whose arguments are not
/// JSON cannot break it) and, within `METRICS_CACHE_SECS`, reads nothing: the second scrape
/// answers while the jobs table is locked against every reader.
#[tokio::test]
async fn metrics_are_closed_by_a_token_and_a_scrape_costs_at_most_one_read() {
    let app = TestApp::spawn_web_only_with(&[
        ("METRICS_TOKEN", "scrape-token-0123456789"),
        ("METRICS_CACHE_SECS", "3600"),
    ])
    .await;
    let scrape = |token: Option<&'static str>| {
        let mut req = app
            .http
            .get(format!("{}/metrics", app.base))
            .timeout(std::time::Duration::from_secs(5));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(scrape(None).await.expect("send").status(), 401);
    assert_eq!(
        scrape(Some("scrape-token")).await.expect("send").status(),
        401
    );
    // A job whose arguments are not JSON (written by hand, or a future format).
    app.db
        .execute(
            "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at)
             VALUES ('\\xff00'::bytea, 'odd-job', 'prune_jobs', 'Pending', 0, 3,
                     now() + interval '1 day')",
        )
        .await;
    let first = scrape(Some("scrape-token-0123456789")).await.expect("send");
    assert_eq!(first.status(), 200);
    assert!(
        first
            .text()
            .await
            .expect("text")
            .contains("agent_meter_queue_depth{kind=\"prune_jobs\"}")
    );
    let mut blocker = app.db.pool.begin().await.expect("tx");
    sqlx::query("LOCK TABLE apalis.jobs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let second = scrape(Some("scrape-token-0123456789"))
        .await
        .expect("answered from the cache while the table is locked");
    assert_eq!(second.status(), 200);
    blocker.rollback().await.expect("unlock");
}

/// `campaign.predial`: a contact is dialed unless the number's agency is not in service; a
/// number no agency owns is the campaign's own business (dialed, as before). Each is stored.
#[tokio::test]
async fn a_campaign_contact_is_skipped_only_for_an_agency_not_in_service() {
    let app = TestApp::spawn_web_only().await;
    let pause =
        "UPDATE agents SET status = 'paused' WHERE vapi_phone_number_id = 'ph_placeholder_client5'";
    app.db.execute(pause).await;
    for (n, (phone, eligible)) in [(PHONE_1, true), (PHONES[4], false), ("ph_nobody", true)]
        .into_iter()
        .enumerate()
    {
        let answer = app
            .answer(&json!({"message": {
                "type": "campaign.predial",
                "campaignId": "camp-1",
                "contact": {"number": format!("+1602555012{n}")},
                "phoneNumber": {"id": phone, "provider": "vapi"},
            }}))
            .await;
        assert_eq!(answer, json!({"eligible": eligible}), "{phone}");
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM webhook_events WHERE message_type = 'campaign.predial'")
            .await,
        3
    );
}
