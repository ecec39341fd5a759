//! Spend caps: an agency's monthly cap on usage charges (the subscription and the setup fee are
//! not usage), per billing-zone month; the admission of billable tool calls under a `block`
//! cap; and the 50/80/100% notices, each recorded once per month ([`crossings`]).
//!
//! Admission is what keeps usage within one tool call of the cap however many calls arrive at
//! once: under the agency's advisory lock, in the transaction that queues the tool call, the
//! month's usage plus the calls already admitted and not yet metered (`usage_cap_holds`) is
//! read in one statement; below the cap the call is admitted and held, at or past it refused.
//! The usage row that later replaces a hold is written by the metering transaction (one
//! snapshot sees either the hold or the row, never both or neither), so the last call admitted
//! is the only one that can cross the cap.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::money::{calendar::Month, usd};

/// Percentages of the cap at which the agency and the operator hear of it.
pub const THRESHOLDS: [i32; 3] = [50, 80, 100];

/// How long a hold counts without its usage row (its job failed for good, or is still retrying).
const HOLD_COUNTS_FOR: &str = "1 hour";

/// The month's usage charges of `a.id` (the agents row `a`), in the month `$2`..`$3`.
const USAGE: &str = "COALESCE((SELECT sum(u.cost_usd) FROM agent_usage_metrics u
                     WHERE u.agent_id = a.id AND u.occurred_at >= $2 AND u.occurred_at < $3
                       AND u.metric_type NOT IN ('subscription', 'setup_fee')), 0)";

/// What an agency may spend on usage in a month, and what happens at the cap.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CapStatus {
    pub agent_id: Uuid,
    pub agency_name: String,
    pub cap_usd: Decimal,
    /// `alert` (notices only) or `block` (billable tool calls refused at the cap).
    pub cap_action: String,
    /// This month's usage charges so far, unrounded.
    pub usage_usd: Decimal,
    /// The highest threshold noticed this month (50, 80, 100), if any.
    pub noticed: Option<i32>,
}

impl CapStatus {
    /// Usage as a share of the cap, in whole percent (rounded down).
    pub fn percent(&self) -> Decimal {
        if self.cap_usd.is_zero() {
            return Decimal::ZERO;
        }
        (self.usage_usd * Decimal::ONE_HUNDRED / self.cap_usd).floor()
    }

    /// `$12.34 of $50.00 (24%, block)`.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} ({}%, {})",
            usd(self.usage_usd),
            usd(self.cap_usd),
            self.percent(),
            self.cap_action
        )
    }
}

/// The month containing `at` in `tz`: (first day, start, end).
fn month_of(at: DateTime<Utc>, tz: chrono_tz::Tz) -> (NaiveDate, DateTime<Utc>, DateTime<Utc>) {
    let month = Month::containing(at, tz);
    (month.first_day, month.start(tz), month.next().start(tz))
}

/// The capped agencies among `agents` (every capped agency when `None`; what the connection's
/// role may see), with their usage in the month containing `at`.
pub async fn status(
    conn: &mut PgConnection,
    agents: Option<&[Uuid]>,
    at: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<Vec<CapStatus>, sqlx::Error> {
    let (month, start, end) = month_of(at, tz);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT a.id AS agent_id, a.agency_name, a.usage_cap_usd AS cap_usd, a.cap_action,
                {USAGE} AS usage_usd,
                (SELECT max(n.threshold) FROM usage_cap_notices n
                  WHERE n.agent_id = a.id AND n.month = $4) AS noticed
           FROM agents a
          WHERE a.usage_cap_usd IS NOT NULL AND ($1::uuid[] IS NULL OR a.id = ANY($1))
          ORDER BY a.agency_name, a.id"
    )))
    .bind(agents)
    .bind(start)
    .bind(end)
    .bind(month)
    .fetch_all(conn)
    .await
}

/// A billable tool call's fate under its agency's cap.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// No `block` cap, or the tool costs nothing: nothing held.
    Free,
    /// Admitted (now, or earlier: a redelivered call) and held until it is metered.
    Admitted,
    /// The month's usage with the calls in flight has reached the cap.
    Refused {
        usage_usd: Decimal,
        cap_usd: Decimal,
    },
}

/// Admits (or refuses) the tool call `key` of `metric` for `agent_id` at `at`. `conn` must be in
/// the transaction that queues the call: the advisory lock and the hold commit with it.
pub async fn admit(
    conn: &mut PgConnection,
    agent_id: Uuid,
    metric: &str,
    key: &str,
    at: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<Admission, sqlx::Error> {
    let (cap, price): (Option<Decimal>, Option<Decimal>) = sqlx::query_as(
        "SELECT CASE WHEN a.cap_action = 'block' THEN a.usage_cap_usd END,
                (SELECT p.unit_price_usd FROM price_in_force(a.id, $2, $3) p)
           FROM agents a WHERE a.id = $1",
    )
    .bind(agent_id)
    .bind(metric)
    .bind(at.with_timezone(&tz).date_naive())
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or((None, None));
    let (Some(cap), Some(price)) = (cap, price) else {
        return Ok(Admission::Free);
    };
    if price <= Decimal::ZERO {
        return Ok(Admission::Free);
    }
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('usage_cap:' || $1::text, 0))")
        .bind(agent_id)
        .execute(&mut *conn)
        .await?;
    let (_, start, end) = month_of(at, tz);
    let (known, spent): (bool, Decimal) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM usage_cap_holds h
                         WHERE h.agent_id = a.id AND h.metric_type = $4 AND h.idempotency_key = $5)
                OR EXISTS (SELECT 1 FROM agent_usage_metrics u
                            WHERE u.agent_id = a.id AND u.metric_type = $4
                              AND u.idempotency_key = $5),
                {USAGE} + COALESCE((
                    SELECT sum(h.amount_usd) FROM usage_cap_holds h
                     WHERE h.agent_id = a.id
                       AND h.created_at > $6::timestamptz - interval '{HOLD_COUNTS_FOR}'
                       AND NOT EXISTS (SELECT 1 FROM agent_usage_metrics u
                                        WHERE u.agent_id = h.agent_id
                                          AND u.metric_type = h.metric_type
                                          AND u.idempotency_key = h.idempotency_key)), 0)
           FROM agents a WHERE a.id = $1"
    )))
    .bind(agent_id)
    .bind(start)
    .bind(end)
    .bind(metric)
    .bind(key)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    if known {
        return Ok(Admission::Admitted);
    }
    if spent >= cap {
        return Ok(Admission::Refused {
            usage_usd: spent,
            cap_usd: cap,
        });
    }
    sqlx::query(
        "INSERT INTO usage_cap_holds (agent_id, metric_type, idempotency_key, amount_usd, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(agent_id)
    .bind(metric)
    .bind(key)
    .bind(price)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(Admission::Admitted)
}

/// A threshold newly crossed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Crossing {
    pub agent_id: Uuid,
    pub agency_name: String,
    pub month: NaiveDate,
    pub threshold: i32,
    pub usage_usd: Decimal,
    pub cap_usd: Decimal,
    pub cap_action: String,
}

/// Records the thresholds that the capped agencies among `agents` have reached in the month
/// containing `at` and that were not yet recorded that month; those are returned (each one
/// once, however many transactions cross it at once). Runs in the transaction that wrote the
/// usage, so a notice exists exactly when the usage that crossed it does.
pub async fn crossings(
    conn: &mut PgConnection,
    agents: &[Uuid],
    at: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<Vec<Crossing>, sqlx::Error> {
    if agents.is_empty() {
        return Ok(Vec::new());
    }
    let (month, start, end) = month_of(at, tz);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH spent AS (
             SELECT a.id, a.agency_name, a.usage_cap_usd AS cap, a.cap_action, {USAGE} AS usage
               FROM agents a WHERE a.id = ANY($1) AND a.usage_cap_usd IS NOT NULL),
         crossed AS (
             INSERT INTO usage_cap_notices (agent_id, month, threshold, usage_usd, cap_usd)
             SELECT s.id, $4, t, s.usage, s.cap FROM spent s, unnest($5::int[]) AS t
              WHERE s.usage * 100 >= s.cap * t
             ON CONFLICT DO NOTHING
             RETURNING agent_id, month, threshold, usage_usd, cap_usd)
         SELECT c.agent_id, s.agency_name, c.month, c.threshold, c.usage_usd, c.cap_usd,
                s.cap_action
           FROM crossed c JOIN spent s ON s.id = c.agent_id
          ORDER BY c.agent_id, c.threshold"
    )))
    .bind(agents)
    .bind(start)
    .bind(end)
    .bind(month)
    .bind(THRESHOLDS.as_slice())
    .fetch_all(conn)
    .await
}

/// Forgets holds older than a day (metered or not, they no longer count).
pub async fn prune_holds(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    super::prune_day_old(conn, "usage_cap_holds").await
}
