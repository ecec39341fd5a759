//! The agent API: bearer tokens, tenant-scoped reads, cursors, 404 for other tenants' ids.

use agent_meter::store::agents;
use serde_json::Value;

use crate::helpers::*;

async fn token_for(app: &TestApp, phone: &str) -> (uuid::Uuid, String) {
    let agent = app.db.agent_id(phone).await;
    let mut conn = app.db.pool.acquire().await.expect("conn");
    (
        agent,
        agents::new_token(&mut conn, agent).await.expect("token"),
    )
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = app.http.get(format!("{}{path}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn seed_leads(app: &TestApp, agent: uuid::Uuid, n: usize, prefix: &str) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO leads (agent_id, phone, created_at) VALUES ($1, $2, now() + $3 * interval '1 ms') RETURNING id",
        )
        .bind(agent)
        .bind(format!("{prefix}{i}"))
        .bind(i as i32)
        .fetch_one(&app.db.pool)
        .await
        .expect("lead");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn tokens_authenticate_and_revoked_or_missing_ones_are_401() {
    let app = TestApp::spawn_web_only().await;
    let (agent, token) = token_for(&app, PHONE_1).await;
    let (status, me) = get(&app, "/v1/me", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], agent.to_string());
    assert_eq!(me["agency_name"], "Flagstaff Family Insurance");
    assert_eq!(get(&app, "/v1/me", None).await.0, 401);
    assert_eq!(get(&app, "/v1/me", Some("amk_not_a_token")).await.0, 401);
    let stored: i64 = app
        .db
        .count("SELECT count(*) FROM agent_api_tokens WHERE octet_length(token_hash) = 32")
        .await;
    assert_eq!(stored, 1, "only the hash is stored");
    let mut conn = app.db.pool.acquire().await.expect("conn");
    agents::revoke_tokens(&mut conn, agent)
        .await
        .expect("revoke");
    let (status, body) = get(&app, "/v1/me", Some(&token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}

#[tokio::test]
async fn leads_are_the_callers_own_paged_by_cursor() {
    let app = TestApp::spawn_web_only().await;
    let (agent, token) = token_for(&app, PHONE_1).await;
    let other = app.db.agent_id(PHONE_2).await;
    let mine = seed_leads(&app, agent, 5, "+1602000").await;
    seed_leads(&app, other, 3, "+1480000").await;
    let mut seen = Vec::new();
    let mut path = "/v1/leads?limit=2".to_string();
    loop {
        let (status, page) = get(&app, &path, Some(&token)).await;
        assert_eq!(status, 200, "{page}");
        for l in page["data"].as_array().expect("data") {
            seen.push(
                l["id"]
                    .as_str()
                    .expect("id")
                    .parse::<uuid::Uuid>()
                    .expect("uuid"),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/leads?limit=2&cursor={}", urlencode(c)),
            None => break,
        }
    }
    assert_eq!(seen, mine);
    assert_eq!(
        get(&app, "/v1/leads?cursor=garbage", Some(&token)).await.0,
        400
    );
    assert_eq!(get(&app, "/v1/leads?limit=0", Some(&token)).await.0, 400);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn another_tenants_lead_is_404_and_ones_own_comes_with_its_findings() {
    let app = TestApp::spawn_web_only().await;
    let (agent, token) = token_for(&app, PHONE_1).await;
    let other = app.db.agent_id(PHONE_2).await;
    let mine = seed_leads(&app, agent, 1, "+1602111").await[0];
    let theirs = seed_leads(&app, other, 1, "+1480111").await[0];
    // A tag and a finding for our lead.
    app.db
        .execute_with(
            "WITH l AS (SELECT agent_id, id FROM leads WHERE id = $1),
                  t AS (INSERT INTO tags (agent_id, lead_id, tag)
                        SELECT agent_id, id, 'solar' FROM l)
             INSERT INTO risk_assessments (agent_id, lead_id, kind, result, idempotency_key)
             SELECT agent_id, id, 'water', '{\"well_count\": 2}', 'k' FROM l",
            mine,
        )
        .await;
    let (status, lead) = get(&app, &format!("/v1/leads/{mine}"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(lead["tags"], serde_json::json!(["solar"]));
    assert_eq!(lead["risk_assessments"][0]["result"]["well_count"], 2);
    let (status, body) = get(&app, &format!("/v1/leads/{theirs}"), Some(&token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(get(&app, "/v1/leads/not-a-uuid", Some(&token)).await.0, 404);
}

#[tokio::test]
async fn usage_and_invoices_show_only_the_callers_money() {
    let app = TestApp::spawn_web_only().await;
    let (agent, token) = token_for(&app, PHONE_1).await;
    let other = app.db.agent_id(PHONE_2).await;
    for (who, key) in [(agent, "a1"), (agent, "a2"), (agent, "a3"), (other, "b1")] {
        add_usage(&app.db.pool, who, SCAN, "2026-11-20T18:00:00Z", key).await;
    }
    let (status, usage) = get(&app, "/v1/usage?month=2026-11", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        usage,
        serde_json::json!([{"metric_type": "solar_ocr_scan", "count": 3, "quantity": "3", "amount": "0.23"}])
    );
    assert_eq!(
        get(&app, "/v1/usage?month=november", Some(&token)).await.0,
        400
    );

    for m in ["2026-11", "2026-12"] {
        rollup(&app.db.pool, m, None).await;
    }
    let (status, first) = get(&app, "/v1/invoices?limit=1", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        first["data"],
        serde_json::json!([{"period": "2026-12", "status": "draft", "total": "249.00"}])
    );
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = get(
        &app,
        &format!("/v1/invoices?limit=1&cursor={cursor}"),
        Some(&token),
    )
    .await;
    assert_eq!(
        second["data"],
        serde_json::json!([{"period": "2026-11", "status": "draft", "total": "749.23"}])
    );
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(
        get(&app, "/v1/invoices?cursor=last-year", Some(&token))
            .await
            .0,
        400
    );
    let (status, inv) = get(&app, "/v1/invoices/2026-11", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(inv["agent_id"], agent.to_string());
    assert_eq!(inv["total"], "749.23");
    assert_eq!(get(&app, "/v1/invoices/2026-10", Some(&token)).await.0, 404);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn_web_only().await;
    let (status, doc) = get(&app, "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    for p in [
        "/v1/me",
        "/v1/leads",
        "/v1/leads/{id}",
        "/v1/usage",
        "/v1/invoices",
        "/v1/invoices/{period}",
    ] {
        assert!(doc["paths"][p]["get"].is_object(), "{p} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
