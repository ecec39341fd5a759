//! Finalizing a month: in order, once the month is over, freezing what each invoice holds.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Month,
    rollup::{
        CHUNK, Ledger, RollupOutcome, billable_agents, ledger_cut, lock_agents, rollup_agents,
    },
};

/// Why a month could not be finalized.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    #[error("{0}")]
    Order(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Rebuilds and freezes `month`'s drafts as of one ledger watermark. Every usage row is then
/// held by exactly one invoice: rows created after the watermark for this month or earlier are
/// late usage, held by the next month's invoice as adjustments. Refused, naming the month, while
/// the month is still running or any earlier billable month of an agent is not final.
pub async fn finalize(
    pool: &PgPool,
    month: Month,
    tz: Tz,
    only_email: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<RollupOutcome>, FinalizeError> {
    finalize_for(pool, month, tz, only_email, now, false).await
}

/// [`finalize`]; with `stripe`, each invoice that asks for money is also marked for Stripe
/// (`stripe_push = 'pending'`) in the same transaction that freezes it
/// ([`crate::jobs::stripe`] sends it).
pub async fn finalize_for(
    pool: &PgPool,
    month: Month,
    tz: Tz,
    only_email: Option<&str>,
    now: DateTime<Utc>,
    stripe: bool,
) -> Result<Vec<RollupOutcome>, FinalizeError> {
    // Usage can still arrive for a month that has not ended: it cannot be closed yet.
    if !month.has_ended(tz, now) {
        return Err(FinalizeError::Order(format!(
            "{} has not ended yet in {tz}; a month is finalized after it ends",
            month.label()
        )));
    }
    let mut conn = pool.acquire().await?;
    let agents = billable_agents(&mut conn, month, only_email).await?;
    // Refuse before anything changes; checked again under each chunk's locks.
    check_order(&mut conn, &agents, month, None).await?;
    drop(conn);
    let cut = ledger_cut(pool).await?;
    let ledger = Ledger::read(pool, &agents, month, tz, cut).await?;
    let mut done = Vec::with_capacity(agents.len());
    for chunk in agents.chunks(CHUNK) {
        let mut tx = pool.begin().await?;
        lock_agents(&mut tx, chunk).await?;
        check_order(&mut tx, chunk, month, Some(cut)).await?;
        let outcomes = rollup_agents(&mut tx, chunk, month, tz, &ledger).await?;
        let rebuilt: Vec<Uuid> = outcomes
            .iter()
            .filter(|o| o.rebuilt)
            .map(|o| o.invoice_id)
            .collect();
        sqlx::query(
            "UPDATE invoices SET status = 'finalized', finalized_at = clock_timestamp(), updated_at = now(),
                    stripe_push = CASE WHEN $2 AND total_usd > 0 THEN 'pending' END
              WHERE id = ANY($1)",
        )
        .bind(&rebuilt)
        .bind(stripe)
        .execute(&mut *tx)
        .await?;
        crate::store::outbound::invoices_finalized(&mut tx, &rebuilt).await?;
        tx.commit().await?;
        done.extend(outcomes);
    }
    Ok(done)
}

/// Refuses `month` for `agents` when an earlier billable month (from the first) is missing or a
/// draft, when a later month is already final, or (given the run's watermark) when another
/// finalize with a later watermark got there first.
async fn check_order(
    conn: &mut PgConnection,
    agents: &[Uuid],
    month: Month,
    cut: Option<DateTime<Utc>>,
) -> Result<(), FinalizeError> {
    let open: Option<(String, String)> = sqlx::query_as(
        "SELECT a.email, to_char(m, 'YYYY-MM')
           FROM agents a
          CROSS JOIN LATERAL generate_series(first_billable_month(a.billing_starts_on),
                                             $2::date - interval '1 month', interval '1 month') AS m
          WHERE a.id = ANY($1)
            AND billable_in(a.id, a.billing_starts_on, a.cancelled_on, m::date)
            AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.agent_id = a.id
                               AND i.period_start = m::date AND i.status = 'finalized')
          ORDER BY m, a.email LIMIT 1",
    )
    .bind(agents)
    .bind(month.first_day)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((email, earlier)) = open {
        return Err(FinalizeError::Order(format!(
            "{email}: {earlier} is not finalized (missing or still a draft); finalize it before {}",
            month.label()
        )));
    }
    let after: Option<(String, String)> = sqlx::query_as(
        "SELECT a.email, to_char(i.period_start, 'YYYY-MM')
           FROM invoices i JOIN agents a ON a.id = i.agent_id
          WHERE i.agent_id = ANY($1) AND i.status = 'finalized'
            AND (i.period_start > $2 OR (i.period_start < $2 AND i.usage_through >= $3))
            AND NOT EXISTS (SELECT 1 FROM invoices s WHERE s.agent_id = i.agent_id
                               AND s.period_start = $2 AND s.status = 'finalized')
          ORDER BY i.period_start LIMIT 1",
    )
    .bind(agents)
    .bind(month.first_day)
    .bind(cut)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((email, other)) = after {
        return Err(FinalizeError::Order(format!(
            "{email}: {other} was finalized after {} or while this ran; run it again",
            month.label()
        )));
    }
    Ok(())
}
