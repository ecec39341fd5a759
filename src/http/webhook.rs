//! `POST /vapi/webhook`: authenticate the raw bytes, then store the message and enqueue its jobs
//! in one transaction, then answer. A redelivery answers 2xx and changes nothing.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, error::ApiError};
use crate::{
    jobs::{self, meter_call::MeterCall},
    store::{
        agents, calls,
        webhook_events::{self, NewEvent, Routing},
    },
    vapi::{EnvelopeIn, MessageIn},
};

pub async fn vapi_webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from_body_rejection)?;
    if let Err(reason) = app.auth.verify(&headers, &body, chrono::Utc::now()) {
        tracing::warn!(%reason, "webhook refused");
        return Err(ApiError::unauthorized());
    }
    check_content_type(&headers)?;
    let payload: Value = serde_json::from_slice(&body).map_err(ApiError::bad_json)?;
    let envelope = EnvelopeIn::deserialize(&payload).map_err(|e| {
        ApiError::bad_request("invalid_message", format!("not a Vapi server message: {e}"))
    })?;
    let answer = ingest(&app, &envelope.message, &payload, &body).await?;
    Ok(Json(answer).into_response())
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => Ok(()),
        Some(Ok(ct))
            if ct
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json") =>
        {
            Ok(())
        }
        Some(_) => Err(ApiError::bad_request(
            "unsupported_content_type",
            "Content-Type must be application/json",
        )),
    }
}

/// Stores the message (once) and does what its type asks, all in one transaction.
async fn ingest(
    app: &AppState,
    msg: &MessageIn,
    payload: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    // Validate before touching the database, so bad input is a 400 and nothing is stored.
    let report = match msg.kind.as_str() {
        "end-of-call-report" => Some(
            msg.call_report()
                .map_err(|m| ApiError::bad_request("invalid_message", m))?,
        ),
        "status-update" if msg.call_id().is_none() || msg.status.is_none() => {
            return Err(ApiError::bad_request(
                "invalid_message",
                "status-update needs message.call.id and message.status",
            ));
        }
        _ => None,
    };

    // Failing to even open a transaction means no usable connection, whatever the error says.
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let phone_number_id = msg.phone_number_id();
    let agent = match phone_number_id {
        Some(id) => agents::find_by_phone_number_id(&mut tx, id).await?,
        None => None,
    };
    let routing = match (phone_number_id, &agent) {
        (_, Some(_)) => Routing::Routed,
        (Some(_), None) => Routing::Unroutable,
        (None, None) => Routing::NoCall,
    };
    let dedupe_key = msg.dedupe_key(body);
    let event_id = webhook_events::insert_new(
        &mut tx,
        &NewEvent {
            agent_id: agent.as_ref().map(|a| a.id),
            dedupe_key: &dedupe_key,
            message_type: &msg.kind,
            vapi_call_id: msg.call_id(),
            routing,
            payload,
        },
    )
    .await?;
    let Some(event_id) = event_id else {
        tx.commit().await?;
        tracing::info!(message.type = %msg.kind, %dedupe_key, "duplicate delivery ignored");
        return Ok(json!({"received": true, "duplicate": true}));
    };
    let Some(agent) = agent else {
        tx.commit().await?;
        tracing::warn!(message.type = %msg.kind, event.id = event_id, phone_number_id, "unroutable webhook stored");
        return Ok(json!({
            "received": true,
            "routed": false,
            "error": "no agent owns this phone number",
        }));
    };

    match (msg.kind.as_str(), report) {
        ("end-of-call-report", Some(report)) => {
            calls::upsert_report(&mut tx, agent.id, &report).await?;
            let job = MeterCall {
                agent_id: agent.id,
                vapi_call_id: report.vapi_call_id.clone(),
            };
            jobs::enqueue(&mut tx, &job, None).await?;
        }
        ("status-update", _) => {
            let (Some(call_id), Some(status)) = (msg.call_id(), msg.status.as_deref()) else {
                return Err(ApiError::bad_request(
                    "invalid_message",
                    "status-update needs call id and status",
                ));
            };
            calls::update_status(
                &mut tx,
                agent.id,
                call_id,
                msg.customer_number(),
                status,
                msg.ended_reason.as_deref(),
            )
            .await?;
        }
        _ => {}
    }
    tx.commit().await?;
    tracing::info!(agent.id = %agent.id, message.type = %msg.kind, event.id = event_id, call.id = msg.call_id(), "webhook stored");
    Ok(json!({"received": true}))
}
