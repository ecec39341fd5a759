//! Ops: find failed jobs, see why, re-run or cancel them (CLI and HTTP), with an audit trail.

use serde_json::{Value, json};

use crate::helpers::*;

const OPS: &str = "ops-secret-token";

async fn failed_scan(mocks: &Mocks) -> TestApp {
    spawn_with_failed_scan(mocks, OPS, 400, "bad image").await.0
}

async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    crate::cli::run_on_with(&app.db.url, args, &[("USER", "oncall-anna")]).await
}

#[tokio::test]
async fn an_oncall_person_finds_a_failed_job_sees_why_and_reruns_it_from_the_cli() {
    let mocks = Mocks::start().await;
    let app = failed_scan(&mocks).await;
    let (ok, out, err) = cli(
        &app,
        &[
            "jobs",
            "list",
            "--status",
            "failed",
            "--agent",
            "client1@agent-meter.example",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["kind"], "solar_ocr_scan");
    assert!(
        rows[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("bad image")),
        "{rows}"
    );
    let id = rows[0]["id"].as_str().expect("id").to_string();

    let (ok, out, _) = cli(&app, &["jobs", "show", &id]).await;
    assert!(ok);
    let detail: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(detail["args"]["tool_call_id"], "tc-failing");
    assert_eq!(detail["failures"][0]["permanent"], true);

    let (ok, out, _) = cli(
        &app,
        &[
            "jobs",
            "retry",
            "--failed",
            "--kind",
            "solar_ocr_scan",
            "--dry-run",
        ],
    )
    .await;
    assert!(ok && out.contains("1 job(s) to re-run"), "{out}");
    assert_eq!(
        app.db.count("SELECT count(*) FROM ops_audit").await,
        0,
        "a dry run changes nothing"
    );
    let (ok, out, err) = cli(&app, &["jobs", "retry", &id, "--yes"]).await;
    assert!(ok && out.contains("re-queued 1"), "{out}{err}");
    app.db.count_reaches("SELECT count(*) FROM apalis.jobs WHERE status = 'Done' AND job_type = 'solar_ocr_scan'", 1, 15, "the re-run to finish").await;
    assert_eq!(app.db.count(USAGE_ROWS).await, 1);
    let audit: (String, String, Vec<String>) = app
        .db
        .row("SELECT actor, action, job_ids FROM ops_audit")
        .await;
    assert_eq!(
        audit,
        ("cli:oncall-anna".into(), "retry".into(), vec![id.clone()])
    );
    // Re-running it again after it succeeded is refused: done jobs are not re-run.
    let (_, out, _) = cli(&app, &["jobs", "retry", &id, "--yes"]).await;
    assert_has(&out, "re-queued 0");
}

/// Scripts get plain answers: named jobs re-run without a prompt; a bulk re-run nobody can
/// confirm fails loudly instead of printing "nothing done" and exiting 0; `--actor` names who
/// acted in the audit trail.
#[tokio::test]
async fn jobs_retry_is_scriptable_and_audited_with_the_named_actor() {
    let mocks = Mocks::start().await;
    let app = failed_scan(&mocks).await;
    let id = pending_or_failed_id(&app).await;
    let (ok, out, err) = cli(&app, &["jobs", "retry", "--failed"]).await;
    assert!(
        !ok,
        "a bulk re-run without --yes and without a terminal fails: {out}"
    );
    assert_has(&err, "--yes");
    assert_eq!(app.db.count("SELECT count(*) FROM ops_audit").await, 0);
    let (ok, out, err) = cli(&app, &["jobs", "retry", &id, "--actor", "pager bot"]).await;
    assert!(
        ok && out.contains("re-queued 1"),
        "named ids need no prompt: {out}{err}"
    );
    let actor: String = app.db.scalar("SELECT actor FROM ops_audit").await;
    assert_eq!(actor, "cli:pager bot");
}

/// The id of the one failed scan.
async fn pending_or_failed_id(app: &TestApp) -> String {
    let (ok, out, err) = cli(app, &["jobs", "list", "--status", "failed", "--json"]).await;
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).expect("json");
    rows[0]["id"].as_str().expect("a failed job").to_string()
}

async fn ops_call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_ops_api_lists_retries_and_cancels_behind_its_token() {
    let mocks = Mocks::start().await;
    let app = failed_scan(&mocks).await;
    use reqwest::Method;
    assert_eq!(
        ops_call(&app, Method::GET, "/ops/jobs", None, None).await.0,
        401
    );
    assert_eq!(
        ops_call(&app, Method::GET, "/ops/jobs", Some("wrong"), None)
            .await
            .0,
        401
    );
    let (status, failed) = ops_call(
        &app,
        Method::GET,
        "/ops/jobs?status=failed",
        Some(OPS),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let id = failed[0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        ops_call(
            &app,
            Method::GET,
            "/ops/jobs?status=exploded",
            Some(OPS),
            None
        )
        .await
        .0,
        400
    );
    let (status, detail) = ops_call(
        &app,
        Method::GET,
        &format!("/ops/jobs/{id}"),
        Some(OPS),
        None,
    )
    .await;
    assert_eq!((status, detail["status"].as_str()), (200, Some("failed")));
    assert_eq!(
        ops_call(&app, Method::GET, "/ops/jobs/nope", Some(OPS), None)
            .await
            .0,
        404
    );

    let (status, queues) = ops_call(&app, Method::GET, "/ops/queues", Some(OPS), None).await;
    assert_eq!(status, 200);
    assert!(
        queues
            .as_array()
            .expect("rows")
            .iter()
            .any(|q| q["kind"] == "solar_ocr_scan" && q["failed"] == 1),
        "{queues}"
    );

    let (status, out) = ops_call(
        &app,
        Method::POST,
        "/ops/jobs/retry",
        Some(OPS),
        Some(json!({"kind": "solar_ocr_scan"})),
    )
    .await;
    assert_eq!(
        (status, out["retried"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    app.db
        .count_reaches(USAGE_ROWS, 1, 15, "the re-run to finish")
        .await;

    // A job due tomorrow is pending and can be cancelled; a done job cannot.
    let pending = pending_job(&app.db.pool).await;
    let (status, _) = ops_call(
        &app,
        Method::POST,
        &format!("/ops/jobs/{pending}/cancel"),
        Some(OPS),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, shown) = ops_call(
        &app,
        Method::GET,
        &format!("/ops/jobs/{pending}"),
        Some(OPS),
        None,
    )
    .await;
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(
        ops_call(
            &app,
            Method::POST,
            &format!("/ops/jobs/{id}/cancel"),
            Some(OPS),
            None
        )
        .await
        .0,
        409
    );
    let audited = "SELECT count(*) FROM ops_audit WHERE actor = 'api:ops'";
    assert_eq!(app.db.count(audited).await, 3);
}

#[tokio::test]
async fn the_ops_api_is_off_without_an_ops_token() {
    let app = TestApp::spawn_web_only().await;
    let resp = app
        .http
        .get(format!("{}/ops/jobs", app.base))
        .bearer_auth("anything");
    assert_eq!(status_of(resp).await, 404);
}

#[tokio::test]
async fn the_cli_cancels_only_pending_jobs_and_bulk_retries_with_yes() {
    let mocks = Mocks::start().await;
    let app = failed_scan(&mocks).await;
    let pending = pending_job(&app.db.pool).await;
    let failed: String = app
        .db
        .scalar("SELECT id FROM apalis.jobs WHERE status = 'Killed'")
        .await;
    let (ok, out, _) = cli(&app, &["jobs", "cancel", &pending, &failed]).await;
    assert!(
        ok && out.contains("cancelled 1 job(s); 1 not pending"),
        "{out}"
    );
    let (ok, out, err) = cli(
        &app,
        &[
            "jobs",
            "retry",
            "--failed",
            "--agent",
            "client1@agent-meter.example",
            "--yes",
        ],
    )
    .await;
    assert!(ok && out.contains("re-queued 1"), "{out}{err}");
    let (ok, out, _) = cli(&app, &["jobs", "list", "--status", "cancelled"]).await;
    assert!(
        ok && out.contains(&pending) && out.contains("cancelled by cli:oncall-anna"),
        "{out}"
    );
    let actions: Vec<String> = app
        .db
        .column("SELECT action FROM ops_audit ORDER BY id")
        .await;
    assert_eq!(actions, vec!["cancel".to_string(), "retry".to_string()]);
}
