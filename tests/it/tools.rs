//! The tool registry end to end (issue 12): the third tool (`flood_zone_lookup`) against a FEMA
//! stand-in, per-agent tools, `tools list`, and the start-up check that every registered tool
//! can be found and priced.

use std::{sync::Arc, time::Duration};

use agent_meter::app::{self, Roles};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path, query_param},
};

use crate::{cli::run_on, helpers::*};

const NFHL_PATH: &str = "/arcgis/rest/services/public/NFHL/MapServer/28/query";

/// FEMA's answer for a point: one flood hazard zone polygon.
fn zone(fld_zone: &str, subtype: Option<&str>, sfha: &str) -> Value {
    json!({"features": [{"attributes": {"FLD_ZONE": fld_zone, "ZONE_SUBTY": subtype, "SFHA_TF": sfha}}]})
}

async fn fema_answering(body: Value) -> MockServer {
    let fema = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(NFHL_PATH))
        .and(query_param("geometryType", "esriGeometryPoint"))
        .and(query_param("spatialRel", "esriSpatialRelIntersects"))
        .and(query_param("outFields", "FLD_ZONE,ZONE_SUBTY,SFHA_TF"))
        .and(query_param("inSR", "4326"))
        .and(query_param("f", "json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&fema)
        .await;
    fema
}

async fn app_with_fema(fema: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let mocks = Mocks::start().await;
    let url = format!(
        "{}/arcgis/rest/services/public/NFHL/MapServer/28",
        fema.uri()
    );
    let mut vars = vec![
        ("FEMA_NFHL_URL", url.as_str()),
        ("DISCORD_ENABLED", "false"),
    ];
    vars.extend_from_slice(extra);
    TestApp::spawn_with_mocks(&mocks, &vars).await
}

fn flood_call(id: &str, name: &str) -> Value {
    json!({"id": id, "name": name,
           "arguments": {"latitude": 33.4152, "longitude": -111.8315, "address": "9 Salt River Rd, Tempe"}})
}

/// Asks, in call `call_id`, for one flood lookup `id` by the tool's `name`: the answer.
async fn ask_flood(app: &TestApp, call_id: &str, id: &str, name: &str) -> Value {
    app.tools_answer(call_id, json!([flood_call(id, name)]))
        .await
}

/// The text of the answer's first `field` (`result` or `error`), empty without one.
fn first<'a>(body: &'a Value, field: &str) -> &'a str {
    body["results"][0][field].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_flood_lookup_in_a_hazard_area_is_said_tagged_and_metered_once() {
    let fema = fema_answering(zone("AE", None, "T")).await;
    let app = app_with_fema(&fema, &[]).await;
    let body = ask_flood(&app, "call-f", "tc-flood", "flood_zone_lookup").await;
    let text = first(&body, "result");
    assert!(
        text.contains("zone AE")
            && text.contains("Special Flood Hazard Area")
            && text.contains("require"),
        "{body}"
    );
    // The same call delivered again: nothing new queued, asked or metered.
    let again = ask_flood(&app, "call-f", "tc-flood", "flood_zone_lookup").await;
    assert_eq!(again["results"][0]["result"], body["results"][0]["result"]);
    drain(&app.db.pool, 15).await;

    let usage: Vec<(String, Decimal, Decimal)> = app
        .db
        .rows(
            "SELECT idempotency_key, quantity, unit_price_usd FROM agent_usage_metrics
          WHERE metric_type = 'flood_zone_lookup'",
        )
        .await;
    assert_eq!(
        usage,
        vec![("tool_call:tc-flood".into(), Decimal::ONE, Decimal::ZERO)]
    );
    let tags: Vec<String> = app.db.column("SELECT tag FROM tags ORDER BY tag").await;
    assert_eq!(tags, ["flood_risk"]);
    let (facts, finding): (Value, Value) = app
        .db
        .row(
            "SELECT p.facts, r.result FROM properties p
               JOIN risk_assessments r ON r.property_id = p.id
              WHERE r.kind = 'flood'",
        )
        .await;
    assert_eq!(
        facts,
        json!({"flood_zone": "AE", "special_flood_hazard_area": true})
    );
    assert_eq!(finding["zone"]["zone"], "AE");
    assert_eq!(finding["zone"]["special_flood_hazard_area"], true);
    assert_eq!(requests(&fema).await, 1);
}

#[tokio::test]
async fn outside_a_hazard_area_no_tag_and_facts_merge_with_other_tools() {
    let fema = fema_answering(zone("X", Some("AREA OF MINIMAL FLOOD HAZARD"), "F")).await;
    let app = app_with_fema(&fema, &[]).await;
    let body = ask_flood(&app, "call-x", "tc-x", "flood-zone-lookup").await;
    let text = first(&body, "result");
    assert!(
        text.contains("zone X") && text.contains("minimal") && text.contains("not"),
        "{body}"
    );
    drain(&app.db.pool, 15).await;
    assert_eq!(app.db.count("SELECT count(*) FROM tags").await, 0);
    let facts: Value = app.db.scalar("SELECT facts FROM properties").await;
    assert_eq!(
        facts,
        json!({"flood_zone": "X", "special_flood_hazard_area": false})
    );
}

#[tokio::test]
async fn a_fema_error_inside_http_200_fails_the_job_and_the_caller_hears_so() {
    let fema = fema_answering(json!({"error": {"code": 400, "message": "Invalid geometry"}})).await;
    // Long enough for a loaded CI machine; the answer comes as soon as the job has failed.
    let app = app_with_fema(&fema, &[("TOOL_RESULT_WAIT_MS", "10000")]).await;
    let body = ask_flood(&app, "call-e", "tc-e", "flood_zone_lookup").await;
    let error = first(&body, "error");
    assert!(
        error.contains("FEMA") && error.contains("could not"),
        "{body}"
    );
    let (status, last): (String, Value) = app
        .db
        .row("SELECT status, last_result FROM apalis.jobs WHERE job_type = 'flood_zone_lookup'")
        .await;
    assert_eq!(status, "Killed", "a 400 is not retried");
    assert!(last.to_string().contains("Invalid geometry"), "{last}");
    assert_eq!(app.db.count(USAGE_ROWS).await, 0);
    assert_eq!(requests(&fema).await, 1);
}

#[tokio::test]
async fn an_agent_gets_only_its_tools_and_others_are_refused_without_a_job() {
    let app = TestApp::spawn_web_only().await;
    let email = app.db.email_of(app.db.agent_id(PHONE_1).await).await;
    let (ok, _, err) = run_on(
        &app.db.url,
        &["agents", "set", &email, "--tools", "crystal_ball"],
    )
    .await;
    assert!(
        !ok && err.contains("unknown tool \"crystal_ball\""),
        "{err}"
    );
    let (ok, out, err) = run_on(
        &app.db.url,
        &[
            "agents",
            "set",
            &email,
            "--tools",
            "adwr-lookup, flood_zone_lookup",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let stored: Option<Vec<String>> = app
        .db
        .scalar_with("SELECT tools FROM agents WHERE email = $1", &email)
        .await;
    assert_eq!(
        stored,
        Some(vec!["water_lookup".into(), "flood_zone_lookup".into()])
    );

    let answer: Value = app
        .post(&assistant_request("call-t", PHONE_1, "+16025550111"))
        .await
        .json()
        .await
        .expect("json");
    let declared: Vec<&str> = answer["assistant"]["model"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(declared, ["water_lookup", "flood_zone_lookup"]);

    let calls = json!([
        {"id": "s", "name": "solar_ocr_scan", "arguments": {"image_url": "https://x/y.jpg"}},
        {"id": "u", "name": "crystal_ball", "arguments": {}},
        {"id": "w", "name": "water_lookup", "arguments": {"latitude": 35.2, "longitude": -111.6}}
    ]);
    let body = app.tools_answer("call-t", calls).await;
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{body}");
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not enabled"),
        "{body}"
    );
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown tool"),
        "{body}"
    );
    assert!(results[2].get("error").is_none(), "{body}");
    assert_eq!(
        app.db.count("SELECT count(*) FROM apalis.jobs").await,
        1,
        "only the water call"
    );

    // Back to every tool.
    let (ok, _, err) = run_on(&app.db.url, &["agents", "set", &email, "--tools", "all"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = run_on(&app.db.url, &["tools", "list", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    let rows = listed.as_array().expect("rows");
    assert_eq!(rows.len(), agent_meter::tools::registry().len());
    let flood = rows
        .iter()
        .find(|r| r["name"] == "flood_zone_lookup")
        .expect("flood");
    assert_eq!(flood["metric"], "flood_zone_lookup");
    assert_eq!(flood["provider"], "fema");
    let price: Decimal = flood["price_usd"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("a price in force");
    assert_eq!(price, Decimal::ZERO);
    assert_eq!(flood["agents"], 5);
    assert_eq!(flood["overrides"], 0);
    // One agency pays its own price for scans from today (a future one does not count yet).
    // `--reprice`: should the day turn in Phoenix between here and the command, "today" is
    // yesterday there (it re-prices nothing: no scans were metered).
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::Phoenix)
        .date_naive();
    for (from, price) in [(today, "0.05"), (today + chrono::Days::new(30), "0.04")] {
        let from = from.to_string();
        let (ok, _, err) = run_on(
            &app.db.url,
            &[
                "prices",
                "set",
                "solar_ocr_scan",
                price,
                "--from",
                &from,
                "--agent",
                &email,
                "--reprice",
            ],
        )
        .await;
        assert!(ok, "{err}");
    }
    let (ok, out, _) = run_on(&app.db.url, &["tools", "list"]).await;
    let solar = out
        .lines()
        .find(|l| l.starts_with("solar_ocr_scan"))
        .unwrap_or_default();
    assert!(
        ok && out.contains("OVERRIDES") && solar.contains("0.075") && solar.ends_with(" 1"),
        "{out}"
    );
}

#[tokio::test]
async fn a_registered_tool_without_a_price_or_kind_stops_the_process() {
    let start = |db: TestDb| async move {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let roles = Roles {
            web: false,
            worker: true,
            clock: false,
        };
        let run = app::run(
            db.pool.clone(),
            Arc::new(test_config(&[])),
            roles,
            None,
            shutdown,
        );
        let outcome = tokio::time::timeout(Duration::from_secs(10), run).await;
        (db, outcome.expect("stops by itself"))
    };
    let db = TestDb::seeded().await;
    db.execute("DELETE FROM pricing_config WHERE metric_type = 'flood_zone_lookup'")
        .await;
    let (db, outcome) = start(db).await;
    let e = outcome.expect_err("refused").to_string();
    assert_has(&e, "flood_zone_lookup: no default flood_zone_lookup price");

    db.execute("ALTER TABLE risk_assessments DROP CONSTRAINT risk_assessments_kind_fkey")
        .await;
    db.execute("DELETE FROM finding_kinds WHERE kind = 'flood'")
        .await;
    let (_db, outcome) = start(db).await;
    let e = outcome.expect_err("refused").to_string();
    assert_has(&e, "finding kind \"flood\"");
}

#[tokio::test]
async fn every_registered_tool_is_allowed_and_priced_on_a_migrated_seeded_database() {
    let db = TestDb::seeded().await;
    let kinds = db.strings("SELECT kind FROM finding_kinds").await;
    for t in agent_meter::tools::registry() {
        assert!(
            kinds.iter().any(|k| k == t.kind),
            "{} kind {}",
            t.name,
            t.kind
        );
    }
    agent_meter::tools::check(&db.pool, chrono_tz::America::Phoenix)
        .await
        .expect("every tool priced and allowed");
}

/// Issue 22, item 3: a finding ready within the wait is said in the answer, not later through
/// the control URL (the webhook's last look used to owe the finding to the call first, and the
/// job's commit, claiming right after it committed, took it from under the webhook it had just
/// woken). 100 tool calls with an instant provider and a wait far longer than any job: each is
/// said exactly once, inline or (should a job ever outlast the wait) through its own control URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_ready_within_the_wait_is_answered_inline_and_said_once() {
    use futures::StreamExt;
    const CALLS: usize = 100;
    let mocks = Mocks::start().await;
    arcgis_one_well(&mocks).await;
    let control = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&control)
        .await;
    // Far longer than an instant job takes even on a loaded machine: "ready within the wait".
    let app = TestApp::spawn_with_mocks(&mocks, &[("TOOL_RESULT_WAIT_MS", "60000")]).await;
    let running = agent_meter::tools::find("water_lookup")
        .expect("water tool")
        .running;

    let answers: Vec<(usize, String)> = futures::stream::iter(0..CALLS)
        .map(|i| {
            let app = &app;
            let control = control.uri();
            async move {
                let mut message = tool_calls(
                    &format!("call-race-{i}"),
                    PHONE_1,
                    json!([{"id": format!("tc-race-{i}"), "name": "water_lookup",
                            "arguments": {"latitude": 35.1983, "longitude": -111.6513}}]),
                );
                message["message"]["call"]["customer"]["number"] = json!(format!("+1602555{i:04}"));
                message["message"]["call"]["monitor"] =
                    json!({"controlUrl": format!("{control}/call-race-{i}/control")});
                let resp = app.post(&message).await;
                assert_eq!(resp.status(), 200);
                let body: Value = resp.json().await.expect("json");
                let said = body["results"][0]["result"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a result: {body}"))
                    .to_string();
                (i, said)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(answers.len(), CALLS);
    let late: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|(_, said)| said == running)
        .map(|(i, _)| format!("/call-race-{i}/control"))
        .collect();
    for (i, said) in answers.iter().filter(|(_, said)| said != running) {
        assert!(
            said.contains("well"),
            "call {i} answered with the finding: {said}"
        );
    }
    let inline = CALLS - late.len();
    assert!(inline >= 99, "{inline} of {CALLS} answered inline");

    // Every job done means every commit's claim is made; the control URL hears exactly the
    // calls answered "running", each once.
    drain(&app.db.pool, 60).await;
    assert_eq!(
        app.db.count("SELECT count(*) FROM late_findings").await,
        i64::try_from(late.len()).expect("small"),
        "a finding is owed only to a call answered without it"
    );
    let heard = eventually(
        15,
        "each late finding said through its control URL",
        || async {
            let heard: Vec<String> = control
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .map(|r| r.url.path().to_string())
                .collect();
            (heard.len() >= late.len()).then_some(heard)
        },
    )
    .await;
    let distinct: std::collections::BTreeSet<String> = heard.iter().cloned().collect();
    assert_eq!(distinct.len(), heard.len(), "said once: {heard:?}");
    assert_eq!(
        distinct, late,
        "said late only to the calls answered without it"
    );
    assert_eq!(
        inline + heard.len(),
        CALLS,
        "each finding said exactly once"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM agent_usage_metrics WHERE metric_type = 'water_lookup'")
            .await,
        i64::try_from(CALLS).expect("small")
    );
}
