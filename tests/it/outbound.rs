//! The agencies' own systems (issue 25): events signed per Standard Webhooks reach each agency's
//! endpoints (and only its own), failures are retried on the schedule, replays resend the same
//! `webhook-id`, and an endpoint failing for days is disabled. Signatures are checked with our
//! code and with the official `standardwebhooks` library (Python), which we did not write.

use std::{
    process::Command,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::*;

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// A receiver of webhooks: `/{name}` answers `status[name]` (200 by default), after
/// `delay[name]` (at once by default).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<Mutex<std::collections::HashMap<String, u16>>>,
    delay: Arc<Mutex<std::collections::HashMap<String, std::time::Duration>>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/{name}", axum::routing::post(receive))
            .with_state(r.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (r, base)
    }

    fn answer(&self, name: &str, status: u16) {
        self.status
            .lock()
            .expect("lock")
            .insert(name.into(), status);
    }

    fn delay(&self, name: &str, delay: std::time::Duration) {
        self.delay.lock().expect("lock").insert(name.into(), delay);
    }

    fn got(&self, path: &str) -> Vec<Got> {
        let got = self.got.lock().expect("lock");
        got.iter().filter(|g| g.path == path).cloned().collect()
    }

    async fn wait_for(&self, path: &str, event: &str, n: usize) -> Vec<Got> {
        eventually(30, &format!("{n} {event} at {path}"), || async {
            let of: Vec<Got> = self
                .got(path)
                .into_iter()
                .filter(|g| g.body.contains(&format!("\"type\":\"{event}\"")))
                .collect();
            (of.len() >= n).then_some(of)
        })
        .await
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    r.got.lock().expect("lock").push(Got {
        path: format!("/{name}"),
        id: h("webhook-id"),
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let delay = r.delay.lock().expect("lock").get(&name).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let status = r
        .status
        .lock()
        .expect("lock")
        .get(&name)
        .copied()
        .unwrap_or(200);
    StatusCode::from_u16(status).expect("status")
}

/// The tests' worker: loopback endpoints, a short schedule, and (so a loaded machine never
/// moves an endpoint to the slow lane and sends an event twice) a patient healthy lane.
const VARS: [(&str, &str); 4] = [
    ("OUTBOUND_ALLOW_PRIVATE", "true"),
    ("OUTBOUND_RETRY_SCHEDULE", "0,1"),
    ("JOB_BACKOFF_BASE_MS", "100"),
    ("OUTBOUND_SLOW_ANSWER_MS", "10000"),
];

/// `agent-meter agents webhooks ...` on the app's database: (success, stdout, stderr).
async fn webhooks(app: &TestApp, args: &[&str], private: bool) -> (bool, String, String) {
    let all: Vec<&str> = ["agents", "webhooks"].iter().chain(args).copied().collect();
    let env: &[(&str, &str)] = if private {
        &[("OUTBOUND_ALLOW_PRIVATE", "true")]
    } else {
        &[]
    };
    crate::cli::run_on_with(&app.db.url, &all, env).await
}

/// Registers `url` for the agent with `email`: (endpoint id, secret).
async fn add_endpoint_for(app: &TestApp, email: &str, url: &str) -> (String, String) {
    let (ok, out, err) = webhooks(app, &["add", email, "--url", url], true).await;
    assert!(ok, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .expect(name)
            .trim()
            .to_string()
    };
    (field("endpoint "), field("secret "))
}

/// Our own check of a Standard Webhooks signature.
fn signed_by(got: &Got, secret: &str) -> bool {
    let t: i64 = got.timestamp.parse().expect("timestamp");
    let want =
        agent_meter::providers::outbound::signature(&[secret], &got.id, t, got.body.as_bytes())
            .expect("sign");
    got.signature.split(' ').any(|s| s == want)
}

/// The official library's verdict (Python `standardwebhooks`), or `None` where it is not
/// installed outside CI (`.ci/run` installs it into `target/pydeps`).
fn library_accepts(got: &Got, secret: &str) -> Option<bool> {
    let deps = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pydeps");
    let script = "import sys, json\n\
        from standardwebhooks.webhooks import Webhook\n\
        a = json.load(sys.stdin)\n\
        try:\n    Webhook(a['secret']).verify(a['body'], a['headers']); print('ok')\n\
        except Exception as e:\n    print('refused', e)\n";
    let input = json!({"secret": secret, "body": got.body, "headers": {
        "webhook-id": got.id, "webhook-timestamp": got.timestamp,
        "webhook-signature": got.signature}});
    let mut child = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", deps)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var("CI").is_err(),
            "CI must have python3 and standardwebhooks: {err}"
        );
        println!("standardwebhooks unavailable here: {err}");
        return None;
    }
    Some(text.trim() == "ok")
}

async fn spawn() -> TestApp {
    TestApp::spawn_working(&VARS).await
}

#[tokio::test]
async fn each_agency_hears_only_of_its_own_calls_signed_so_the_official_library_accepts() {
    let app = spawn().await;
    let (receiver, base) = Receiver::start().await;
    let (a, b) = (
        app.db.agent_id(PHONE_1).await,
        app.db.agent_id(PHONE_2).await,
    );
    let (email_a, email_b) = (app.db.email_of(a).await, app.db.email_of(b).await);
    let (_, secret_a) = add_endpoint_for(&app, &email_a, &format!("{base}/a")).await;
    let (_, secret_b) = add_endpoint_for(&app, &email_b, &format!("{base}/b")).await;

    // Interleaved calls of the two agencies.
    for i in 0..4 {
        let phone = if i % 2 == 0 { PHONE_1 } else { PHONE_2 };
        let r = app
            .post(&end_of_call_report(&format!("call-out-{i}"), phone))
            .await;
        assert_eq!(r.status(), 200);
    }
    let at_a = receiver.wait_for("/a", "call.ended", 2).await;
    let at_b = receiver.wait_for("/b", "call.ended", 2).await;
    for (got, mine, theirs, secret) in [
        (&at_a, [0, 2], [1, 3], &secret_a),
        (&at_b, [1, 3], [0, 2], &secret_b),
    ] {
        let bodies: Vec<Value> = got
            .iter()
            .map(|g| serde_json::from_str(&g.body).expect("json"))
            .collect();
        let calls: Vec<&str> = bodies
            .iter()
            .map(|b| b["data"]["vapi_call_id"].as_str().expect("call id"))
            .collect();
        for i in mine {
            assert!(
                calls.contains(&format!("call-out-{i}").as_str()),
                "{calls:?}"
            );
        }
        for i in theirs {
            assert!(
                !calls.contains(&format!("call-out-{i}").as_str()),
                "another agency's call: {calls:?}"
            );
        }
        for (g, body) in got.iter().zip(&bodies) {
            assert!(signed_by(g, secret), "{g:?}");
            assert!(!signed_by(
                g,
                if secret == &secret_a {
                    &secret_b
                } else {
                    &secret_a
                }
            ));
            assert_eq!(body["data"]["duration_seconds"].as_f64(), Some(150.0));
            assert!(body["timestamp"].is_string());
            if let Some(accepted) = library_accepts(g, secret) {
                assert!(accepted, "standardwebhooks refused {g:?}");
            }
        }
    }
    // The caller became a lead of each agency: lead.created, once each.
    receiver.wait_for("/a", "lead.created", 1).await;
    receiver.wait_for("/b", "lead.created", 1).await;
    // A report delivered again makes no second event.
    app.post(&end_of_call_report("call-out-0", PHONE_1)).await;
    drain(&app.db.pool, 30).await;
    let ended: Vec<String> = receiver
        .got("/a")
        .into_iter()
        .filter(|g| g.body.contains("call-out-0") && g.body.contains("call.ended"))
        .map(|g| g.id)
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_then_failed_and_a_replay_resends_the_same_id() {
    let app = spawn().await;
    let (receiver, base) = Receiver::start().await;
    receiver.answer("down", 500);
    let email = app.db.email_of(app.db.agent_id(PHONE_1).await).await;
    let (endpoint, _) = add_endpoint_for(&app, &email, &format!("{base}/down")).await;
    app.post(&end_of_call_report("call-fails", PHONE_1)).await;
    // The schedule (0, 1 s) runs out after two attempts.
    app.db
        .count_reaches(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'failed' AND attempts = 2
                AND last_status_code = 500",
            2,
            30,
            "call.ended and lead.created failed after two attempts",
        )
        .await;
    let (ok, out, err) = webhooks(&app, &["deliveries", &email, "--json"], false).await;
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).expect("json");
    let failed = listed
        .into_iter()
        .find(|d| d["event_type"] == "call.ended")
        .expect("the call.ended delivery");
    assert_eq!(
        (failed["status"].as_str(), failed["attempts"].as_i64()),
        (Some("failed"), Some(2))
    );
    let first_ids: Vec<String> = receiver.got("/down").into_iter().map(|g| g.id).collect();
    assert_eq!(first_ids.len(), 4);

    // Fixed: one replay by id, then every failed one since the start.
    receiver.answer("down", 204);
    let id = failed["id"].as_str().expect("id");
    let (ok, _, err) = webhooks(&app, &["replay", id], false).await;
    assert!(ok, "{err}");
    app.db
        .count_reaches(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'",
            1,
            30,
            "the replayed delivery",
        )
        .await;
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (ok, out, err) = webhooks(
        &app,
        &["replay", "--failed-since", &since, "--agent", &email],
        false,
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("1 delivery"), "{out}");
    app.db
        .count_reaches(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'",
            2,
            30,
            "every delivery",
        )
        .await;
    let all: Vec<String> = receiver.got("/down").into_iter().map(|g| g.id).collect();
    assert_eq!(all.len(), 6);
    assert!(
        all[4..].iter().all(|id| first_ids.contains(id)),
        "same webhook-ids: {all:?}"
    );
    // Failing for more than 5 days: the next failure disables the endpoint.
    receiver.answer("down", 503);
    let backdate = "UPDATE webhook_endpoints SET failing_since = now() - interval '6 days'
                     WHERE id = $1::uuid";
    app.db.execute_with(backdate, endpoint.clone()).await;
    app.post(&end_of_call_report("call-after", PHONE_1)).await;
    app.db
        .count_reaches(
            "SELECT count(*) FROM webhook_endpoints WHERE disabled_at IS NOT NULL",
            1,
            30,
            "the endpoint disabled",
        )
        .await;
    let (ok, out, _) = webhooks(&app, &["list", &email], false).await;
    assert!(ok && out.contains("disabled"), "{out}");
}

#[tokio::test]
async fn a_slow_endpoint_is_cut_off_on_the_healthy_lane_and_served_on_the_slow_one() {
    // A healthy endpoint answers within 300 ms here; /sleepy takes 2 s.
    let mut vars = VARS.to_vec();
    vars.retain(|(k, _)| *k != "OUTBOUND_SLOW_ANSWER_MS");
    vars.push(("OUTBOUND_SLOW_ANSWER_MS", "300"));
    let app = TestApp::spawn_working(&vars).await;
    let (receiver, base) = Receiver::start().await;
    receiver.delay("sleepy", std::time::Duration::from_secs(2));
    let (a, b) = (
        app.db.agent_id(PHONE_1).await,
        app.db.agent_id(PHONE_2).await,
    );
    let (email_a, email_b) = (app.db.email_of(a).await, app.db.email_of(b).await);
    let (sleepy, secret) = add_endpoint_for(&app, &email_a, &format!("{base}/sleepy")).await;
    add_endpoint_for(&app, &email_b, &format!("{base}/quick")).await;
    app.post(&end_of_call_report("call-sleepy", PHONE_1)).await;
    app.post(&end_of_call_report("call-quick", PHONE_2)).await;

    // Every delivery arrives, each after one counted attempt: the cut-off one on the healthy
    // lane is not a failure of the endpoint.
    app.db
        .count_reaches(
            "SELECT count(*) FROM webhook_deliveries
              WHERE status = 'delivered' AND attempts = 1 AND last_status_code = 200
                AND last_error IS NULL",
            4,
            30,
            "call.ended and lead.created at both endpoints",
        )
        .await;
    let slow: bool = app
        .db
        .scalar_with(
            "SELECT slow FROM webhook_endpoints WHERE id = $1::uuid",
            sleepy,
        )
        .await;
    assert!(slow, "the sleepy endpoint is on the slow lane");
    // It heard each event (at least once: the cut-off attempt may have reached it), each time
    // under the event's own webhook-id and correctly signed.
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM webhook_deliveries WHERE agent_id = $1")
            .bind(a)
            .fetch_all(&app.db.pool)
            .await
            .expect("ids");
    assert_eq!(ids.len(), 2);
    let got = receiver.got("/sleepy");
    for id in &ids {
        assert!(got.iter().any(|g| &g.id == id), "{id} never arrived");
    }
    assert!(
        got.iter()
            .all(|g| ids.contains(&g.id) && signed_by(g, &secret))
    );
    assert!(receiver.got("/quick").len() >= 2);
}

#[tokio::test]
async fn an_event_over_256_kib_arrives_within_it_naming_the_fields_left_out() {
    let app = spawn().await;
    let (receiver, base) = Receiver::start().await;
    let agent = app.db.agent_id(PHONE_1).await;
    let email = app.db.email_of(agent).await;
    let (_, secret) = add_endpoint_for(&app, &email, &format!("{base}/big")).await;
    let summary = "The caller asked about solar. ".repeat(10_000); // ~300 KB
    let mut tx = app.db.pool.begin().await.expect("tx");
    let made = agent_meter::store::outbound::emit(
        &mut tx,
        agent,
        "msg_big_one",
        "call.ended",
        json!({"call_id": "c-big", "summary": summary, "ended_reason": "customer-ended-call"}),
    )
    .await
    .expect("emit");
    tx.commit().await.expect("commit");
    assert_eq!(made, 1);
    let got = receiver.wait_for("/big", "call.ended", 1).await;
    assert!(
        got[0].body.len() <= 256 * 1024,
        "{} bytes",
        got[0].body.len()
    );
    let body: Value = serde_json::from_str(&got[0].body).expect("json");
    assert_eq!(body["data"]["call_id"], "c-big");
    assert_eq!(body["data"]["ended_reason"], "customer-ended-call");
    assert_eq!(body["data"]["omitted"], json!(["summary"]));
    assert!(signed_by(&got[0], &secret));
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_and_bad_input_is_refused_clearly() {
    let app = spawn().await;
    let (receiver, base) = Receiver::start().await;
    let email = app.db.email_of(app.db.agent_id(PHONE_1).await).await;
    let (endpoint, old) = add_endpoint_for(&app, &email, &format!("{base}/r")).await;
    let (ok, out, err) = webhooks(&app, &["rotate-secret", &endpoint], false).await;
    assert!(ok, "{err}");
    let new = out
        .trim()
        .strip_prefix("secret ")
        .expect("secret")
        .to_string();
    app.post(&end_of_call_report("call-rotated", PHONE_1)).await;
    let got = receiver.wait_for("/r", "call.ended", 1).await;
    assert_eq!(got[0].signature.split(' ').count(), 2);
    assert!(signed_by(&got[0], &old) && signed_by(&got[0], &new));
    for secret in [&old, &new] {
        if let Some(accepted) = library_accepts(&got[0], secret) {
            assert!(accepted);
        }
    }

    let cases: [(&[&str], bool, &str); 6] = [
        (
            &["add", &email, "--url", "http://hooks.example.com/x"],
            false,
            "https",
        ),
        (
            &["add", &email, "--url", "https://127.0.0.1/x"],
            false,
            "non-public",
        ),
        (
            &[
                "add",
                &email,
                "--url",
                "https://hooks.example.com/x",
                "--events",
                "call.started",
            ],
            false,
            "unknown event type",
        ),
        (
            &[
                "add",
                "nobody@example.com",
                "--url",
                "https://hooks.example.com/x",
            ],
            false,
            "no agent",
        ),
        (
            &["remove", "00000000-0000-0000-0000-000000000000"],
            false,
            "no endpoint",
        ),
        (
            &["replay", "00000000-0000-0000-0000-000000000000"],
            false,
            "no delivery",
        ),
    ];
    for (args, private, says) in cases {
        let (ok, _, err) = webhooks(&app, args, private).await;
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    let (ok, out, _) = webhooks(&app, &["remove", &endpoint], false).await;
    assert!(ok, "{out}");
    let (_, listed, _) = webhooks(&app, &["list", &email, "--json"], false).await;
    assert_eq!(listed.trim(), "[]");
}

#[test]
fn help_names_every_webhooks_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_agent-meter"))
        .args(["agents", "webhooks", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "add",
        "list",
        "remove",
        "rotate-secret",
        "deliveries",
        "replay",
    ] {
        assert!(text.contains(command), "{text}");
    }
}

/// POSTs `form` to the portal's `path` as `cookie`, from our own origin when `origin`.
async fn portal_post(
    app: &TestApp,
    path: &str,
    cookie: &str,
    origin: bool,
    form: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client()
        .post(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .form(form);
    if origin {
        req = req.header("origin", &app.base);
    }
    let r = req.send().await.expect("post");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test]
async fn an_agency_adds_sees_and_removes_only_its_own_endpoints_in_the_portal() {
    let app = spawn().await;
    let (receiver, base) = Receiver::start().await;
    let cookie = portal_cookie(&app, PHONE_1).await;
    let url = format!("{base}/portal");
    let add = [("url", url.as_str()), ("events", "call.ended")];

    let (status, _) = portal_post(&app, "/portal/integrations", &cookie, false, &add).await;
    assert_eq!(status, 403, "a cross-site post");
    for (bad, says) in [
        ([("url", "ftp://x.example/y"), ("events", "")], "URL"),
        (
            [("url", url.as_str()), ("events", "call.started")],
            "call.started",
        ),
    ] {
        let (status, page) = portal_post(&app, "/portal/integrations", &cookie, true, &bad).await;
        assert!(status == 400 && page.contains(says), "{status} {page}");
    }
    let (status, page) = portal_post(&app, "/portal/integrations", &cookie, true, &add).await;
    assert_eq!(status, 200, "{page}");
    let secret = page
        .split("whsec_")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(|s| format!("whsec_{s}"))
        .expect("the secret, shown once");
    let listed = app.page("/portal/integrations", &cookie).await;
    assert!(
        listed.contains(&url) && !listed.contains(&secret),
        "{listed}"
    );

    app.post(&end_of_call_report("call-portal", PHONE_1)).await;
    let got = receiver.wait_for("/portal", "call.ended", 1).await;
    assert!(signed_by(&got[0], &secret));
    assert!(
        app.page("/portal/integrations", &cookie)
            .await
            .contains("call.ended")
    );

    // Another agency's endpoint is not the first agency's to remove.
    let other_email = app.db.email_of(app.db.agent_id(PHONE_2).await).await;
    let (theirs, _) = add_endpoint_for(&app, &other_email, &format!("{base}/theirs")).await;
    let path = format!("/portal/integrations/{theirs}/remove");
    let (status, _) = portal_post(&app, &path, &cookie, true, &[]).await;
    assert_eq!(status, 404);
    let live = "SELECT count(*) FROM webhook_endpoints WHERE removed_at IS NULL";
    assert_eq!(app.db.count(live).await, 2);
    let mine: String = app
        .db
        .scalar("SELECT id::text FROM webhook_endpoints WHERE url LIKE '%/portal'")
        .await;
    let path = format!("/portal/integrations/{mine}/remove");
    let (status, _) = portal_post(&app, &path, &cookie, true, &[]).await;
    assert_eq!(status, 303);
    assert_eq!(app.db.count(live).await, 1);
}
