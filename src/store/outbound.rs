//! Agencies' webhook endpoints, the events we send them and each delivery
//! ([`crate::jobs::outbound`] sends them). [`emit`] records an event in the caller's
//! transaction, with one delivery per endpoint that wants it and that delivery's first attempt
//! queued: an event exists exactly when the change it reports commits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The queue of healthy endpoints' deliveries, and the one of slow or failing endpoints', so a
/// slow endpoint never holds up another agency's events.
pub const QUEUE: &str = "webhook_delivery";
pub const SLOW_QUEUE: &str = "webhook_delivery_slow";
/// Attempts of one delivery attempt's job (a crash or a database blip); the endpoint's own
/// failures follow `OUTBOUND_RETRY_SCHEDULE` instead.
pub const JOB_ATTEMPTS: usize = 3;

/// Event types an endpoint may ask for.
pub const EVENT_TYPES: &[&str] = &[
    "call.ended",
    "lead.created",
    "lead.updated",
    "finding.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "usage.threshold",
];

/// A delivery attempt's job arguments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryArgs {
    pub delivery_id: Uuid,
    /// Times in a row this attempt found its endpoint busy (it waits longer each time).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub busy: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub url: String,
    /// `None`: every event type.
    pub events: Option<Vec<String>>,
    /// Since its first failure in a row (cleared by a 2xx).
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was disabled (failing for 5 days), and why.
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Records event `kind` for `agent_id` under the business id `id` (the `webhook-id`: the same
/// change always makes the same id, so it is recorded once) when any live endpoint of the agency
/// wants it, and queues each delivery's first attempt. How many deliveries it made.
pub async fn emit(
    conn: &mut PgConnection,
    agent_id: Uuid,
    id: &str,
    kind: &str,
    data: Value,
) -> Result<usize, sqlx::Error> {
    let payload = serde_json::json!({
        "type": kind,
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    });
    // Bodies stay within 256 KiB: the largest fields give way (named in `data.omitted`).
    let payload =
        crate::providers::outbound::fit(payload, crate::providers::outbound::MAX_BODY_BYTES);
    let made: Vec<(Uuid, bool)> = sqlx::query_as(
        "WITH ep AS (
             SELECT id, slow FROM webhook_endpoints
              WHERE agent_id = $1 AND removed_at IS NULL AND disabled_at IS NULL
                AND (events IS NULL OR $3 = ANY (events))),
         msg AS (
             INSERT INTO webhook_messages (id, agent_id, type, payload)
             SELECT $2, $1, $3, $4 WHERE EXISTS (SELECT 1 FROM ep)
             ON CONFLICT (id) DO NOTHING
             RETURNING id),
         made AS (
             INSERT INTO webhook_deliveries (agent_id, message_id, endpoint_id)
             SELECT $1, msg.id, ep.id FROM msg, ep
             RETURNING id, endpoint_id)
         SELECT made.id, ep.slow FROM made JOIN ep ON ep.id = made.endpoint_id",
    )
    .bind(agent_id)
    .bind(id)
    .bind(kind)
    .bind(&payload)
    .fetch_all(&mut *conn)
    .await?;
    for (delivery_id, slow) in &made {
        queue_attempt(conn, *delivery_id, *slow, 0, None).await?;
    }
    Ok(made.len())
}

/// Queues an attempt of `delivery_id` on its lane, due at `due` (now when `None`), under the key
/// `webhook:{delivery}:{attempt}` (one job per attempt).
pub async fn queue_attempt(
    conn: &mut PgConnection,
    delivery_id: Uuid,
    slow: bool,
    attempt: i32,
    due: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let args = serde_json::to_vec(&DeliveryArgs {
        delivery_id,
        busy: 0,
    })
    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let key = format!("webhook:{delivery_id}:{attempt}");
    let queue = if slow { SLOW_QUEUE } else { QUEUE };
    sqlx::query("SAVEPOINT queue_attempt")
        .execute(&mut *conn)
        .await?;
    match super::queue::push(conn, queue, args, JOB_ATTEMPTS, Some(&key), due).await {
        Ok(()) => {}
        Err(apalis_postgres::Error::Database(e)) if super::is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT queue_attempt")
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
        Err(e) => return Err(sqlx::Error::Protocol(format!("queueing a delivery: {e}"))),
    }
    sqlx::query("RELEASE SAVEPOINT queue_attempt")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn add_endpoint(
    conn: &mut PgConnection,
    agent_id: Uuid,
    url: &str,
    events: Option<&[String]>,
    secret: &str,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO webhook_endpoints (agent_id, url, events, secret) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(agent_id)
    .bind(url)
    .bind(events)
    .bind(secret)
    .fetch_one(conn)
    .await
}

/// The agency's endpoints (removed ones are not listed), oldest first.
pub async fn endpoints(
    conn: &mut PgConnection,
    agent_id: Uuid,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, agent_id, url, events, failing_since, disabled_at, disabled_reason, created_at
           FROM webhook_endpoints WHERE agent_id = $1 AND removed_at IS NULL
          ORDER BY created_at, id",
    )
    .bind(agent_id)
    .fetch_all(conn)
    .await
}

/// Removes an endpoint (of `agent_id`, when given); `false` when there is no such live one.
pub async fn remove_endpoint(
    conn: &mut PgConnection,
    id: Uuid,
    agent_id: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_endpoints SET removed_at = now()
                WHERE id = $1 AND ($2::uuid IS NULL OR agent_id = $2) AND removed_at IS NULL";
    Ok(super::run2(conn, sql, id, agent_id).await? == 1)
}

/// A new secret for the endpoint; the old one keeps signing for 24 hours. `false` when no such
/// live endpoint.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    id: Uuid,
    secret: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_endpoints
                  SET previous_secret = secret, previous_until = now() + interval '24 hours',
                      secret = $2
                WHERE id = $1 AND removed_at IS NULL";
    Ok(super::run2(conn, sql, id, secret.to_string()).await? == 1)
}

/// What one attempt needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub delivery_id: Uuid,
    pub agent_id: Uuid,
    pub status: String,
    pub attempts: i32,
    pub message_id: String,
    pub payload: Value,
    pub endpoint_id: Uuid,
    pub url: String,
    /// The secrets that sign: the current one, and the previous one during a rotation.
    pub secrets: Vec<String>,
    pub slow: bool,
    pub failing_since: Option<DateTime<Utc>>,
    /// Why the endpoint takes nothing any more (removed or disabled), if so.
    pub closed: Option<String>,
}

pub async fn due(conn: &mut PgConnection, delivery_id: Uuid) -> Result<Option<Due>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id AS delivery_id, d.agent_id, d.status, d.attempts, d.message_id, m.payload,
                e.id AS endpoint_id, e.url,
                array_remove(ARRAY[e.secret, CASE WHEN e.previous_until > now()
                                                  THEN e.previous_secret END], NULL) AS secrets,
                e.slow, e.failing_since,
                CASE WHEN e.removed_at IS NOT NULL THEN 'endpoint removed'
                     WHEN e.disabled_at IS NOT NULL THEN 'endpoint disabled' END AS closed
           FROM webhook_deliveries d
           JOIN webhook_messages m ON m.id = d.message_id
           JOIN webhook_endpoints e ON e.id = d.endpoint_id
          WHERE d.id = $1",
    )
    .bind(delivery_id)
    .fetch_optional(conn)
    .await
}

/// An attempt's outcome: `delivered` (a 2xx) or not, the status code if one came back, why it
/// failed, and whether the endpoint answered slowly.
pub struct Outcome<'a> {
    pub delivered: bool,
    pub status_code: Option<u16>,
    pub error: Option<&'a str>,
    pub slow: bool,
    /// The delivery gives up (its schedule ran out or its endpoint closed).
    pub give_up: bool,
}

/// Records an attempt on the delivery and its endpoint's health.
pub async fn record_attempt(
    conn: &mut PgConnection,
    due: &Due,
    o: &Outcome<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries
            SET attempts = attempts + 1, last_attempt_at = now(), last_status_code = $2,
                last_error = $3,
                status = CASE WHEN $4 THEN 'delivered' WHEN $5 THEN 'failed' ELSE 'pending' END,
                delivered_at = CASE WHEN $4 THEN now() ELSE delivered_at END
          WHERE id = $1",
    )
    .bind(due.delivery_id)
    .bind(o.status_code.map(i32::from))
    .bind(o.error)
    .bind(o.delivered)
    .bind(o.give_up)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE webhook_endpoints
            SET failing_since = CASE WHEN $2 THEN NULL ELSE COALESCE(failing_since, now()) END,
                slow = $3
          WHERE id = $1",
    )
    .bind(due.endpoint_id)
    .bind(o.delivered)
    .bind(o.slow || !o.delivered)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an endpoint slow (an answer took over a second): its attempts go to the slow lane
/// until one is answered in time.
pub async fn mark_slow(conn: &mut PgConnection, endpoint_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE webhook_endpoints SET slow = true WHERE id = $1")
        .bind(endpoint_id)
        .execute(conn)
        .await
        .map(drop)
}

/// Closes a delivery that will not be attempted (its endpoint is removed or disabled).
pub async fn close(
    conn: &mut PgConnection,
    delivery_id: Uuid,
    why: &str,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE webhook_deliveries SET status = 'failed', last_error = $2
                WHERE id = $1 AND status = 'pending'";
    super::run2(conn, sql, delivery_id, why.to_string())
        .await
        .map(drop)
}

/// Disables an endpoint (failing for too long) and fails its pending deliveries; `true` when
/// this call disabled it.
pub async fn disable(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    why: &str,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2
                WHERE id = $1 AND disabled_at IS NULL";
    let disabled = super::run2(conn, sql, endpoint_id, why.to_string()).await?;
    let sql = "UPDATE webhook_deliveries SET status = 'failed', last_error = $2
                WHERE endpoint_id = $1 AND status = 'pending'";
    super::run2(conn, sql, endpoint_id, why.to_string()).await?;
    Ok(disabled == 1)
}

/// A delivery as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    /// What `replay` takes.
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub event_type: String,
    /// The event's `webhook-id`, the same on every attempt.
    pub message_id: String,
    /// pending, delivered or failed, after `attempts` (replays included).
    pub status: String,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint's last answer (when it answered), or why it failed.
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub endpoint_id: Uuid,
    pub url: String,
}

/// The agency's latest deliveries, newest first.
pub async fn deliveries(
    conn: &mut PgConnection,
    agent_id: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, m.type AS event_type, d.message_id, d.endpoint_id, e.url, d.attempts,
                d.status, d.last_status_code, d.last_error, d.last_attempt_at, d.created_at
           FROM webhook_deliveries d
           JOIN webhook_messages m ON m.id = d.message_id
           JOIN webhook_endpoints e ON e.id = d.endpoint_id
          WHERE d.agent_id = $1
          ORDER BY d.created_at DESC, d.id LIMIT $2",
    )
    .bind(agent_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Sets deliveries back to pending for another try (the same `webhook-id`) and queues each:
/// the one `id`, or every failed one (of `agent_id`, when given) created since `since`. Only a
/// delivery to a live endpoint is replayed. The deliveries replayed.
pub async fn replay(
    conn: &mut PgConnection,
    id: Option<Uuid>,
    agent_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid, bool, i32)> = sqlx::query_as(
        "UPDATE webhook_deliveries d SET status = 'pending'
           FROM webhook_endpoints e
          WHERE e.id = d.endpoint_id AND e.removed_at IS NULL AND e.disabled_at IS NULL
            AND ($1::uuid IS NULL OR d.id = $1)
            AND ($2::uuid IS NULL OR d.agent_id = $2)
            AND ($3::timestamptz IS NULL OR (d.status = 'failed' AND d.created_at >= $3))
            AND d.status <> 'pending'
         RETURNING d.id, e.slow, d.attempts",
    )
    .bind(id)
    .bind(agent_id)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    for (delivery_id, slow, attempts) in &rows {
        queue_attempt(conn, *delivery_id, *slow, *attempts, None).await?;
    }
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// `call.ended` for the agency's call (by Vapi's id), as recorded in this transaction: once per
/// call, whichever path (the report, the daily sync) recorded its end first.
pub async fn call_ended(
    conn: &mut PgConnection,
    agent_id: Uuid,
    vapi_call_id: &str,
) -> Result<usize, sqlx::Error> {
    let row: Option<(Uuid, Value)> = sqlx::query_as(
        "SELECT c.id, jsonb_build_object(
                    'call_id', c.id, 'vapi_call_id', c.vapi_call_id,
                    'customer_number', c.customer_number, 'agency_number', a.phone_number,
                    'started_at', c.started_at, 'ended_at', c.ended_at,
                    'duration_seconds', c.duration_seconds, 'ended_reason', c.ended_reason,
                    'lead_id', c.lead_id, 'summary', cc.summary,
                    'structured_data', cc.structured_data, 'recording_url', cc.recording_url)
           FROM calls c JOIN agents a ON a.id = c.agent_id
           LEFT JOIN call_content cc ON cc.call_id = c.id
          WHERE c.agent_id = $1 AND c.vapi_call_id = $2",
    )
    .bind(agent_id)
    .bind(vapi_call_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((call_id, data)) = row else {
        return Ok(0);
    };
    let id = format!("msg_call_ended_{}", call_id.simple());
    emit(conn, agent_id, &id, "call.ended", data).await
}

/// `invoice.finalized` for each of `invoices` (in the transaction that froze them).
pub async fn invoices_finalized(
    conn: &mut PgConnection,
    invoices: &[Uuid],
) -> Result<usize, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, Value)> = sqlx::query_as(
        "SELECT i.id, i.agent_id, jsonb_build_object(
                    'invoice_id', i.id, 'period', to_char(i.period_start, 'YYYY-MM'),
                    'total_usd', to_char(i.total_usd, 'FM999999999990.00'),
                    'finalized_at', i.finalized_at,
                    'lines', COALESCE((SELECT jsonb_agg(jsonb_build_object(
                                 'kind', l.kind, 'metric_type', l.metric_type,
                                 'description', l.description, 'quantity', l.quantity::text,
                                 'unit_price_usd', l.unit_price_usd::text,
                                 'amount_usd', to_char(l.amount_usd, 'FM999999999990.00'))
                                 ORDER BY l.position)
                               FROM invoice_lines l WHERE l.invoice_id = i.id), '[]'::jsonb))
           FROM invoices i WHERE i.id = ANY($1)",
    )
    .bind(invoices)
    .fetch_all(&mut *conn)
    .await?;
    let mut made = 0;
    for (invoice_id, agent_id, data) in rows {
        let id = format!("msg_invoice_finalized_{}", invoice_id.simple());
        made += emit(conn, agent_id, &id, "invoice.finalized", data).await?;
    }
    Ok(made)
}
