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

use super::{
    AppState, assistant,
    error::ApiError,
    message::{NO_TRANSFER, caller_lead, record, route},
    tool_calls,
};
use crate::{
    jobs::{self, meter_call::MeterCall},
    store::{agents::Agent, calls, webhook_events::Routing},
    vapi::{EnvelopeIn, MessageIn},
};

pub async fn vapi_webhook(
    State(app): State<AppState>,
    method: axum::http::Method,
    uri: axum::extract::OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut kind = "unparsed".to_string();
    let path = uri.0.path_and_query().map_or("/", |p| p.as_str());
    let result = handle(&app, (method.as_str(), path), &headers, body, &mut kind).await;
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    crate::telemetry::webhook(&kind, status);
    result
}

async fn handle(
    app: &AppState,
    (method, path): (&str, &str),
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: &mut String,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from_body_rejection)?;
    let presented = crate::http::auth::Presented {
        headers,
        body: &body,
        method,
        path,
    };
    match app.auth.verify(&presented, chrono::Utc::now()) {
        Ok(plan) => tracing::debug!(%plan, "webhook authenticated"),
        Err(reason) => {
            tracing::warn!(%reason, "webhook refused");
            return Err(ApiError::unauthorized());
        }
    }
    check_content_type(headers)?;
    // PostgreSQL's text and jsonb cannot hold U+0000, which JSON can (`\u0000`): such strings are
    // stored with the escape spelled out, never a 500.
    let body = without_nul(body);
    // One typed parse: syntax errors are `invalid_json`, a wrong shape is `invalid_message`.
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
    let msg = &envelope.message;
    // Label metrics with known types only: the type is a stranger's text.
    *kind = match msg.kind.as_str() {
        k @ ("assistant-request"
        | "tool-calls"
        | "function-call"
        | "end-of-call-report"
        | "status-update"
        | "conversation-update"
        | "speech-update"
        | "hang"
        | "transcript"
        | "transfer-destination-request"
        | "transfer-update"
        | "knowledge-base-request") => k.to_string(),
        _ => "other".to_string(),
    };
    let answer = match msg.kind.as_str() {
        "assistant-request" => assistant_request(app, msg, raw).await?,
        "tool-calls" | "function-call" => tool_calls::answer(app, msg, raw).await?,
        "transfer-destination-request" => super::transfer::answer(app, msg, raw).await?,
        "campaign.predial" => campaign_predial(app, msg, raw).await?,
        other => {
            let stored = ingest(app, msg, raw).await?;
            expected_answer(other).unwrap_or(stored)
        }
    };
    Ok(Json(answer).into_response())
}

/// Messages Vapi waits on get an answer inside its schema, never a bare `{"received": true}`.
/// Transfers are answered in [`super::transfer`]; no agency has handoff destinations or a
/// knowledge base here yet: the answer says so, and the assistant tells the caller an agent
/// will call back.
fn expected_answer(kind: &str) -> Option<serde_json::Value> {
    match kind {
        "handoff-destination-request" => Some(json!({"destination": {}, "error": NO_TRANSFER})),
        "knowledge-base-request" => Some(json!({"documents": []})),
        // A moderate wait before the caller's turn counts as finished (we tune nothing per call).
        "call.endpointing.request" => Some(json!({"timeoutSeconds": 1.5})),
        _ => None,
    }
}

/// Before a campaign dials a contact: stored like any message, and the contact is dialed unless
/// the number belongs to an agency that is not in service (paused or cancelled), whose calls we
/// would neither answer with its assistant nor bill. A number we cannot place is the campaign's
/// own business in Vapi: dialed, as before, and logged at routing.
async fn campaign_predial(app: &AppState, msg: &MessageIn, raw: &str) -> Result<Value, ApiError> {
    let (routing, agent) = route(app, msg).await?;
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    record(&mut tx, agent.as_deref(), routing, msg, raw).await?;
    tx.commit().await?;
    let eligible = agent
        .as_deref()
        .is_none_or(|a| a.in_service(app.config.billing_timezone));
    if let Some(a) = agent.as_deref().filter(|_| !eligible) {
        tracing::info!(agent.id = %a.id, agent.status = %a.status, "campaign contact skipped: the agency is not in service");
    }
    Ok(json!({"eligible": eligible}))
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

/// `assistant-request`: answered inline from memory and one short transaction (lead upsert).
/// A redelivered request gets the same answer again: Vapi needs one to take the call.
///
/// The database unreachable: an agency the routing cache knows (read within
/// [`super::routing::LAST_KNOWN_MAX_AGE`]) is still answered with its assistant, without a lead
/// id, rather than a 503 the caller would hear as silence; the event is not stored and the
/// caller's lead is made by the call's next message that reaches us ([`ingest`]: status updates
/// and the end-of-call report make sure the caller's lead exists). A number the cache does not
/// know still gets 503 (Vapi retries).
async fn assistant_request(app: &AppState, msg: &MessageIn, raw: &str) -> Result<Value, ApiError> {
    let (routing, agent) = match route(app, msg).await {
        Ok(routed) => routed,
        Err(e) if e.is_unavailable() => {
            let Some(agent) = app.routing.last_known(&msg.route_keys()) else {
                return Err(e);
            };
            return Ok(assistant_without_database(app, msg, &agent));
        }
        Err(e) => return Err(e),
    };
    let lead = match store_assistant_request(app, msg, raw, routing, agent.as_deref()).await {
        Ok(lead) => lead,
        Err(e) if e.is_unavailable() => match agent.as_deref() {
            Some(agent) => return Ok(assistant_without_database(app, msg, agent)),
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let Some(agent) = agent.filter(|a| a.in_service(app.config.billing_timezone)) else {
        return Ok(not_in_service());
    };
    tracing::info!(agent.id = %agent.id, call.id = msg.call_id(), "assistant-request answered");
    Ok(assistant_answer(app, &agent, lead, msg))
}

/// Stores the request and, for an agency in service, finds or creates the caller's lead.
async fn store_assistant_request(
    app: &AppState,
    msg: &MessageIn,
    raw: &str,
    routing: Routing,
    agent: Option<&Agent>,
) -> Result<Option<uuid::Uuid>, ApiError> {
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    record(&mut tx, agent, routing, msg, raw).await?;
    let lead = match agent.filter(|a| a.in_service(app.config.billing_timezone)) {
        Some(agent) => caller_lead(&mut tx, app, agent, msg).await?,
        None => None,
    };
    tx.commit().await?;
    Ok(lead)
}

/// The answer for an agency known from the routing cache while the database is unreachable.
fn assistant_without_database(app: &AppState, msg: &MessageIn, agent: &Agent) -> Value {
    if !agent.in_service(app.config.billing_timezone) {
        return not_in_service();
    }
    tracing::warn!(agent.id = %agent.id, call.id = msg.call_id(),
                   "assistant-request answered from the routing cache: the database is unreachable (event not stored; the lead comes with the call's next message)");
    assistant_answer(app, agent, None, msg)
}

fn not_in_service() -> Value {
    json!({
        "error": "Sorry, this number is not in service with an agency right now. Please call back later."
    })
}

fn assistant_answer(
    app: &AppState,
    agent: &Agent,
    lead: Option<uuid::Uuid>,
    msg: &MessageIn,
) -> Value {
    let server_url = app
        .config
        .public_base_url
        .as_deref()
        .map(|base| format!("{base}/vapi/webhook"));
    let server = assistant::Server {
        url: server_url.as_deref(),
        credential_id: app.config.vapi_server_credential_id.as_deref(),
    };
    assistant::answer(agent, lead, msg.customer_number(), server)
}

/// Every other message: store it (once) and do what its type asks, all in one transaction.
async fn ingest(app: &AppState, msg: &MessageIn, raw: &str) -> Result<Value, ApiError> {
    // `call` is optional in Vapi's schema for reports and status updates: without one there is
    // nothing to meter or update, but the message is still stored and answered 2xx.
    let report = match msg.kind.as_str() {
        "end-of-call-report" => msg.call_report(),
        // `status` is required by the schema: without it the message is not Vapi's.
        "status-update" if msg.status.is_none() => {
            return Err(ApiError::bad_request(
                "invalid_message",
                "status-update needs message.status",
            ));
        }
        _ => None,
    };

    let (routing, agent) = route(app, msg).await?;
    // Failing to even open a transaction means no usable connection, whatever the error says.
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let Some(event_id) = record(&mut tx, agent.as_deref(), routing, msg, raw).await? else {
        tx.commit().await?;
        return Ok(json!({"received": true, "duplicate": true}));
    };
    let Some(agent) = agent else {
        tx.commit().await?;
        return Ok(json!({
            "received": true,
            "routed": false,
            "error": "no agent owns this phone number",
        }));
    };

    // The caller's lead, should the assistant-request have been answered while the database was
    // unreachable (or not come to us at all): made by the call's later messages.
    if matches!(msg.kind.as_str(), "end-of-call-report" | "status-update")
        && agent.in_service(app.config.billing_timezone)
    {
        caller_lead(&mut tx, app, &agent, msg).await?;
    }
    match (msg.kind.as_str(), report) {
        ("end-of-call-report", Some(report)) => {
            // Metered for the agency that owns the call (the first to record it), only.
            if calls::upsert_report(&mut tx, agent.id, &report)
                .await?
                .is_some()
            {
                calls::save_content(&mut tx, agent.id, &report.vapi_call_id, &msg.call_content())
                    .await?;
                crate::store::outbound::call_ended(&mut tx, agent.id, &report.vapi_call_id).await?;
                let job = MeterCall {
                    agent_id: agent.id,
                    vapi_call_id: report.vapi_call_id.clone(),
                };
                jobs::enqueue(&mut tx, &job, None).await?;
            } else {
                tracing::warn!(agent.id = %agent.id, call.id = %report.vapi_call_id,
                               "report of a call another agency owns: stored, not metered here");
            }
        }
        ("status-update", _) => {
            let (Some(call_id), Some(status)) = (msg.call_id(), msg.status.as_deref()) else {
                tx.commit().await?;
                return Ok(json!({"received": true}));
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
        ("transfer-update", _) => {
            super::transfer::record_update(&mut tx, &agent, msg, raw, event_id).await?;
        }
        _ => {}
    }
    tx.commit().await?;
    tracing::info!(agent.id = %agent.id, message.type = %msg.kind, event.id = event_id, call.id = msg.call_id(), "webhook stored");
    Ok(json!({"received": true}))
}

/// The body with every U+0000 in a JSON string replaced by the six characters `\u0000`; the
/// body itself when it has none (the usual case costs one scan) or is not JSON.
fn without_nul(body: Bytes) -> Bytes {
    if !body.windows(6).any(|w| w == b"\\u0000") {
        return body;
    }
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\\u0000"),
            serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
            serde_json::Value::Object(map) => {
                let keys: Vec<String> = map.keys().filter(|k| k.contains('\0')).cloned().collect();
                for k in keys {
                    if let Some(value) = map.remove(&k) {
                        map.insert(k.replace('\0', "\\u0000"), value);
                    }
                }
                map.values_mut().for_each(scrub);
            }
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(mut value) => {
            scrub(&mut value);
            serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
        }
        Err(_) => body,
    }
}
