//! Read models for invoices and usage reports (CLI now, the agent API later).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::money;
use crate::money::calendar::Month;
use crate::store::usage_daily;

/// Money as a decimal string with two places ("249.00").
pub fn cents(d: Decimal) -> String {
    format!("{:.2}", money::round_line(d))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InvoiceOut {
    pub agent_id: Uuid,
    pub agency_name: String,
    pub period: String,
    pub status: String,
    pub lines: Vec<InvoiceLineOut>,
    pub total: String,
    /// At Stripe: open, paid, past_due, void or uncollectible; `None` when not sent there.
    pub payment_status: Option<String>,
    pub paid_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Stripe's page where the agency pays.
    pub hosted_invoice_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InvoiceLineOut {
    pub kind: String,
    pub metric_type: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
}

/// Invoices for the month starting `first_day`, optionally one agent's, with their lines.
pub async fn invoices(
    conn: &mut PgConnection,
    first_day: NaiveDate,
    email: Option<&str>,
) -> Result<Vec<InvoiceOut>, sqlx::Error> {
    type Head = (Uuid, Uuid, String, String, Decimal, Payment);
    type Payment = (
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
    );
    let heads: Vec<Head> = sqlx::query_as(
        "SELECT i.id, a.id, a.agency_name, i.status, i.total_usd,
                (i.payment_status, i.paid_at, i.hosted_invoice_url)
           FROM invoices i JOIN agents a ON a.id = i.agent_id
          WHERE i.period_start = $1 AND ($2::text IS NULL OR a.email = $2)
          ORDER BY a.agency_name",
    )
    .bind(first_day)
    .bind(email)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(heads.len());
    for (invoice_id, agent_id, agency_name, status, total, payment) in heads {
        let (payment_status, paid_at, hosted_invoice_url) = payment;
        let lines: Vec<(String, String, Decimal, Decimal, Decimal)> = sqlx::query_as(
            "SELECT kind, metric_type, quantity, unit_price_usd, amount_usd FROM invoice_lines
              WHERE agent_id = $1 AND invoice_id = $2 ORDER BY position",
        )
        .bind(agent_id)
        .bind(invoice_id)
        .fetch_all(&mut *conn)
        .await?;
        out.push(InvoiceOut {
            agent_id,
            agency_name,
            period: first_day.format("%Y-%m").to_string(),
            status,
            lines: lines
                .into_iter()
                .map(|(kind, metric_type, q, p, a)| InvoiceLineOut {
                    kind,
                    metric_type,
                    quantity: q.normalize().to_string(),
                    unit_price: p.normalize().to_string(),
                    amount: cents(a),
                })
                .collect(),
            total: cents(total),
            payment_status,
            paid_at,
            hosted_invoice_url,
        });
    }
    Ok(out)
}

/// Which costs a group of usage rows' cost (and so its margin) is made of, by how many of its
/// ledger rows cost what.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CostCounts {
    /// Rows with the provider's reported cost (`provider_cost_usd`).
    pub provider: i64,
    /// Rows without one whose price in force (`price_in_force` on the row's day) has a unit cost.
    pub unit_cost: i64,
    /// Rows with neither: they count as costing nothing.
    pub none: i64,
}

impl CostCounts {
    fn of(t: &usage_daily::Totals) -> CostCounts {
        CostCounts {
            provider: t.events_provider_cost,
            unit_cost: t.events_unit_cost,
            none: t.events_no_cost,
        }
    }

    fn add(&mut self, other: CostCounts) {
        self.provider += other.provider;
        self.unit_cost += other.unit_cost;
        self.none += other.none;
    }

    /// `provider` when every row has the provider's cost, `unit_cost` when none has but every
    /// row's price has a unit cost, `none` when no row has either, `mixed` otherwise (some of
    /// each, or some rows costed and some not).
    pub fn source(&self) -> &'static str {
        match (self.provider > 0, self.unit_cost > 0, self.none > 0) {
            (true, false, false) => "provider",
            (false, true, false) => "unit_cost",
            (false, false, _) => "none",
            _ => "mixed",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageRow {
    /// Rows are per agent: two agencies may share a name.
    pub agent_id: uuid::Uuid,
    pub agency_name: String,
    pub metric_type: String,
    pub events: i64,
    pub quantity: Decimal,
    /// Billed: the sum of quantity x price per price, each rounded once.
    pub billed_usd: Decimal,
    /// The providers' reported costs alone (rows that have one).
    pub provider_cost_usd: Decimal,
    /// What the usage cost us (unrounded): per ledger row the provider's reported cost when it
    /// has one, else its quantity x the unit cost of the price in force for it.
    pub cost_usd: Decimal,
    /// Where `cost_usd` comes from.
    pub costs: CostCounts,
}

impl UsageRow {
    pub fn margin_usd(&self) -> Decimal {
        self.billed_usd - self.cost_usd
    }
}

/// Per agent and metric, usage that occurred in `month` (in `tz`), optionally one agent's (by
/// email); read through the daily summary (`store::usage_daily`), so a month costs its days.
pub async fn usage(
    conn: &mut PgConnection,
    month: Month,
    tz: Tz,
    email: Option<&str>,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let totals = usage_daily::totals(
        &mut *conn,
        month.first_day,
        month.next().first_day,
        tz,
        usage_daily::Periods::Whole,
    )
    .await?;
    let agents: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, agency_name FROM agents WHERE ($1::text IS NULL OR email = $1)
          ORDER BY agency_name, id",
    )
    .bind(email)
    .fetch_all(conn)
    .await?;
    let mut by_agent: std::collections::HashMap<Uuid, Vec<&usage_daily::Totals>> =
        std::collections::HashMap::new();
    for t in &totals {
        by_agent.entry(t.agent_id).or_default().push(t);
    }
    let mut out: Vec<UsageRow> = Vec::new();
    for (agent_id, agency_name) in agents {
        // Each agent's totals come ordered by metric, then price: one row per metric, its
        // billed amount the sum of its price lines, each rounded once.
        for t in by_agent.remove(&agent_id).unwrap_or_default() {
            let billed = money::round_line(t.quantity * t.unit_price_usd);
            match out.last_mut() {
                Some(r) if r.agent_id == agent_id && r.metric_type == t.metric_type => {
                    r.events += t.events;
                    r.quantity += t.quantity;
                    r.billed_usd += billed;
                    r.provider_cost_usd += t.provider_cost_usd;
                    r.cost_usd += t.our_cost_usd();
                    r.costs.add(CostCounts::of(t));
                }
                _ => out.push(UsageRow {
                    agent_id,
                    agency_name: agency_name.clone(),
                    metric_type: t.metric_type.clone(),
                    events: t.events,
                    quantity: t.quantity,
                    billed_usd: billed,
                    provider_cost_usd: t.provider_cost_usd,
                    cost_usd: t.our_cost_usd(),
                    costs: CostCounts::of(t),
                }),
            }
        }
    }
    Ok(out)
}

/// Per agency (every agency, by name), the events metered and the usage cost (unrounded) of the
/// days `[from, to)` in `tz`: the ops page's chart.
pub async fn activity(
    conn: &mut PgConnection,
    from: NaiveDate,
    to: NaiveDate,
    tz: Tz,
) -> Result<Vec<(String, i64, Decimal)>, sqlx::Error> {
    let totals = usage_daily::totals(&mut *conn, from, to, tz, usage_daily::Periods::Whole).await?;
    let agents: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, agency_name FROM agents ORDER BY agency_name, id")
            .fetch_all(conn)
            .await?;
    Ok(agents
        .into_iter()
        .map(|(id, name)| {
            let mine = totals.iter().filter(|t| t.agent_id == id);
            let (events, cost) = mine.fold((0, Decimal::ZERO), |(n, c), t| {
                (n + t.events, c + t.cost_usd)
            });
            (name, events, cost)
        })
        .collect())
}

/// Where a group of usage rows is billed (`usage_provenance`, grouped).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProvenanceRow {
    pub agent_id: uuid::Uuid,
    pub agency_name: String,
    pub metric_type: String,
    pub unit_price: String,
    /// `billed` (on a finalized invoice), `pending` (on a draft), or `awaiting rollup`.
    pub state: String,
    /// The invoice's month, `YYYY-MM`, when an invoice holds the rows.
    pub invoice: Option<String>,
    /// `usage` (the rows' own month) or `adjustment` (late usage from an earlier month).
    pub line_kind: Option<String>,
    pub invoice_line_id: Option<uuid::Uuid>,
    pub events: i64,
    pub quantity: String,
}

/// Per agent, metric and price, where the usage that occurred in `[start, end)` is billed.
pub async fn provenance(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    email: Option<&str>,
) -> Result<Vec<ProvenanceRow>, sqlx::Error> {
    type Row = (
        uuid::Uuid,
        String,
        String,
        Decimal,
        String,
        Option<NaiveDate>,
        Option<String>,
        Option<uuid::Uuid>,
        i64,
        Decimal,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.id, a.agency_name, p.metric_type, p.unit_price_usd, p.state, p.invoice_month,
                p.line_kind, p.invoice_line_id, count(*), sum(p.quantity)
           FROM usage_provenance p JOIN agents a ON a.id = p.agent_id
          WHERE p.occurred_at >= $1 AND p.occurred_at < $2 AND ($3::text IS NULL OR a.email = $3)
          GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
          ORDER BY a.agency_name, a.id, p.metric_type, p.unit_price_usd, p.invoice_month NULLS LAST",
    )
    .bind(start)
    .bind(end)
    .bind(email)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(agent_id, agency_name, metric_type, price, state, month, kind, line, n, q)| {
                ProvenanceRow {
                    agent_id,
                    agency_name,
                    metric_type,
                    unit_price: price.normalize().to_string(),
                    state,
                    invoice: month.map(|m| m.format("%Y-%m").to_string()),
                    line_kind: kind,
                    invoice_line_id: line,
                    events: n,
                    quantity: q.normalize().to_string(),
                }
            },
        )
        .collect())
}

/// One agency's month on the operator's money view.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MoneyRow {
    pub agent_id: uuid::Uuid,
    pub agency_name: String,
    pub calls: i64,
    pub minutes: Decimal,
    /// Quantity per metric (the caller groups tools' metrics by category: `tools::metrics_of`).
    pub quantities: std::collections::BTreeMap<String, Decimal>,
    /// Usage billed so far: per metric and price, each rounded once (as on the invoice).
    pub billed_usd: Decimal,
    /// What it cost us, as [`UsageRow::cost_usd`].
    pub cost_usd: Decimal,
    pub costs: CostCounts,
}

impl MoneyRow {
    /// The quantity of `metrics` together.
    pub fn quantity_of(&self, metrics: &[&str]) -> Decimal {
        metrics
            .iter()
            .filter_map(|m| self.quantities.get(*m))
            .copied()
            .sum()
    }

    pub fn margin_usd(&self) -> Decimal {
        self.billed_usd - self.cost_usd
    }
}

/// Per agency, the month `[start, end)`: calls, minutes, scans, lookups, billed so far, what it
/// cost us (the seed's "monthly cost per agent", live; as [`UsageRow::cost_usd`]). Agencies
/// billable in the month are listed even without usage; others only with calls or usage in it.
pub async fn money(
    conn: &mut PgConnection,
    month: Month,
    tz: Tz,
) -> Result<Vec<MoneyRow>, sqlx::Error> {
    let (start, end) = (month.start(tz), month.next().start(tz));
    let usage = usage(&mut *conn, month, tz, None).await?;
    let agencies: Vec<(uuid::Uuid, String, i64, bool)> = sqlx::query_as(
        "SELECT a.id, a.agency_name,
                (SELECT count(*) FROM calls c WHERE c.agent_id = a.id
                    AND COALESCE(c.started_at, c.created_at) >= $1
                    AND COALESCE(c.started_at, c.created_at) < $2),
                billable_in(a.id, a.billing_starts_on, a.cancelled_on, $3)
           FROM agents a ORDER BY a.agency_name, a.id",
    )
    .bind(start)
    .bind(end)
    .bind(month.first_day)
    .fetch_all(conn)
    .await?;
    // An agency is listed in the months it pays for, and in any other month it has calls or usage
    // in (a late report after a cancellation): never as a silent row of zeros it is not billed for.
    Ok(agencies
        .into_iter()
        .filter(|(agent_id, _, calls, billable)| {
            *billable || *calls > 0 || usage.iter().any(|u| u.agent_id == *agent_id)
        })
        .map(|(agent_id, agency_name, calls, _)| {
            let mine: Vec<&UsageRow> = usage.iter().filter(|u| u.agent_id == agent_id).collect();
            let of = |metrics: &[&str]| -> Decimal {
                mine.iter()
                    .filter(|u| metrics.contains(&u.metric_type.as_str()))
                    .map(|u| u.quantity)
                    .sum()
            };
            MoneyRow {
                agent_id,
                agency_name,
                calls,
                minutes: of(&["vapi_call_minutes"]),
                quantities: mine.iter().fold(Default::default(), |mut q, u| {
                    *q.entry(u.metric_type.clone()).or_default() += u.quantity;
                    q
                }),
                billed_usd: mine.iter().map(|u| u.billed_usd).sum(),
                cost_usd: mine.iter().map(|u| u.cost_usd).sum(),
                costs: mine.iter().fold(CostCounts::default(), |mut c, u| {
                    c.add(u.costs);
                    c
                }),
            }
        })
        .collect())
}

/// Usage revenue per month of `[from, to)` (first days of months), by the same definition as the
/// money view's per-agency "billed so far" ([`money`], [`usage`]): the usage that occurred in the
/// month, per agent, metric and price rounded once, whether or not an invoice holds it yet (late
/// usage counts in the month it occurred in, though a later invoice bills it as an adjustment).
/// Months without usage are absent. One read of the daily summary for all the months.
pub async fn usage_revenue(
    conn: &mut PgConnection,
    from: Month,
    to: Month,
    tz: Tz,
) -> Result<std::collections::HashMap<NaiveDate, Decimal>, sqlx::Error> {
    let totals = usage_daily::totals(
        conn,
        from.first_day,
        to.first_day,
        tz,
        usage_daily::Periods::Months,
    )
    .await?;
    let mut out = std::collections::HashMap::new();
    for t in totals {
        *out.entry(t.period).or_insert(Decimal::ZERO) +=
            money::round_line(t.quantity * t.unit_price_usd);
    }
    Ok(out)
}

/// Where a month's invoices stand: how many are finalized and how many are drafts
/// (void ones aside).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvoiceStates {
    pub finalized: i64,
    pub drafts: i64,
}

impl InvoiceStates {
    /// `finalized` when every invoice of the month is, `draft` while any is a draft, `none`
    /// before the month is rolled up.
    pub fn label(&self) -> &'static str {
        if self.drafts > 0 {
            "draft"
        } else if self.finalized > 0 {
            "finalized"
        } else {
            "none"
        }
    }
}

/// [`InvoiceStates`] per month, for those of `months` (first days) that have invoices.
pub async fn invoice_states(
    conn: &mut PgConnection,
    months: &[NaiveDate],
) -> Result<std::collections::HashMap<NaiveDate, InvoiceStates>, sqlx::Error> {
    let rows: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT period_start, count(*) FILTER (WHERE status = 'finalized'),
                count(*) FILTER (WHERE status = 'draft')
           FROM invoices
          WHERE period_start = ANY($1) AND status <> 'void'
          GROUP BY 1",
    )
    .bind(months)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(m, finalized, drafts)| (m, InvoiceStates { finalized, drafts }))
        .collect())
}

/// Monthly recurring revenue for the month starting `first_day`: the subscription price in force
/// for every agent billable that month.
pub async fn mrr(conn: &mut PgConnection, first_day: NaiveDate) -> Result<Decimal, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(p.unit_price_usd), 0) FROM agents a
           JOIN LATERAL price_in_force(a.id, 'subscription', $1) p ON true
          WHERE billable_in(a.id, a.billing_starts_on, a.cancelled_on, $1)",
    )
    .bind(first_day)
    .fetch_one(conn)
    .await
}
