//! `webhook_delivery` (and `webhook_delivery_slow`): one attempt to deliver one event to one
//! agency endpoint, signed per Standard Webhooks ([`crate::providers::outbound`]).
//!
//! Each attempt is its own job (key `webhook:{delivery}:{attempt}`), queued by
//! [`crate::store::outbound::emit`] in the transaction of the change it reports, then by the
//! attempt before it, due on `OUTBOUND_RETRY_SCHEDULE` (a 429's `Retry-After` when longer). A 2xx
//! ends the delivery; the schedule running out fails it; an endpoint failing for 5 days is
//! disabled, its pending deliveries failed and the agency told (Discord, the portal).
//!
//! Fairness: two lanes, each with its own workers (`OUTBOUND_CONCURRENCY` attempts at once). An
//! attempt on the healthy lane gets `OUTBOUND_SLOW_ANSWER_MS` (a second); past it, it is cut off
//! and moved (not counted as a failure) to the slow lane with every later attempt to that
//! endpoint, as are the attempts of an endpoint that failed, until one is answered in time. So a
//! slow or dead endpoint holds a healthy-lane place for at most a second, once, and never holds
//! up another agency's events. A process also runs at most [`PER_ENDPOINT`] attempts to one
//! endpoint at a time: on the healthy lane an attempt waits up to [`BUSY_WAIT`] for a place, on
//! the slow lane it comes back later (1 s, doubling to [`BUSY_BACKOFF_CAP`]) so a slow endpoint's
//! backlog costs little while it waits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::{Config, Deps, Job, JobError, notify_discord::NotifyDiscord};
use crate::{
    providers::outbound::{self, OutboundClient},
    store::outbound::{self as store, DeliveryArgs, Outcome},
};

/// Attempts one process makes to one endpoint at once.
pub const PER_ENDPOINT: usize = 2;
/// How long a healthy-lane attempt waits for a place at a busy endpoint before coming back later.
pub const BUSY_WAIT: Duration = Duration::from_millis(250);
/// The longest an attempt that keeps finding its endpoint busy waits before looking again.
pub const BUSY_BACKOFF_CAP: Duration = Duration::from_secs(16);
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

    fn concurrency(config: &Config) -> usize {
        config.outbound_concurrency
    }

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        attempt(deps, self.0, false).await
    }
}

impl Job for DeliverWebhookSlow {
    const QUEUE: &'static str = store::SLOW_QUEUE;
    const MAX_ATTEMPTS: usize = store::JOB_ATTEMPTS;

    fn concurrency(config: &Config) -> usize {
        config.outbound_concurrency
    }

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        attempt(deps, self.0, true).await
    }
}

/// Each endpoint's places ([`PER_ENDPOINT`]) in this process, and when each attempt holding
/// one started; an entry lives while anyone holds or waits for a place.
static PLACES: Mutex<Option<HashMap<Uuid, Places>>> = Mutex::new(None);

struct Places {
    free: Arc<Semaphore>,
    started: Vec<Instant>,
}

/// A place among an endpoint's [`PER_ENDPOINT`] attempts, given back on drop.
struct Slot {
    endpoint: Uuid,
    started: Instant,
    permit: Option<OwnedSemaphorePermit>,
}

fn places<T>(f: impl FnOnce(&mut HashMap<Uuid, Places>) -> T) -> T {
    let mut map = PLACES.lock().unwrap_or_else(|p| p.into_inner());
    f(map.get_or_insert_with(HashMap::new))
}

impl Slot {
    /// A place for an attempt to `endpoint`. When every place is taken, it waits up to `wait`
    /// for one, but only while the endpoint is turning attempts around quickly (its oldest
    /// attempt started less than `wait` ago): an endpoint whose attempts hang is not waited on.
    async fn take(endpoint: Uuid, wait: Duration) -> Option<Slot> {
        let now = Instant::now();
        let waiting = places(|map| {
            let places = map.entry(endpoint).or_insert_with(|| Places {
                free: Arc::new(Semaphore::new(PER_ENDPOINT)),
                started: Vec::new(),
            });
            if let Ok(permit) = places.free.clone().try_acquire_owned() {
                return Ok(permit);
            }
            let quick = places
                .started
                .iter()
                .min()
                .is_none_or(|oldest| now.duration_since(*oldest) < wait);
            Err(quick.then(|| places.free.clone()))
        });
        // Taken at once, or worth a wait, or not.
        let permit = match waiting {
            Ok(permit) => Some(permit),
            Err(Some(free)) => tokio::time::timeout(wait, free.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
            Err(None) => None,
        };
        let slot = Slot {
            endpoint,
            started: Instant::now(),
            permit: Some(permit?),
        };
        places(|map| {
            if let Some(places) = map.get_mut(&endpoint) {
                places.started.push(slot.started);
            }
        });
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        places(|map| {
            drop(self.permit.take());
            let Some(places) = map.get_mut(&self.endpoint) else {
                return;
            };
            if let Some(i) = places.started.iter().position(|s| *s == self.started) {
                places.started.swap_remove(i);
            }
            if places.started.is_empty() && Arc::strong_count(&places.free) == 1 {
                map.remove(&self.endpoint);
            }
        });
    }
}

async fn attempt(deps: &Deps, args: DeliveryArgs, on_slow_lane: bool) -> Result<(), JobError> {
    let delivery_id = args.delivery_id;
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
    if due.slow != on_slow_lane {
        // The endpoint changed lanes since this attempt was queued.
        return requeue(&mut conn, &due, 0, None).await;
    }
    // A healthy endpoint's place frees within a second (its attempts are cut off there): wait a
    // little for one. A slow lane's busy endpoint is tried again later, each time later still,
    // so its backlog does not spin.
    let wait = if on_slow_lane {
        Duration::ZERO
    } else {
        BUSY_WAIT
    };
    // No connection is held while waiting for a place.
    drop(conn);
    let Some(slot) = Slot::take(due.endpoint_id, wait).await else {
        let later = busy_backoff(args.busy);
        let mut conn = deps.pool.acquire().await?;
        return requeue(&mut conn, &due, args.busy + 1, Some(Utc::now() + later)).await;
    };

    let client = deps.client(|d| OutboundClient::new(d.config.outbound_allow_private));
    let body = serde_json::to_vec(&due.payload)
        .map_err(|e| JobError::Permanent(format!("event body: {e}")))?;
    let secrets: Vec<&str> = due.secrets.iter().map(String::as_str).collect();
    let now = Utc::now().timestamp();
    let signature =
        outbound::signature(&secrets, &due.message_id, now, &body).map_err(JobError::Permanent)?;
    let slow_answer = deps.config.outbound_slow_answer;
    let started = Instant::now();
    let sent = client.post(&due.url, &due.message_id, now, &signature, body);
    let result = if on_slow_lane {
        sent.await
    } else {
        // On the healthy lane an answer may take a second; past it the endpoint is slow, and
        // this attempt (not counted: the endpoint did not fail) moves to the slow lane, so the
        // healthy lane's workers never wait on it.
        match tokio::time::timeout(slow_answer, sent).await {
            Ok(result) => result,
            Err(_) => {
                drop(slot);
                let mut tx = deps.pool.begin().await?;
                store::mark_slow(&mut tx, due.endpoint_id).await?;
                let moved = store::Due { slow: true, ..due };
                requeue(&mut tx, &moved, 0, None).await?;
                tx.commit().await?;
                tracing::info!(delivery.id = %delivery_id, endpoint.id = %moved.endpoint_id,
                               "webhook endpoint slow: attempt moved to the slow lane");
                return Ok(());
            }
        }
    };
    let slow = started.elapsed() > slow_answer;
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

/// Queues the same attempt again on the endpoint's lane, at `at` (now when `None`); `busy`: how
/// many times in a row it found the endpoint busy.
async fn requeue(
    conn: &mut sqlx::PgConnection,
    due: &store::Due,
    busy: u32,
    at: Option<chrono::DateTime<Utc>>,
) -> Result<(), JobError> {
    // Under a fresh key: the attempt's own job is this one, still running.
    let args = serde_json::to_vec(&DeliveryArgs {
        delivery_id: due.delivery_id,
        busy,
    })
    .map_err(|e| JobError::Permanent(e.to_string()))?;
    let queue = if due.slow {
        store::SLOW_QUEUE
    } else {
        store::QUEUE
    };
    crate::store::queue::push(conn, queue, args, store::JOB_ATTEMPTS, None, at)
        .await
        .map_err(|e| JobError::Transient(format!("requeue: {e}")))
}

/// How long an attempt that found its endpoint busy `busy` times before waits: 1 s, doubling
/// to [`BUSY_BACKOFF_CAP`].
fn busy_backoff(busy: u32) -> Duration {
    Duration::from_secs(1u64 << busy.min(10)).min(BUSY_BACKOFF_CAP)
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
