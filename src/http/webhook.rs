//! `POST /vapi/webhook`: authenticate the raw bytes, then store the message and enqueue its jobs
//! in one transaction, then answer. A redelivery answers 2xx and changes nothing.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{AppState, error::ApiError};
use crate::{
    jobs::{self, meter_call::MeterCall},
    store::{
        calls,
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
    // One parse: syntax errors are `invalid_json`, a wrong shape is `invalid_message`.
    let envelope: EnvelopeIn = serde_json::from_slice(&body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_json(e)
        } else {
            ApiError::bad_request("invalid_message", format!("not a Vapi server message: {e}"))
        }
    })?;
    // Valid JSON, so valid UTF-8: stored as received.
    let raw = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_json", "request body is not UTF-8"))?;
    let answer = ingest(&app, &envelope.message, raw).await?;
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
async fn ingest(app: &AppState, msg: &MessageIn, raw: &str) -> Result<Value, ApiError> {
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

    let phone_number_id = msg.phone_number_id();
    let agent = match phone_number_id {
        // The lookup is a fixed, valid query: any failure is the database being unreachable.
        Some(id) => app
            .routing
            .agent_for(&app.pool, id)
            .await
            .map_err(ApiError::unavailable)?,
        None => None,
    };
    // Failing to even open a transaction means no usable connection, whatever the error says.
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let routing = match (phone_number_id, &agent) {
        (_, Some(_)) => Routing::Routed,
        (Some(_), None) => Routing::Unroutable,
        (None, None) => Routing::NoCall,
    };
    let dedupe_key = msg.dedupe_key(raw.as_bytes());
    let event_id = webhook_events::insert_new(
        &mut tx,
        &NewEvent {
            agent_id: agent,
            dedupe_key: &dedupe_key,
            message_type: &msg.kind,
            vapi_call_id: msg.call_id(),
            routing,
            payload: raw,
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
            calls::upsert_report(&mut tx, agent, &report).await?;
            let job = MeterCall {
                agent_id: agent,
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
                agent,
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
    tracing::info!(agent.id = %agent, message.type = %msg.kind, event.id = event_id, call.id = msg.call_id(), "webhook stored");
    Ok(json!({"received": true}))
}
