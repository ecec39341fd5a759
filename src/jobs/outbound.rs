//! `webhook_delivery` (and `webhook_delivery_slow`): one attempt to deliver one event to one
//! agency endpoint, signed per Standard Webhooks ([`crate::providers::outbound`]).
//!
//! Each attempt is its own job (key `webhook:{delivery}:{attempt}`), queued by
//! [`crate::store::outbound::emit`] in the transaction of the change it reports, then by the
//! attempt before it, due on `OUTBOUND_RETRY_SCHEDULE` (a 429's `Retry-After` when longer). A 2xx
//! ends the delivery; the schedule running out fails it; an endpoint failing for 5 days is
//! disabled, its pending deliveries failed and the agency told (Discord, the portal).
//!
//! Fairness: an endpoint that answered slowly (over a second) or failed has its deliveries on
//! the slow queue, with its own workers, so it never holds up another agency's events; and a
//! process runs at most [`PER_ENDPOINT`] attempts to one endpoint at a time (the rest come back a
//! second later).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Deps, Job, JobError, notify_discord::NotifyDiscord};
use crate::{
    providers::outbound::{self, OutboundClient},
    store::outbound::{self as store, DeliveryArgs, Outcome},
};

/// Attempts one process makes to one endpoint at once.
pub const PER_ENDPOINT: usize = 2;
/// An answer slower than this moves the endpoint to the slow queue.
pub const SLOW_ANSWER: Duration = Duration::from_secs(1);
/// An endpoint failing this long is disabled.
pub const DISABLE_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(5);

/// An attempt on the queue of healthy endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct DeliverWebhook(pub DeliveryArgs);

/// An attempt on the queue of slow or failing endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct DeliverWebhookSlow(pub DeliveryArgs);

impl Job for DeliverWebhook {
    const QUEUE: &'static str = store::QUEUE;
    const MAX_ATTEMPTS: usize = store::JOB_ATTEMPTS;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        attempt(deps, self.0.delivery_id, false).await
    }
}

impl Job for DeliverWebhookSlow {
    const QUEUE: &'static str = store::SLOW_QUEUE;
    const MAX_ATTEMPTS: usize = store::JOB_ATTEMPTS;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        attempt(deps, self.0.delivery_id, true).await
    }
}

/// Attempts in flight per endpoint in this process.
static IN_FLIGHT: Mutex<Option<HashMap<Uuid, usize>>> = Mutex::new(None);

/// A place among an endpoint's [`PER_ENDPOINT`] attempts, given back on drop.
struct Slot(Uuid);

impl Slot {
    fn take(endpoint: Uuid) -> Option<Slot> {
        let mut map = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        let n = map
            .get_or_insert_with(HashMap::new)
            .entry(endpoint)
            .or_insert(0);
        if *n >= PER_ENDPOINT {
            return None;
        }
        *n += 1;
        Some(Slot(endpoint))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = map.as_mut()
            && let Some(n) = map.get_mut(&self.0)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.0);
            }
        }
    }
}

async fn attempt(deps: &Deps, delivery_id: Uuid, on_slow_lane: bool) -> Result<(), JobError> {
    let mut conn = deps.pool.acquire().await?;
    let Some(due) = store::due(&mut conn, delivery_id).await? else {
        return Err(JobError::Permanent(format!("no delivery {delivery_id}")));
    };
    if due.status != "pending" {
        return Ok(()); // delivered, failed or replayed by another attempt
    }
    if let Some(why) = &due.closed {
        store::close(&mut conn, delivery_id, why).await?;
        return Ok(());
    }
    // Another lane's endpoint, or busy here: the attempt comes back (on its lane) a moment later.
    let slot = Slot::take(due.endpoint_id);
    if due.slow != on_slow_lane || slot.is_none() {
        let later = slot.is_none().then(|| Utc::now() + Duration::from_secs(1));
        requeue(&mut conn, &due, later).await?;
        return Ok(());
    }
    drop(conn);

    let client = deps.client(|d| OutboundClient::new(d.config.outbound_allow_private));
    let body = serde_json::to_vec(&due.payload)
        .map_err(|e| JobError::Permanent(format!("event body: {e}")))?;
    let secrets: Vec<&str> = due.secrets.iter().map(String::as_str).collect();
    let now = Utc::now().timestamp();
    let signature =
        outbound::signature(&secrets, &due.message_id, now, &body).map_err(JobError::Permanent)?;
    let started = Instant::now();
    let result = client
        .post(&due.url, &due.message_id, now, &signature, body)
        .await;
    let slow = started.elapsed() > SLOW_ANSWER;
    drop(slot);

    let schedule = &deps.config.outbound_retry_schedule;
    let next = usize::try_from(due.attempts + 1).unwrap_or(usize::MAX);
    let mut tx = deps.pool.begin().await?;
    match &result {
        Ok(answered) => {
            let o = Outcome {
                delivered: true,
                status_code: Some(answered.0),
                error: None,
                slow,
                give_up: false,
            };
            store::record_attempt(&mut tx, &due, &o).await?;
        }
        Err(e) => {
            let reason = e.reason().to_string();
            let failing_for = due.failing_since.map(|since| Utc::now() - since);
            let disable = failing_for.is_some_and(|f| f >= DISABLE_AFTER);
            let o = Outcome {
                delivered: false,
                status_code: status_code(&reason),
                error: Some(&reason),
                slow,
                give_up: disable || next >= schedule.len(),
            };
            store::record_attempt(&mut tx, &due, &o).await?;
            if disable {
                disable_endpoint(&mut tx, deps, &due).await?;
            } else if !o.give_up {
                let wait = schedule[next].max(e.retry_after().unwrap_or_default());
                let at = Utc::now() + wait;
                store::queue_attempt(&mut tx, delivery_id, true, due.attempts + 1, Some(at))
                    .await?;
            }
        }
    }
    tx.commit().await?;
    tracing::info!(delivery.id = %delivery_id, endpoint.id = %due.endpoint_id,
                   attempt = due.attempts + 1, ok = result.is_ok(), slow, "webhook attempt");
    Ok(())
}

/// Queues the same attempt again on the endpoint's lane (a moment later when it was busy).
async fn requeue(
    conn: &mut sqlx::PgConnection,
    due: &store::Due,
    later: Option<chrono::DateTime<Utc>>,
) -> Result<(), JobError> {
    // Under a fresh key: the attempt's own job is this one, still running.
    let args = serde_json::to_vec(&DeliveryArgs {
        delivery_id: due.delivery_id,
    })
    .map_err(|e| JobError::Permanent(e.to_string()))?;
    let queue = if due.slow {
        store::SLOW_QUEUE
    } else {
        store::QUEUE
    };
    crate::store::queue::push(conn, queue, args, store::JOB_ATTEMPTS, None, later)
        .await
        .map_err(|e| JobError::Transient(format!("requeue: {e}")))
}

/// `HTTP 503 ...` -> 503.
fn status_code(reason: &str) -> Option<u16> {
    reason
        .strip_prefix("HTTP ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

async fn disable_endpoint(
    tx: &mut sqlx::PgConnection,
    deps: &Deps,
    due: &store::Due,
) -> Result<(), JobError> {
    let why = "failing for 5 days";
    if store::disable(tx, due.endpoint_id, why).await? {
        tracing::warn!(endpoint.id = %due.endpoint_id, agent.id = %due.agent_id,
                       "webhook endpoint disabled");
        if deps.config.discord_enabled {
            let note = NotifyDiscord {
                agent_id: due.agent_id,
                content: format!(
                    "⚠️ Your webhook endpoint {} has failed for 5 days and is disabled. \
                     Fix it, then add it again in the portal (Integrations).",
                    due.url
                ),
            };
            super::enqueue(tx, &note, None)
                .await
                .map_err(|e| JobError::Transient(format!("enqueue: {e}")))?;
        }
    }
    Ok(())
}
