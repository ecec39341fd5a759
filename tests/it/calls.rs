//! The call flow: assistant-request, tool calls through Gemini and ArcGIS, Discord, metering.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

use crate::helpers::*;

const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn solar_call(id: &str) -> Value {
    json!({"id": id, "name": "solar_ocr_scan",
           "arguments": {"image_base64": PNG_BASE64, "mime_type": "image/png", "address": "1 Elm St, Flagstaff"}})
}

fn water_call(id: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": "adwr-lookup",
           "arguments": "{\"latitude\": 35.1983, \"longitude\": -111.6513, \"address\": \"1 Elm St, Flagstaff\"}"}})
}

/// Discord taking every post, and the agencies on `phones` posting there.
async fn discord_for(app: &TestApp, mocks: &Mocks, phones: &[&str]) {
    Mock::given(method("POST"))
        .and(path("/api/webhooks/123/secret-token"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&mocks.discord)
        .await;
    sqlx::query("UPDATE agents SET discord_webhook_url = $1 WHERE vapi_phone_number_id = ANY($2)")
        .bind(mocks.discord_url())
        .bind(phones)
        .execute(&app.db.pool)
        .await
        .expect("discord url");
}

/// Stand-ins whose Gemini finds 18 owned panels on every roof.
async fn gemini_ok() -> Mocks {
    let mocks = Mocks::start().await;
    mount_gemini_ok(&mocks).await;
    mocks
}

async fn mount_gemini_ok(mocks: &Mocks) {
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(header("x-goog-api-key", "test-gemini-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_solar_answer()))
        .mount(&mocks.gemini)
        .await;
}

/// Mounts `first` on Gemini for its first `times` requests; the 18-panel answer after them.
async fn gemini_first(mocks: &Mocks, first: Mock, times: u64) {
    first
        .up_to_n_times(times)
        .with_priority(1)
        .mount(&mocks.gemini)
        .await;
    mount_gemini_ok(mocks).await;
}

/// The app on `mocks`, answering a tool call after at most 100 ms of waiting for its job.
async fn impatient_app(mocks: &Mocks) -> TestApp {
    TestApp::spawn_with_mocks(mocks, &[("TOOL_RESULT_WAIT_MS", "100")]).await
}

/// Asks, in call `call_id` on the first agent's number, for the one tool `call`: the answer,
/// which is a 200 whatever the tool did.
async fn ask(app: &TestApp, call_id: &str, call: Value) -> Value {
    let resp = app.post_tools(call_id, json!([call])).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Asks, in call `call_id`, for the one tool `call`, lets the queue drain and checks that the tool
/// call was metered once as `metric` at `price`: the answer, and what its first result said.
async fn ask_metered(
    app: &TestApp,
    (call_id, call): (&str, Value),
    (metric, price): (&str, Decimal),
) -> (Value, String) {
    let key = format!("tool_call:{}", call["id"].as_str().expect("tool call id"));
    let body = ask(app, call_id, call).await;
    let said = body["results"][0]["result"].as_str().expect("result");
    let said = said.to_string();
    drain(&app.db.pool, 15).await;
    let metered = usage_rows(&app.db.pool, Some(metric)).await;
    assert_eq!(metered, vec![(key, Decimal::ONE, price)]);
    (body, said)
}

const SCANS: &str = "SELECT count(*) FROM agent_usage_metrics WHERE metric_type = 'solar_ocr_scan'";

async fn wait_for_job_status(app: &TestApp, status: &str) -> (i32, Value) {
    eventually(20, &format!("a job to be {status}"), || async {
        sqlx::query_as("SELECT attempts, last_result FROM apalis.jobs WHERE status = $1 AND job_type <> 'notify_discord'")
            .bind(status)
            .fetch_optional(&app.db.pool)
            .await
            .expect("query")
    })
    .await
}

#[tokio::test]
async fn assistant_request_answers_with_the_default_persona_and_creates_the_lead_once() {
    let app = TestApp::spawn_web_only().await;
    let resp = app
        .post(&assistant_request("c1", PHONE_1, "+16025550111"))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let prompt = body["assistant"]["model"]["messages"][0]["content"]
        .as_str()
        .expect("prompt");
    assert_has_all(prompt, &["Flagstaff Family Insurance", "Spanish"]);
    assert!(
        body["assistant"]["firstMessage"]
            .as_str()
            .expect("greeting")
            .contains("Flagstaff Family Insurance")
    );
    assert_eq!(
        body["assistant"]["model"]["tools"].as_array().map(Vec::len),
        Some(agent_meter::tools::registry().len()),
        "every registered tool, for an agent with the default tools"
    );
    // A second call from the same number, and a redelivery, find the same lead.
    let second = assistant_request("c2", PHONE_1, "+16025550111");
    app.post(&second).await;
    let again = app.answer(&second).await;
    assert!(
        again.get("assistant").is_some(),
        "a redelivered request still gets its assistant"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM leads").await, 1);
    assert_eq!(app.db.count("SELECT count(*) FROM webhook_events").await, 2);
}

#[tokio::test]
async fn assistant_request_uses_the_agents_own_assistant_or_prompt() {
    let app = TestApp::spawn_web_only().await;
    sqlx::query(
        "UPDATE agents SET vapi_assistant_id = 'asst_123', greeting = '¡Hola! Prescott Valley.'
          WHERE vapi_phone_number_id = $1",
    )
    .bind(PHONE_2)
    .execute(&app.db.pool)
    .await
    .expect("assistant id");
    app.db
        .execute(
            "UPDATE agents SET system_prompt = 'Solo español, para {agency_name}.'
              WHERE vapi_phone_number_id = 'ph_placeholder_client3'",
        )
        .await;

    let own = app.answer(&assistant_request("c1", PHONE_2, "+1602")).await;
    assert_eq!(own["assistantId"], "asst_123");
    assert_eq!(
        own["assistantOverrides"]["firstMessage"],
        "¡Hola! Prescott Valley."
    );
    assert_eq!(
        own["assistantOverrides"]["variableValues"]["agency_name"],
        "Prescott Valley Insurance"
    );

    let prompt = app
        .answer(&assistant_request("c2", "ph_placeholder_client3", "+1602"))
        .await;
    assert_eq!(
        prompt["assistant"]["model"]["messages"][0]["content"],
        "Solo español, para Sedona Red Rock Insurance."
    );
}

#[tokio::test]
async fn assistant_request_for_an_unknown_number_is_a_clear_error_and_stored_unroutable() {
    let app = TestApp::spawn_web_only().await;
    let resp = app
        .post(&assistant_request("c1", "ph_unknown", "+1602"))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not in service")),
        "{body}"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM webhook_events WHERE routing = 'unroutable'")
            .await,
        1
    );
    assert_eq!(app.db.count("SELECT count(*) FROM leads").await, 0);
}

#[tokio::test]
async fn solar_tool_call_answers_with_the_finding_and_meters_one_scan() {
    let mocks = gemini_ok().await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;
    let solar = ("call-s", solar_call("tc-solar"));
    let (body, said) = ask_metered(&app, solar, ("solar_ocr_scan", Decimal::new(75, 3))).await;
    assert_eq!(body["results"][0]["toolCallId"], "tc-solar");
    assert_has_all(&said, &["18 panels", "owned"]);
    let (tag, has_solar): (String, Option<bool>) = app
        .db
        .row("SELECT t.tag, p.has_solar FROM tags t JOIN properties p ON p.lead_id = t.lead_id")
        .await;
    assert_eq!((tag.as_str(), has_solar), ("solar", Some(true)));
    // The finding names the call it was asked in (the portal shows it with that call).
    let call: Option<String> = app
        .db
        .scalar("SELECT vapi_call_id FROM risk_assessments")
        .await;
    assert_eq!(call.as_deref(), Some("call-s"));
    let sent: Value =
        serde_json::from_slice(&mocks.gemini.received_requests().await.expect("recorded")[0].body)
            .expect("json request");
    assert_eq!(
        sent["contents"][0]["parts"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(sent["generationConfig"]["responseSchema"].is_object());
}

#[tokio::test]
async fn solar_scan_fetches_an_image_url() {
    let mocks = gemini_ok().await;
    Mock::given(method("GET"))
        .and(path("/roof.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(vec![137u8, 80, 78, 71]),
        )
        .mount(&mocks.arcgis)
        .await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;
    let call = json!({"id": "tc-url", "name": "solar-ocr-scanner",
                      "arguments": {"image_url": format!("{}/roof.png", mocks.arcgis.uri())}});
    ask(&app, "call-u", call).await;
    drain(&app.db.pool, 15).await;
    assert_eq!(app.db.count(SCANS).await, 1);
}

#[tokio::test]
async fn water_tool_call_follows_paging_and_meters_a_free_lookup() {
    let mocks = Mocks::start().await;
    let page = |offset: &str, wells: Vec<Value>, more: bool| {
        Mock::given(method("GET"))
            .and(path(ARCGIS_QUERY_PATH))
            .and(query_param("resultOffset", offset))
            .and(query_param("f", "json"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"features": wells, "exceededTransferLimit": more})),
            )
    };
    // The service pages by the count it received, whatever page size it asked for.
    let first: Vec<Value> = (0..3)
        .map(|i| well(550_000 + i, 35.21 + i as f64 * 0.001, -111.66))
        .collect();
    page("0", first, true).mount(&mocks.arcgis).await;
    page("3", vec![well(559_999, 35.1984, -111.6513)], false)
        .mount(&mocks.arcgis)
        .await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;

    let water = ("call-w", water_call("tc-water"));
    let (body, said) = ask_metered(&app, water, ("water_lookup", Decimal::ZERO)).await;
    assert_eq!(body["results"][0]["name"], "adwr-lookup");
    assert_has_all(&said, &["4 registered well(s)", "559999"]);
    let source: Option<String> = app.db.scalar("SELECT water_source FROM properties").await;
    assert_eq!(source.as_deref(), Some("private_well"));
    let summary: Value = app
        .db
        .scalar("SELECT result->'summary' FROM risk_assessments WHERE kind = 'water'")
        .await;
    assert_eq!(summary["well_count"], 4);
    assert_eq!(requests(&mocks.arcgis).await, 2);
}

#[tokio::test]
async fn gemini_503_503_200_makes_three_requests_and_one_usage_row() {
    let mocks = Mocks::start().await;
    gemini_first(&mocks, gemini_error(503, "overloaded", "UNAVAILABLE"), 2).await;
    let app = impatient_app(&mocks).await;
    let body = ask(&app, "call-r", solar_call("tc-retry")).await;
    assert!(
        body["results"][0]["result"]
            .as_str()
            .expect("result")
            .contains("running")
    );
    drain(&app.db.pool, 20).await;
    assert_eq!(requests(&mocks.gemini).await, 3);
    assert_eq!(app.db.count(SCANS).await, 1);
    let (attempts, _) = wait_for_job_status(&app, "Done").await;
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn gemini_400_fails_the_job_at_once_with_its_reason_and_meters_nothing() {
    let mocks = Mocks::gemini_refusing("Image is not valid").await;
    let app = impatient_app(&mocks).await;
    ask(&app, "call-b", solar_call("tc-bad")).await;
    let (attempts, result) = wait_for_job_status(&app, "Killed").await;
    assert_eq!(attempts, 1);
    assert!(result.to_string().contains("400"), "{result}");
    assert_eq!(requests(&mocks.gemini).await, 1);
    assert_eq!(app.db.count(USAGE_ROWS).await, 0);
    assert_eq!(
        app.db.count("SELECT count(*) FROM risk_assessments").await,
        0
    );
}

#[tokio::test]
async fn gemini_429_with_retry_after_waits_at_least_that_long() {
    let mocks = Mocks::start().await;
    let slow_down = google_error(429, "slow down", "RESOURCE_EXHAUSTED");
    let retry_after = gemini_replying(slow_down.insert_header("retry-after", "2"));
    gemini_first(&mocks, retry_after, 1).await;
    let app = impatient_app(&mocks).await;
    let started = tokio::time::Instant::now();
    ask(&app, "call-t", solar_call("tc-429")).await;
    app.db
        .count_reaches(USAGE_ROWS, 1, 20, "the scan to be metered")
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried after {:?}",
        started.elapsed()
    );
    assert_eq!(requests(&mocks.gemini).await, 2);
}

#[tokio::test]
async fn a_slow_provider_times_out_and_the_job_retries() {
    let mocks = Mocks::start().await;
    gemini_first(&mocks, gemini_slow(Duration::from_secs(10)), 1).await;
    // JOB_TIMEOUT_SECS is 3 in tests: the first attempt is cut off there.
    let app = impatient_app(&mocks).await;
    ask(&app, "call-slow", solar_call("tc-slow")).await;
    app.db
        .count_reaches(USAGE_ROWS, 1, 20, "the retried scan to be metered")
        .await;
    assert_eq!(requests(&mocks.gemini).await, 2);
}

#[tokio::test]
async fn arcgis_error_inside_http_200_is_classified_by_its_code() {
    let mocks = Mocks::start().await;
    Mock::given(method("GET"))
        .and(path(ARCGIS_QUERY_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"error": {"code": 400, "message": "Invalid geometry", "details": []}}),
        ))
        .mount(&mocks.arcgis)
        .await;
    let app = impatient_app(&mocks).await;
    ask(&app, "call-e", water_call("tc-arc-err")).await;
    let (attempts, result) = wait_for_job_status(&app, "Killed").await;
    assert_eq!(attempts, 1);
    assert!(result.to_string().contains("Invalid geometry"), "{result}");
    assert_eq!(app.db.count(USAGE_ROWS).await, 0);
}

#[tokio::test]
async fn a_duplicate_tool_call_enqueues_and_meters_nothing_new() {
    let mocks = gemini_ok().await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;
    let msg = tool_calls("call-d", PHONE_1, json!([solar_call("tc-dup")]));
    let first = app.answer(&msg).await;
    // The same message again, and the same tool call inside a different message.
    let second = app.answer(&msg).await;
    let other = tool_calls(
        "call-d",
        PHONE_1,
        json!([solar_call("tc-dup"), {"id": "tc-x", "name": "nope", "arguments": {}}]),
    );
    let third = app.answer(&other).await;
    assert_eq!(
        first["results"][0]["result"],
        second["results"][0]["result"]
    );
    assert_eq!(third["results"][0]["result"], first["results"][0]["result"]);
    assert!(
        third["results"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown tool"))
    );
    drain(&app.db.pool, 15).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'solar_ocr_scan'")
            .await,
        1
    );
    assert_eq!(requests(&mocks.gemini).await, 1);
    assert_eq!(app.db.count(USAGE_ROWS).await, 1);
}

#[tokio::test]
async fn bad_arguments_and_unknown_tools_get_an_error_per_call_not_an_http_error() {
    let app = TestApp::spawn_web_only().await;
    let calls = json!([
        {"id": "a", "name": "crystal_ball", "arguments": {}},
        {"id": "b", "name": "water_lookup", "arguments": {"latitude": "north"}},
        {"id": "c", "name": "solar_ocr_scan", "arguments": "{broken"}
    ]);
    let resp = app.post_tools("call-x", calls).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r["error"].is_string() && r.get("result").is_none()),
        "{body}"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM apalis.jobs").await, 0);
}

#[tokio::test]
async fn legacy_function_call_is_answered_with_a_result() {
    let mocks = gemini_ok().await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;
    let msg = json!({"message": {"type": "function-call",
        "call": {"id": "call-f", "phoneNumberId": PHONE_1},
        "functionCall": {"name": "solar-ocr-scanner", "parameters": {"image_base64": PNG_BASE64, "mime_type": "image/png"}}}});
    let body = app.answer(&msg).await;
    assert!(
        body["result"]
            .as_str()
            .is_some_and(|r| r.contains("18 panels")),
        "{body}"
    );
    drain(&app.db.pool, 15).await;
    assert_eq!(app.db.count(SCANS).await, 1);
}

#[tokio::test]
async fn meter_call_asks_vapi_for_timing_a_report_lacks() {
    let mocks = Mocks::start().await;
    Mock::given(method("GET"))
        .and(path("/call/call-nt"))
        .and(header("authorization", "Bearer test-vapi-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "call-nt", "phoneNumberId": PHONE_1, "status": "ended",
            "startedAt": "2026-11-20T17:00:00Z", "endedAt": "2026-11-20T17:03:00Z", "cost": 0.5123})))
        .mount(&mocks.vapi)
        .await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;
    let report = json!({"message": {"type": "end-of-call-report", "endedReason": "hangup",
                        "call": {"id": "call-nt", "phoneNumberId": PHONE_1}}});
    assert_eq!(app.post(&report).await.status(), 200);
    let row: (Decimal, Option<Decimal>) = app
        .db
        .row_within(
            15,
            "the usage row",
            "SELECT quantity, provider_cost_usd FROM agent_usage_metrics",
        )
        .await;
    assert_eq!(row, (Decimal::from(3), Some(Decimal::new(5123, 4))));
}

#[tokio::test]
async fn discord_hears_of_new_leads_and_findings() {
    let mocks = gemini_ok().await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;
    discord_for(&app, &mocks, &[PHONE_1]).await;
    app.post(&assistant_request("call-dc", PHONE_1, "+16025550199"))
        .await;
    ask(&app, "call-dc", solar_call("tc-dc")).await;
    drain(&app.db.pool, 15).await;
    let posts: Vec<String> = mocks
        .discord
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).expect("json")["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(posts.iter().any(|p| p.contains("New lead")), "{posts:?}");
    assert!(posts.iter().any(|p| p.contains("Solar check")), "{posts:?}");
    assert_eq!(app.db.count(USAGE_ROWS).await, 1);
}

#[tokio::test]
async fn an_image_url_on_a_private_address_is_refused_without_calling_gemini() {
    let mocks = gemini_ok().await;
    let app = TestApp::spawn_with_mocks(
        &mocks,
        &[
            ("IMAGE_FETCH_ALLOW_PRIVATE", "false"),
            ("TOOL_RESULT_WAIT_MS", "100"),
        ],
    )
    .await;
    let call = json!({"id": "tc-ssrf", "name": "solar_ocr_scan",
                      "arguments": {"image_url": "http://169.254.169.254/latest/meta-data"}});
    ask(&app, "call-ssrf", call).await;
    let (_, result) = wait_for_job_status(&app, "Killed").await;
    assert!(result.to_string().contains("non-public"), "{result}");
    assert_eq!(requests(&mocks.gemini).await, 0);
    assert_eq!(app.db.count(USAGE_ROWS).await, 0);
}

/// The issue's acceptance: a whole call on each seed agent's number, replayed as Vapi sends it
/// (with a redelivery of every message), leaves the right leads, findings, tags, Discord posts and
/// exactly one usage row per billable event.
#[tokio::test]
async fn a_whole_call_on_every_seed_number_bills_each_event_once() {
    let mocks = gemini_ok().await;
    arcgis_one_well(&mocks).await;
    let app = TestApp::spawn_with_mocks(&mocks, &[]).await;
    discord_for(&app, &mocks, &PHONES).await;

    for n in 1..=5 {
        let phone = format!("ph_placeholder_client{n}");
        let call = format!("call-agent-{n}");
        let caller = format!("+1602555010{n}");
        let status = |s: &str| {
            json!({"message": {"type": "status-update", "status": s,
                   "call": {"id": call, "phoneNumberId": phone, "customer": {"number": caller}}}})
        };
        let mut tools = tool_calls(
            &call,
            &phone,
            json!([
                solar_call(&format!("{call}-solar")),
                water_call(&format!("{call}-water"))
            ]),
        );
        tools["message"]["call"]["customer"]["number"] = json!(caller);
        let mut report = end_of_call_report(&call, &phone);
        report["message"]["call"]["customer"]["number"] = json!(caller);
        let messages = [
            assistant_request(&call, &phone, &caller),
            status("ringing"),
            status("in-progress"),
            tools,
            status("ended"),
            report,
        ];
        for m in &messages {
            for _delivery in 0..2 {
                let resp = app.post(m).await;
                assert_eq!(resp.status(), 200, "{m}");
            }
        }
    }
    drain(&app.db.pool, 30).await;

    let per_agent: Vec<(String, i64, i64, i64, i64, i64, i64)> = app.db.rows("SELECT a.email,
                (SELECT count(*) FROM leads l WHERE l.agent_id = a.id),
                (SELECT count(*) FROM risk_assessments r WHERE r.agent_id = a.id),
                (SELECT count(*) FROM tags t WHERE t.agent_id = a.id AND t.tag = 'solar'),
                (SELECT count(*) FROM agent_usage_metrics u WHERE u.agent_id = a.id AND u.metric_type = 'solar_ocr_scan'),
                (SELECT count(*) FROM agent_usage_metrics u WHERE u.agent_id = a.id AND u.metric_type = 'water_lookup'),
                (SELECT count(*) FROM agent_usage_metrics u WHERE u.agent_id = a.id AND u.metric_type = 'vapi_call_minutes')
           FROM agents a ORDER BY a.email").await;
    assert_eq!(per_agent.len(), 5);
    for row in &per_agent {
        assert_eq!(
            (row.1, row.2, row.3, row.4, row.5, row.6),
            (1, 2, 1, 1, 1, 1),
            "{row:?}"
        );
    }
    // Each lead's call, its status and its findings belong to that agent alone.
    let mismatched = app
        .db
        .count(
            "SELECT count(*) FROM risk_assessments r JOIN leads l ON l.id = r.lead_id
              WHERE l.agent_id <> r.agent_id",
        )
        .await;
    assert_eq!(mismatched, 0);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM calls WHERE status = 'ended'")
            .await,
        5
    );
    // Discord: a new-lead note and two finding notes per agent, never more.
    assert_eq!(requests(&mocks.discord).await, 15);
    assert_eq!(requests(&mocks.gemini).await, 5);
}
