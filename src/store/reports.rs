//! Read models for invoices and usage reports (CLI now, the agent API later).

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::money;

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
    let heads: Vec<(Uuid, Uuid, String, String, Decimal)> = sqlx::query_as(
        "SELECT i.id, a.id, a.agency_name, i.status, i.total_usd
           FROM invoices i JOIN agents a ON a.id = i.agent_id
          WHERE i.period_start = $1 AND ($2::text IS NULL OR a.email = $2)
          ORDER BY a.agency_name",
    )
    .bind(first_day)
    .bind(email)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(heads.len());
    for (invoice_id, agent_id, agency_name, status, total) in heads {
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
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct UsageRow {
    /// Rows are per agent: two agencies may share a name.
    pub agent_id: uuid::Uuid,
    pub agency_name: String,
    pub metric_type: String,
    pub events: i64,
    pub quantity: Decimal,
    /// Billed: the sum of quantity x price per price, each rounded once.
    pub billed_usd: Decimal,
    pub provider_cost_usd: Decimal,
}

impl UsageRow {
    pub fn margin_usd(&self) -> Decimal {
        self.billed_usd - self.provider_cost_usd
    }
}

/// Per agent and metric, usage that occurred in `[start, end)`.
pub async fn usage(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    email: Option<&str>,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    type Row = (uuid::Uuid, String, String, Decimal, i64, Decimal, Decimal);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.id, a.agency_name, u.metric_type, u.unit_price_usd, count(*), sum(u.quantity),
                COALESCE(sum(u.provider_cost_usd), 0)
           FROM agent_usage_metrics u JOIN agents a ON a.id = u.agent_id
          WHERE u.occurred_at >= $1 AND u.occurred_at < $2 AND ($3::text IS NULL OR a.email = $3)
          GROUP BY a.id, a.agency_name, u.metric_type, u.unit_price_usd
          ORDER BY a.agency_name, a.id, u.metric_type, u.unit_price_usd",
    )
    .bind(start)
    .bind(end)
    .bind(email)
    .fetch_all(conn)
    .await?;
    let mut out: Vec<UsageRow> = Vec::new();
    for (agent_id, agency_name, metric_type, price, events, quantity, cost) in rows {
        let billed = money::round_line(quantity * price);
        match out.last_mut() {
            Some(r) if r.agent_id == agent_id && r.metric_type == metric_type => {
                r.events += events;
                r.quantity += quantity;
                r.billed_usd += billed;
                r.provider_cost_usd += cost;
            }
            _ => out.push(UsageRow {
                agent_id,
                agency_name,
                metric_type,
                events,
                quantity,
                billed_usd: billed,
                provider_cost_usd: cost,
            }),
        }
    }
    Ok(out)
}
