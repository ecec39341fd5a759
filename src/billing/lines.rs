//! Invoice lines: what each says, its amount rounded once, and how a draft's lines are written.

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Month;
use crate::{money, store::usage::metric};

/// One agent's sum of one metric at one price, and how many rows made it.
pub(super) type UsageSum = (Uuid, String, Decimal, Decimal, i64);

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

/// The lines of one invoice, in their printed order.
pub(super) fn build_lines(
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
pub(super) struct LineRows {
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
    pub(super) fn push(
        &mut self,
        agent_id: Uuid,
        invoice_id: Uuid,
        lines: &[Line],
        total: Decimal,
    ) {
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

    pub(super) async fn write(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn lines_round_once_and_the_total_is_their_sum() {
        let scans = Line::new(
            "usage",
            "a_scan",
            String::new(),
            Decimal::from(3),
            d("0.075"),
        );
        assert_eq!(scans.amount, d("0.23"));
        let many = Line::new(
            "usage",
            "a_scan",
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
