//! Drafts: every billable agent's invoice for a month, built set-based from the ledger.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Month,
    lines::{LineRows, UsageSum, build_lines, total},
};
use crate::store::usage::metric;

/// What happened to one agent's invoice in a rollup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollupOutcome {
    pub agent_id: Uuid,
    pub invoice_id: Uuid,
    pub total: Decimal,
    /// `false` when the invoice was already finalized and left untouched.
    pub rebuilt: bool,
}

/// Agents billable in `month` (the rule is SQL's `billable_in`), optionally one by email.
pub async fn billable_agents(
    conn: &mut PgConnection,
    month: Month,
    only_email: Option<&str>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM agents
          WHERE billable_in(id, billing_starts_on, cancelled_on, $1)
            AND ($2::text IS NULL OR email = $2)
          ORDER BY id",
    )
    .bind(month.first_day)
    .bind(only_email)
    .fetch_all(conn)
    .await
}

/// The ledger's watermark: once this returns, every usage row created at or before it is
/// committed, and every row committed later was created after it. A SHARE lock waits for the
/// transactions metering right now and holds new ones back for the moment it takes to read the
/// clock (`created_at` is the insert's `clock_timestamp()`); nothing waits on the rollup itself.
pub async fn ledger_cut(pool: &PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '60s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("LOCK TABLE agent_usage_metrics IN SHARE MODE")
        .execute(&mut *tx)
        .await?;
    let cut = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(cut)
}

/// Builds (or rebuilds) every billable agent's draft for `month` as of now: set-based, 500
/// agents per transaction, so a month of millions of usage rows costs about one `GROUP BY`.
pub async fn rollup(
    pool: &PgPool,
    month: Month,
    tz: Tz,
    only_email: Option<&str>,
) -> Result<Vec<RollupOutcome>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let agents = billable_agents(&mut conn, month, only_email).await?;
    drop(conn);
    let cut = ledger_cut(pool).await?;
    let ledger = Ledger::read(pool, &agents, month, tz, cut).await?;
    let mut outcomes = Vec::with_capacity(agents.len());
    for chunk in agents.chunks(CHUNK) {
        let mut tx = pool.begin().await?;
        outcomes.extend(rollup_agents(&mut tx, chunk, month, tz, &ledger).await?);
        tx.commit().await?;
    }
    Ok(outcomes)
}

/// The month's usage as the drafts will hold it, read in one pass over the ledger for every
/// agent before the per-chunk transactions (a scan per chunk would multiply the cost). Rows up to
/// the watermark never change, so only each agent's coverage can move meanwhile (a finalize of
/// another month for it); each chunk re-reads its agents' coverage under their locks and reads
/// again, by index, for any agent whose coverage moved.
pub(super) struct Ledger {
    pub(super) cut: DateTime<Utc>,
    coverage: Vec<Coverage>,
    held: Vec<Held>,
}

impl Ledger {
    pub(super) async fn read(
        pool: &PgPool,
        agents: &[Uuid],
        month: Month,
        tz: Tz,
        cut: DateTime<Utc>,
    ) -> Result<Ledger, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        // Only our constants are spliced in; the values are bound.
        let coverage: Vec<Coverage> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH {COVERAGE} SELECT ctx.id AS agent_id, {HOLDS} AS holds, {LATE_AFTER} AS late_after,
                    {LATE_ALL} AS late_all, ctx.starts_at, ctx.ends_at
               FROM ctx"
        )))
        .bind(agents)
        .bind(month.first_day)
        .bind(month.start(tz))
        .bind(month.next().start(tz))
        .fetch_all(&mut *conn)
        .await?;
        let held = held_rows_from(&mut conn, &coverage, cut).await?;
        Ok(Ledger {
            cut,
            coverage,
            held,
        })
    }
}

/// Each agent's open month (the one after its latest finalized invoice, or its first billable
/// month), the watermark of that latest finalized invoice, and where month `$2` starts and ends
/// for it: where its invoice for the billable month before ended (made in whatever zone that one
/// was), else `$3`, the month's start in the zone in force; and where its invoice for the next
/// billable month starts, if one exists, else `$4`, the month's end in the zone in force. So the
/// edge between two billable months is set by whichever of their invoices was made first, and a
/// change of `BILLING_TIMEZONE` neither bills a row on two invoices (a draft made after the
/// change next to one made before it) nor leaves one between them. `$1` agents.
const COVERAGE: &str = "ctx AS (
     SELECT a.id,
            COALESCE(billable_from(a.id, (max(f.period_start) + interval '1 month')::date),
                     first_billable_month(a.billing_starts_on)) AS open_month,
            COALESCE(max(f.usage_through), '-infinity') AS billed_through,
            COALESCE((SELECT p.ends_at FROM invoices p
                       WHERE p.agent_id = a.id AND p.period_start < $2 AND p.status <> 'void'
                         AND billable_from(a.id, (p.period_start + interval '1 month')::date) = $2
                       ORDER BY p.period_start DESC LIMIT 1), $3) AS starts_at,
            COALESCE((SELECT n.starts_at FROM invoices n
                       WHERE n.agent_id = a.id AND n.period_start > $2 AND n.status <> 'void'
                         AND n.period_start = billable_from(a.id, ($2 + interval '1 month')::date)
                       ORDER BY n.period_start LIMIT 1), $4) AS ends_at
       FROM agents a
       LEFT JOIN invoices f ON f.agent_id = a.id AND f.status = 'finalized'
      WHERE a.id = ANY($1)
      GROUP BY a.id)";
/// Whether month `$2` holds anything (not before the open month).
const HOLDS: &str = "($2 >= ctx.open_month)";
/// Late rows held when created after this (finite watermarks only).
const LATE_AFTER: &str = "(CASE WHEN $2 = ctx.open_month AND isfinite(ctx.billed_through)
                               THEN ctx.billed_through END)";
/// Every earlier row is held (the open month with nothing finalized before it).
const LATE_ALL: &str = "($2 = ctx.open_month AND ctx.billed_through = '-infinity')";

/// Up to this many agents, a rollup reads their rows by index rather than scanning the month.
const FEW_AGENTS: usize = 50;

/// Agents per rollup or finalize transaction.
pub(super) const CHUNK: usize = 500;

/// Per-agent advisory locks on invoices, taken in id order so concurrent rollups and finalizes
/// cannot deadlock; they converge on one invoice and one setup fee per agent.
pub(super) async fn lock_agents(tx: &mut PgConnection, agents: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('invoice:' || id::text, 0))
           FROM unnest($1::uuid[]) AS id ORDER BY id",
    )
    .bind(agents)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The drafts of `agents` for `month`, holding the ledger up to `cut`, on the caller's
/// transaction. Finalized invoices are left as they are.
///
/// What a draft holds follows the agent's *open month* (the month after its latest finalized
/// invoice, or its first billable month): the open month holds its own usage and every earlier
/// row not held by a finalized invoice (late usage, as adjustments); a later month holds only its
/// own usage; a month before the open one holds nothing (its usage was billed, or waits on the
/// open month). The rule is written once, as SQL's `invoice_holds`.
pub(super) async fn rollup_agents(
    tx: &mut PgConnection,
    agents: &[Uuid],
    month: Month,
    tz: Tz,
    ledger: &Ledger,
) -> Result<Vec<RollupOutcome>, sqlx::Error> {
    let cut = ledger.cut;
    let mut agents = agents.to_vec();
    agents.sort_unstable();
    lock_agents(tx, &agents).await?;
    let (start, end) = (month.start(tz), month.next().start(tz));
    sqlx::query(
        "INSERT INTO invoices (agent_id, period_start, period_end, starts_at, ends_at, time_zone)
         SELECT id, $2, $3, $4, $5, $6 FROM unnest($1::uuid[]) AS id
         ON CONFLICT (agent_id, period_start) DO NOTHING",
    )
    .bind(&agents)
    .bind(month.first_day)
    .bind(month.next().first_day)
    .bind(start)
    .bind(end)
    .bind(tz.name())
    .execute(&mut *tx)
    .await?;
    let heads: Vec<(Uuid, Uuid, String, Decimal)> = sqlx::query_as(
        "SELECT agent_id, id, status, total_usd FROM invoices
          WHERE agent_id = ANY($1) AND period_start = $2 ORDER BY agent_id FOR UPDATE",
    )
    .bind(&agents)
    .bind(month.first_day)
    .fetch_all(&mut *tx)
    .await?;
    let drafts: Vec<Uuid> = heads
        .iter()
        .filter(|h| h.2 == "draft")
        .map(|h| h.0)
        .collect();

    // What each draft holds: its month's bounds, the watermark, and which late rows.
    let coverage: Vec<Coverage> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH {COVERAGE}
         UPDATE invoices i
            SET starts_at = ctx.starts_at, ends_at = ctx.ends_at, time_zone = $6,
                usage_through = CASE WHEN {HOLDS} THEN $5 ELSE '-infinity' END,
                late_after = CASE WHEN $2 = ctx.open_month THEN ctx.billed_through
                                  ELSE 'infinity' END
           FROM ctx
          WHERE i.agent_id = ctx.id AND i.period_start = $2 AND i.status = 'draft'
         RETURNING i.agent_id, {HOLDS} AS holds, {LATE_AFTER} AS late_after, {LATE_ALL} AS late_all,
                   ctx.starts_at, ctx.ends_at"
    )))
    .bind(&drafts)
    .bind(month.first_day)
    .bind(start)
    .bind(end)
    .bind(cut)
    .bind(tz.name())
    .fetch_all(&mut *tx)
    .await?;
    // Read in the rollup's one pass, unless the agent's coverage moved since.
    let moved: Vec<Coverage> = coverage
        .into_iter()
        .filter(|c| !ledger.coverage.contains(c))
        .collect();
    let mut held: Vec<Held> = ledger
        .held
        .iter()
        .filter(|h| drafts.contains(&h.1) && !moved.iter().any(|m| m.agent_id == h.1))
        .cloned()
        .collect();
    if !moved.is_empty() {
        held.extend(held_rows_from(tx, &moved, cut).await?);
    }
    let (late, usage): (Vec<_>, Vec<_>) = held.into_iter().partition(|h| h.0);
    let sums = |rows: Vec<Held>| -> Vec<UsageSum> {
        rows.into_iter()
            .map(|(_, a, m, p, q, n)| (a, m, p, q, n))
            .collect()
    };
    let (usage, late) = (sums(usage), sums(late));
    // Fixed prices in force on the month's first day: the agent's own beats the default.
    let fixed: Vec<(Uuid, String, Decimal)> = sqlx::query_as(
        "SELECT a.id, p.metric_type, p.unit_price_usd
           FROM unnest($1::uuid[]) AS a(id)
          CROSS JOIN (VALUES ('subscription'), ('setup_fee')) AS m(metric)
           JOIN LATERAL price_in_force(a.id, m.metric, $2) p ON true
          ORDER BY a.id, p.metric_type",
    )
    .bind(&drafts)
    .bind(month.first_day)
    .fetch_all(&mut *tx)
    .await?;
    // The setup fee belongs to the agent's first billable month, whatever order rollups run in,
    // and is billed once ever: agents starting in another month, or already billed it, get none.
    let fee_billed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT a.id FROM agents a WHERE a.id = ANY($1)
            AND (first_billable_month(a.billing_starts_on) <> $2
                 OR EXISTS (SELECT 1 FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
                             WHERE l.agent_id = a.id AND l.kind = 'setup_fee' AND i.period_start <> $2))",
    )
    .bind(&drafts)
    .bind(month.first_day)
    .fetch_all(&mut *tx)
    .await?;

    let mut outcomes = Vec::with_capacity(heads.len());
    let mut rows = LineRows::default();
    for (agent_id, invoice_id, status, old_total) in heads {
        if status != "draft" {
            outcomes.push(RollupOutcome {
                agent_id,
                invoice_id,
                total: old_total,
                rebuilt: false,
            });
            continue;
        }
        let price = |m: &str| {
            fixed
                .iter()
                .find(|f| f.0 == agent_id && f.1 == m)
                .map(|f| f.2)
        };
        let fee = price(metric::SETUP_FEE).filter(|_| !fee_billed.contains(&agent_id));
        let own = |sums: &[UsageSum]| -> Vec<UsageSum> {
            sums.iter().filter(|u| u.0 == agent_id).cloned().collect()
        };
        let lines = build_lines(
            month,
            price(metric::SUBSCRIPTION),
            fee,
            &own(&usage),
            &own(&late),
        );
        let total = total(&lines);
        rows.push(agent_id, invoice_id, &lines, total);
        outcomes.push(RollupOutcome {
            agent_id,
            invoice_id,
            total,
            rebuilt: true,
        });
    }
    rows.write(tx).await?;
    Ok(outcomes)
}

/// Rows a draft holds, summed: (late?, agent, metric, price, quantity, rows).
type Held = (bool, Uuid, String, Decimal, Decimal, i64);

/// What one draft holds of the ledger, as its invoice row records it.
#[derive(sqlx::FromRow, PartialEq)]
struct Coverage {
    agent_id: Uuid,
    /// `false` for a month before the agent's open month: it holds nothing.
    holds: bool,
    /// Late rows held when created after this (the previous finalize's watermark).
    late_after: Option<DateTime<Utc>>,
    /// Every earlier row is held (the agent's first month: usage from before billing started).
    late_all: bool,
    /// Where the month starts for the agent (see [`COVERAGE`]).
    starts_at: DateTime<Utc>,
    /// Where the month ends for the agent (see [`COVERAGE`]).
    ends_at: DateTime<Utc>,
}

/// [`held_rows`] for drafts that may start or end at different instants (after a change of
/// zone): one read per pair of bounds, in the common case one in all.
async fn held_rows_from(
    tx: &mut PgConnection,
    coverage: &[Coverage],
    cut: DateTime<Utc>,
) -> Result<Vec<Held>, sqlx::Error> {
    let mut bounds: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        coverage.iter().map(|c| (c.starts_at, c.ends_at)).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut held = Vec::new();
    for (start, end) in bounds {
        let group: Vec<&Coverage> = coverage
            .iter()
            .filter(|c| (c.starts_at, c.ends_at) == (start, end))
            .collect();
        held.extend(held_rows(tx, &group, start, end, cut).await?);
    }
    held.sort();
    Ok(held)
}

/// The rows each draft holds, by `invoice_holds` written with plain parameters so that a month
/// costs one scan of the ledger like a plain `GROUP BY` (a join on the invoices' columns costs
/// about twice that). Drafts are grouped by where their late rows start: the common watermark
/// (the previous month's finalize) rides along in the month's scan; agents in their first month
/// (every earlier row) and any other watermark (a finalize run for one agent) are read by index.
async fn held_rows(
    tx: &mut PgConnection,
    coverage: &[&Coverage],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    cut: DateTime<Utc>,
) -> Result<Vec<Held>, sqlx::Error> {
    let holding: Vec<&Coverage> = coverage.iter().copied().filter(|c| c.holds).collect();
    let agents = |f: &dyn Fn(&Coverage) -> bool| -> Vec<Uuid> {
        holding
            .iter()
            .filter(|c| f(c))
            .map(|c| c.agent_id)
            .collect()
    };
    let mut watermarks: Vec<DateTime<Utc>> = holding.iter().filter_map(|c| c.late_after).collect();
    watermarks.sort_unstable();
    let common = watermarks
        .chunk_by(|a, b| a == b)
        .max_by_key(|run| run.len())
        .and_then(|run| run.first().copied());
    // A few agents (one agency's invoice) are read by index; many, in one scan of the month
    // without a per-row membership test (rows of other agents are dropped here instead).
    let all = agents(&|_| true);
    let few = all.len() <= FEW_AGENTS;
    let month_scan = if few {
        "SELECT u.occurred_at < $2, u.agent_id, u.metric_type, u.unit_price_usd, sum(u.quantity), count(*)
           FROM agent_usage_metrics u
          WHERE u.agent_id = ANY($1) AND u.occurred_at < $3 AND u.created_at <= $4
            AND (u.occurred_at >= $2 OR (u.created_at > $5 AND u.agent_id = ANY($6)))
          GROUP BY 1, 2, 3, 4"
    } else {
        "SELECT u.occurred_at < $2, u.agent_id, u.metric_type, u.unit_price_usd, sum(u.quantity), count(*)
           FROM agent_usage_metrics u
          WHERE cardinality($1::uuid[]) > 0 AND u.occurred_at < $3 AND u.created_at <= $4
            AND (u.occurred_at >= $2 OR (u.created_at > $5 AND u.agent_id = ANY($6)))
          GROUP BY 1, 2, 3, 4"
    };
    let mut held: Vec<Held> = sqlx::query_as(month_scan)
        .bind(&all)
        .bind(start)
        .bind(end)
        .bind(cut)
        .bind(common)
        .bind(agents(&|c| {
            c.late_after.is_some() && c.late_after == common
        }))
        .fetch_all(&mut *tx)
        .await?;
    if !few {
        let wanted: std::collections::HashSet<Uuid> = all.iter().copied().collect();
        held.retain(|h| wanted.contains(&h.1));
    }
    watermarks.dedup();
    let mut others: Vec<(Vec<Uuid>, Option<DateTime<Utc>>)> = vec![(agents(&|c| c.late_all), None)];
    for w in watermarks.into_iter().filter(|w| Some(*w) != common) {
        others.push((agents(&|c| c.late_after == Some(w)), Some(w)));
    }
    for (group, after) in others.into_iter().filter(|o| !o.0.is_empty()) {
        held.extend(
            sqlx::query_as::<_, Held>(
                "SELECT true, agent_id, metric_type, unit_price_usd, sum(quantity), count(*)
                   FROM agent_usage_metrics
                  WHERE agent_id = ANY($1) AND occurred_at < $2 AND created_at <= $3
                    AND ($4::timestamptz IS NULL OR created_at > $4)
                  GROUP BY 1, 2, 3, 4",
            )
            .bind(&group)
            .bind(start)
            .bind(cut)
            .bind(after)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    held.sort();
    Ok(held)
}
