//! The ops web page: over HTTP, and in headless Chromium (log in, see a failed job, retry, done).

use std::{ffi::OsStr, time::Duration};

use crate::helpers::*;

const OPS: &str = "page-ops-token";

/// A running app with one failed solar scan (Gemini refused once, answers afterwards).
async fn with_failed_job() -> (Mocks, TestApp, String) {
    let mocks = Mocks::start().await;
    let (app, id) = spawn_with_failed_scan(&mocks, OPS, 403, "key expired").await;
    (mocks, app, id)
}

async fn job_status(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("job")
}

#[tokio::test]
async fn the_page_needs_the_token_then_lists_and_retries_failed_jobs() {
    let (_mocks, app, id) = with_failed_job().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = client
        .get(format!("{}/ops/", app.base))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("Log in") && !page.contains(&id),
        "no data before login"
    );
    let wrong = client
        .post(format!("{}/ops/login", app.base))
        .form(&[("token", "nope")])
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let ok = client
        .post(format!("{}/ops/login", app.base))
        .form(&[("token", OPS)])
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let page = client
        .get(format!("{}/ops/", app.base))
        .header("cookie", &pair)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains(&id) && page.contains("key expired") && page.contains("<svg id=chart"),
        "{page}"
    );
    let retried = client
        .post(format!("{}/ops/ui/jobs/{id}/retry", app.base))
        .header("cookie", &pair)
        .send()
        .await
        .expect("send");
    assert_eq!(retried.status(), 303);
    eventually(15, "the retried job to finish", || async {
        (job_status(&app, &id).await == "Done").then_some(())
    })
    .await;
    let without_cookie = client
        .post(format!("{}/ops/ui/retry", app.base))
        .form(&[("kind", "")])
        .send()
        .await
        .expect("send");
    assert_eq!(without_cookie.status(), 401);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM ops_audit WHERE actor = 'page:ops'")
            .await,
        1
    );
}

fn chromium() -> Option<std::path::PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_an_oncall_person_logs_in_retries_a_failed_job_and_sees_it_done() {
    let Some(browser_path) = chromium() else {
        // CI installs Chromium (.ci/run); without it, only a developer's machine may skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is required in CI"
        );
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
        return;
    };
    let (_mocks, app, id) = with_failed_job().await;
    let base = app.base.clone();
    let job = id.clone();
    let browser_run = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use headless_chrome::{Browser, LaunchOptions};
        let args: Vec<&OsStr> = [
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ]
        .iter()
        .map(OsStr::new)
        .collect();
        let browser = Browser::new(LaunchOptions {
            path: Some(browser_path),
            headless: true,
            sandbox: false,
            args,
            idle_browser_timeout: Duration::from_secs(60),
            ..LaunchOptions::default()
        })?;
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
    assert!(error_text.contains("key expired"), "{error_text}");
    assert_eq!(job_status(&app, &id).await, "Done");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM agent_usage_metrics")
            .await,
        1
    );
}
