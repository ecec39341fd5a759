//! Monthly invoices from the usage ledger: subscription, the one-time setup fee, one line per
//! metric and price, and adjustment lines for usage that arrived after its month was finalized.
//!
//! Months are calendar months in `BILLING_TIMEZONE`. Each amount is rounded once, half away from
//! zero, to cents; the total is the sum of the rounded lines. A draft can be rebuilt any number of
//! times (same inputs, same invoice); a finalized invoice is never changed.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{money, store::usage::metric};

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Month {
    pub first_day: NaiveDate,
}

impl Month {
    pub fn parse(text: &str) -> Result<Month, String> {
        let first_day = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
            .map_err(|_| format!("{text:?} is not a month (YYYY-MM)"))?;
        Ok(Month { first_day })
    }

    pub fn containing(at: DateTime<Utc>, tz: Tz) -> Month {
        let local = at.with_timezone(&tz).date_naive();
        Month {
            first_day: local.with_day(1).unwrap_or(local),
        }
    }

    pub fn next(self) -> Month {
        let (y, m) = (self.first_day.year(), self.first_day.month());
        let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Month {
            first_day: NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(self.first_day),
        }
    }

    pub fn previous(self) -> Month {
        let (y, m) = (self.first_day.year(), self.first_day.month());
        let (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        Month {
            first_day: NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(self.first_day),
        }
    }

    /// The instant the month starts in `tz`.
    pub fn start(self, tz: Tz) -> DateTime<Utc> {
        let midnight = self.first_day.and_hms_opt(0, 0, 0).unwrap_or_default();
        tz.from_local_datetime(&midnight)
            .earliest()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
    }

    pub fn label(self) -> String {
        self.first_day.format("%Y-%m").to_string()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// One line of an invoice, its amount already rounded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub kind: &'static str,
    pub metric_type: String,
    pub description: String,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub amount: Decimal,
}

impl Line {
    fn new(
        kind: &'static str,
        metric_type: &str,
        description: String,
        quantity: Decimal,
        unit_price: Decimal,
    ) -> Line {
        Line {
            kind,
            metric_type: metric_type.to_string(),
            description,
            quantity,
            unit_price,
            amount: money::round_line(money::usage_cost(quantity, unit_price)),
        }
    }
}

/// The sum of rounded lines: the only way an invoice total is computed.
pub fn total(lines: &[Line]) -> Decimal {
    lines.iter().map(|l| l.amount).sum()
}

/// What happened to one agent's invoice in a rollup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollupOutcome {
    pub agent_id: Uuid,
    pub invoice_id: Uuid,
    pub total: Decimal,
    /// `false` when the invoice was already finalized and left untouched.
    pub rebuilt: bool,
}

/// Agents billable in `month`: started before it ends, not cancelled before it starts.
pub async fn billable_agents(
    conn: &mut PgConnection,
    month: Month,
    only_email: Option<&str>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM agents
          WHERE billing_starts_on < $2
            AND (cancelled_on IS NULL OR cancelled_on >= $1)
            AND ($3::text IS NULL OR email = $3)
          ORDER BY id",
    )
    .bind(month.first_day)
    .bind(month.next().first_day)
    .bind(only_email)
    .fetch_all(conn)
    .await
}

/// One agent's sum of one metric at one price, and how many rows made it.
type UsageSum = (Uuid, String, Decimal, Decimal, i64);

/// Builds (or rebuilds) every billable agent's draft for `month`: set-based, 500 agents per
/// transaction, so a month of millions of usage rows costs about one `GROUP BY` over them.
pub async fn rollup(
    pool: &PgPool,
    month: Month,
    tz: Tz,
    only_email: Option<&str>,
) -> Result<Vec<RollupOutcome>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let agents = billable_agents(&mut conn, month, only_email).await?;
    drop(conn);
    let mut outcomes = Vec::with_capacity(agents.len());
    for chunk in agents.chunks(500) {
        let mut tx = pool.begin().await?;
        outcomes.extend(rollup_agents(&mut tx, chunk, month, tz).await?);
        tx.commit().await?;
    }
    Ok(outcomes)
}

/// One agent's invoice for `month`, on the caller's transaction.
pub async fn rollup_agent(
    tx: &mut PgConnection,
    agent_id: Uuid,
    month: Month,
    tz: Tz,
) -> Result<RollupOutcome, sqlx::Error> {
    rollup_agents(tx, &[agent_id], month, tz)
        .await?
        .pop()
        .ok_or(sqlx::Error::RowNotFound)
}

/// The invoices of `agents` for `month`, on the caller's transaction. Serialized per agent by an
/// advisory lock (taken in id order, so concurrent rollups cannot deadlock), so concurrent
/// rollups converge on one invoice and one setup fee per agent.
async fn rollup_agents(
    tx: &mut PgConnection,
    agents: &[Uuid],
    month: Month,
    tz: Tz,
) -> Result<Vec<RollupOutcome>, sqlx::Error> {
    let mut agents = agents.to_vec();
    agents.sort_unstable();
    let (start, end) = (month.start(tz), month.next().start(tz));
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('invoice:' || id::text, 0))
           FROM unnest($1::uuid[]) AS id ORDER BY id",
    )
    .bind(&agents)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO invoices (agent_id, period_start, period_end)
         SELECT id, $2, $3 FROM unnest($1::uuid[]) AS id
         ON CONFLICT (agent_id, period_start) DO NOTHING",
    )
    .bind(&agents)
    .bind(month.first_day)
    .bind(month.next().first_day)
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

    let usage: Vec<UsageSum> = sqlx::query_as(
        "SELECT agent_id, metric_type, unit_price_usd, sum(quantity), count(*) FROM agent_usage_metrics
          WHERE occurred_at >= $1 AND occurred_at < $2 AND agent_id = ANY($3)
          GROUP BY agent_id, metric_type, unit_price_usd ORDER BY 1, 2, 3",
    )
    .bind(start)
    .bind(end)
    .bind(&drafts)
    .fetch_all(&mut *tx)
    .await?;
    // Usage of earlier months that arrived after the agent's latest finalized invoice closed.
    let late: Vec<UsageSum> = sqlx::query_as(
        "WITH closed AS (SELECT agent_id, max(finalized_at) AS at FROM invoices
                          WHERE agent_id = ANY($1) AND status = 'finalized' AND period_start < $2
                          GROUP BY agent_id)
         SELECT u.agent_id, u.metric_type, u.unit_price_usd, sum(u.quantity), count(*)
           FROM agent_usage_metrics u JOIN closed c ON c.agent_id = u.agent_id
          WHERE u.created_at > c.at AND u.occurred_at < $3
          GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(&drafts)
    .bind(month.first_day)
    .bind(start)
    .fetch_all(&mut *tx)
    .await?;
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
    // The setup fee belongs to the month billing starts, whatever order rollups run in, and is
    // billed once ever: agents starting in another month, or already billed it, get none here.
    let fee_billed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT a.id FROM agents a WHERE a.id = ANY($1)
            AND (date_trunc('month', a.billing_starts_on::timestamp)::date <> $2
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

/// The lines of one invoice, in their printed order.
fn build_lines(
    month: Month,
    subscription: Option<Decimal>,
    setup_fee: Option<Decimal>,
    usage: &[UsageSum],
    late: &[UsageSum],
) -> Vec<Line> {
    let mut lines = Vec::new();
    if let Some(p) = subscription {
        let text = format!("Subscription {}", month.label());
        lines.push(Line::new(
            "subscription",
            metric::SUBSCRIPTION,
            text,
            Decimal::ONE,
            p,
        ));
    }
    if let Some(p) = setup_fee {
        let text = "One-time setup fee".to_string();
        lines.push(Line::new(
            "setup_fee",
            metric::SETUP_FEE,
            text,
            Decimal::ONE,
            p,
        ));
    }
    for (_, metric_type, price, quantity, count) in usage {
        let text = format!("{metric_type}: {count} event(s) at {price}");
        lines.push(Line::new("usage", metric_type, text, *quantity, *price));
    }
    for (_, metric_type, price, quantity, count) in late {
        let text =
            format!("Late usage from earlier months, {metric_type}: {count} event(s) at {price}");
        lines.push(Line::new(
            "adjustment",
            metric_type,
            text,
            *quantity,
            *price,
        ));
    }
    lines
}

/// Every draft's new lines and total, written in three statements whatever the count.
#[derive(Default)]
struct LineRows {
    invoices: Vec<Uuid>,
    totals: Vec<Decimal>,
    agent: Vec<Uuid>,
    invoice: Vec<Uuid>,
    kind: Vec<&'static str>,
    metric: Vec<String>,
    text: Vec<String>,
    quantity: Vec<Decimal>,
    price: Vec<Decimal>,
    amount: Vec<Decimal>,
    position: Vec<i32>,
}

impl LineRows {
    fn push(&mut self, agent_id: Uuid, invoice_id: Uuid, lines: &[Line], total: Decimal) {
        self.invoices.push(invoice_id);
        self.totals.push(total);
        for (i, l) in lines.iter().enumerate() {
            self.agent.push(agent_id);
            self.invoice.push(invoice_id);
            self.kind.push(l.kind);
            self.metric.push(l.metric_type.clone());
            self.text.push(l.description.clone());
            self.quantity.push(l.quantity);
            self.price.push(l.unit_price);
            self.amount.push(l.amount);
            self.position.push(i32::try_from(i).unwrap_or(i32::MAX));
        }
    }

    async fn write(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM invoice_lines WHERE invoice_id = ANY($1)")
            .bind(&self.invoices)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO invoice_lines (agent_id, invoice_id, kind, metric_type, description, quantity,
                                        unit_price_usd, amount_usd, position)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                  $6::numeric[], $7::numeric[], $8::numeric[], $9::int[])",
        )
        .bind(&self.agent)
        .bind(&self.invoice)
        .bind(&self.kind)
        .bind(&self.metric)
        .bind(&self.text)
        .bind(&self.quantity)
        .bind(&self.price)
        .bind(&self.amount)
        .bind(&self.position)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE invoices i SET total_usd = t.total, updated_at = now()
               FROM unnest($1::uuid[], $2::numeric[]) AS t(id, total) WHERE i.id = t.id",
        )
        .bind(&self.invoices)
        .bind(&self.totals)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Why a month could not be finalized.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    #[error("{0}")]
    Order(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Rebuilds and freezes `month`'s drafts. Metering pauses for the moment of each finalize (a SHARE
/// lock on the ledger), so every usage row is either on this invoice or created after it closed,
/// and then lands on the next month's invoice as an adjustment.
pub async fn finalize(
    pool: &PgPool,
    month: Month,
    tz: Tz,
    only_email: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<RollupOutcome>, FinalizeError> {
    // Usage can still arrive for a month that has not ended: it cannot be closed yet.
    if month.next().start(tz) > now {
        return Err(FinalizeError::Order(format!(
            "{} has not ended yet in {tz}; a month is finalized after it ends",
            month.label()
        )));
    }
    let mut conn = pool.acquire().await?;
    let agents = billable_agents(&mut conn, month, only_email).await?;
    drop(conn);
    let mut done = Vec::new();
    for agent_id in agents {
        let mut tx = pool.begin().await?;
        // Every earlier billable month of the agent (from its first) must be final, invoiced or
        // not: otherwise its usage would surface later as someone else's adjustment.
        let open: Option<(String, String)> = sqlx::query_as(
            "SELECT a.email, to_char(m, 'YYYY-MM')
               FROM agents a,
                    generate_series(date_trunc('month', a.billing_starts_on::timestamp),
                                    $2::date - interval '1 month', interval '1 month') AS m
              WHERE a.id = $1
                AND (a.cancelled_on IS NULL OR a.cancelled_on >= m::date)
                AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.agent_id = a.id
                                   AND i.period_start = m::date AND i.status = 'finalized')
              ORDER BY m LIMIT 1",
        )
        .bind(agent_id)
        .bind(month.first_day)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((email, earlier)) = open {
            return Err(FinalizeError::Order(format!(
                "{email}: {earlier} is not finalized (missing or still a draft); finalize it before {}",
                month.label()
            )));
        }
        sqlx::query("LOCK TABLE agent_usage_metrics IN SHARE MODE")
            .execute(&mut *tx)
            .await?;
        let outcome = rollup_agent(&mut tx, agent_id, month, tz).await?;
        if outcome.rebuilt {
            sqlx::query(
                "UPDATE invoices SET status = 'finalized', finalized_at = clock_timestamp(), updated_at = now()
                  WHERE agent_id = $1 AND id = $2",
            )
            .bind(agent_id)
            .bind(outcome.invoice_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        done.push(outcome);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn a_call_ending_at_3_utc_on_december_1st_is_november_in_phoenix() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            Month::containing(at, chrono_tz::America::Phoenix).label(),
            "2026-11"
        );
        assert_eq!(Month::containing(at, chrono_tz::UTC).label(), "2026-12");
        let nov = Month::parse("2026-11").expect("month");
        assert_eq!(
            nov.start(chrono_tz::America::Phoenix).to_rfc3339(),
            "2026-11-01T07:00:00+00:00"
        );
        assert_eq!(nov.next().label(), "2026-12");
        assert_eq!(
            Month::parse("2026-01").expect("m").previous().label(),
            "2025-12"
        );
        assert!(Month::parse("2026-13").is_err());
    }

    #[test]
    fn lines_round_once_and_the_total_is_their_sum() {
        let scans = Line::new(
            "usage",
            "solar_ocr_scan",
            String::new(),
            Decimal::from(3),
            d("0.075"),
        );
        assert_eq!(scans.amount, d("0.23"));
        let many = Line::new(
            "usage",
            "solar_ocr_scan",
            String::new(),
            Decimal::from(1000),
            d("0.075"),
        );
        assert_eq!(many.amount, d("75.00"));
        let sub = Line::new(
            "subscription",
            "subscription",
            String::new(),
            Decimal::ONE,
            d("249.00"),
        );
        assert_eq!(total(&[scans, many, sub]), d("324.23"));
    }

    #[test]
    fn totals_always_equal_the_sum_of_rounded_lines() {
        // A deterministic sweep in place of a property-testing crate: many quantities and prices,
        // including half-cent midpoints, negative adjustments and 6-decimal minutes.
        let prices = [
            d("0.075"),
            d("0.2"),
            d("0.005"),
            d("249"),
            d("0.333333"),
            d("0.000001"),
        ];
        let mut seed: u64 = 0x2545F4914F6CDD1D;
        for _ in 0..2000 {
            let mut lines = Vec::new();
            for _ in 0..(seed % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let qty = Decimal::new((seed % 2_000_000) as i64 - 100_000, 6);
                let price = prices[(seed % prices.len() as u64) as usize];
                lines.push(Line::new("usage", "m", String::new(), qty, price));
            }
            let t = total(&lines);
            let summed: Decimal = lines
                .iter()
                .map(|l| money::round_line(l.quantity * l.unit_price))
                .sum();
            assert_eq!(t, summed);
            assert_eq!(t.round_dp(2), t, "a total has at most cents");
        }
    }
}
