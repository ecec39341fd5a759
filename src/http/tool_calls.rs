//! `tool-calls` (and the legacy `function-call`): one job per tool call, keyed by its id, then a
//! short wait for the finding so the assistant can say it in the same turn.
//!
//! Bad arguments, an unknown tool, a tool the agent does not have, or a billable tool past the
//! agency's `block` usage cap ([`caps::admit`], before any provider is asked) give that call an
//! `error` in the reply, never an HTTP error and never a job. A redelivered tool call enqueues nothing new
//! (the queue's idempotency key is the call id). Tools come from [`crate::tools::registry`].

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{AppState, error::ApiError, message};
use crate::{
    jobs::effects,
    store::{
        agents::Agent,
        caps::{self, Admission},
        findings,
    },
    tools::{self, CallContext, ToolCall, ToolSpec},
    vapi::MessageIn,
};

/// What the assistant is told, to say, when the agency's usage cap stops a billable check.
pub const CAP_REACHED: &str = "This check is not available right now. Tell the caller the agency \
     will follow up with them about it.";

/// What one tool call turned into.
enum Planned {
    /// Queued (or already queued earlier): wait for the tool's finding.
    Job(&'static ToolSpec),
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
    // Where a finding that comes after our answer can still reach the live call.
    let control_url = message["call"]["monitor"]["controlUrl"]
        .as_str()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(str::to_string);
    let calls = if legacy {
        legacy_call(&message, msg, raw)
    } else {
        tools::from_message(&message)
    };
    if calls.is_empty() && legacy {
        return Err(ApiError::bad_request(
            "invalid_message",
            "function-call needs message.functionCall",
        ));
    }
    if calls.is_empty() {
        // Spec-valid (an empty list): stored, nothing to run.
        let (routing, agent) = message::route(app, msg).await?;
        let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
        message::record(&mut tx, agent.as_deref(), routing, msg, raw).await?;
        tx.commit().await?;
        return Ok(json!({"results": []}));
    }

    let (routing, agent) = message::route(app, msg).await?;
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    message::record(&mut tx, agent.as_deref(), routing, msg, raw).await?;
    let Some(agent) = agent.filter(|a| a.in_service(app.config.billing_timezone)) else {
        tx.commit().await?;
        let error = "this phone number is not in service with an agency";
        return Ok(reply(
            legacy,
            calls.iter().map(|c| (c, Err(error.to_string()))).collect(),
        ));
    };
    let lead = message::caller_lead(&mut tx, app, &agent, msg).await?;
    let mut planned = Vec::with_capacity(calls.len());
    let mut waits = Vec::new();
    let requested_at = Some(chrono::Utc::now());
    for call in &calls {
        let context = CallContext {
            agent_id: agent.id,
            lead_id: lead,
            tool_call_id: call.id.clone(),
            vapi_call_id: msg.call_id().map(str::to_string),
            requested_at,
        };
        let plan = match tool_for(&agent, &call.name)
            .and_then(|tool| Ok((tool, tool.plan(&call.arguments, &context)?)))
        {
            Err(e) => Planned::Error(e),
            Ok((tool, job)) => {
                let key = effects::tool_call_key(&call.id);
                let now = chrono::Utc::now();
                let tz = app.config.billing_timezone;
                match caps::admit(&mut tx, agent.id, tool.metric, &key, now, tz).await? {
                    Admission::Refused { usage_usd, cap_usd } => {
                        tracing::info!(agent.id = %agent.id, tool = tool.name, %usage_usd,
                                       %cap_usd, "tool call refused: the agency's usage cap is reached");
                        Planned::Error(CAP_REACHED.to_string())
                    }
                    Admission::Free | Admission::Admitted => {
                        // Listen before the job can finish, so its notification cannot be missed.
                        waits.push((call.id.clone(), app.tool_results.register(&call.id)));
                        enqueue_once(&mut tx, tool, job, &key).await?;
                        Planned::Job(tool)
                    }
                }
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
            Planned::Job(tool) => {
                let waiter = waits
                    .iter_mut()
                    .find(|(id, _)| id == &call.id)
                    .map(|(_, rx)| rx);
                let found = match find(app, agent.id, tool.kind, &call.id).await? {
                    Some(found) => Some(found),
                    None => {
                        if let Some(rx) = waiter {
                            let _ = tokio::time::timeout_at(deadline, rx).await;
                        }
                        // Woken (or out of time): a finding committed by now is said here,
                        // inline, and nothing is owed to the call. Only a finding still missing
                        // is owed to its control URL.
                        match find(app, agent.id, tool.kind, &call.id).await? {
                            Some(found) => Some(found),
                            None => {
                                late(app, agent.id, tool, &call.id, control_url.as_deref()).await?
                            }
                        }
                    }
                };
                app.tool_results.forget(&call.id);
                match found {
                    Some(result) => Ok(tool.say(&result)),
                    None if gave_up(app, tool, &call.id).await? => Err(tool.failed.to_string()),
                    None => Ok(tool.running.to_string()),
                }
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

/// The registered tool `name` names, if the agent has it.
fn tool_for(agent: &Agent, name: &str) -> Result<&'static ToolSpec, String> {
    let tool = tools::find(name).ok_or_else(|| format!("unknown tool {name:?}"))?;
    let has = agent
        .tools
        .as_deref()
        .is_none_or(|names| names.iter().any(|n| n == tool.name));
    if has {
        Ok(tool)
    } else {
        Err(format!("{} is not enabled for this agency", tool.name))
    }
}

/// After the wait, when the last look found nothing: the answer goes out without the finding.
/// With a control URL, the finding is owed to the call first, then looked for once more: if it
/// was committed in between, this answer says it only if it can claim it (the tool job's commit
/// may have claimed it a moment ago and said it through the control URL); if not, the job says
/// it when it saves it. Either way it is said once.
///
/// Owing only after a last look that found nothing is what keeps a finding ready within the
/// wait inline: owing first (as before) let the job's commit, which claims right after it
/// commits, take the row from under a webhook that had just been woken by that very commit, and
/// about one answer in five said "running" with the finding already saved.
async fn late(
    app: &AppState,
    agent_id: Uuid,
    tool: &ToolSpec,
    tool_call_id: &str,
    control_url: Option<&str>,
) -> Result<Option<Value>, ApiError> {
    let Some(url) = control_url else {
        return Ok(None);
    };
    let key = effects::tool_call_key(tool_call_id);
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    crate::store::late_findings::owe(&mut conn, &key, url).await?;
    drop(conn);
    let Some(found) = find(app, agent_id, tool.kind, tool_call_id).await? else {
        return Ok(None);
    };
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    let claimed = crate::store::late_findings::claim(&mut conn, std::slice::from_ref(&key)).await?;
    Ok((!claimed.is_empty()).then_some(found))
}

/// True when the tool call's job has failed for good (no finding will come).
async fn gave_up(app: &AppState, tool: &ToolSpec, tool_call_id: &str) -> Result<bool, ApiError> {
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    let key = effects::tool_call_key(tool_call_id);
    Ok(crate::store::queue::gave_up(&mut conn, tool.queue, &key).await?)
}

/// Enqueues under the tool call's key inside a savepoint: a key already taken (the same tool
/// call delivered again in another message) rolls back only the savepoint.
async fn enqueue_once(
    tx: &mut PgConnection,
    tool: &ToolSpec,
    job: Vec<u8>,
    key: &str,
) -> Result<(), ApiError> {
    sqlx::query("SAVEPOINT enqueue_tool")
        .execute(&mut *tx)
        .await?;
    match crate::store::queue::push(tx, tool.queue, job, tool.max_attempts, Some(key), None).await {
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
