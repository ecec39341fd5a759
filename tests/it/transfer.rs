//! Warm transfer over real HTTP: `transfer-destination-request` answered by the agency's number
//! and hours (made deterministic with `always` and `never`: the clock-dependent decision is unit
//! tested at fixed instants in `agent_meter::transfer`), recorded once per request (and from
//! Vapi's `transfer-update` when Vapi transferred without asking), and shown in the `/v1` lead
//! detail and on the portal's calls page.

use std::time::Duration;

use agent_meter::store::{agents, portal};
use serde_json::{Value, json};

use crate::helpers::*;

/// Counts the stored transfer requests.
const TRANSFER_REQUESTS: &str =
    "SELECT count(*) FROM webhook_events WHERE message_type = 'transfer-destination-request'";

const IN_HOURS_NUMBER: &str = "+19285550100";
const CLOSED_NUMBER: &str = "+19285550101";

fn transfer_request(call_id: &str, phone_number_id: &str) -> Value {
    json!({"message": {
        "type": "transfer-destination-request",
        "timestamp": 1_780_000_000_000_i64,
        "call": {"id": call_id, "phoneNumberId": phone_number_id, "customer": {"number": "+16025550150"}}
    }})
}

async fn set_transfer(app: &TestApp, phone: &str, number: &str, hours: &str) {
    sqlx::query(
        "UPDATE agents SET transfer_number = $2, transfer_hours = $3 WHERE vapi_phone_number_id = $1",
    )
    .bind(phone)
    .bind(number)
    .bind(hours)
    .execute(&app.db.pool)
    .await
    .expect("transfer settings");
}

async fn answer(app: &TestApp, body: &Value) -> Value {
    let r = app.post(body).await;
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

#[tokio::test]
async fn transfer_requests_connect_in_hours_take_a_message_outside_and_each_transfer_is_recorded_once()
 {
    let app = TestApp::spawn_web_only().await;
    set_transfer(&app, PHONE_1, IN_HOURS_NUMBER, "always").await;
    set_transfer(&app, PHONE_2, CLOSED_NUMBER, "never").await;

    let open = answer(&app, &transfer_request("xfer-open", PHONE_1)).await;
    assert_eq!(open["destination"]["type"], "number");
    assert_eq!(open["destination"]["number"], IN_HOURS_NUMBER);
    let said = open["destination"]["message"].as_str().expect("message");
    assert_has_all(said, &["agent", "agente"]);
    assert!(open.get("error").is_none(), "{open}");
    // A redelivery gets the same answer and records nothing more.
    assert_eq!(
        answer(&app, &transfer_request("xfer-open", PHONE_1)).await,
        open
    );

    let closed = answer(&app, &transfer_request("xfer-closed", PHONE_2)).await;
    assert!(closed.get("destination").is_none(), "{closed}");
    let error = closed["error"].as_str().expect("error");
    assert_has(error, "Take a message");

    // An agency without a number keeps the old answer, and nothing is recorded for it.
    let none = answer(&app, &transfer_request("xfer-none", PHONES[2])).await;
    assert!(
        none["error"]
            .as_str()
            .expect("error")
            .contains("No transfer destination"),
        "{none}"
    );

    // Vapi's transfer-update: the transfer we answered is not counted twice; one Vapi made on
    // its own (the number was in the assistant: hours `always`) is recorded.
    for call in ["xfer-open", "xfer-direct"] {
        let update = json!({"message": {
            "type": "transfer-update",
            "destination": {"type": "number", "number": IN_HOURS_NUMBER},
            "call": {"id": call, "phoneNumberId": PHONE_1}
        }});
        assert_eq!(app.post(&update).await.status(), 200);
    }

    let rows: Vec<(String, String, bool, String)> = app
        .db
        .rows(
            "SELECT vapi_call_id, number, in_hours, hours FROM call_transfers
              ORDER BY vapi_call_id",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            (
                "xfer-closed".to_string(),
                CLOSED_NUMBER.to_string(),
                false,
                "never".to_string()
            ),
            (
                "xfer-direct".to_string(),
                IN_HOURS_NUMBER.to_string(),
                true,
                "always".to_string()
            ),
            (
                "xfer-open".to_string(),
                IN_HOURS_NUMBER.to_string(),
                true,
                "always".to_string()
            ),
        ]
    );
    assert_eq!(app.db.count(TRANSFER_REQUESTS).await, 3);
}

#[tokio::test]
async fn a_recorded_transfer_shows_in_the_api_lead_detail_and_the_portal_calls_page() {
    let app = TestApp::spawn_web_only().await;
    set_transfer(&app, PHONE_1, IN_HOURS_NUMBER, "always").await;
    let agent = app.db.agent_id(PHONE_1).await;
    // Asked during the call, before any calls row exists.
    answer(&app, &transfer_request("xfer-shown", PHONE_1)).await;
    let lead: uuid::Uuid = app
        .db
        .scalar_with(
            "WITH l AS (INSERT INTO leads (agent_id, phone)
                        VALUES ($1, '+16025550150') RETURNING id)
             INSERT INTO calls (agent_id, vapi_call_id, lead_id, customer_number, started_at)
             SELECT $1, 'xfer-shown', id, '+16025550150', now() FROM l RETURNING lead_id",
            agent,
        )
        .await;

    let mut conn = app.db.pool.acquire().await.expect("conn");
    let token = agents::new_token(&mut conn, agent).await.expect("token");
    let link = portal::create_link(&mut conn, agent, Duration::from_secs(600))
        .await
        .expect("link");
    drop(conn);

    let detail: Value = lead_detail(&app, &token, lead).await;
    let transfers = &detail["calls"][0]["transfers"];
    assert_eq!(transfers.as_array().map(Vec::len), Some(1), "{detail:#}");
    assert_eq!(transfers[0]["number"], IN_HOURS_NUMBER);
    assert_eq!(transfers[0]["in_hours"], true);

    let cookie = portal_sign_in(&app, link).await;
    for (lang, heading) in [("en", "Transfers"), ("es", "Transferencias")] {
        let page = client()
            .get(format!("{}/portal/calls?lang={lang}", app.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("calls page")
            .text()
            .await
            .expect("html");
        assert!(page.contains(heading), "{lang}: {page}");
        assert_has(&page, &format!("→ {IN_HOURS_NUMBER}"));
    }
}
