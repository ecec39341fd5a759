//! What a call said (issue 22, item 5): the end-of-call report's summary, structured data,
//! success evaluation, transcript, recording URL, call type and costs kept per call (webhook and
//! daily sync), shown on the portal's call page and in `/v1`, searched, escaped, kept after the
//! raw events are pruned; structured data filling a lead's empty fields only.

use std::{sync::Arc, time::Duration};

use agent_meter::{
    jobs::{Deps, Job, prune_jobs::PruneJobs, sync_calls::SyncCalls},
    store::{agents, portal},
};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path},
};

use crate::helpers::*;

/// A report of call `call_id` from `caller` on `phone`, saying everything Vapi can say.
fn full_report(call_id: &str, phone: &str, caller: &str, transcript: &str, summary: &str) -> Value {
    json!({"message": {
        "type": "end-of-call-report",
        "call": {"id": call_id, "phoneNumberId": phone, "type": "inboundPhoneCall",
                 "customer": {"number": caller}},
        "startedAt": "2026-11-20T17:00:00.000Z",
        "endedAt": "2026-11-20T17:02:30.000Z",
        "endedReason": "customer-ended-call",
        "cost": 0.42,
        "costs": [
            {"type": "transport", "provider": "twilio", "minutes": 2.5, "cost": 0.0215},
            {"type": "model", "model": {"provider": "openai", "model": "gpt-4o"},
             "promptTokens": 1200, "completionTokens": 300, "cost": 0.0317},
            {"type": "vapi", "subType": "normal", "minutes": 2.5, "cost": 0.125}
        ],
        "analysis": {"summary": summary,
                     "structuredData": {"coverage": "home"},
                     "successEvaluation": "true"},
        "artifact": {
            "transcript": transcript,
            "recordingUrl": format!("https://storage.vapi.ai/{call_id}-mono.wav"),
            "messages": [{"role": "bot", "message": "Hello"}],
            "structuredOutputs": {
                "4f8d2c1e-0000-4000-8000-000000000001": {
                    "name": "caller_details",
                    "result": {"caller_name": "Maria Lopez", "email": "maria@example.com",
                               "property_address": "12 Pine St, Flagstaff AZ 86001",
                               "coverage_interest": ["home", "auto"]}
                }
            }
        }
    }})
}

/// A portal session for the agent of `phone`.
async fn portal_session(app: &TestApp, phone: &str) -> String {
    let agent = app.db.agent_id(phone).await;
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let link = portal::create_link(&mut conn, agent, Duration::from_secs(600))
        .await
        .expect("link");
    drop(conn);
    portal_sign_in(app, link).await
}

async fn page(app: &TestApp, cookie: &str, path: &str) -> (u16, String) {
    let resp = client()
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .header("accept-language", "en")
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("html"))
}

async fn call_id(app: &TestApp, vapi_call_id: &str) -> Uuid {
    app.db
        .scalar_with("SELECT id FROM calls WHERE vapi_call_id = $1", vapi_call_id)
        .await
}

async fn post_ok(app: &TestApp, body: &Value) {
    let resp = app.post(body).await;
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn a_full_report_is_kept_and_shown_on_the_portal_and_in_the_api() {
    let app = TestApp::spawn_web_only().await;
    let agent = app.db.agent_id(PHONE_1).await;
    post_ok(
        &app,
        &full_report(
            "call-full",
            PHONE_1,
            "+16025550777",
            "AI: Thanks for calling.\nUser: I need home insurance for 12 Pine St.",
            "Maria asked for a home quote.",
        ),
    )
    .await;
    type Stored = (String, String, Value, String, String, String, Value);
    let stored: Stored = sqlx::query_as(
        "SELECT call_type, summary, structured_data, success_evaluation, transcript, recording_url, costs
           FROM call_content WHERE agent_id = $1",
    )
    .bind(agent)
    .fetch_one(&app.db.pool)
    .await
    .expect("content");
    assert_eq!(stored.0, "inboundPhoneCall");
    assert_eq!(stored.1, "Maria asked for a home quote.");
    assert_eq!(stored.2["coverage"], "home", "analysis.structuredData");
    assert_eq!(
        stored.2["caller_name"], "Maria Lopez",
        "caller_details output"
    );
    assert_eq!(stored.3, "true");
    assert!(stored.4.contains("12 Pine St"));
    assert_eq!(stored.5, "https://storage.vapi.ai/call-full-mono.wav");
    assert_eq!(stored.6.as_array().map(Vec::len), Some(3));
    assert_eq!(
        stored.6[2]["cost"].to_string(),
        "0.125",
        "exact as Vapi wrote it"
    );

    // The portal: the list links to the call's page, which shows it all.
    let cookie = portal_session(&app, PHONE_1).await;
    let id = call_id(&app, "call-full").await;
    let (_, list) = page(&app, &cookie, "/portal/calls").await;
    assert_has(&list, &format!("<a href=\"/portal/calls/{id}\">"));
    assert_has(&list, "Maria asked for a home quote.");
    let (status, detail) = page(&app, &cookie, &format!("/portal/calls/{id}")).await;
    assert_eq!(status, 200, "{detail}");
    for shown in [
        "Maria asked for a home quote.",
        "Maria Lopez",
        "maria@example.com",
        "home, auto",
        "I need home insurance for 12 Pine St.",
        "<a href=\"https://storage.vapi.ai/call-full-mono.wav\"",
        "Inbound",
        "transport (twilio)",
        "vapi (normal)",
        "0.125",
        "Transcript",
    ] {
        assert!(detail.contains(shown), "{shown}: {detail}");
    }
    let (_, es) = page(&app, &cookie, &format!("/portal/calls/{id}?lang=es")).await;
    for shown in ["Transcripción", "Entrante", "Grabación", "Costes de Vapi"] {
        assert!(es.contains(shown), "{shown}: {es}");
    }
    // Another agency's session does not find it.
    let other = portal_session(&app, PHONE_2).await;
    assert_eq!(
        page(&app, &other, &format!("/portal/calls/{id}")).await.0,
        404
    );
    assert_eq!(page(&app, &cookie, "/portal/calls/not-a-uuid").await.0, 404);

    // The API: the caller's lead carries the call with what it said.
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let token = agents::new_token(&mut conn, agent).await.expect("token");
    drop(conn);
    let lead: Uuid = app
        .db
        .scalar_with(
            "SELECT id FROM leads WHERE agent_id = $1 AND phone = '+16025550777'",
            agent,
        )
        .await;
    let detail: Value = lead_detail(&app, &token, lead).await;
    let call = &detail["calls"][0];
    assert_eq!(call["vapi_call_id"], "call-full", "{detail:#}");
    assert_eq!(call["type"], "inboundPhoneCall");
    assert_eq!(call["summary"], "Maria asked for a home quote.");
    assert_eq!(call["success_evaluation"], "true");
    assert_eq!(call["structured_data"]["email"], "maria@example.com");
    assert_eq!(
        call["recording_url"],
        "https://storage.vapi.ai/call-full-mono.wav"
    );
    // The OpenAPI document describes exactly what a call carries.
    let doc: Value = client()
        .get(format!("{}/v1/openapi.json", app.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let documented = doc["components"]["schemas"]["LeadCall"]["properties"]
        .as_object()
        .expect("LeadCall documented");
    let given = call.as_object().expect("call object");
    let mut documented_keys: Vec<&String> = documented.keys().collect();
    let mut given_keys: Vec<&String> = given.keys().collect();
    documented_keys.sort();
    given_keys.sort();
    assert_eq!(documented_keys, given_keys);
}

#[tokio::test]
async fn what_a_call_said_outlives_the_pruned_raw_events() {
    let app = TestApp::spawn_web_only().await;
    post_ok(
        &app,
        &full_report(
            "call-kept",
            PHONE_1,
            "+16025550778",
            "User: keep me",
            "Kept summary",
        ),
    )
    .await;
    post_ok(
        &app,
        &json!({"message": {"type": "conversation-update", "call": {"id": "call-kept", "phoneNumberId": PHONE_1},
                            "messages": [{"role": "user", "message": "keep me"}]}}),
    )
    .await;
    // Everything received long ago: the high-volume events go with the daily prune.
    app.db
        .execute("UPDATE webhook_events SET received_at = now() - interval '400 days'")
        .await;
    let deps = Deps::new(app.db.pool.clone(), Arc::new(test_config(&[])));
    PruneJobs::default().run(&deps).await.expect("prune");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM webhook_events WHERE message_type = 'conversation-update'")
            .await,
        0
    );
    // And should the report itself go too (a shorter retention one day), nothing is lost.
    app.db.execute("DELETE FROM webhook_events").await;
    let cookie = portal_session(&app, PHONE_1).await;
    let id = call_id(&app, "call-kept").await;
    let (status, detail) = page(&app, &cookie, &format!("/portal/calls/{id}")).await;
    assert_eq!(status, 200);
    assert_has(&detail, "User: keep me");
    assert_has(&detail, "Kept summary");
}

#[tokio::test]
async fn caller_details_fill_a_leads_empty_fields_and_never_overwrite() {
    let app = TestApp::spawn_web_only().await;
    let agent = app.db.agent_id(PHONE_1).await;
    let lead: Uuid = app
        .db
        .scalar_with(
            "INSERT INTO leads (agent_id, phone, name, email, address)
         VALUES ($1, '+16025550779', 'Ana Existing', NULL, '  ') RETURNING id",
            agent,
        )
        .await;
    post_ok(
        &app,
        &full_report(
            "call-fill-1",
            PHONE_1,
            "+16025550779",
            "User: hi",
            "First call",
        ),
    )
    .await;
    let fields = || async {
        sqlx::query_as::<_, (Option<String>, Option<String>, Option<String>)>(
            "SELECT name, email, address FROM leads WHERE id = $1",
        )
        .bind(lead)
        .fetch_one(&app.db.pool)
        .await
        .expect("lead")
    };
    let expected = (
        Some("Ana Existing".to_string()),
        Some("maria@example.com".to_string()),
        Some("12 Pine St, Flagstaff AZ 86001".to_string()),
    );
    assert_eq!(
        fields().await,
        expected,
        "the name stays; email and address fill in"
    );
    let properties: Vec<String> =
        sqlx::query_scalar("SELECT address FROM properties WHERE lead_id = $1 ORDER BY address")
            .bind(lead)
            .fetch_all(&app.db.pool)
            .await
            .expect("properties");
    assert_eq!(properties, ["12 Pine St, Flagstaff AZ 86001"]);
    let linked: Option<Uuid> = app
        .db
        .scalar("SELECT lead_id FROM calls WHERE vapi_call_id = 'call-fill-1'")
        .await;
    assert_eq!(linked, Some(lead));

    // A later call saying other things changes nothing that is filled.
    let mut other = full_report(
        "call-fill-2",
        PHONE_1,
        "+16025550779",
        "User: again",
        "Second",
    );
    other["message"]["artifact"]["structuredOutputs"] = json!({
        "o2": {"name": "caller_details",
               "result": {"caller_name": "Someone Else", "email": "else@example.com",
                          "property_address": "9 Other Rd"}}});
    post_ok(&app, &other).await;
    assert_eq!(fields().await, expected);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM properties WHERE address = '9 Other Rd'")
            .await,
        0,
        "the lead's property stays its one"
    );

    // A saved assistant's analysis.structuredData names a new caller: a lead with those fields.
    post_ok(
        &app,
        &json!({"message": {
            "type": "end-of-call-report",
            "call": {"id": "call-saved", "phoneNumberId": PHONE_1, "customer": {"number": "+16025550780"}},
            "startedAt": "2026-11-20T18:00:00.000Z", "endedAt": "2026-11-20T18:01:00.000Z",
            "analysis": {"structuredData": {"name": "Luis Ortega", "email": "not an email"}}
        }}),
    )
    .await;
    let new_lead: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT name, email FROM leads WHERE agent_id = $1 AND phone = '+16025550780'",
    )
    .bind(agent)
    .fetch_one(&app.db.pool)
    .await
    .expect("new lead");
    assert_eq!(new_lead, (Some("Luis Ortega".to_string()), None));
}

#[tokio::test]
async fn hostile_transcripts_and_recording_urls_are_shown_as_text() {
    let app = TestApp::spawn_web_only().await;
    let mut report = full_report(
        "call-hostile",
        PHONE_1,
        "+16025550781",
        "User: <script>alert('x')</script> and </pre><img src=x onerror=alert(1)>",
        "<b onmouseover=alert(2)>summary</b>",
    );
    report["message"]["artifact"]["recordingUrl"] = json!("javascript:alert(document.cookie)");
    report["message"]["analysis"]["structuredData"] =
        json!({"<i>key</i>": "\"><script>alert(3)</script>"});
    post_ok(&app, &report).await;
    let mut plain = full_report("call-http", PHONE_1, "+16025550782", "User: hi", "Plain");
    plain["message"]["artifact"]["recordingUrl"] = json!("http://storage.example.com/rec.wav");
    post_ok(&app, &plain).await;

    let cookie = portal_session(&app, PHONE_1).await;
    let id = call_id(&app, "call-hostile").await;
    let (status, detail) = page(&app, &cookie, &format!("/portal/calls/{id}")).await;
    assert_eq!(status, 200);
    for absent in [
        "<script>",
        "<img",
        "<b onmouseover",
        "<i>key",
        "href=\"javascript:",
        "id=\"recording-link\"",
    ] {
        assert!(!detail.contains(absent), "{absent}: {detail}");
    }
    for escaped in [
        "&lt;script&gt;alert('x')&lt;/script&gt;",
        "&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;",
        "&lt;b onmouseover=alert(2)&gt;summary&lt;/b&gt;",
        "&lt;i&gt;key&lt;/i&gt;",
        "&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;",
        "javascript:alert(document.cookie)",
    ] {
        assert!(detail.contains(escaped), "{escaped}: {detail}");
    }
    let (_, list) = page(&app, &cookie, "/portal/calls").await;
    assert!(!list.contains("<b onmouseover"), "{list}");
    let http = call_id(&app, "call-http").await;
    let (_, detail) = page(&app, &cookie, &format!("/portal/calls/{http}")).await;
    assert!(
        !detail.contains("id=\"recording-link\""),
        "only https is a link: {detail}"
    );
    assert_has(&detail, "http://storage.example.com/rec.wav");
}

#[tokio::test]
async fn search_finds_words_of_transcripts_and_summaries_and_never_another_agencys_calls() {
    let app = TestApp::spawn_web_only().await;
    for (call, phone, caller, transcript, summary) in [
        (
            "a-hail",
            PHONE_1,
            "+16025550801",
            "User: the HAILSTORM dented my roof",
            "Roof claim",
        ),
        (
            "a-flood",
            PHONE_1,
            "+16025550802",
            "User: my basement",
            "Caller asked about Flood cover",
        ),
        (
            "a-100",
            PHONE_1,
            "+16025550803",
            "User: is it 100% covered?",
            "Percent question",
        ),
        (
            "b-hail",
            PHONE_2,
            "+14805550804",
            "User: hailstorm and flood both",
            "Hailstorm flood",
        ),
    ] {
        post_ok(&app, &full_report(call, phone, caller, transcript, summary)).await;
    }
    let a = portal_session(&app, PHONE_1).await;
    let b = portal_session(&app, PHONE_2).await;
    let found = |html: &str| -> Vec<&str> {
        [
            "+16025550801",
            "+16025550802",
            "+16025550803",
            "+14805550804",
        ]
        .into_iter()
        .filter(|n| html.contains(&format!("<td>{n}</td>")))
        .collect()
    };
    let (_, hail) = page(&app, &a, "/portal/calls?q=hailstorm").await;
    assert_eq!(found(&hail), ["+16025550801"], "{hail}");
    assert!(
        hail.contains("value=\"hailstorm\""),
        "the box keeps the words"
    );
    let (_, flood) = page(&app, &a, "/portal/calls?q=FLOOD%20cover").await;
    assert_eq!(found(&flood), ["+16025550802"], "summaries too, any case");
    let (_, percent) = page(&app, &a, "/portal/calls?q=100%25").await;
    assert_eq!(
        found(&percent),
        ["+16025550803"],
        "% is a character, not a wildcard"
    );
    let (_, wildcard) = page(&app, &a, "/portal/calls?q=%25").await;
    assert_eq!(found(&wildcard), ["+16025550803"], "only the call saying %");
    let (_, none) = page(&app, &a, "/portal/calls?q=basement%20flood").await;
    assert!(found(&none).is_empty(), "{none}");
    let (_, all) = page(&app, &a, "/portal/calls?q=%20%20").await;
    assert_eq!(found(&all).len(), 3, "a blank search lists every call");
    let long = "x".repeat(5000);
    let (status, long_page) = page(&app, &a, &format!("/portal/calls?q={long}")).await;
    assert_eq!(status, 200);
    assert!(
        long_page.contains(&format!("value=\"{}\"", "x".repeat(100))),
        "cut to 100"
    );
    assert!(!long_page.contains(&"x".repeat(101)));
    // The other agency finds its own call only, whatever words it searches.
    let (_, theirs) = page(&app, &b, "/portal/calls?q=flood").await;
    assert_eq!(found(&theirs), ["+14805550804"], "{theirs}");
    let (_, theirs) = page(&app, &b, "/portal/calls?q=roof").await;
    assert!(found(&theirs).is_empty(), "{theirs}");
    // The search function reads past RLS, so it scopes itself: the tenant's own rows, none
    // without a tenant, and only the tenant role may call it.
    let agent_b = app.db.agent_id(PHONE_2).await;
    let mut tx = agent_meter::store::db::tenant_tx(&app.db.pool, agent_b)
        .await
        .expect("tenant");
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT * FROM search_call_content('%hailstorm%')")
        .fetch_all(&mut *tx)
        .await
        .expect("search");
    assert_eq!(ids, [call_id(&app, "b-hail").await]);
    sqlx::query("SELECT set_config('app.agent_id', '', true)")
        .execute(&mut *tx)
        .await
        .expect("no tenant");
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM search_call_content('%%')")
        .fetch_one(&mut *tx)
        .await
        .expect("search");
    assert_eq!(none, 0);
    tx.rollback().await.expect("rollback");
    let public: bool = app
        .db
        .scalar(
            "SELECT COALESCE(bool_or(has_function_privilege(r.oid, 'search_call_content(text)',
                                                            'EXECUTE')), false)
               FROM pg_roles r WHERE r.rolname NOT IN ('agent_meter_tenant', current_user)
                                 AND NOT r.rolsuper AND r.rolname NOT LIKE 'pg\\_%'",
        )
        .await;
    assert!(!public, "only the tenant role executes the search");
}

#[tokio::test]
async fn the_sync_keeps_what_a_call_said_from_vapis_call_object() {
    let mocks = Mocks::start().await;
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let vars: Vec<(String, String)> = mocks.config();
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let deps = Deps::new(db.pool.clone(), Arc::new(test_config(&borrowed)));
    let call = json!({
        "id": "call-synced", "phoneNumberId": PHONE_1, "type": "outboundPhoneCall", "status": "ended",
        "customer": {"number": "+16025550900"},
        "startedAt": "2026-11-20T18:00:00Z", "endedAt": "2026-11-20T18:01:30Z",
        "endedReason": "customer-ended-call", "cost": 0.31,
        "createdAt": "2026-11-20T18:00:00Z", "updatedAt": "2026-11-20T18:01:30Z",
        "costs": [{"type": "vapi", "subType": "normal", "minutes": 1.5, "cost": 0.075}],
        "analysis": {"summary": "Synced summary", "successEvaluation": false},
        "artifact": {"transcript": "AI: calling back about your quote",
                     "recording": {"mono": {"combinedUrl": "https://storage.vapi.ai/synced.wav"}},
                     "structuredOutputs": {"o": {"name": "caller_details",
                                                 "result": {"caller_name": "Synced Caller"}}}}
    });
    // The organisation's calls of the day (the sync lists them all and routes each).
    Mock::given(method("GET"))
        .and(path("/call"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([call])))
        .mount(&mocks.vapi)
        .await;
    let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
    SyncCalls {
        date,
        agent_id: None,
        slice: None,
    }
    .sync(&deps)
    .await
    .expect("sync");
    type Stored = (String, String, String, String, String, Value, Value);
    let stored: Stored = sqlx::query_as(
        "SELECT cc.call_type, cc.summary, cc.success_evaluation, cc.transcript, cc.recording_url,
                cc.costs, cc.structured_data
           FROM call_content cc JOIN calls c ON c.id = cc.call_id
          WHERE c.agent_id = $1 AND c.vapi_call_id = 'call-synced'",
    )
    .bind(agent)
    .fetch_one(&db.pool)
    .await
    .expect("content");
    assert_eq!(
        (stored.0.as_str(), stored.1.as_str(), stored.2.as_str()),
        ("outboundPhoneCall", "Synced summary", "false")
    );
    assert_eq!(stored.3, "AI: calling back about your quote");
    assert_eq!(stored.4, "https://storage.vapi.ai/synced.wav");
    assert_eq!(stored.5[0]["cost"].to_string(), "0.075");
    assert_eq!(stored.6["caller_name"], "Synced Caller");
    let name: Option<String> = db
        .scalar_with(
            "SELECT name FROM leads WHERE agent_id = $1 AND phone = '+16025550900'",
            agent,
        )
        .await;
    assert_eq!(name.as_deref(), Some("Synced Caller"));
}
