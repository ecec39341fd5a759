//! The ops web page: over HTTP, and in headless Chromium (log in, see a failed job, retry, done).

use std::time::Duration;

use crate::helpers::*;

const OPS: &str = "page-ops-token";

/// A running app with one failed solar scan (Gemini refused once, answers afterwards).
async fn with_failed_job() -> (Mocks, TestApp, String) {
    let mocks = Mocks::start().await;
    let (app, id) = spawn_with_failed_scan(&mocks, OPS, 403, "key expired").await;
    (mocks, app, id)
}

async fn with_failed_job_and(extra: &[(&str, &str)]) -> (Mocks, TestApp, String) {
    let mocks = Mocks::start().await;
    let (app, id) = spawn_with_failed_scan_and(&mocks, extra, 403, "key expired").await;
    (mocks, app, id)
}

/// A web-only app (no worker, no clock) whose operators are `ops_tokens` (as `OPS_TOKENS`).
pub async fn web_app_with_operators(ops_tokens: &str) -> TestApp {
    TestApp::spawn_web_only_with(&[("OPS_TOKENS", ops_tokens)]).await
}

/// `/ops/{query}` at `base` (e.g. `?month=2026-11`) for the session `cookie` (`name=value`), or
/// for no one: status and body.
pub async fn ops_page_at(base: &str, cookie: Option<&str>, query: &str) -> (u16, String) {
    let mut req = client().get(format!("{base}/ops/{query}"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.expect("send");
    (r.status().as_u16(), r.text().await.expect("text"))
}

async fn job_status(app: &TestApp, id: &str) -> String {
    app.db
        .scalar_with("SELECT status FROM apalis.jobs WHERE id = $1", id)
        .await
}

#[tokio::test]
async fn the_page_needs_the_token_then_lists_and_retries_failed_jobs() {
    let (_mocks, app, id) = with_failed_job().await;
    let client = client();
    let (_, page) = ops_page_at(&app.base, None, "").await;
    assert!(
        page.contains("Log in") && !page.contains(&id),
        "no data before login"
    );
    let wrong = client
        .post(format!("{}/ops/login", app.base))
        .form(&[("token", "nope")]);
    assert_eq!(status_of(wrong).await, 401);
    let cookie = ops_login(&app, OPS).await;
    assert!(
        cookie.starts_with("ops_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && !cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(OPS),
        "the token never goes into a cookie: {cookie}"
    );
    let pair = cookie_pair(&cookie);
    let session_id = pair.trim_start_matches("ops_session=").to_string();
    // Only the session id's hash is stored.
    let (rows, raw): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE encode(id_hash, 'hex') = $1 OR operator = $1)
           FROM ops_sessions",
    )
    .bind(&session_id)
    .fetch_one(&app.db.pool)
    .await
    .expect("sessions");
    assert_eq!((rows, raw), (1, 0));
    let (_, page) = ops_page_at(&app.base, Some(&pair), "").await;
    assert!(
        page.contains(&id) && page.contains("key expired") && page.contains("<svg id=\"chart\""),
        "{page}"
    );
    // A post on the session from another site (or with no word on where it comes from) is refused.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("x-nothing", "at all"),
    ] {
        let forged = client
            .post(format!("{}/ops/ui/jobs/{id}/retry", app.base))
            .header("cookie", &pair)
            .header(name, value);
        assert_eq!(status_of(forged).await, 403, "{name}: {value}");
    }
    assert_eq!(job_status(&app, &id).await, "Killed", "nothing was re-run");
    let retry = client
        .post(format!("{}/ops/ui/jobs/{id}/retry", app.base))
        .header("cookie", &pair)
        .header("origin", &app.base);
    assert_eq!(status_of(retry).await, 303);
    eventually(15, "the retried job to finish", || async {
        (job_status(&app, &id).await == "Done").then_some(())
    })
    .await;
    let without_cookie = client
        .post(format!("{}/ops/ui/retry", app.base))
        .form(&[("kind", "")]);
    assert_eq!(status_of(without_cookie).await, 401);
    let audited = "SELECT count(*) FROM ops_audit WHERE actor = 'ui:ops'";
    assert_eq!(app.db.count(audited).await, 1);
    // Logging out revokes the session: the same cookie no longer opens anything.
    let out = client
        .post(format!("{}/ops/logout", app.base))
        .header("cookie", &pair)
        .header("sec-fetch-site", "same-origin");
    assert_eq!(status_of(out).await, 303);
    let after = client
        .get(format!("{}/ops/jobs", app.base))
        .header("cookie", &pair);
    assert_eq!(status_of(after).await, 401);
    let revoked = "SELECT count(*) FROM ops_sessions WHERE revoked_at IS NOT NULL";
    assert_eq!(app.db.count(revoked).await, 1);
}

/// Named operators: the audit names the token's owner (a header cannot), sessions behind https
/// get `Secure` cookies, and same-origin means `PUBLIC_BASE_URL`'s origin.
#[tokio::test]
async fn named_operators_are_audited_as_themselves_and_https_sessions_are_secure() {
    let (_mocks, app, id) = with_failed_job_and(&[
        (
            "OPS_TOKENS",
            "anna:tok-anna-0123456789,ben:tok-ben-0123456789",
        ),
        ("PUBLIC_BASE_URL", "https://ops.agent-meter.example"),
    ])
    .await;
    let client = client();
    let cancel = client
        .post(format!("{}/ops/jobs/{id}/retry", app.base))
        .bearer_auth("tok-anna-0123456789")
        .header("x-ops-actor", "mallory");
    assert_eq!(status_of(cancel).await, 200);
    let actor: String = app.db.scalar("SELECT actor FROM ops_audit").await;
    assert_eq!(actor, "api:anna");
    let wrong = client
        .get(format!("{}/ops/jobs", app.base))
        .bearer_auth("tok-anna");
    assert_eq!(status_of(wrong).await, 401);

    let cookie = ops_login(&app, "tok-ben-0123456789").await;
    assert_has(&cookie, "; Secure");
    let pair = cookie_pair(&cookie);
    let ours = client
        .get(format!("{}/ops/jobs?status=failed", app.base))
        .header("cookie", &pair);
    assert_eq!(status_of(ours).await, 200, "reads need no origin");
    let theirs = client
        .post(format!("{}/ops/jobs/retry", app.base))
        .header("cookie", &pair)
        .header("origin", &app.base)
        .json(&serde_json::json!({"kind": "solar_ocr_scan"}));
    assert_eq!(
        status_of(theirs).await,
        403,
        "the public origin is the only same origin"
    );
    let cross_login = client
        .post(format!("{}/ops/login", app.base))
        .header("origin", "https://evil.example")
        .form(&[("token", "tok-ben-0123456789")]);
    assert_eq!(status_of(cross_login).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_an_oncall_person_logs_in_retries_a_failed_job_and_sees_it_done() {
    let Some(browser_path) = chromium_or_skip() else {
        return;
    };
    let (_mocks, app, id) = with_failed_job().await;
    let base = app.base.clone();
    let job = id.clone();
    let browser_run = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let browser = headless_browser(browser_path, None)?;
        let tab = browser.new_tab()?;
        tab.navigate_to(&format!("{base}/ops/"))?;
        tab.wait_for_element("#token")?.click()?;
        tab.type_str(OPS)?;
        tab.wait_for_element("#login")?.click()?;
        // The next page is there when its job row is (no separate navigation wait: it may be over).
        let row = tab.wait_for_element(&format!("tr.job.failed[data-job=\"{job}\"]"))?;
        let error_text = row.get_inner_text()?;
        tab.wait_for_element(&format!("tr[data-job=\"{job}\"] button.retry"))?
            .click()?;
        tab.wait_for_element("#filters")?;
        // Look at done jobs until ours is there.
        for _ in 0..60 {
            tab.navigate_to(&format!("{base}/ops/?status=done"))?;
            tab.wait_for_element("#filters")?;
            if tab
                .find_element(&format!("tr.job.done[data-job=\"{job}\"]"))
                .is_ok()
            {
                return Ok(error_text);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        anyhow::bail!("the retried job never showed as done")
    });
    let error_text = browser_run
        .await
        .expect("browser thread")
        .expect("browser flow");
    assert_has(&error_text, "key expired");
    assert_eq!(job_status(&app, &id).await, "Done");
    assert_eq!(app.db.count(USAGE_ROWS).await, 1);
}

/// A session lives only as long as its operator, with the same token, is configured: after a
/// restart without anna (or with her token rotated) her session is refused at once, while ben's
/// keeps working.
#[tokio::test]
async fn sessions_of_operators_no_longer_configured_are_refused_at_once() {
    let (anna, ben) = ("tok-anna-0123456789", "tok-ben-0123456789");
    let app = web_app_with_operators(&format!("anna:{anna},ben:{ben}")).await;
    let anna_session = cookie_pair(&ops_login(&app, anna).await);
    let ben_session = cookie_pair(&ops_login(&app, ben).await);
    let client = client();
    let status = |base: String, session: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}/ops/jobs"))
                .header("cookie", session)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(app.base.clone(), anna_session.clone()).await, 200);
    assert_eq!(status(app.base.clone(), ben_session.clone()).await, 200);

    // Restarted without anna: her session is refused, on the API and on the page.
    let (without_anna, _stop) = serve_web_with(
        app.db.pool.clone(),
        &[("OPS_TOKENS", &format!("ben:{ben}"))],
    )
    .await;
    assert_eq!(
        status(without_anna.clone(), anna_session.clone()).await,
        401
    );
    let (_, page) = ops_page_at(&without_anna, Some(&anna_session), "").await;
    assert!(
        page.contains("Log in") && !page.contains("id=\"queues\""),
        "{page}"
    );
    let post = client
        .post(format!("{without_anna}/ops/ui/retry"))
        .header("cookie", &anna_session)
        .header("sec-fetch-site", "same-origin")
        .form(&[("kind", "")]);
    assert_eq!(status_of(post).await, 401);
    assert_eq!(status(without_anna.clone(), ben_session.clone()).await, 200);

    // Restarted with anna's token rotated: the session opened with the old token is refused too.
    let rotated = format!("anna:tok-anna-rotated-0123456789,ben:{ben}");
    let (rotated_base, _stop2) =
        serve_web_with(app.db.pool.clone(), &[("OPS_TOKENS", &rotated)]).await;
    assert_eq!(
        status(rotated_base.clone(), anna_session.clone()).await,
        401
    );
    assert_eq!(status(rotated_base, ben_session).await, 200);
    // Ben's token given as anna's (same name, another token) does not revive it either.
    let swapped = format!("anna:{ben}");
    let (swapped_base, _stop3) =
        serve_web_with(app.db.pool.clone(), &[("OPS_TOKENS", &swapped)]).await;
    assert_eq!(status(swapped_base, anna_session.clone()).await, 401);
    // Where anna is configured as before, her session still works (nothing was revoked).
    assert_eq!(status(app.base.clone(), anna_session).await, 200);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM ops_sessions WHERE token_mac IS NULL")
            .await,
        0,
        "every new session is bound to its token"
    );
}

/// Ten failed logins within a minute from one client, and the eleventh waits even with the right
/// token; successes are not counted. (Another client is unaffected: `http::throttle`'s unit tests,
/// since every test request comes from loopback.)
#[tokio::test]
async fn ten_failed_logins_from_one_client_then_429_even_with_the_right_token() {
    let token = "tok-anna-0123456789";
    let app = web_app_with_operators(&format!("anna:{token}")).await;
    let login = |given: &str| {
        client()
            .post(format!("{}/ops/login", app.base))
            .form(&[("token", given.to_string())])
            .send()
    };
    for i in 0..9 {
        let r = login("wrong-token").await.expect("send");
        assert_eq!(r.status(), 401, "failure {}", i + 1);
    }
    assert_eq!(
        login(token).await.expect("send").status(),
        303,
        "not counted"
    );
    assert_eq!(
        login("wrong-token").await.expect("send").status(),
        401,
        "the 10th failure"
    );
    let refused = login(token).await.expect("send");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(refused.headers().get("set-cookie").is_none(), "no session");
    let page = refused.text().await.expect("text");
    assert_has(&page, "Too many failed logins");
    assert!(!page.contains(token), "{page}");
    assert_eq!(login("wrong-token").await.expect("send").status(), 429);
    // The portal's door has a count of its own.
    let portal = client()
        .post(format!("{}/portal/sign-in", app.base))
        .form(&[("token", "not-a-link")]);
    assert_eq!(status_of(portal).await, 401);
}
