//! `transfer-destination-request`: Vapi's transferCall tool asks where to transfer (our
//! transient assistant declares it without destinations when the agency's hours are limited).
//! Stored like every message; for an agency with a transfer number, the hours decide at the
//! moment of asking, and the answer is recorded in `call_transfers` in the same transaction.
//! A `transfer-update` to a number records a transfer Vapi made without asking (hours `always`).

use serde_json::{Value, json};
use sqlx::PgConnection;

use super::{AppState, error::ApiError, message};
use crate::{
    store::{
        agents::Agent,
        transfers::{self, NewTransfer},
    },
    vapi::{
        MessageIn,
        transfer::{self, Hours},
    },
};

pub async fn answer(app: &AppState, msg: &MessageIn, raw: &str) -> Result<Value, ApiError> {
    let (routing, agent) = message::route(app, msg).await?;
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let event_id = message::record(&mut tx, agent.as_deref(), routing, msg, raw).await?;
    let configured = agent
        .as_deref()
        .and_then(|a| Some((a, a.transfer_number.as_deref().filter(|n| !n.is_empty())?)));
    let Some((agent, number)) = configured else {
        tx.commit().await?;
        return Ok(json!({"error": message::NO_TRANSFER}));
    };
    // Hours that cannot be read (edited by hand) never transfer: a message is the safe side.
    let hours = agent
        .transfer_hours
        .as_deref()
        .unwrap_or("never")
        .parse::<Hours>()
        .unwrap_or_else(|problem| {
            tracing::warn!(agent.id = %agent.id, %problem, "unreadable transfer hours: taking a message");
            Hours::Never
        });
    let tz = app.config.billing_timezone;
    let now = chrono::Utc::now();
    let (answer, in_hours) = transfer::request_answer(number, &hours, now, tz);
    // A redelivery (not stored again) gets an answer but adds no transfer.
    if let (Some(event_id), Some(call_id)) = (event_id, msg.call_id()) {
        let hours = hours.to_string();
        let row = NewTransfer {
            agent_id: agent.id,
            vapi_call_id: call_id,
            webhook_event_id: event_id,
            requested_at: now,
            number,
            hours: &hours,
            in_hours,
            source: "transfer-destination-request",
        };
        transfers::insert(&mut tx, &row).await?;
    }
    tx.commit().await?;
    tracing::info!(agent.id = %agent.id, call.id = msg.call_id(), in_hours, "transfer-destination-request answered");
    Ok(answer)
}

/// A stored `transfer-update` of `agent`'s call: when its destination is a phone number, the
/// transfer is recorded (in hours: Vapi made it), unless it is the one we answered.
pub async fn record_update(
    tx: &mut PgConnection,
    agent: &Agent,
    msg: &MessageIn,
    raw: &str,
    event_id: i64,
) -> Result<(), ApiError> {
    let Some(call_id) = msg.call_id() else {
        return Ok(());
    };
    // The destination is not part of the typed message: read from the stored body.
    let body: Value = serde_json::from_str(raw).unwrap_or_default();
    let destination = &body["message"]["destination"];
    let Some(number) = destination["number"]
        .as_str()
        .filter(|_| destination["type"] == "number")
    else {
        return Ok(());
    };
    let hours = agent.transfer_hours.as_deref().unwrap_or("-");
    let row = NewTransfer {
        agent_id: agent.id,
        vapi_call_id: call_id,
        webhook_event_id: event_id,
        requested_at: chrono::Utc::now(),
        number,
        hours,
        in_hours: true,
        source: "transfer-update",
    };
    transfers::insert_reported(tx, &row).await?;
    Ok(())
}
