//! The ledger's daily totals (`usage_daily`, migration 0022): a period of usage read as its days
//! plus the rows created since the summary was last brought up to date, instead of every row in
//! the period. `prune_jobs` brings it up to date once a day.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::money::{self, calendar::day_start};

/// Usage per agent, period, metric and price: what a report needs of the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub agent_id: Uuid,
    /// The first day of the period the row adds up ([`Periods`]).
    pub period: NaiveDate,
    pub metric_type: String,
    pub unit_price_usd: Decimal,
    pub events: i64,
    pub quantity: Decimal,
    pub cost_usd: Decimal,
    /// The providers' reported costs (`provider_cost_usd`) of the rows that have one.
    pub provider_cost_usd: Decimal,
    /// The rows without a reported cost priced at the unit cost (`unit_cost_usd`) of the price in
    /// force on their day (`price_in_force`), unrounded; rows whose price has none add nothing.
    pub unit_cost_usd: Decimal,
    /// How many rows have a reported cost.
    pub events_provider_cost: i64,
    /// How many rows have none but their price has a unit cost.
    pub events_unit_cost: i64,
    /// How many rows have no cost at all (no reported cost, no unit cost in force).
    pub events_no_cost: i64,
}

impl Totals {
    /// What the usage cost us: the providers' reported costs, else the prices' unit costs.
    pub fn our_cost_usd(&self) -> Decimal {
        self.provider_cost_usd + self.unit_cost_usd
    }
}

/// How [`totals`] groups the days it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Periods {
    /// One period: all the days asked for.
    Whole,
    /// Calendar months.
    Months,
}

/// How far the summary reaches in `tz`: every ledger row created at or before it is in it, none
/// after; it only moves forward. `None` when nothing was summarized in that zone yet: readers
/// then read the ledger alone.
async fn through(conn: &mut PgConnection, tz: Tz) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let through: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT through FROM usage_daily_through WHERE time_zone = $1")
            .bind(tz.name())
            .fetch_optional(conn)
            .await?;
    Ok(through.flatten())
}

/// SQL for a ledger row's period: its month's first day in zone `zone` when `months`, else
/// `first` (parameters, e.g. `$7`, `$6`, `$4`). The zone conversion is skipped when not needed:
/// per row it would cost more than the rest of reading a month.
fn row_period(months: &str, zone: &str, first: &str) -> String {
    format!(
        "CASE WHEN {months} THEN (u.occurred_at AT TIME ZONE {zone})::date
                                 - (EXTRACT(DAY FROM u.occurred_at AT TIME ZONE {zone})::int - 1)
              ELSE {first} END"
    )
}

/// Usage that occurred on the days `[from, to)` in `tz`, per agent, period, metric and price
/// (agents without usage absent; as the tenant role, only its own), the same whenever the summary
/// was last brought up to date: its days, plus the ledger rows created after it (read per agent
/// by `agent_usage_metrics_late`). What the rows cost us is priced here: the providers' reported
/// costs, and for rows without one the unit cost of the price in force on their day in `tz`
/// (`price_in_force`, read now: a unit cost set later applies at once).
pub async fn totals(
    conn: &mut PgConnection,
    from: NaiveDate,
    to: NaiveDate,
    tz: Tz,
    periods: Periods,
) -> Result<Vec<Totals>, sqlx::Error> {
    // A zone's `through` only moves forward, so the one read here bounds the ledger rows the
    // summary may lack (and lets the planner read them per agent by `created_at`); the statement
    // re-reads it in its own snapshot, which decides what the summary holds.
    type Row = (
        Uuid,
        NaiveDate,
        String,
        Decimal,
        i64,
        Decimal,
        Decimal,
        Decimal,
        i64,
        i64,
    );
    let months = periods == Periods::Months;
    let rows: Vec<Row> = match through(&mut *conn, tz).await? {
        None => {
            let period = row_period("$5", "$4", "$3");
            let sql = format!(
                "WITH both_parts AS (
                     {ledger}
                      WHERE u.occurred_at >= $1 AND u.occurred_at < $2
                      GROUP BY 1, 2, 3, 4, 10)
                 {COSTED} {COSTED_TAIL}",
                ledger = ledger_groups(&period, "$4", "agent_usage_metrics u"),
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(day_start(from, tz))
                .bind(day_start(to, tz))
                .bind(from)
                .bind(tz.name())
                .bind(months)
                .fetch_all(conn)
                .await?
        }
        Some(seen) => {
            let period = row_period("$7", "$6", "$4");
            let sql = format!(
                "WITH t AS (SELECT through FROM usage_daily_through WHERE time_zone = $6),
                 both_parts AS (
                     SELECT d.agent_id,
                            CASE WHEN $7 THEN d.day - (EXTRACT(DAY FROM d.day)::int - 1)
                                 ELSE $4 END AS period,
                            d.metric_type, d.unit_price_usd, d.events, d.quantity,
                            d.provider_cost_usd, d.events_without_provider_cost,
                            d.quantity_without_provider_cost, d.day
                       FROM usage_daily d
                      WHERE d.time_zone = $6 AND d.day >= $4 AND d.day < $5
                     UNION ALL
                     {ledger}
                      WHERE u.occurred_at >= $1 AND u.occurred_at < $2
                        AND u.created_at > (SELECT through FROM t)
                      GROUP BY 1, 2, 3, 4, 10)
                 {COSTED} {COSTED_TAIL}",
                ledger = ledger_groups(
                    &period,
                    "$6",
                    "agents a JOIN agent_usage_metrics u ON u.agent_id = a.id AND u.created_at > $3"
                ),
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(day_start(from, tz))
                .bind(day_start(to, tz))
                .bind(seen)
                .bind(from)
                .bind(to)
                .bind(tz.name())
                .bind(months)
                .fetch_all(conn)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(
            |(
                agent_id,
                period,
                metric_type,
                unit_price_usd,
                events,
                quantity,
                provider,
                unit_cost,
                events_unit_cost,
                events_no_cost,
            )| Totals {
                agent_id,
                period,
                metric_type,
                unit_price_usd,
                events,
                cost_usd: money::usage_cost(quantity, unit_price_usd),
                quantity,
                provider_cost_usd: provider,
                unit_cost_usd: unit_cost,
                events_provider_cost: events - events_unit_cost - events_no_cost,
                events_unit_cost,
                events_no_cost,
            },
        )
        .collect())
}

/// SQL grouping ledger rows (`u`, read `FROM {from}`; `WHERE` and `GROUP BY 1, 2, 3, 4, 10` to
/// follow) as `usage_daily` rows are: per period, metric and price, and those without a provider
/// cost per day in zone `zone` too (the 10th column; NULL for rows with one, so the zone
/// conversion is done only where a unit cost is looked up).
fn ledger_groups(period: &str, zone: &str, from: &str) -> String {
    format!(
        "SELECT u.agent_id, {period} AS period, u.metric_type, u.unit_price_usd,
                count(*) AS events, sum(u.quantity) AS quantity,
                COALESCE(sum(u.provider_cost_usd), 0) AS provider_cost_usd,
                count(*) FILTER (WHERE u.provider_cost_usd IS NULL)
                    AS events_without_provider_cost,
                COALESCE(sum(u.quantity) FILTER (WHERE u.provider_cost_usd IS NULL), 0)
                    AS quantity_without_provider_cost,
                CASE WHEN u.provider_cost_usd IS NULL
                     THEN (u.occurred_at AT TIME ZONE {zone})::date END AS day
           FROM {from}"
    )
}

/// The outer part of a [`totals`] statement over `both_parts` (rows shaped like `usage_daily`'s):
/// the quantity without a provider cost priced at the unit cost in force on its day, then summed
/// per period, metric and price.
const COSTED: &str = "SELECT agent_id, period, metric_type, unit_price_usd, sum(events)::int8,
        sum(quantity), sum(provider_cost_usd),
        COALESCE(sum(quantity_without_provider_cost * unit_cost), 0),
        COALESCE(sum(events_without_provider_cost) FILTER (WHERE unit_cost IS NOT NULL), 0)::int8,
        COALESCE(sum(events_without_provider_cost) FILTER (WHERE unit_cost IS NULL), 0)::int8
   FROM (SELECT b.*,
                CASE WHEN b.events_without_provider_cost <> 0 THEN
                    (SELECT p.unit_cost_usd FROM price_in_force(b.agent_id, b.metric_type, b.day) p)
                END AS unit_cost
           FROM both_parts b) costed";
const COSTED_TAIL: &str = "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4";

/// What one bringing-up-to-date did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    /// Ledger rows added to the summary.
    pub rows: i64,
    /// Whether the summary now reaches `cut` (false: the time budget ran out first; the next
    /// run carries on from where this one committed).
    pub complete: bool,
}

/// Adds to the summary the ledger rows created after its `through` and at or before `cut` (a
/// ledger cut: `billing::rollup::ledger_cut`), at most a day of `created_at` per transaction so
/// a first build over a long ledger commits as it goes, until `budget` is spent (a chunk always
/// runs; then the budget is checked). Each zone has its own summary (a new `BILLING_TIMEZONE`
/// builds one from the start; the old one is left as it was). Runs may overlap: each chunk locks
/// the zone's `through` row, and a run whose cut is behind it adds nothing.
pub async fn refresh(
    pool: &PgPool,
    tz: Tz,
    cut: DateTime<Utc>,
    budget: std::time::Duration,
) -> Result<Refreshed, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut rows = 0;
    // A chunk spans a day of `created_at` after the next row; one that cannot finish in the
    // budget left (rows bulk-loaded in one go) is cancelled by the server and tried an eighth as
    // wide, down to a second.
    let mut width = Duration::days(1);
    loop {
        let mut tx = pool.begin().await?;
        let left = budget.saturating_sub(started.elapsed()).as_millis();
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(format!("{}ms", left.clamp(1_000, 86_400_000)))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO usage_daily_through (time_zone) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(tz.name())
        .execute(&mut *tx)
        .await?;
        let through: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT through FROM usage_daily_through WHERE time_zone = $1 FOR UPDATE",
        )
        .bind(tz.name())
        .fetch_one(&mut *tx)
        .await?;
        if through.is_some_and(|t| t >= cut) {
            tx.commit().await?;
            return Ok(Refreshed {
                rows,
                complete: true,
            });
        }
        // The chunk: from the summary's end to a day after the next row created since (found
        // per agent by index, so a quiet stretch of the ledger costs nothing), at most `cut`.
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(m.created_at) FROM agents a CROSS JOIN LATERAL
                    (SELECT created_at FROM agent_usage_metrics u
                      WHERE u.agent_id = a.id AND u.created_at > COALESCE($1, '-infinity')
                      ORDER BY created_at LIMIT 1) m",
        )
        .bind(through)
        .fetch_one(&mut *tx)
        .await?;
        let upto = match next {
            Some(n) if n <= cut => (n + width).min(cut),
            _ => cut,
        };
        let added: Result<i64, _> = sqlx::query_scalar(
            "WITH chunk AS (
                 SELECT $3 AS time_zone, u.agent_id, (u.occurred_at AT TIME ZONE $3)::date AS day,
                        u.metric_type, u.unit_price_usd, count(*) AS events,
                        sum(u.quantity) AS quantity,
                        COALESCE(sum(u.provider_cost_usd), 0) AS provider_cost_usd,
                        count(*) FILTER (WHERE u.provider_cost_usd IS NULL)
                            AS events_without_provider_cost,
                        COALESCE(sum(u.quantity) FILTER (WHERE u.provider_cost_usd IS NULL), 0)
                            AS quantity_without_provider_cost
                   FROM agents a
                   JOIN agent_usage_metrics u
                     ON u.agent_id = a.id AND u.created_at > COALESCE($1, '-infinity')
                    AND u.created_at <= $2
                  GROUP BY 2, 3, 4, 5),
             added AS (
                 INSERT INTO usage_daily AS d (time_zone, agent_id, day, metric_type,
                                               unit_price_usd, events, quantity, provider_cost_usd,
                                               events_without_provider_cost,
                                               quantity_without_provider_cost)
                 SELECT * FROM chunk
                 ON CONFLICT (time_zone, agent_id, day, metric_type, unit_price_usd) DO UPDATE
                    SET events = d.events + excluded.events,
                        quantity = d.quantity + excluded.quantity,
                        provider_cost_usd = d.provider_cost_usd + excluded.provider_cost_usd,
                        events_without_provider_cost = d.events_without_provider_cost
                            + excluded.events_without_provider_cost,
                        quantity_without_provider_cost = d.quantity_without_provider_cost
                            + excluded.quantity_without_provider_cost)
             SELECT COALESCE(sum(events), 0)::int8 FROM chunk",
        )
        .bind(through)
        .bind(upto)
        .bind(tz.name())
        .fetch_one(&mut *tx)
        .await;
        let added = match added {
            Ok(n) => n,
            // 57014: cancelled by the statement timeout. Rolled back with `tx`.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("57014") => {
                drop(tx);
                if width <= Duration::seconds(1) {
                    return Ok(Refreshed {
                        rows,
                        complete: false,
                    });
                }
                width = (width / 8).max(Duration::seconds(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        sqlx::query("UPDATE usage_daily_through SET through = $1 WHERE time_zone = $2")
            .bind(upto)
            .bind(tz.name())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        rows += added;
        if upto >= cut {
            return Ok(Refreshed {
                rows,
                complete: true,
            });
        }
        if started.elapsed() >= budget {
            return Ok(Refreshed {
                rows,
                complete: false,
            });
        }
    }
}
