//! The agency portal: one-time sign-in links, sessions, every page for two agencies (each sees
//! only its own rows), Spanish labels; and the operator's money view on the ops page.

use agent_meter::{billing, store::portal};
use chrono_tz::America::Phoenix;
use uuid::Uuid;

use crate::{
    helpers::*,
    ops_page::{ops_page_at, web_app_with_operators},
};

/// Calls, a lead with a property, findings and tags, and usage for one agency; `n` tells them apart.
/// Everything happens in the running month (never before its first minute in Phoenix).
async fn populate(db: &TestDb, agent: Uuid, n: u32) {
    const AT: &str = "GREATEST(now() - interval '50 minutes',
                              (date_trunc('month', now() AT TIME ZONE 'America/Phoenix') + interval '1 minute')
                                  AT TIME ZONE 'America/Phoenix')";
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "WITH l AS (INSERT INTO leads (agent_id, phone, name) VALUES ('{agent}', '+1602555{n:04}', 'Caller {n}') RETURNING id),
              p AS (INSERT INTO properties (agent_id, lead_id, address, facts)
                    SELECT '{agent}', id, '{n} Saguaro Way', '{{\"has_solar\": true, \"water_source\": \"well\"}}' FROM l RETURNING id, lead_id),
              t AS (INSERT INTO tags (agent_id, lead_id, tag) SELECT '{agent}', id, 'solar-{n}' FROM l RETURNING id),
              r AS (INSERT INTO risk_assessments (agent_id, lead_id, property_id, kind, result, idempotency_key)
                    SELECT '{agent}', lead_id, id, 'solar', '{{}}', 'k{n}' FROM p RETURNING id),
              c AS (INSERT INTO calls (agent_id, vapi_call_id, lead_id, customer_number, started_at, ended_at, duration_seconds)
                    SELECT '{agent}', 'call-{n}', id, '+1602555{n:04}', {AT}, {AT}, 600 FROM l RETURNING id)
         INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd, provider_cost_usd, occurred_at, idempotency_key)
         VALUES ('{agent}', 'vapi_call_minutes', 10, 0.20, 2.00, 0.90, {AT}, 'vapi_call:call-{n}'),
                ('{agent}', 'solar_ocr_scan', 1, 0.075, 0.075, 0.01, {AT}, 'scan-{n}')"
    )))
    .execute(&db.pool)
    .await
    .expect("populate");
}

/// Drafts the running month's invoices (in Phoenix); the month.
async fn roll_up_this_month(db: &TestDb) -> billing::Month {
    let month = billing::Month::containing(chrono::Utc::now(), Phoenix);
    billing::rollup(&db.pool, month, Phoenix, None)
        .await
        .expect("rollup");
    month
}

/// The total of `agent`'s invoice for `month`.
async fn invoice_total(db: &TestDb, agent: Uuid, month: billing::Month) -> rust_decimal::Decimal {
    sqlx::query_scalar("SELECT total_usd FROM invoices WHERE agent_id = $1 AND period_start = $2")
        .bind(agent)
        .bind(month.first_day)
        .fetch_one(&db.pool)
        .await
        .expect("total")
}

/// `agents invite EMAIL` run as an operator would, with `env` besides the app's database and URL.
async fn run_invite(app: &TestApp, email: &str, env: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-meter"))
        .args(["agents", "invite", email])
        .env("DATABASE_URL", &app.db.url)
        .env("PUBLIC_BASE_URL", &app.base)
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("run")
}

/// A sign-in link for the agent with `email`, made by the CLI as an operator would.
async fn invite(app: &TestApp, email: &str) -> String {
    let out = run_invite(app, email, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        link.starts_with(&format!("{}/portal/sign-in?token=", app.base)),
        "{link}"
    );
    link
}

/// Uses a link's token up; the session cookie's `name=value`, or the refusal's status.
async fn sign_in(app: &TestApp, link: &str) -> Result<String, u16> {
    let token = link.split("token=").nth(1).expect("token").to_string();
    let cookie = post_token(app, "/portal/sign-in", &token).await?;
    assert!(
        cookie.starts_with("portal_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    Ok(cookie_pair(&cookie))
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>, lang: &str) -> (u16, String) {
    let mut req = client()
        .get(format!("{}{path}", app.base))
        .header("accept-language", lang);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("text"))
}

#[tokio::test]
async fn an_agency_signs_in_once_with_its_link_and_sees_only_its_own_rows() {
    clear_of_month_turn(Phoenix).await;
    let app = TestApp::spawn_web_only().await;
    let (a, b) = app.db.two_agents().await;
    populate(&app.db, a, 1).await;
    populate(&app.db, b, 2).await;
    let month = roll_up_this_month(&app.db).await;
    let email: String = app.db.email_of(a).await;

    let link = invite(&app, &email).await;
    // Opening the link (or a chat app's preview fetching it) does not spend it.
    let (status, page) = get(&app, link.trim_start_matches(&app.base), None, "en").await;
    assert_eq!(status, 200);
    assert_has(&page, "id=\"sign-in\"");
    let cookie = sign_in(&app, &link).await.expect("signed in");
    assert_eq!(sign_in(&app, &link).await, Err(401), "a link works once");
    // Only the session id's hash is stored.
    let session_id = cookie.trim_start_matches("portal_session=");
    let raw = app.db.count("SELECT count(*) FROM portal_sessions").await;
    let hashed: i64 = app
        .db
        .scalar_with(
            "SELECT count(*) FROM portal_sessions WHERE id_hash = sha256(convert_to($1, 'UTF8'))",
            session_id,
        )
        .await;
    assert_eq!((raw, hashed), (1, 1));

    let expect = [
        ("/portal/", "Calls, last 30 days"),
        ("/portal/calls", "+16025550001"),
        ("/portal/leads", "1 Saguaro Way"),
        ("/portal/usage", "vapi_call_minutes"),
        ("/portal/invoices", &month.label()),
        (&format!("/portal/invoices/{month}"), "id=\"total\""),
    ];
    for (path, needle) in &expect {
        let (status, page) = get(&app, path, Some(&cookie), "en").await;
        assert_eq!(status, 200, "{path}");
        assert!(page.contains(needle), "{path} lacks {needle}: {page}");
        for theirs in ["+16025550002", "2 Saguaro Way", "solar-2"] {
            assert!(
                !page.contains(theirs),
                "{path} shows the other agency's {theirs}"
            );
        }
    }
    // And the other agency, signed in with its own link, sees its rows and never ours.
    let email_b: String = app.db.email_of(b).await;
    let cookie_b = sign_in(&app, &invite(&app, &email_b).await)
        .await
        .expect("b signs in");
    for (path, _) in &expect {
        let (status, page) = get(&app, path, Some(&cookie_b), "en").await;
        assert_eq!(status, 200, "{path}");
        for ours in ["+16025550001", "1 Saguaro Way", "solar-1"] {
            assert!(!page.contains(ours), "{path} shows agency A's {ours} to B");
        }
    }
    let (_, b_calls) = get(&app, "/portal/calls", Some(&cookie_b), "en").await;
    assert_has(&b_calls, "+16025550002");
    let (_, leads) = get(&app, "/portal/leads", Some(&cookie), "en").await;
    assert_has_all(&leads, &["solar-1", "water_source: well"]);
    let (_, overview) = get(&app, "/portal/", Some(&cookie), "en").await;
    // 10 minutes at 0.20 and one scan at 0.075: $2.00 + $0.08.
    assert_has(&overview, "$2.08");
    // Usage by month in Phoenix time, one line per month and metric: a scan in the first minute
    // of the month before last and one in the last minute of the month before that (already
    // that month in UTC).
    let month_before_last = month.previous().previous();
    sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          provider_cost_usd, occurred_at, idempotency_key)
         VALUES ($1, 'solar_ocr_scan', 2, 0.075, 0.15, 0.02, $2 + interval '1 minute', 'edge-in'),
                ($1, 'solar_ocr_scan', 1, 0.075, 0.075, 0.01, $2 - interval '1 minute', 'edge-before')",
    )
    .bind(a)
    .bind(month_before_last.start(Phoenix))
    .execute(&app.db.pool)
    .await
    .expect("older usage");
    let (_, usage) = get(&app, "/portal/usage", Some(&cookie), "en").await;
    let line = |m: billing::Month, count: u32, quantity: u32, amount: &str| {
        format!(
            "<tr><td>{}</td><td>solar_ocr_scan</td><td>{count}</td><td>{quantity}</td><td>{amount}</td></tr>",
            m.label()
        )
    };
    for expected in [
        line(month, 1, 1, "$0.08"),
        line(month_before_last, 1, 2, "$0.15"),
        line(month_before_last.previous(), 1, 1, "$0.08"),
    ] {
        assert!(usage.contains(&expected), "{expected} not in {usage}");
    }
    // A call's billed minutes are its row and its corrections (a reversal and a re-bill naming
    // it in `corrects`), read by key; a correction's `corrects` must mirror its metadata.
    let (_, calls_page) = get(&app, "/portal/calls", Some(&cookie), "en").await;
    assert_has(&calls_page, "<td>+16025550001</td><td>600</td><td>10</td>");
    let correct = |key: &'static str, quantity: i32, mirrored: bool| {
        sqlx::query(
            "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                              occurred_at, idempotency_key, metadata, corrects)
             VALUES ($1, 'vapi_call_minutes', $2, 0.20, $2 * 0.20, now(), $3,
                     '{\"corrects\": \"vapi_call:call-1\"}', CASE WHEN $4 THEN 'vapi_call:call-1' END)",
        )
        .bind(a)
        .bind(quantity)
        .bind(key)
        .bind(mirrored)
        .execute(&app.db.pool)
    };
    correct("vapi_call:call-1:rev1", -10, true)
        .await
        .expect("reversal");
    correct("vapi_call:call-1:v2", 12, true)
        .await
        .expect("re-bill");
    let forgot = correct("vapi_call:call-1:v3", 1, false).await;
    assert!(
        forgot.is_err_and(|e| e.to_string().contains("corrects_mirrors_metadata")),
        "a correction without its column is refused"
    );
    let (_, calls_page) = get(&app, "/portal/calls", Some(&cookie), "en").await;
    assert_has(&calls_page, "<td>+16025550001</td><td>600</td><td>12</td>");
    // Findings are each call's own: the caller calls again and a flood check is made in that
    // call, which the first call does not show; the solar finding, saved before findings named
    // their call, stays with every call of its lead.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO calls (agent_id, vapi_call_id, lead_id, customer_number, started_at, duration_seconds)
         SELECT '{a}', 'call-1-again', lead_id, '+16025559999', now(), 60 FROM calls WHERE vapi_call_id = 'call-1';
         INSERT INTO risk_assessments (agent_id, lead_id, kind, result, idempotency_key, vapi_call_id)
         SELECT '{a}', lead_id, 'flood', '{{}}', 'k-again', 'call-1-again' FROM calls WHERE vapi_call_id = 'call-1'"
    )))
    .execute(&app.db.pool)
    .await
    .expect("second call");
    let (_, calls_page) = get(&app, "/portal/calls", Some(&cookie), "en").await;
    let again = row_of_cells(&calls_page, "<td>+16025559999</td>");
    assert!(again.ends_with("<td>flood, solar</td>"), "{again}");
    let first = row_of_cells(&calls_page, "<td>+16025550001</td>");
    assert!(first.ends_with("<td>solar</td>"), "{first}");
    // Spanish from the browser's language, and by the toggle.
    let (_, es) = get(&app, "/portal/calls", Some(&cookie), "es-MX,es;q=0.9").await;
    assert_has_all(&es, &["Llamadas", "<html lang=\"es\">"]);
    let (_, toggled) = get(&app, "/portal/usage?lang=es", Some(&cookie), "en").await;
    assert_has(&toggled, "Consumo");
    // The invoice as a PDF, with its total.
    let pdf = client()
        .get(format!("{}/portal/invoices/{month}.pdf", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let bytes = pdf.bytes().await.expect("bytes");
    let total = invoice_total(&app.db, a, month).await;
    assert!(bytes.starts_with(b"%PDF-"));
    assert!(
        String::from_utf8_lossy(&bytes).contains(&format!("Total: ${total:.2}")),
        "the PDF shows the total {total}"
    );
    let (status, _) = get(&app, "/portal/invoices/2020-01", Some(&cookie), "en").await;
    assert_eq!(status, 404);
    let (status, _) = get(&app, "/portal/invoices/not-a-month", Some(&cookie), "en").await;
    assert_eq!(status, 400);

    // Signing out revokes the session.
    let out = client()
        .post(format!("{}/portal/sign-out", app.base))
        .header("cookie", &cookie)
        .header("origin", &app.base);
    assert_eq!(status_of(out).await, 303);
    let (status, _) = get(&app, "/portal/", Some(&cookie), "en").await;
    assert_eq!(status, 303, "back to sign-in");
}

#[tokio::test]
async fn expired_forged_and_missing_sessions_and_links_get_the_sign_in_page() {
    let app = TestApp::spawn_web_only().await;
    let a = app.db.agent_id(PHONE_1).await;
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let token = portal::create_link(&mut conn, a, std::time::Duration::from_secs(3600))
        .await
        .expect("link");
    sqlx::query("UPDATE portal_sign_in_tokens SET expires_at = now() - interval '1 second'")
        .execute(&mut *conn)
        .await
        .expect("expire");
    drop(conn);
    let link = format!("{}/portal/sign-in?token={token}", app.base);
    assert_eq!(sign_in(&app, &link).await, Err(401), "expired");
    for bogus in ["", "x", &"f".repeat(64), "<script>"] {
        let bogus_link = format!("{}/portal/sign-in?token={bogus}", app.base);
        assert_eq!(sign_in(&app, &bogus_link).await, Err(401), "{bogus:?}");
    }
    // A sign-in posted from another site is refused even with a good link.
    let mut conn = app.db.pool.acquire().await.expect("conn");
    let good = portal::create_link(&mut conn, a, std::time::Duration::from_secs(3600))
        .await
        .expect("link");
    drop(conn);
    let cross = client()
        .post(format!("{}/portal/sign-in", app.base))
        .header("origin", "https://evil.example")
        .form(&[("token", good.as_str())]);
    assert_eq!(status_of(cross).await, 403);
    for cookie in [
        None,
        Some("portal_session=forged"),
        Some(&*format!("portal_session={}", "a".repeat(64))),
    ] {
        for path in ["/portal/", "/portal/calls", "/portal/invoices/2026-11"] {
            let (status, _) = get(&app, path, cookie, "en").await;
            assert_eq!(status, 303, "{path} with {cookie:?}");
        }
    }
    // The sign-in page escapes what it echoes.
    let (_, page) = get(&app, "/portal/sign-in?token=%22%3E%3Cscript%3E", None, "en").await;
    assert!(!page.contains("\"><script>"), "{page}");
}

/// The cells of the table row holding `cell` (from its first `<td>` to its last `</td>`).
fn row_of_cells(page: &str, cell: &str) -> String {
    let at = page
        .find(cell)
        .unwrap_or_else(|| panic!("no {cell}: {page}"));
    let start = page[..at].rfind("<tr>").map_or(0, |s| s + "<tr>".len());
    let end = page[at..].find("</tr>").map_or(page.len(), |e| at + e);
    page[start..end].to_string()
}

/// A web-only app with one operator, clear of the month turn: the operator's session cookie, and
/// the first two agents.
async fn ops_app() -> (TestApp, String, (Uuid, Uuid)) {
    clear_of_month_turn(Phoenix).await;
    let app = web_app_with_operators("anna:tok-anna-0123456789").await;
    let cookie = ops_login(&app, "tok-anna-0123456789").await;
    let agents = app.db.two_agents().await;
    (app, cookie_pair(&cookie), agents)
}

/// The ops page at `query` (e.g. `?month=2026-11`): status and body.
async fn ops_page(app: &TestApp, cookie: &str, query: &str) -> (u16, String) {
    ops_page_at(&app.base, Some(cookie), query).await
}

/// The `<tr>` of a page that opens with `opening` (its first cell, or `<tr data-agent=...>`).
fn row_of(page: &str, opening: &str) -> String {
    let start = page
        .find(opening)
        .unwrap_or_else(|| panic!("no row {opening}: {page}"));
    page[start..]
        .split("</tr>")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_ops_page_shows_each_agencys_margin_for_the_month() {
    let (app, cookie, (a, b)) = ops_app().await;
    populate(&app.db, a, 1).await;
    populate(&app.db, b, 2).await;
    // Two agencies with one name stay apart (money rows and the 30-day chart's bars).
    app.db
        .execute(
            "UPDATE agents SET agency_name = 'Twin Insurance'
              WHERE vapi_phone_number_id IN ('ph_placeholder_client1', 'ph_placeholder_client2')",
        )
        .await;
    let (_, page) = ops_page(&app, &cookie, "").await;
    assert_eq!(page.matches("<rect class=\"bar\" ").count(), 5, "{page}");
    // Billed $2.08 (2.00 + 0.08), provider cost $0.91, margin $1.17, per agency.
    for agent in [a, b] {
        let r = row_of(&page, &format!("<tr data-agent=\"{agent}\">"));
        assert_has_all(
            &r,
            &["<td>2.08</td>", "<td>0.91</td>", "class=\"margin\">1.17<"],
        );
    }
    assert_has_all(&page, &["id=\"mom\"", "MRR"]);
    assert_eq!(ops_page(&app, &cookie, "?month=2026-13").await.0, 400);
}

/// The money view's figures in the cells of `row` (a `<tr>`), as text, tags stripped.
fn cells(row: &str) -> Vec<String> {
    row.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').map_or(0, |i| i + 1)..];
            c.split("</td>").next().unwrap_or_default().to_string()
        })
        .collect()
}

/// The total row of the money view: billed so far, cost, margin.
fn money_total(page: &str) -> Vec<String> {
    row_of(page, "<tr><th>total</th>")
        .split("<th>")
        .skip(1)
        .map(|c| c.split("</th>").next().unwrap_or_default().to_string())
        .filter(|c| !c.is_empty() && c != "total")
        .collect()
}

/// Issue 21, item 4: month over month, a month's usage revenue is its per-agency "billed so far"
/// (the usage that occurred in it, whatever invoice holds it), and the invoices column says
/// whether its invoices are finalized or still drafts.
#[tokio::test]
async fn month_over_month_agrees_with_the_per_agency_figures_and_labels_drafts() {
    let (app, cookie, (a, b)) = ops_app().await;
    app.db
        .execute("UPDATE agents SET billing_starts_on = '2026-09-01'")
        .await;
    // `n` scans of agent a.
    let (pool, scans) = (&app.db.pool, |n| ("solar_ocr_scan", n, "0.075"));
    // September: 2 scans, rolled up and finalized; then a late one (billed on October's
    // invoice as an adjustment, counted in September, when it occurred).
    add_usage(pool, a, scans("2"), "2026-09-15T12:00:00Z", "sep-1").await;
    rollup(pool, "2026-09", None).await;
    finalize(pool, "2026-09", None).await.expect("finalize");
    add_usage(pool, a, scans("1"), "2026-09-16T12:00:00Z", "sep-late").await;
    // October: 10 scans rolled up as a draft, then 4 more the draft does not hold yet.
    add_usage(pool, a, scans("10"), "2026-10-15T12:00:00Z", "oct-1").await;
    rollup(pool, "2026-10", None).await;
    add_usage(pool, a, scans("4"), "2026-10-16T12:00:00Z", "oct-2").await;
    for (m, per_agency, label) in [
        ("2026-09", "0.23", "finalized"), // 3 x 0.075, rounded once
        ("2026-10", "1.05", "draft"),     // 14 x 0.075
    ] {
        let (status, page) = ops_page(&app, &cookie, &format!("?month={m}")).await;
        assert_eq!(status, 200, "{page}");
        let mine = cells(&row_of(&page, &format!("<tr data-agent=\"{a}\">")));
        assert_eq!(mine[5], per_agency, "{mine:?}");
        assert_eq!(money_total(&page)[0], per_agency, "{page}");
        let mom = cells(&row_of(&page, &format!("<tr><td>{m}</td>")));
        assert_eq!(mom[2..], [per_agency, label], "{mom:?}");
        assert_has(&page, &format!("class=\"invoices {label}\""));
    }
    // A month after them, never rolled up, lists them the same way.
    let (_, page) = ops_page(&app, &cookie, "?month=2026-11").await;
    assert_eq!(
        cells(&row_of(&page, "<tr><td>2026-10</td>"))[2..],
        ["1.05", "draft"]
    );
    assert_eq!(
        cells(&row_of(&page, "<tr><td>2026-09</td>"))[2..],
        ["0.23", "finalized"]
    );
    assert_eq!(
        cells(&row_of(&page, "<tr><td>2026-11</td>"))[2..],
        ["0.00", "none"]
    );
    // The running month: drafted, then more usage. Its month-over-month figure is the sum of the
    // per-agency figures above it: a 2.00 + 0.23 (3 scans, rounded once), b 2.00 + 0.08.
    populate(&app.db, a, 1).await;
    populate(&app.db, b, 2).await;
    let running = roll_up_this_month(&app.db).await;
    let now = chrono::Utc::now().to_rfc3339();
    add_usage(pool, a, scans("2"), &now, "now").await;
    let (_, page) = ops_page(&app, &cookie, "").await;
    let per_agency: Vec<String> = [a, b]
        .iter()
        .map(|agent| cells(&row_of(&page, &format!("<tr data-agent=\"{agent}\">")))[5].clone())
        .collect();
    assert_eq!(per_agency, ["2.23", "2.08"]);
    assert_eq!(money_total(&page)[0], "4.31");
    let mom = cells(&row_of(&page, &format!("<tr><td>{running}</td>")));
    assert_eq!(mom[2..], ["4.31", "draft"], "{mom:?}");
    // a's cost: the providers' for the populated rows, none for the later scans.
    let mine = cells(&row_of(&page, &format!("<tr data-agent=\"{a}\">")));
    assert_eq!(mine[6..], ["0.91", "1.32", "mixed"], "{mine:?}");
}

/// In headless Chromium (as `.ci/run` installs it): open the link, press the button, see the
/// overview, the calls and the invoice. With `PORTAL_SCREENSHOT=path.png` it also saves the
/// overview (README's `docs/portal-overview.png` was made so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_an_agency_signs_in_with_its_link_and_sees_its_calls_and_invoice() {
    clear_of_month_turn(Phoenix).await;
    let Some(browser_path) = chromium_or_skip() else {
        return;
    };
    let app = TestApp::spawn_web_only().await;
    let a = app.db.agent_id(PHONE_1).await;
    populate(&app.db, a, 1).await;
    let month = roll_up_this_month(&app.db).await;
    let email: String = app.db.email_of(a).await;
    let link = invite(&app, &email).await;
    let base = app.base.clone();
    let shot = std::env::var_os("PORTAL_SCREENSHOT");
    let seen = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, String)> {
        use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
        let browser = headless_browser(browser_path, Some((1000, 720)))?;
        let tab = browser.new_tab()?;
        tab.navigate_to(&link)?;
        tab.wait_for_element("#sign-in")?.click()?;
        tab.wait_for_element("#overview")?;
        tab.wait_for_element("#chart")?;
        if let Some(path) = shot {
            let png =
                tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)?;
            std::fs::write(path, png)?;
        }
        tab.navigate_to(&format!("{base}/portal/calls"))?;
        let calls = tab.wait_for_element("table")?.get_inner_text()?;
        tab.navigate_to(&format!("{base}/portal/invoices/{month}"))?;
        let total = tab.wait_for_element("#total")?.get_inner_text()?;
        Ok((calls, total))
    })
    .await
    .expect("browser thread")
    .expect("browser flow");
    assert!(seen.0.contains("+16025550001"), "{}", seen.0);
    let total = invoice_total(&app.db, a, month).await;
    assert!(seen.1.contains(&format!("${total:.2}")), "{}", seen.1);
}

/// `agents invite` posts the link to the agency's Discord when enabled, and still prints it.
#[tokio::test]
async fn an_invite_is_posted_to_the_agencys_discord() {
    let app = TestApp::spawn_web_only().await;
    let discord = discord_accepting().await;
    let a = app.db.agent_id(PHONE_1).await;
    let email: String = sqlx::query_scalar(
        "UPDATE agents SET discord_webhook_url = $2 WHERE id = $1 RETURNING email",
    )
    .bind(a)
    .bind(format!("{}/api/webhooks/1/abc", discord.uri()))
    .fetch_one(&app.db.pool)
    .await
    .expect("webhook");
    let out = run_invite(&app, &email, &[("DISCORD_ENABLED", "true")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let posted = discord.received_requests().await.expect("recorded");
    assert_eq!(posted.len(), 1);
    let body = String::from_utf8_lossy(&posted[0].body).to_string();
    assert_has(&body, &link);
    assert!(sign_in(&app, &link).await.is_ok(), "the posted link works");
    // An unknown agent is a clear error, not a link.
    let out = run_invite(&app, "nobody@example.com", &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent with email"));
}

/// Long lists come in pages of 100, newest first, with links between them; a bad page is a 400.
#[tokio::test]
async fn calls_come_in_pages_of_a_hundred() {
    let app = TestApp::spawn_web_only().await;
    let a = app.db.agent_id(PHONE_1).await;
    sqlx::query(
        "INSERT INTO calls (agent_id, vapi_call_id, customer_number, started_at)
         SELECT $1, 'page-call-' || g, '+1928555' || lpad(g::text, 4, '0'), now() - g * interval '1 minute'
           FROM generate_series(1, 150) g",
    )
    .bind(a)
    .execute(&app.db.pool)
    .await
    .expect("calls");
    let email: String = app.db.email_of(a).await;
    let cookie = sign_in(&app, &invite(&app, &email).await)
        .await
        .expect("signed in");
    let (_, first) = get(&app, "/portal/calls", Some(&cookie), "en").await;
    assert_eq!(first.matches("<tr>").count(), 101, "header and 100 calls");
    assert!(first.contains("+19285550001") && !first.contains("+19285550101"));
    assert!(first.contains("id=\"older\"") && !first.contains("rel=\"prev\""));
    let (_, second) = get(&app, "/portal/calls?page=1", Some(&cookie), "en").await;
    assert_eq!(second.matches("<tr>").count(), 51);
    assert!(second.contains("+19285550150") && !second.contains("id=\"older\""));
    assert!(second.contains("rel=\"prev\""));
    for bad in ["abc", "-1", "99999999999"] {
        let (status, _) = get(
            &app,
            &format!("/portal/calls?page={bad}"),
            Some(&cookie),
            "en",
        )
        .await;
        assert_eq!(status, 400, "page={bad}");
    }
}

/// Ten failed sign-ins within a minute from one client, and the eleventh waits even with a good
/// link, which stays unused for later.
#[tokio::test]
async fn ten_failed_sign_ins_from_one_client_then_429_even_with_a_good_link() {
    let app = TestApp::spawn_web_only().await;
    let a = app.db.agent_id(PHONE_1).await;
    let link = invite(&app, &app.db.email_of(a).await).await;
    for i in 0..10 {
        let bogus = format!("{}/portal/sign-in?token={}", app.base, "f".repeat(64));
        assert_eq!(sign_in(&app, &bogus).await, Err(401), "failure {}", i + 1);
    }
    let token = link.split("token=").nth(1).expect("token").to_string();
    let refused = client()
        .post(format!("{}/portal/sign-in", app.base))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.headers().get("set-cookie").is_none());
    let supabase = client()
        .post(format!("{}/portal/sign-in/supabase", app.base))
        .form(&[("access_token", "eyJ.not.a-token")]);
    assert_eq!(status_of(supabase).await, 429, "the same door");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM portal_sign_in_tokens WHERE used_at IS NULL")
            .await,
        1,
        "the good link was not spent"
    );
}
