//! Vapi as it really is (issue 13): every server credential against the real router (Bearer in
//! any header, HMAC in every shape, OAuth2 with us as the token server; each valid, tampered,
//! expired or in the wrong header), and calls without a phone number.

use agent_meter::app::Roles;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::helpers::*;

/// Counts the usage rows of the call whose report carried NUL characters.
const NUL_CALL_METERED: &str =
    "SELECT count(*) FROM agent_usage_metrics WHERE idempotency_key = 'vapi_call:nul-1'";

const CREDENTIALS: &str = r#"[
  {"type": "bearer", "token": "vapi-bearer-token"},
  {"type": "bearer", "token": "plain-key", "headerName": "X-Agency-Key", "bearerPrefixEnabled": false},
  {"type": "hmac", "secretKey": "c3ZpeC1rZXk=", "secretIsBase64": true, "algorithm": "sha512",
   "signatureHeader": "svix-signature", "timestampHeader": "svix-timestamp", "messageIdHeader": "svix-id",
   "signaturePrefix": "v1,", "signatureEncoding": "base64", "payloadFormat": "{svix-id}.{timestamp}.{method}.{url}.{body}"},
  {"type": "oauth2", "url": "https://meter.example.com/oauth/token", "clientId": "vapi-client",
   "clientSecret": "oauth-secret", "scope": "webhook"}
]"#;

async fn app() -> TestApp {
    TestApp::spawn_with(
        Roles {
            web: true,
            worker: false,
            clock: false,
        },
        &[
            ("VAPI_CREDENTIALS", CREDENTIALS),
            ("PUBLIC_BASE_URL", "https://meter.example.com"),
        ],
    )
    .await
}

fn report(call: &str) -> Vec<u8> {
    end_of_call_report(call, PHONE_1).to_string().into_bytes()
}

async fn status(app: &TestApp, body: Vec<u8>, headers: &[(&str, String)]) -> u16 {
    app.post_raw(body, headers).await.status().as_u16()
}

#[tokio::test]
async fn bearer_tokens_in_any_header_pass_and_everything_else_is_401() {
    let app = app().await;
    let bearer = |v: &str| vec![("authorization", v.to_string())];
    assert_eq!(
        status(&app, report("b1"), &bearer("Bearer vapi-bearer-token")).await,
        200
    );
    assert_eq!(
        status(&app, report("b2"), &[("x-agency-key", "plain-key".into())]).await,
        200
    );
    for (name, value) in [
        ("authorization", "Bearer vapi-bearer-tokeN"),
        ("authorization", "vapi-bearer-token"),
        ("x-agency-key", "Bearer plain-key"),
        ("x-other-key", "plain-key"),
    ] {
        assert_eq!(
            status(&app, report("b3"), &[(name, value.to_string())]).await,
            401,
            "{name}: {value}"
        );
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM webhook_events").await,
        2,
        "only the authenticated ones are stored"
    );
}

#[tokio::test]
async fn a_svix_style_hmac_over_method_url_and_id_passes() {
    let app = app().await;
    let body = report("h1");
    let ts = chrono::Utc::now().timestamp().to_string();
    let sign = |id: &str, ts: &str, url: &str, body: &[u8]| {
        let payload = [
            id.as_bytes(),
            b".",
            ts.as_bytes(),
            b".POST.",
            url.as_bytes(),
            b".",
            body,
        ]
        .concat();
        let mut m = Hmac::<sha2::Sha512>::new_from_slice(b"svix-key").expect("key");
        m.update(&payload);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        )
    };
    let url = "https://meter.example.com/vapi/webhook";
    let headers = |id: &str, ts: &str, sig: String| {
        vec![
            ("svix-id", id.to_string()),
            ("svix-timestamp", ts.to_string()),
            ("svix-signature", sig),
        ]
    };
    let good = sign("msg_1", &ts, url, &body);
    assert_eq!(
        status(&app, body.clone(), &headers("msg_1", &ts, good.clone())).await,
        200
    );
    // Another id, another URL, an old timestamp, another body: refused.
    assert_eq!(
        status(&app, body.clone(), &headers("msg_2", &ts, good.clone())).await,
        401
    );
    let other_url = sign("msg_1", &ts, "https://evil.example.com/vapi/webhook", &body);
    assert_eq!(
        status(&app, body.clone(), &headers("msg_1", &ts, other_url)).await,
        401
    );
    let old = (chrono::Utc::now().timestamp() - 301).to_string();
    let stale = sign("msg_1", &old, url, &body);
    assert_eq!(
        status(&app, body.clone(), &headers("msg_1", &old, stale)).await,
        401
    );
    assert_eq!(
        status(&app, report("h2"), &headers("msg_1", &ts, good)).await,
        401
    );
}

async fn token(app: &TestApp, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}/oauth/token", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).expect("form"));
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn oauth2_we_issue_tokens_to_vapi_and_accept_them_until_they_expire() {
    let app = app().await;
    let grant = ("grant_type", "client_credentials");
    let (s, body) = token(
        &app,
        &[
            grant,
            ("client_id", "vapi-client"),
            ("client_secret", "oauth-secret"),
        ],
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().expect("token").to_string();
    assert!(!access.contains("oauth-secret"));
    // HTTP Basic client authentication, with the configured scope.
    let (s, basic) = token(
        &app,
        &[grant, ("scope", "webhook")],
        Some(("vapi-client", "oauth-secret")),
    )
    .await;
    assert_eq!(s, 200, "{basic}");

    let with = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    assert_eq!(status(&app, report("o1"), &with(&access)).await, 200);
    let basic_token = basic["access_token"].as_str().expect("token");
    assert_eq!(status(&app, report("o2"), &with(basic_token)).await, 200);
    // Change the signature's last hex digit (to a digit it is not: replacing it with a fixed
    // one left the token unchanged one time in sixteen).
    let last = if access.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &access[..access.len() - 1]);
    assert_ne!(tampered, access);
    assert_eq!(status(&app, report("o3"), &with(&tampered)).await, 401);

    for (form, basic, want_status, want_error) in [
        (
            vec![
                grant,
                ("client_id", "vapi-client"),
                ("client_secret", "wrong"),
            ],
            None,
            401,
            "invalid_client",
        ),
        (
            vec![
                grant,
                ("client_id", "someone"),
                ("client_secret", "oauth-secret"),
            ],
            None,
            401,
            "invalid_client",
        ),
        (vec![grant], None, 401, "invalid_client"),
        (
            vec![grant],
            Some(("vapi-client", "wrong")),
            401,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", "vapi-client"),
                ("client_secret", "oauth-secret"),
            ],
            None,
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                grant,
                ("client_id", "vapi-client"),
                ("client_secret", "oauth-secret"),
                ("scope", "admin"),
            ],
            None,
            400,
            "invalid_scope",
        ),
        (
            vec![grant, ("client_id", "vapi-client")],
            Some(("vapi-client", "oauth-secret")),
            400,
            "invalid_request",
        ),
    ] {
        let (s, body) = token(&app, &form, basic).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (want_status, Some(want_error)),
            "{form:?} {body}"
        );
        assert!(!body.to_string().contains("oauth-secret"), "{body}");
    }
    // Not a form at all.
    let r = app
        .http
        .post(format!("{}/oauth/token", app.base))
        .body(vec![0xff, 0xfe, b'=', b'%']);
    assert_eq!(status_of(r).await, 400);
    // The expiry itself is checked in the unit tests (oauth::tests), with a clock we control.
}

/// Web, dashboard and API calls carry no phone number: they route by the agent's saved assistant,
/// then by the `agent_id` our assistant-request answers put in the assistant (issue 13, item 2).
#[tokio::test]
async fn calls_without_a_phone_number_route_by_assistant_then_by_agent_id() {
    let app = TestApp::spawn().await;
    let (agent_1, agent_2) = app.db.two_agents().await;
    sqlx::query("UPDATE agents SET vapi_assistant_id = 'asst_saved_2' WHERE id = $1")
        .bind(agent_2)
        .execute(&app.db.pool)
        .await
        .expect("saved assistant");
    let web_report = |id: &str, call: Value| {
        let mut body = end_of_call_report(id, "unused");
        body["message"]["call"] = call;
        body
    };
    let cases = [
        // A saved assistant (dashboard "Talk to assistant", or an API call with assistantId).
        (
            json!({"id": "web-1", "type": "webCall", "assistantId": "asst_saved_2"}),
            Some(agent_2),
        ),
        // Our transient assistant, as Vapi echoes it back in the call.
        (
            json!({"id": "web-2", "type": "webCall", "assistant": {"metadata": {"agent_id": agent_1.to_string()}}}),
            Some(agent_1),
        ),
        // A saved assistant of nobody's, with our overrides naming the agent.
        (
            json!({"id": "web-3", "type": "webCall", "assistantId": "asst_unknown",
                   "assistantOverrides": {"variableValues": {"agent_id": agent_2.to_string()}}}),
            Some(agent_2),
        ),
        // An outbound phone call routes by its number like an inbound one.
        (
            json!({"id": "out-1", "type": "outboundPhoneCall", "phoneNumberId": PHONE_1}),
            Some(agent_1),
        ),
        // Nothing matches: stored, unroutable, not metered.
        (
            json!({"id": "web-4", "type": "webCall", "assistantId": "asst_unknown",
                   "assistant": {"metadata": {"agent_id": "not-a-uuid"}}}),
            None,
        ),
    ];
    for (call, _) in &cases {
        let id = call["id"].as_str().expect("id");
        let r = app.post(&web_report(id, call.clone())).await;
        assert_eq!(r.status(), 200, "{id}");
    }
    drain(&app.db.pool, 15).await;
    for (call, agent) in cases {
        let id = call["id"].as_str().expect("id");
        let (routed_to, routing): (Option<uuid::Uuid>, String) =
            sqlx::query_as("SELECT agent_id, routing FROM webhook_events WHERE vapi_call_id = $1")
                .bind(id)
                .fetch_one(&app.db.pool)
                .await
                .expect("event");
        assert_eq!(routed_to, agent, "{id}");
        assert_eq!(
            routing,
            if agent.is_some() {
                "routed"
            } else {
                "unroutable"
            },
            "{id}"
        );
        let metered: Option<uuid::Uuid> = sqlx::query_scalar(
            "SELECT agent_id FROM agent_usage_metrics WHERE idempotency_key = 'vapi_call:' || $1",
        )
        .bind(id)
        .fetch_optional(&app.db.pool)
        .await
        .expect("usage");
        assert_eq!(metered, agent, "{id} metered for its agent, once");
    }
}

/// What Vapi's schema allows is never a 400, and never a 500 (issue 13, item 6).
#[tokio::test]
async fn spec_valid_messages_are_stored_and_answered_2xx() {
    let app = TestApp::spawn().await;
    let mut report_150s = end_of_call_report("dur-1", PHONE_1);
    // The schema has no durationSeconds: the timestamps (150 s apart) decide.
    report_150s["message"]["durationSeconds"] = json!(999);
    let mut disordered = end_of_call_report("dur-2", PHONE_1);
    disordered["message"]["endedAt"] = json!("2026-11-20T16:00:00.000Z");
    let mut nul = end_of_call_report("nul-1", PHONE_2);
    nul["message"]["call"]["customer"]["number"] = json!("+1602555\u{0}0199");
    nul["message"]["artifact"]["transcript"] = json!("AI: hola\u{0}\u{0} User: hi");
    let bodies = [
        // `call` is optional in reports and status updates.
        json!({"message": {"type": "end-of-call-report", "endedReason": "customer-ended-call",
                           "artifact": {}, "analysis": {}}}),
        json!({"message": {"type": "status-update", "status": "ended"}}),
        report_150s,
        disordered,
        nul,
    ];
    for body in &bodies {
        let r = app.post(body).await;
        assert_eq!(r.status(), 200, "{body}");
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM webhook_events").await,
        bodies.len() as i64
    );
    let stored: String = app
        .db
        .scalar(
            "SELECT payload #>> '{message,artifact,transcript}' FROM webhook_events
              WHERE vapi_call_id = 'nul-1'",
        )
        .await;
    assert_eq!(stored, "AI: hola\\u0000\\u0000 User: hi");
    drain(&app.db.pool, 15).await;
    let minutes: rust_decimal::Decimal = app
        .db
        .scalar(
            "SELECT quantity FROM agent_usage_metrics WHERE idempotency_key = 'vapi_call:dur-1'",
        )
        .await;
    assert_eq!(
        minutes,
        rust_decimal::Decimal::new(25, 1),
        "150 s from the timestamps, not 999"
    );
    assert_eq!(app.db.count(NUL_CALL_METERED).await, 1);
}

/// A 60-minute call's report with its whole artifact is several MB (issue 13, item 5).
#[tokio::test]
async fn a_five_megabyte_report_is_taken_stored_once_and_metered() {
    let app = TestApp::spawn().await;
    let mut report = end_of_call_report("long-call", PHONES[2]);
    report["message"]["startedAt"] = json!("2026-11-20T17:00:00.000Z");
    report["message"]["endedAt"] = json!("2026-11-20T18:00:00.000Z");
    let messages: Vec<Value> = (0..20_000)
        .map(|i| {
            json!({"role": if i % 2 == 0 { "bot" } else { "user" },
                   "message": format!("turn {i}: ¿Tiene paneles solares en el techo? Yes, leased ones, about twelve of them."),
                   "time": 1_763_658_000_000i64 + i * 300, "secondsFromStart": i as f64 * 0.3})
        })
        .collect();
    let transcript: String = messages
        .iter()
        .map(|m| {
            format!(
                "{}: {}\n",
                m["role"].as_str().unwrap_or(""),
                m["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    report["message"]["artifact"] = json!({"messages": messages, "transcript": transcript});
    let body = report.to_string();
    assert!(body.len() > 5_000_000, "{} bytes", body.len());
    let r = app
        .post_raw(
            body.clone().into_bytes(),
            &[("x-vapi-secret", SHARED_SECRET.to_string())],
        )
        .await;
    assert_eq!(r.status(), 200);
    drain(&app.db.pool, 20).await;
    let (count, stored): (i64, i64) = app
        .db
        .row(
            "SELECT count(*), sum(pg_column_size(payload))::int8 FROM webhook_events
              WHERE vapi_call_id = 'long-call'",
        )
        .await;
    println!(
        "a 60-minute report: {:.1} MB received, {:.2} MB stored (jsonb, TOAST-compressed)",
        body.len() as f64 / 1e6,
        stored as f64 / 1e6
    );
    assert_eq!(count, 1);
    assert!(
        stored < body.len() as i64,
        "stored once, compressed: {stored}"
    );
    let minutes: rust_decimal::Decimal = app
        .db
        .scalar(
            "SELECT quantity FROM agent_usage_metrics
              WHERE idempotency_key = 'vapi_call:long-call'",
        )
        .await;
    assert_eq!(minutes, rust_decimal::Decimal::from(60));
}

#[tokio::test]
async fn high_volume_raw_events_are_pruned_after_their_retention_and_reports_are_kept() {
    use agent_meter::jobs::{Deps, Job, prune_jobs::PruneJobs};
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    for (n, (kind, days)) in [
        ("conversation-update", 8),
        ("speech-update", 30),
        ("conversation-update", 1),
        ("end-of-call-report", 400),
        ("status-update", 400),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO webhook_events (agent_id, dedupe_key, message_type, vapi_call_id, routing, payload, received_at)
             VALUES ($1, $2, $3, 'c', 'routed', '{}', now() - make_interval(days => $4))",
        )
        .bind(agent)
        .bind(format!("k{n}"))
        .bind(kind)
        .bind(days)
        .execute(&db.pool)
        .await
        .expect("event");
    }
    let deps = Deps::new(db.pool.clone(), std::sync::Arc::new(test_config(&[])));
    PruneJobs::default().run(&deps).await.expect("prune");
    let left: Vec<String> = db
        .column("SELECT message_type FROM webhook_events ORDER BY dedupe_key")
        .await;
    assert_eq!(
        left,
        ["conversation-update", "end-of-call-report", "status-update"]
    );
}

/// A finding that comes after the tool-calls answer still reaches the live call, once, through
/// the call's control URL (issue 13, item 4).
#[tokio::test]
async fn a_late_finding_is_said_in_the_call_through_its_control_url_once() {
    use wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{method, path},
    };
    let mocks = Mocks::start().await;
    gemini_slow(std::time::Duration::from_millis(1200))
        .mount(&mocks.gemini)
        .await;
    let control = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/call-late/control"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&control)
        .await;
    let app = TestApp::spawn_with_mocks(&mocks, &[("TOOL_RESULT_WAIT_MS", "300")]).await;
    let mut message = tool_calls(
        "call-late",
        PHONE_1,
        json!([{"id": "tc-late", "name": "solar_ocr_scan",
                "arguments": {"image_base64": "iVBORw0KGgo=", "mime_type": "image/png"}}]),
    );
    message["message"]["call"]["monitor"] =
        json!({"controlUrl": format!("{}/call-late/control", control.uri())});
    let answer: Value = app.post(&message).await.json().await.expect("json");
    let said = answer["results"][0]["result"].as_str().unwrap_or_default();
    assert!(
        said.contains("running"),
        "answered before the finding: {answer}"
    );

    eventually(15, "the finding said through the control URL", || async {
        (requests(&control).await >= 1).then_some(())
    })
    .await;
    drain(&app.db.pool, 15).await;
    let sent = control.received_requests().await.expect("recorded");
    assert_eq!(sent.len(), 1, "said once");
    let body: Value = serde_json::from_slice(&sent[0].body).expect("json");
    assert_eq!(body["type"], "add-message");
    assert_eq!(body["message"]["role"], "system");
    let content = body["message"]["content"].as_str().unwrap_or_default();
    assert_has_all(content, &["solar", "18 panels"]);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM agent_usage_metrics WHERE metric_type = 'solar_ocr_scan'")
            .await,
        1,
        "metered once, whatever the call"
    );
}
