//! `tool-calls` (and the legacy `function-call`): one job per tool call, keyed by its id, then a
//! short wait for the finding so the assistant can say it in the same turn.
//!
//! Bad arguments or an unknown tool give that call an `error` in the reply, never an HTTP error.
//! A redelivered tool call enqueues nothing new (the queue's idempotency key is the call id).

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{AppState, error::ApiError, webhook};
use crate::{
    jobs::{
        self, Job, effects,
        solar_ocr_scan::{self, SolarOcrScan},
        water_lookup::{self, WaterLookup},
    },
    store::findings,
    tools::{self, ToolCall, ToolRequest},
    vapi::MessageIn,
};

/// What one tool call turned into.
enum Planned {
    /// Queued (or already queued earlier): wait for its finding of `kind`.
    Job { kind: &'static str, radius_m: u32 },
    /// Rejected before queueing; said back as the call's `error`.
    Error(String),
}

pub async fn answer(app: &AppState, msg: &MessageIn, raw: &str) -> Result<Value, ApiError> {
    let message: Value = serde_json::from_str::<Value>(raw)
        .map_err(ApiError::bad_json)?
        .get("message")
        .cloned()
        .unwrap_or(Value::Null);
    let legacy = msg.kind == "function-call";
    let calls = if legacy {
        legacy_call(&message, msg, raw)
    } else {
        tools::from_message(&message)
    };
    if calls.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_message",
            "tool-calls needs message.toolCallList with ids (function-call needs message.functionCall)",
        ));
    }

    let (routing, agent) = webhook::route(app, msg).await?;
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    webhook::record(&mut tx, agent.as_deref(), routing, msg, raw).await?;
    let Some(agent) = agent.filter(|a| a.status == "active") else {
        tx.commit().await?;
        let error = "this phone number is not in service with an agency";
        return Ok(reply(
            legacy,
            calls.iter().map(|c| (c, Err(error.to_string()))).collect(),
        ));
    };
    let lead = webhook::caller_lead(&mut tx, app, &agent, msg).await?;
    let mut planned = Vec::with_capacity(calls.len());
    let mut waits = Vec::new();
    for call in &calls {
        let plan = match tools::parse(call) {
            Err(e) => Planned::Error(e),
            Ok(request) => {
                // Listen before the job can finish, so its notification cannot be missed.
                waits.push((call.id.clone(), app.tool_results.register(&call.id)));
                enqueue(&mut tx, agent.id, lead, call, request).await?
            }
        };
        planned.push(plan);
    }
    tx.commit().await?;

    // Wait (bounded) for every queued call at once; a redelivery may already have its finding.
    let deadline = tokio::time::Instant::now() + app.config.tool_result_wait;
    let mut results = Vec::with_capacity(calls.len());
    for (call, plan) in calls.iter().zip(planned) {
        let result = match plan {
            Planned::Error(e) => Err(e),
            Planned::Job { kind, radius_m } => {
                let waiter = waits
                    .iter_mut()
                    .find(|(id, _)| id == &call.id)
                    .map(|(_, rx)| rx);
                let found = match find(app, agent.id, kind, &call.id).await? {
                    Some(found) => Some(found),
                    None => {
                        if let Some(rx) = waiter {
                            let _ = tokio::time::timeout_at(deadline, rx).await;
                        }
                        find(app, agent.id, kind, &call.id).await?
                    }
                };
                app.tool_results.forget(&call.id);
                Ok(match found {
                    Some(result) => say(kind, &result, radius_m),
                    None => running(kind),
                })
            }
        };
        results.push((call, result));
    }
    Ok(reply(legacy, results))
}

/// The legacy `function-call`: `message.functionCall {name, parameters}`, one call per message.
fn legacy_call(message: &Value, msg: &MessageIn, raw: &str) -> Vec<ToolCall> {
    let Some(fc) = message.get("functionCall") else {
        return Vec::new();
    };
    let name = fc
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // No id in the legacy shape: the call id plus the message digest identify it.
    let id = format!("fc:{}", msg.dedupe_key(raw.as_bytes()));
    vec![ToolCall {
        id,
        name,
        arguments: fc.get("parameters").cloned().unwrap_or(Value::Null),
    }]
}

async fn enqueue(
    tx: &mut PgConnection,
    agent_id: Uuid,
    lead_id: Option<Uuid>,
    call: &ToolCall,
    request: ToolRequest,
) -> Result<Planned, ApiError> {
    let key = effects::tool_call_key(&call.id);
    match request {
        ToolRequest::Solar(a) => {
            let job = SolarOcrScan {
                agent_id,
                lead_id,
                tool_call_id: call.id.clone(),
                image_url: a.image_url,
                image_base64: a.image_base64,
                mime_type: a.mime_type,
                address: a.address,
                requested_at: Some(chrono::Utc::now()),
            };
            enqueue_once(tx, &job, &key).await?;
            Ok(Planned::Job {
                kind: findings::SOLAR,
                radius_m: 0,
            })
        }
        ToolRequest::Water(a) => {
            let radius_m = a.radius();
            let job = WaterLookup {
                agent_id,
                lead_id,
                tool_call_id: call.id.clone(),
                latitude: a.latitude,
                longitude: a.longitude,
                radius_m,
                address: a.address,
                requested_at: Some(chrono::Utc::now()),
            };
            enqueue_once(tx, &job, &key).await?;
            Ok(Planned::Job {
                kind: findings::WATER,
                radius_m,
            })
        }
    }
}

/// Enqueues under the tool call's key inside a savepoint: a key already taken (the same tool
/// call delivered again in another message) rolls back only the savepoint.
async fn enqueue_once<J: Job>(tx: &mut PgConnection, job: &J, key: &str) -> Result<(), ApiError> {
    sqlx::query("SAVEPOINT enqueue_tool")
        .execute(&mut *tx)
        .await?;
    match jobs::enqueue(tx, job, Some(key)).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT enqueue_tool")
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
        Err(apalis_postgres::Error::Database(e)) if crate::store::is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT enqueue_tool")
                .execute(&mut *tx)
                .await?;
            tracing::info!(key, "tool call already queued");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn find(
    app: &AppState,
    agent_id: Uuid,
    kind: &str,
    tool_call_id: &str,
) -> Result<Option<Value>, ApiError> {
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    let key = effects::tool_call_key(tool_call_id);
    Ok(findings::find(&mut conn, agent_id, kind, &key)
        .await?
        .map(|f| f.result))
}

fn say(kind: &str, result: &Value, radius_m: u32) -> String {
    let said = if kind == findings::SOLAR {
        serde_json::from_value(result["scan"].clone())
            .ok()
            .map(|s| solar_ocr_scan::describe(&s))
    } else {
        let radius = result["radius_m"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(radius_m);
        serde_json::from_value(result["summary"].clone())
            .ok()
            .map(|s| water_lookup::describe(&s, radius))
    };
    said.unwrap_or_else(|| running(kind))
}

fn running(kind: &str) -> String {
    let what = if kind == findings::SOLAR {
        "solar check"
    } else {
        "water check"
    };
    format!("The {what} is running; the result will be ready in a moment.")
}

fn reply(legacy: bool, results: Vec<(&ToolCall, Result<String, String>)>) -> Value {
    if legacy {
        // The legacy shape answers one call with {"result": ...}.
        let text = match results.into_iter().next().map(|(_, r)| r) {
            Some(Ok(t)) => t,
            Some(Err(e)) => format!("error: {e}"),
            None => String::new(),
        };
        return json!({"result": text});
    }
    let items: Vec<Value> = results
        .into_iter()
        .map(|(call, r)| match r {
            Ok(text) => json!({"toolCallId": call.id, "name": call.name, "result": text}),
            Err(e) => json!({"toolCallId": call.id, "name": call.name, "error": e}),
        })
        .collect();
    json!({"results": items})
}
