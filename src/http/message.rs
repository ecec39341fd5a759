//! The steps every Vapi message shares, below the webhook and the answers it dispatches to
//! (tool calls, transfers): route it to its agency, store it once, find the caller's lead. A
//! message's path only goes down: `webhook` -> `tool_calls` / `transfer` -> `message`.

use std::sync::Arc;

use sqlx::PgConnection;

use super::{AppState, error::ApiError};
use crate::{
    jobs::{self, notify_discord::NotifyDiscord},
    store::{
        agents::Agent,
        leads,
        webhook_events::{self, NewEvent, Routing},
    },
    vapi::MessageIn,
};

/// The answer to a transfer request for an agency without a transfer number (or a call we
/// cannot place): the assistant takes a message.
pub const NO_TRANSFER: &str = "No transfer destination is set up for this agency; take a message and an agent will call back.";

/// The agent owning the message's phone number, and how the message is routed.
pub async fn route(
    app: &AppState,
    msg: &MessageIn,
) -> Result<(Routing, Option<Arc<Agent>>), ApiError> {
    let keys = msg.route_keys();
    if keys.is_empty() {
        return Ok((
            if msg.call.is_some() {
                Routing::Unroutable
            } else {
                Routing::NoCall
            },
            None,
        ));
    }
    // The lookups are fixed, valid queries: any failure is the database being unreachable.
    let agent = app
        .routing
        .agent_for_any(&app.pool, &keys)
        .await
        .map_err(ApiError::unavailable)?;
    let routing = if agent.is_some() {
        Routing::Routed
    } else {
        tracing::warn!(message.type = %msg.kind, ?keys, "no agent answers to this phone number or assistant");
        Routing::Unroutable
    };
    Ok((routing, agent))
}

/// Stores the message once; `Some(event id)` only the first time.
pub async fn record(
    tx: &mut PgConnection,
    agent: Option<&Agent>,
    routing: Routing,
    msg: &MessageIn,
    raw: &str,
) -> Result<Option<i64>, ApiError> {
    let dedupe_key = msg.dedupe_key(raw.as_bytes());
    let id = webhook_events::insert_new(
        tx,
        &NewEvent {
            agent_id: agent.map(|a| a.id),
            dedupe_key: &dedupe_key,
            message_type: &msg.kind,
            vapi_call_id: msg.call_id(),
            routing,
            payload: raw,
        },
    )
    .await?;
    if id.is_none() {
        tracing::info!(message.type = %msg.kind, %dedupe_key, "duplicate delivery");
    }
    Ok(id)
}

/// Finds or creates the caller's lead; a new lead is announced on Discord (when enabled).
pub async fn caller_lead(
    tx: &mut PgConnection,
    app: &AppState,
    agent: &Agent,
    msg: &MessageIn,
) -> Result<Option<uuid::Uuid>, ApiError> {
    let Some(number) = msg.customer_number().filter(|n| !n.trim().is_empty()) else {
        return Ok(None);
    };
    let (lead, created) = leads::upsert_by_phone(tx, agent.id, number).await?;
    if created {
        let id = format!("msg_lead_created_{}", lead.simple());
        let data =
            serde_json::json!({"lead_id": lead, "phone": number, "vapi_call_id": msg.call_id()});
        crate::store::outbound::emit(tx, agent.id, &id, "lead.created", data).await?;
    }
    if created && app.config.discord_enabled && agent.discord_webhook_url.is_some() {
        let note = format!(
            "📞 New lead for {}: {number} is calling.",
            agent.agency_name
        );
        jobs::enqueue(
            tx,
            &NotifyDiscord {
                agent_id: agent.id,
                content: note,
            },
            None,
        )
        .await?;
    }
    Ok(Some(lead))
}
