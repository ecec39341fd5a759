//! An agency's life in one place: its states, the moves between them, their dates and what each
//! state allows. Every caller (the CLI, the webhook, tool calls, metering, tokens, the portal)
//! asks this module; every move is audited in `agent_lifecycle_events` with who made it.
//!
//! States, read at an instant in the billing zone:
//! - `active`: in service, billed.
//! - `paused`: service suspended (calls answered with an error, tool calls refused), still billed:
//!   a pause is the agency's choice to stop the line for a while, not to stop paying.
//! - `cancelled`: from the first instant of `cancelled_on` (a later date is a scheduled
//!   cancellation: the agency stays in service until then). Calls, tool calls, API tokens and
//!   Supabase tokens are refused; calls that start after it are stored and never metered; the
//!   portal shows its invoices, and nothing else, for [`INVOICE_ACCESS_MONTHS`] months.
//!
//! Billing (SQL's `billable_in(agent, starts, cancelled, month)`): the subscription is billed for
//! whole billing-zone months, from the month of `billing_starts_on` through the month holding
//! `cancelled_on`, except the months between a cancellation and a reactivation
//! (`agent_billing_gaps`). Whole months, not prorated: the plan is a monthly price, the month of a
//! cancellation is the month's service the agency chose to use, and an invoice line stays one
//! exact figure with nothing to round. The setup fee is billed once, in the first month.

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::money::calendar::{Month, day_start};

/// How long a cancelled agency may still sign in to read its invoices.
pub const INVOICE_ACCESS_MONTHS: u32 = 12;

/// An agency's state at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Paused,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Paused => "paused",
            State::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The instant service ends for an agency cancelled on `day`: the day's first instant in `tz`.
pub fn service_ends_at(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    day_start(day, tz)
}

/// The state of an agency with `status` and `cancelled_on` at `now`.
pub fn state(status: &str, cancelled_on: Option<NaiveDate>, now: DateTime<Utc>, tz: Tz) -> State {
    match cancelled_on {
        Some(day) if service_ends_at(day, tz) <= now => State::Cancelled,
        _ if status == "paused" => State::Paused,
        _ if status == "cancelled" => State::Cancelled,
        _ => State::Active,
    }
}

/// Whether an agency may answer calls and run tools at `now`.
pub fn in_service(
    status: &str,
    cancelled_on: Option<NaiveDate>,
    now: DateTime<Utc>,
    tz: Tz,
) -> bool {
    state(status, cancelled_on, now, tz) == State::Active
}

/// Whether usage that started at `started` is billable for an agency cancelled on `cancelled_on`
/// (a call that started before the cancellation is billed, whenever its report comes).
pub fn meters(cancelled_on: Option<NaiveDate>, started: DateTime<Utc>, tz: Tz) -> bool {
    cancelled_on.is_none_or(|day| started < service_ends_at(day, tz))
}

/// Whether a cancelled agency may still sign in to read its invoices at `now`.
pub fn invoices_readable(cancelled_on: Option<NaiveDate>, now: DateTime<Utc>, tz: Tz) -> bool {
    cancelled_on.is_none_or(|day| {
        day.checked_add_months(Months::new(INVOICE_ACCESS_MONTHS))
            .is_none_or(|until| now < service_ends_at(until, tz))
    })
}

/// SQL for "agents row `alias` is not cancelled at `now()`", the zone's name bound at `zone`
/// (e.g. `$2`): the same rule as [`state`], for queries that check a token or a user.
pub fn not_cancelled_sql(alias: &str, zone: &str) -> String {
    format!(
        "({alias}.status <> 'cancelled' AND ({alias}.cancelled_on IS NULL
              OR now() < ({alias}.cancelled_on::timestamp AT TIME ZONE {zone})))"
    )
}

/// A move in an agency's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    Pause,
    Resume,
    /// Cancel on a day (`None`: today in the billing zone); a future day schedules it.
    Cancel(Option<NaiveDate>),
    Reactivate,
    /// Move the day billing starts (the setup fee's month, the first subscription month).
    BillingStartsOn(NaiveDate),
}

impl Move {
    fn action(&self) -> &'static str {
        match self {
            Move::Pause => "pause",
            Move::Resume => "resume",
            Move::Cancel(_) => "cancel",
            Move::Reactivate => "reactivate",
            Move::BillingStartsOn(_) => "billing_starts_on",
        }
    }
}

/// Why a move was not made.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("no agent with email {0}")]
    NoAgent(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub agent_id: Uuid,
    pub from: State,
    pub to: State,
    /// The day the move takes effect (a cancellation's day, a reactivation's, a billing start).
    pub effective_on: NaiveDate,
    /// A human sentence: what happened and what it means for billing.
    pub summary: String,
}

/// The facts a move is decided on, read under the agent's row lock.
#[derive(sqlx::FromRow)]
struct Facts {
    id: Uuid,
    status: String,
    billing_starts_on: NaiveDate,
    cancelled_on: Option<NaiveDate>,
}

/// Makes `mv` for the agent with `email` at `now` (days read in `tz`), audited as `actor`: one
/// transaction, the agent's row locked, so two moves of one agency never interleave.
pub async fn apply(
    pool: &PgPool,
    email: &str,
    mv: Move,
    actor: &str,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<Moved, MoveError> {
    let mut tx = pool.begin().await?;
    let facts: Facts = sqlx::query_as(
        "SELECT id, status, billing_starts_on, cancelled_on FROM agents WHERE email = $1 FOR UPDATE",
    )
    .bind(email)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| MoveError::NoAgent(email.to_string()))?;
    let today = now.with_timezone(&tz).date_naive();
    let from = state(&facts.status, facts.cancelled_on, now, tz);
    let refuse = |why: String| MoveError::Refused(format!("{email}: {why}"));
    let (status, cancelled_on, billing_starts_on, effective_on, summary) = match &mv {
        Move::Pause => match from {
            State::Active => (
                "paused",
                facts.cancelled_on,
                facts.billing_starts_on,
                today,
                "paused: calls get an error answer and tool calls are refused; the subscription \
                 is still billed"
                    .to_string(),
            ),
            State::Paused => return Err(refuse("is already paused".into())),
            State::Cancelled => return Err(refuse(cancelled_why(facts.cancelled_on))),
        },
        Move::Resume => match from {
            State::Paused => (
                "active",
                facts.cancelled_on,
                facts.billing_starts_on,
                today,
                "resumed: back in service".to_string(),
            ),
            State::Active => return Err(refuse("is not paused".into())),
            State::Cancelled => return Err(refuse(cancelled_why(facts.cancelled_on))),
        },
        Move::Cancel(on) => {
            let on = on.unwrap_or(today);
            if let Some(day) = facts.cancelled_on {
                return Err(refuse(if from == State::Cancelled {
                    format!("was already cancelled on {day}")
                } else {
                    format!("a cancellation is already scheduled for {day}; reactivate to undo it")
                }));
            }
            let term_starts = term_start(&mut tx, facts.id, facts.billing_starts_on).await?;
            if on < term_starts {
                return Err(refuse(format!(
                    "cannot be cancelled on {on}, before its billing starts on {term_starts}"
                )));
            }
            if on < today
                && let Some(why) = past_cancellation_refusal(&mut tx, facts.id, on, tz).await?
            {
                return Err(refuse(why));
            }
            let status = if service_ends_at(on, tz) <= now {
                "cancelled"
            } else {
                facts.status.as_str()
            };
            let month = Month::containing(service_ends_at(on, tz), tz);
            let summary = if status == "cancelled" {
                format!(
                    "cancelled on {on}: out of service; billed through {month} (whole months); \
                     its invoices stay readable in the portal for {INVOICE_ACCESS_MONTHS} months"
                )
            } else {
                format!(
                    "cancellation scheduled for {on}: in service until then; billed through {month}"
                )
            };
            (
                status_str(status),
                Some(on),
                facts.billing_starts_on,
                on,
                summary,
            )
        }
        Move::Reactivate => {
            let Some(cancelled) = facts.cancelled_on else {
                return Err(refuse(format!(
                    "is {from}, not cancelled; nothing to reactivate"
                )));
            };
            let summary = if from == State::Cancelled {
                let (gone, back) = (
                    Month::containing(service_ends_at(cancelled, tz), tz),
                    Month::containing(now, tz),
                );
                if back > gone.next() {
                    sqlx::query(
                        "INSERT INTO agent_billing_gaps (agent_id, from_month, to_month)
                         VALUES ($1, $2, $3)",
                    )
                    .bind(facts.id)
                    .bind(gone.next().first_day)
                    .bind(back.first_day)
                    .execute(&mut *tx)
                    .await?;
                    format!(
                        "reactivated on {today}: billed again from {back} (not {} through {}), \
                         no second setup fee",
                        gone.next(),
                        back.previous()
                    )
                } else {
                    format!("reactivated on {today}: billing continues, no second setup fee")
                }
            } else {
                format!("the cancellation scheduled for {cancelled} is withdrawn")
            };
            let status = if from == State::Paused {
                "paused"
            } else {
                "active"
            };
            (status, None, facts.billing_starts_on, today, summary)
        }
        Move::BillingStartsOn(day) => {
            let finalized: Option<String> = sqlx::query_scalar(
                "SELECT to_char(min(period_start), 'YYYY-MM') FROM invoices
                  WHERE agent_id = $1 AND status = 'finalized'",
            )
            .bind(facts.id)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(first) = finalized {
                return Err(refuse(format!(
                    "its invoice for {first} is finalized; the day billing starts can no longer move"
                )));
            }
            if facts.cancelled_on.is_some_and(|c| *day > c) {
                return Err(refuse(format!(
                    "billing cannot start on {day}, after its cancellation on {}",
                    facts.cancelled_on.unwrap_or(*day)
                )));
            }
            let gaps: i64 =
                sqlx::query_scalar("SELECT count(*) FROM agent_billing_gaps WHERE agent_id = $1")
                    .bind(facts.id)
                    .fetch_one(&mut *tx)
                    .await?;
            if gaps > 0 {
                return Err(refuse(
                    "was cancelled and reactivated; its billing start can no longer move".into(),
                ));
            }
            (
                status_str(&facts.status),
                facts.cancelled_on,
                *day,
                *day,
                format!(
                    "billing starts on {day}: the setup fee and first subscription are {}'s",
                    Month::containing(service_ends_at(*day, tz), tz)
                ),
            )
        }
    };
    sqlx::query(
        "UPDATE agents SET status = $2, cancelled_on = $3, billing_starts_on = $4 WHERE id = $1",
    )
    .bind(facts.id)
    .bind(status)
    .bind(cancelled_on)
    .bind(billing_starts_on)
    .execute(&mut *tx)
    .await?;
    // Drafts of months the agency no longer pays for go (finalized invoices never change). A
    // billing start moved to an earlier month makes the drafts after the new first month stale
    // (none is final then; the next rollup rebuilds them): the old first month's held every
    // earlier row and the setup fee, and left in place it would share rows with the new first
    // month's draft and keep the fee from it. (Moved later, a remaining draft only holds less
    // until it is rebuilt.)
    let first_month = |day: NaiveDate| day.with_day(1).unwrap_or(day);
    let stale_after = match &mv {
        Move::BillingStartsOn(day) if first_month(*day) < first_month(facts.billing_starts_on) => {
            Some(first_month(*day))
        }
        _ => None,
    };
    sqlx::query(
        "WITH gone AS (
             SELECT i.id FROM invoices i JOIN agents a ON a.id = i.agent_id
              WHERE i.agent_id = $1 AND i.status = 'draft'
                AND (i.period_start > $2
                     OR NOT billable_in(a.id, a.billing_starts_on, a.cancelled_on, i.period_start))),
         lines AS (DELETE FROM invoice_lines WHERE invoice_id IN (SELECT id FROM gone))
         DELETE FROM invoices WHERE id IN (SELECT id FROM gone)",
    )
    .bind(facts.id)
    .bind(stale_after)
    .execute(&mut *tx)
    .await?;
    let to = state(status, cancelled_on, now, tz);
    sqlx::query(
        "INSERT INTO agent_lifecycle_events (agent_id, action, from_state, to_state, effective_on, actor)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(facts.id)
    .bind(mv.action())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(effective_on)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(agent.id = %facts.id, action = mv.action(), %from, %to, %effective_on, actor, "agency lifecycle move");
    Ok(Moved {
        agent_id: facts.id,
        from,
        to,
        effective_on,
        summary,
    })
}

fn status_str(status: &str) -> &'static str {
    match status {
        "paused" => "paused",
        "cancelled" => "cancelled",
        _ => "active",
    }
}

fn cancelled_why(on: Option<NaiveDate>) -> String {
    match on {
        Some(day) => format!("was cancelled on {day}; reactivate it first"),
        None => "is cancelled; reactivate it first".to_string(),
    }
}

/// The day the agency's current term began: its billing start, or its latest reactivation.
async fn term_start(
    conn: &mut PgConnection,
    agent: Uuid,
    billing_starts_on: NaiveDate,
) -> Result<NaiveDate, sqlx::Error> {
    let reactivated: Option<NaiveDate> = sqlx::query_scalar(
        "SELECT max(effective_on) FROM agent_lifecycle_events
          WHERE agent_id = $1 AND action = 'reactivate'",
    )
    .bind(agent)
    .fetch_one(conn)
    .await?;
    Ok(reactivated.map_or(billing_starts_on, |r| r.max(billing_starts_on)))
}

/// Why a cancellation dated in the past cannot be made, if it cannot: it is allowed only while
/// nothing was metered on or after its day and no finalized invoice covers a later month.
async fn past_cancellation_refusal(
    conn: &mut PgConnection,
    agent: Uuid,
    on: NaiveDate,
    tz: Tz,
) -> Result<Option<String>, sqlx::Error> {
    let ends = service_ends_at(on, tz);
    let used: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_usage_metrics WHERE agent_id = $1 AND occurred_at >= $2",
    )
    .bind(agent)
    .bind(ends)
    .fetch_one(&mut *conn)
    .await?;
    if used > 0 {
        return Ok(Some(format!(
            "cannot be cancelled on {on}: {used} usage row(s) occurred on or after that day"
        )));
    }
    let later: Option<String> = sqlx::query_scalar(
        "SELECT to_char(max(period_start), 'YYYY-MM') FROM invoices
          WHERE agent_id = $1 AND status = 'finalized' AND period_start > $2",
    )
    .bind(agent)
    .bind(Month::containing(ends, tz).first_day)
    .fetch_one(&mut *conn)
    .await?;
    Ok(later.map(|m| {
        format!("cannot be cancelled on {on}: its invoice for {m}, after that month, is finalized")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::Phoenix;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("day")
    }

    #[test]
    fn a_cancellation_takes_effect_when_its_day_begins_in_the_billing_zone() {
        let on = Some(day("2026-12-10"));
        // 06:59 UTC on the 10th is still the 9th in Phoenix.
        assert_eq!(
            state("active", on, at("2026-12-10T06:59:59Z"), Phoenix),
            State::Active
        );
        assert_eq!(
            state("active", on, at("2026-12-10T07:00:00Z"), Phoenix),
            State::Cancelled
        );
        assert_eq!(
            state("paused", on, at("2026-12-09T00:00:00Z"), Phoenix),
            State::Paused
        );
        assert_eq!(
            state("paused", None, at("2026-12-09T00:00:00Z"), Phoenix),
            State::Paused
        );
        assert!(!in_service(
            "paused",
            None,
            at("2026-12-09T00:00:00Z"),
            Phoenix
        ));
        assert!(meters(on, at("2026-12-10T06:59:59Z"), Phoenix));
        assert!(!meters(on, at("2026-12-10T07:00:00Z"), Phoenix));
        assert!(meters(None, at("2030-01-01T00:00:00Z"), Phoenix));
    }

    #[test]
    fn invoices_stay_readable_for_twelve_months() {
        let on = Some(day("2026-12-10"));
        assert!(invoices_readable(on, at("2027-12-10T06:59:59Z"), Phoenix));
        assert!(!invoices_readable(on, at("2027-12-10T07:00:00Z"), Phoenix));
        assert!(invoices_readable(None, at("2040-01-01T00:00:00Z"), Phoenix));
    }
}
