//! Invoices at Stripe: what the push job sends and the ids it gets back ([`crate::jobs::stripe`]),
//! Stripe's events as received, and the payment status they move.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

/// A finalized invoice as the push job needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PushInvoice {
    pub id: Uuid,
    /// `pending` until the push is done (`sent`).
    pub stripe_push: Option<String>,
    pub period_start: NaiveDate,
    pub stripe_invoice_id: Option<String>,
    /// What Stripe's `amount_due` must equal.
    pub total_usd: Decimal,
    /// The agency, and its email and name for its Stripe customer.
    pub agent_id: Uuid,
    pub email: String,
    pub agency_name: String,
}

/// One of its lines.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PushLine {
    pub id: Uuid,
    pub description: String,
    pub amount_usd: Decimal,
    pub stripe_item_id: Option<String>,
}

/// Finalized invoices still to be sent to Stripe.
pub async fn pending(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM invoices WHERE stripe_push = 'pending' ORDER BY finalized_at, id",
    )
    .fetch_all(conn)
    .await
}

pub async fn invoice(
    conn: &mut PgConnection,
    invoice_id: Uuid,
) -> Result<Option<(PushInvoice, Vec<PushLine>)>, sqlx::Error> {
    let invoice: Option<PushInvoice> = sqlx::query_as(
        "SELECT i.id, i.agent_id, a.email, a.agency_name, i.period_start, i.total_usd,
                i.stripe_push, i.stripe_invoice_id
           FROM invoices i JOIN agents a ON a.id = i.agent_id
          WHERE i.id = $1 AND i.status = 'finalized'",
    )
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(invoice) = invoice else {
        return Ok(None);
    };
    let lines = sqlx::query_as(
        "SELECT id, description, amount_usd, stripe_item_id FROM invoice_lines
          WHERE invoice_id = $1 ORDER BY metric_type, id",
    )
    .bind(invoice_id)
    .fetch_all(conn)
    .await?;
    Ok(Some((invoice, lines)))
}

/// Locks the agent's row until the transaction ends and returns its Stripe customer id: one
/// push at a time makes an agency's customer.
pub async fn lock_customer(
    conn: &mut PgConnection,
    agent_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT stripe_customer_id FROM agents WHERE id = $1 FOR UPDATE")
        .bind(agent_id)
        .fetch_one(conn)
        .await
}

/// What Stripe's id is stored for.
#[derive(Debug, Clone, Copy)]
pub enum StripeId {
    /// An agent's customer (`cus_...`).
    Customer,
    /// An invoice's (`in_...`).
    Invoice,
    /// An invoice line's item (`ii_...`).
    Item,
}

/// Stores Stripe's `stripe_id` on our agent, invoice or line `id`.
pub async fn set_id(
    conn: &mut PgConnection,
    of: StripeId,
    id: Uuid,
    stripe_id: &str,
) -> Result<(), sqlx::Error> {
    let sql = match of {
        StripeId::Customer => "UPDATE agents SET stripe_customer_id = $2 WHERE id = $1",
        StripeId::Invoice => {
            "UPDATE invoices SET stripe_invoice_id = $2, updated_at = now() WHERE id = $1"
        }
        StripeId::Item => "UPDATE invoice_lines SET stripe_item_id = $2 WHERE id = $1",
    };
    super::run2(conn, sql, id, stripe_id.to_string())
        .await
        .map(drop)
}

/// Stripe deleted the customer: the next invoice makes a new one.
pub async fn forget_customer(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE agents SET stripe_customer_id = NULL WHERE stripe_customer_id = $1";
    super::run1(conn, sql, customer_id.to_string()).await
}

/// Why the push stopped (shown on the ops page), or `None` to clear it.
pub async fn set_error(
    conn: &mut PgConnection,
    invoice_id: Uuid,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE invoices SET stripe_error = $2, updated_at = now() WHERE id = $1";
    super::run2(conn, sql, invoice_id, error.map(str::to_string))
        .await
        .map(drop)
}

/// What Stripe says of a sent invoice.
pub struct Sent<'a> {
    pub number: Option<&'a str>,
    pub hosted_invoice_url: Option<&'a str>,
    pub due_at: Option<DateTime<Utc>>,
}

/// The invoice is finalized and sent at Stripe: open for payment (unless an event already moved
/// it on).
pub async fn set_sent(
    conn: &mut PgConnection,
    invoice_id: Uuid,
    sent: &Sent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE invoices SET stripe_push = 'sent', stripe_error = NULL,
                stripe_number = COALESCE($2, stripe_number),
                hosted_invoice_url = COALESCE($3, hosted_invoice_url),
                due_at = COALESCE($4, due_at),
                payment_status = COALESCE(payment_status, 'open'), updated_at = now()
          WHERE id = $1",
    )
    .bind(invoice_id)
    .bind(sent.number)
    .bind(sent.hosted_invoice_url)
    .bind(sent.due_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores an event once by its id; `false` when it was stored before (a redelivery).
pub async fn insert_event(
    conn: &mut PgConnection,
    id: &str,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO stripe_events (id, type, payload) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO NOTHING";
    let stored = sqlx::query(sql).bind(id).bind(kind).bind(payload);
    Ok(stored.execute(conn).await?.rows_affected() == 1)
}

/// A stored event's type and payload.
pub async fn event(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<(String, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as("SELECT type, payload FROM stripe_events WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn mark_applied(conn: &mut PgConnection, id: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE stripe_events SET applied_at = now() WHERE id = $1 AND applied_at IS NULL";
    super::run1(conn, sql, id.to_string()).await.map(drop)
}

/// A payment status change from an event, and what it says of the invoice.
pub struct Payment<'a> {
    pub stripe_invoice_id: &'a str,
    /// Our invoice id from the Stripe invoice's metadata (for an event that beats our own
    /// record of Stripe's id).
    pub invoice_id: Option<Uuid>,
    pub status: &'a str,
    pub paid_at: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<&'a str>,
    pub number: Option<&'a str>,
}

/// The invoice a payment event moved: its agency, month and total.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Moved {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub agency_name: String,
    pub period_start: NaiveDate,
    pub total_usd: Decimal,
}

/// Applies `p` when it moves the invoice forward (open, then past due, then uncollectible, then
/// paid or void, both final); the invoice it moved, `None` when it did not (not ours, a late or
/// repeated event).
pub async fn apply_payment(
    conn: &mut PgConnection,
    p: &Payment<'_>,
) -> Result<Option<Moved>, sqlx::Error> {
    sqlx::query_as(
        "WITH target AS (
             SELECT id FROM invoices
              WHERE stripe_invoice_id = $1 OR (stripe_invoice_id IS NULL AND id = $2)
              LIMIT 1),
         moved AS (
             UPDATE invoices i SET payment_status = $3,
                    paid_at = CASE WHEN $3 = 'paid' THEN COALESCE($4, now()) ELSE i.paid_at END,
                    hosted_invoice_url = COALESCE(i.hosted_invoice_url, $5),
                    stripe_number = COALESCE(i.stripe_number, $6),
                    updated_at = now()
               FROM target
              WHERE i.id = target.id
                AND payment_rank(i.payment_status) < payment_rank($3)
             RETURNING i.id, i.agent_id, i.period_start, i.total_usd)
         SELECT m.id, m.agent_id, a.agency_name, m.period_start, m.total_usd
           FROM moved m JOIN agents a ON a.id = m.agent_id",
    )
    .bind(p.stripe_invoice_id)
    .bind(p.invoice_id)
    .bind(p.status)
    .bind(p.paid_at)
    .bind(p.hosted_invoice_url)
    .bind(p.number)
    .fetch_optional(conn)
    .await
}

/// Receivables for the ops money view: what is owed and what came in.
#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize)]
pub struct Receivables {
    pub open_count: i64,
    pub open_usd: Decimal,
    /// Past their due date (or `past_due`), by age.
    pub overdue_1_30_usd: Decimal,
    pub overdue_31_60_usd: Decimal,
    pub overdue_over_60_usd: Decimal,
    /// Paid since `since` (the start of this month).
    pub paid_count: i64,
    pub paid_usd: Decimal,
    /// Invoices whose push to Stripe stopped (see `stripe_error`).
    pub push_errors: i64,
}

pub async fn receivables(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
) -> Result<Receivables, sqlx::Error> {
    sqlx::query_as(
        "WITH owed AS (
             SELECT total_usd, GREATEST(0, EXTRACT(DAY FROM $1 - due_at))::int AS days
               FROM invoices WHERE payment_status IN ('open', 'past_due'))
         SELECT
           (SELECT count(*) FROM owed) AS open_count,
           (SELECT COALESCE(sum(total_usd), 0) FROM owed) AS open_usd,
           (SELECT COALESCE(sum(total_usd), 0) FROM owed WHERE days BETWEEN 1 AND 30)
               AS overdue_1_30_usd,
           (SELECT COALESCE(sum(total_usd), 0) FROM owed WHERE days BETWEEN 31 AND 60)
               AS overdue_31_60_usd,
           (SELECT COALESCE(sum(total_usd), 0) FROM owed WHERE days > 60) AS overdue_over_60_usd,
           (SELECT count(*) FROM invoices WHERE payment_status = 'paid' AND paid_at >= $2)
               AS paid_count,
           (SELECT COALESCE(sum(total_usd), 0) FROM invoices
             WHERE payment_status = 'paid' AND paid_at >= $2) AS paid_usd,
           (SELECT count(*) FROM invoices WHERE stripe_error IS NOT NULL) AS push_errors",
    )
    .bind(now)
    .bind(since)
    .fetch_one(conn)
    .await
}

/// Invoices whose push to Stripe stopped: agency, month (`YYYY-MM`) and why, newest first.
pub async fn push_errors(
    conn: &mut PgConnection,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.agency_name, to_char(i.period_start, 'YYYY-MM'), i.stripe_error
           FROM invoices i JOIN agents a ON a.id = i.agent_id
          WHERE i.stripe_error IS NOT NULL
          ORDER BY i.period_start DESC, a.agency_name LIMIT 50",
    )
    .fetch_all(conn)
    .await
}
