//! The `agent-meter` binary: help on every command, configuration errors, seed guard.

use tokio::process::Command;

use crate::helpers::*;

/// The binary, to run with `.output().await`: a test's runtime keeps serving the app, the workers
/// and the mock servers while a command runs. (A blocking wait once froze a worker inside a
/// transaction whose row lock the command then waited on, for ever.)
pub fn agent_meter() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent-meter"));
    // Run in an empty directory so a developer's .env cannot leak in.
    cmd.current_dir(std::env::temp_dir());
    for var in [
        "DATABASE_URL",
        "VAPI_WEBHOOK_SECRET",
        "VAPI_HMAC_SECRET",
        "APP_ENV",
        "PORT",
        "BIND_ADDR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary against `database_url`: (success, stdout, stderr).
pub async fn run_on(database_url: &str, args: &[&str]) -> (bool, String, String) {
    run_on_with(database_url, args, &[]).await
}

/// [`run_on`] with the variables `env` set too.
pub async fn run_on_with(
    database_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = agent_meter()
        .args(args)
        .env("DATABASE_URL", database_url)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// [`run_on`] with the arguments of `line`, split at white space (none of them holds any).
pub async fn run_line(database_url: &str, line: &str) -> (bool, String, String) {
    run_on(database_url, &line.split_whitespace().collect::<Vec<_>>()).await
}

/// [`run_line`], which must succeed: its stdout.
pub async fn run_ok(database_url: &str, line: &str) -> String {
    let (ok, out, err) = run_line(database_url, line).await;
    assert!(ok, "{line}: {out}{err}");
    out
}

#[tokio::test]
async fn every_command_has_help() {
    for sub in [
        None,
        Some("migrate"),
        Some("seed"),
        Some("serve"),
        Some("web"),
        Some("worker"),
        Some("clock"),
        Some("tools"),
        Some("summarize-usage"),
    ] {
        let mut cmd = agent_meter();
        if let Some(s) = sub {
            cmd.arg(s);
        }
        let out = cmd.arg("--help").output().await.expect("run");
        assert!(out.status.success(), "{sub:?} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: agent-meter"), "{sub:?}: {text}");
    }
}

#[tokio::test]
async fn a_bad_variable_is_named_and_exits_2() {
    let out = agent_meter()
        .arg("migrate")
        .env("BILLING_TIMEZONE", "Mars/Olympus_Mons")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_has(&err, "BILLING_TIMEZONE");
}

#[tokio::test]
async fn web_refuses_to_start_without_a_vapi_secret() {
    let out = agent_meter()
        .arg("web")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/none")
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_has(&err, "VAPI_WEBHOOK_SECRET");
}

#[tokio::test]
async fn seed_refuses_production_and_migrate_then_seed_work() {
    let db = TestDb::empty().await;
    let out = agent_meter()
        .arg("seed")
        .env("APP_ENV", "production")
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("production"));

    for sub in ["migrate", "seed", "seed"] {
        run_ok(&db.url, sub).await;
    }
    assert_eq!(db.count("SELECT count(*) FROM agents").await, 5);
}

#[tokio::test]
async fn agents_add_set_and_list_manage_personas() {
    let db = TestDb::seeded().await;
    let run = async |args: &[&str]| run_on(&db.url, args).await;
    let (ok, _, err) = run(&[
        "agents",
        "add",
        "--agency-name",
        "Page Lake Powell Insurance",
        "--email",
        "client6@agent-meter.example",
        "--phone-number",
        "+19285550106",
        "--vapi-phone-number-id",
        "ph_six",
    ])
    .await;
    assert!(ok, "{err}");
    let prompt = std::env::temp_dir().join(format!("prompt-{}.txt", uuid::Uuid::new_v4()));
    std::fs::write(&prompt, "Eres el asistente de {agency_name}.").expect("prompt file");
    let prompt_arg = prompt.to_string_lossy().to_string();
    let (ok, _, err) = run(&[
        "agents",
        "set",
        "client6@agent-meter.example",
        "--greeting",
        "¡Bienvenidos!",
        "--system-prompt-file",
        &prompt_arg,
    ])
    .await;
    assert!(ok, "{err}");
    let (ok, out, _) = run_line(&db.url, "agents list --json").await;
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json list");
    let six = list
        .as_array()
        .expect("array")
        .iter()
        .find(|a| a["email"] == "client6@agent-meter.example")
        .expect("new agent listed");
    assert_eq!(six["greeting"], "¡Bienvenidos!");
    assert_eq!(six["has_system_prompt"], true);
    let (ok, table, _) = run_line(&db.url, "agents list").await;
    assert!(
        ok && table.contains("Page Lake Powell Insurance") && table.contains("own prompt"),
        "{table}"
    );
    // Mistakes are clear errors, not panics.
    let (ok, _, err) = run_line(&db.url, "agents set nobody@example.com --greeting x").await;
    assert!(!ok && err.contains("no agent with email"), "{err}");
    let (ok, _, err) = run_line(
        &db.url,
        "agents add --agency-name Dup --email client6@agent-meter.example",
    )
    .await;
    assert!(!ok && err.contains("already exists"), "{err}");
    let stored: Option<String> = db
        .scalar("SELECT system_prompt FROM agents WHERE email = 'client6@agent-meter.example'")
        .await;
    assert_eq!(
        stored.as_deref(),
        Some("Eres el asistente de {agency_name}.")
    );
}

#[tokio::test]
async fn a_changed_prompt_reaches_callers_within_seconds() {
    let app = TestApp::spawn_web_only().await;
    let first: serde_json::Value = app
        .post(&assistant_request("c1", PHONE_1, "+1602"))
        .await
        .json()
        .await
        .expect("json");
    assert!(first["assistant"].is_object());
    sqlx::query("UPDATE agents SET vapi_assistant_id = 'asst_new' WHERE vapi_phone_number_id = $1")
        .bind(PHONE_1)
        .execute(&app.db.pool)
        .await
        .expect("update");
    eventually(5, "the new assistant to be used", || async {
        let body: serde_json::Value = app
            .post(&assistant_request("c2", PHONE_1, "+1602"))
            .await
            .json()
            .await
            .ok()?;
        (body["assistantId"] == "asst_new").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_demo_tells_the_whole_story_and_exits() {
    let out = agent_meter()
        .args(["demo", "--exit"])
        .env("DATABASE_URL", admin_url())
        .env("BIND_ADDR", "127.0.0.1:0")
        .output()
        .await
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "LOCAL STAND-INS",
        "10 calls replayed through the real webhook",
        "job(s) failed during the outage",
        "failed job(s) (what `agent-meter jobs retry --failed` does)",
        "1 metered (the lost report)",
        "Yuma Desert Sun Insurance — ",
        "setup_fee",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // After the retry every agent's two scans are billed, each exactly once.
    let scan_lines = text
        .lines()
        .filter(|l| l.contains("usage") && l.contains("solar_ocr_scan") && l.contains(" 2 x"))
        .count();
    assert_eq!(scan_lines, 5, "{text}");
}

#[tokio::test]
async fn prices_set_closes_the_range_in_force_and_list_shows_both() {
    let db = TestDb::seeded().await;
    let (ok, _, err) = run_line(&db.url, "prices set solar_ocr_scan 0.08 --from 2099-01-01").await;
    assert!(ok, "{err}");
    let (ok, out, _) = run_line(&db.url, "prices list --json").await;
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&out).expect("json");
    let scans: Vec<(String, Option<String>, String)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["metric_type"] == "solar_ocr_scan")
        .map(|r| {
            (
                r["effective_from"].as_str().unwrap_or_default().to_string(),
                r["effective_to"].as_str().map(str::to_string),
                r["unit_price_usd"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(scans.len(), 2, "{scans:?}");
    assert_eq!(scans[0].1.as_deref(), Some("2099-01-01"));
    assert_eq!(
        (scans[1].0.as_str(), scans[1].1.as_deref()),
        ("2099-01-01", None)
    );
    let (ok, _, err) = run_line(&db.url, "prices set solar_ocr_scan 0.09 --from 2098-06-01").await;
    assert!(!ok && err.contains("date order"), "{err}");
    // `--` so that clap reads -1 as the price, not a flag: the guard itself must refuse it.
    let (ok, _, err) = run_line(&db.url, "prices set --from 2099-02-01 solar_ocr_scan -- -1").await;
    assert!(!ok && err.contains("a price cannot be negative"), "{err}");
}

#[tokio::test]
async fn billing_commands_name_an_unknown_agent_email_and_fail() {
    let db = TestDb::seeded().await;
    let typo = "nobody@agent-meter.example";
    for args in [
        &["invoices", "rollup", "--month", "2026-11", "--agent", typo][..],
        &[
            "invoices", "finalize", "--month", "2026-11", "--agent", typo,
        ],
        &["invoices", "show", "--month", "2026-11", "--agent", typo],
        &["invoices", "trace", "--month", "2026-11", "--agent", typo],
        &["usage", "--month", "2026-11", "--agent", typo],
        &["jobs", "list", "--agent", typo],
        &["jobs", "retry", "--failed", "--agent", typo],
    ] {
        let (ok, out, err) = run_on(&db.url, args).await;
        assert!(!ok, "{args:?} must fail: {out}");
        assert!(
            err.contains(&format!("no agent with email {typo}")),
            "{args:?}: {err}"
        );
        assert!(!out.contains("invoice(s)"), "{args:?}: {out}");
    }
    assert_eq!(db.count("SELECT count(*) FROM invoices").await, 0);
    // A known email still works.
    let email = db.email_of(db.agent_id(PHONE_1).await).await;
    let (ok, out, err) = run_on(
        &db.url,
        &[
            "invoices", "rollup", "--month", "2026-11", "--agent", &email,
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_has(&out, "1 invoice(s) for 2026-11");
}

#[tokio::test]
async fn agents_set_validates_call_length_and_transfer_settings_and_list_shows_them() {
    let db = TestDb::seeded().await;
    let run = async |args: &[&str]| run_on(&db.url, args).await;
    let one = "client1@agent-meter.example";
    let (ok, _, err) = run(&[
        "agents",
        "set",
        one,
        "--max-call-minutes",
        "45",
        "--transfer-number",
        "+19285550100",
        "--transfer-hours",
        "mon-fri 08:00-17:00,  Sat 09:00-12:00",
    ])
    .await;
    assert!(ok, "{err}");
    let (ok, out, _) = run_line(&db.url, "agents list --json").await;
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json list");
    let of = |email: &str| {
        list.as_array()
            .expect("array")
            .iter()
            .find(|a| a["email"] == email)
            .cloned()
            .expect("listed")
    };
    let a = of(one);
    assert_eq!(a["max_call_minutes"], 45);
    assert_eq!(a["transfer_number"], "+19285550100");
    assert_eq!(a["transfer_hours"], "Mon-Fri 08:00-17:00, Sat 09:00-12:00");
    assert_eq!(of("client2@agent-meter.example")["max_call_minutes"], 30);
    let (ok, table, _) = run_line(&db.url, "agents list").await;
    assert!(
        ok && table.contains("MAX MIN") && table.contains("+19285550100 Mon-Fri"),
        "{table}"
    );

    // Each mistake is a clear error, and changes nothing.
    for (args, says) in [
        (vec!["--max-call-minutes", "0"], "1..=720"),
        (vec!["--max-call-minutes", "721"], "1..=720"),
        (vec!["--max-call-minutes", "ten"], "--max-call-minutes"),
        (vec!["--transfer-number", "928-555-0100"], "E.164"),
        (vec!["--transfer-number", "+0928555"], "E.164"),
        (
            vec!["--transfer-hours", "Mon-Fri 17:00-08:00"],
            "end must be after the start",
        ),
        (vec!["--transfer-hours", "weekdays 9-5"], "unknown day"),
    ] {
        let mut full = vec!["agents", "set", one];
        full.extend(&args);
        let (ok, _, err) = run(&full).await;
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    // A number needs its hours the first time.
    let two = "client2@agent-meter.example";
    let (ok, _, err) = run(&["agents", "set", two, "--transfer-number", "+15205550100"]).await;
    assert!(!ok && err.contains("needs its hours"), "{err}");
    let (ok, _, err) = run(&[
        "agents",
        "set",
        two,
        "--transfer-number",
        "+15205550100",
        "--transfer-hours",
        "always",
    ])
    .await;
    assert!(ok, "{err}");
    // "" clears the number (no transfers).
    let (ok, _, err) = run(&["agents", "set", one, "--transfer-number", ""]).await;
    assert!(ok, "{err}");
    let settings: (i32, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT max_call_minutes, transfer_number, transfer_hours FROM agents WHERE email = $1",
    )
    .bind(one)
    .fetch_one(&db.pool)
    .await
    .expect("agent");
    assert_eq!(settings.0, 45);
    assert_eq!(settings.1, None);
}

/// Issue 23: CSV exports go through the `csv` crate, and an agency name a spreadsheet would run as
/// a formula is neutralised with a leading `'` (OWASP "CSV injection"); commas, quotes and line
/// breaks are quoted, and our own figures stay numbers.
#[tokio::test]
async fn csv_exports_neutralise_agency_names_that_read_as_formulas() {
    let db = TestDb::seeded().await;
    let names = [
        (
            "=HYPERLINK(\"http://x\",\"y\")",
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
        ),
        ("+1+1", "'+1+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-2+3", "'-2+3"),
        (
            "Smith, \"Best\" Insurance\nLLC",
            "\"Smith, \"\"Best\"\" Insurance\nLLC\"",
        ),
    ];
    let mut expected = Vec::new();
    for (phone, (name, cell)) in PHONES.iter().zip(names) {
        let agent = db.agent_id(phone).await;
        sqlx::query("UPDATE agents SET agency_name = $2 WHERE id = $1")
            .bind(agent)
            .bind(name)
            .execute(&db.pool)
            .await
            .expect("rename");
        sqlx::query(
            "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd,
                                              cost_usd, occurred_at, idempotency_key)
             VALUES ($1, 'solar_ocr_scan', 2, 0.075, 0.15, '2026-11-10T12:00:00Z', $2)",
        )
        .bind(agent)
        .bind(format!("csv-{phone}"))
        .execute(&db.pool)
        .await
        .expect("usage");
        expected.push(format!("\n{agent},{cell},solar_ocr_scan,1,2,0.15,"));
    }
    let usage = agent_meter_on(&db, &["usage", "--month", "2026-11", "--format", "csv"]).await;
    let usage = String::from_utf8_lossy(&usage);
    for line in &expected {
        assert!(usage.contains(line.as_str()), "{line:?} not in {usage}");
    }
    let (ok, trace, err) = run_on(
        &db.url,
        &["invoices", "trace", "--month", "2026-11", "--format", "csv"],
    )
    .await;
    assert!(ok, "{err}");
    assert_has(&trace, ",'+1+1,solar_ocr_scan,");
    assert!(!trace.contains(",+1+1,"), "{trace}");
}
