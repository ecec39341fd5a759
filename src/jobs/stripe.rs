//! Getting paid: `stripe_push` brings Stripe to a finalized invoice's state (the agency's
//! customer, one invoice item per line, the invoice, finalized and sent), and
//! `stripe_event` applies what Stripe's events say back (paid, failed, void, ...).
//!
//! Finalizing marks an invoice `stripe_push = 'pending'` in its own transaction;
//! [`enqueue_pending`] turns every pending invoice into one job (by the finalize command and by
//! each rollup, so a crash between the two loses nothing). The push is at-least-once and every
//! step is exactly-once at Stripe: each step first looks at what Stripe already has (our stored
//! ids, then a search by our ids in Stripe's metadata), and every POST carries an
//! `Idempotency-Key` derived from our ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use super::{Deps, Job, JobError, notify_discord::NotifyOps};
use crate::{
    money,
    providers::stripe::{self, Form, Invoice, StripeClient},
    store::{
        self,
        stripe::{PushInvoice, StripeId},
    },
};

/// Sends one finalized invoice to Stripe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StripePush {
    pub invoice_id: Uuid,
}

impl StripePush {
    pub fn idempotency_key(&self) -> String {
        format!("stripe-push:{}", self.invoice_id)
    }
}

/// Enqueues a push for every invoice still pending that has none queued yet; how many it queued.
pub async fn enqueue_pending(pool: &PgPool) -> Result<usize, JobError> {
    let mut tx = pool.begin().await?;
    let pending = store::stripe::pending(&mut tx).await?;
    let mut queued = 0;
    for invoice_id in &pending {
        let job = StripePush {
            invoice_id: *invoice_id,
        };
        if super::enqueue_once(&mut tx, &job, &job.idempotency_key(), None)
            .await
            .map_err(|e| JobError::Transient(format!("enqueue: {e}")))?
        {
            queued += 1;
        }
    }
    tx.commit().await?;
    Ok(queued)
}

/// The process's Stripe client (`None`: `STRIPE_API_KEY` is not set).
fn client(deps: &Deps) -> Option<std::sync::Arc<StripeClient>> {
    let config = deps.config.stripe.as_ref()?;
    Some(deps.client(|deps| {
        StripeClient::new(
            config.base_url.clone(),
            config.api_key.clone(),
            deps.providers.http.clone(),
            deps.providers.breaker(stripe::PROVIDER),
        )
    }))
}

/// Amount in cents of a line or total (already rounded to cents).
fn cents(usd: rust_decimal::Decimal) -> Result<i64, JobError> {
    i64::try_from(money::round_line(usd) * rust_decimal::Decimal::ONE_HUNDRED)
        .map_err(|_| JobError::Permanent(format!("amount {usd} does not fit in cents")))
}

impl Job for StripePush {
    const QUEUE: &'static str = "stripe_push";
    const MAX_ATTEMPTS: usize = 10;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let Some(stripe) = client(deps) else {
            return Err(JobError::Permanent(
                "STRIPE_API_KEY is not set: cannot send invoices to Stripe".into(),
            ));
        };
        let mut conn = deps.pool.acquire().await?;
        let Some((invoice, lines)) = store::stripe::invoice(&mut conn, self.invoice_id).await?
        else {
            return Err(JobError::Permanent(format!(
                "invoice {} is not a finalized invoice",
                self.invoice_id
            )));
        };
        if invoice.stripe_push.as_deref() != Some("pending") {
            return Ok(()); // sent already, or not for Stripe
        }
        drop(conn);
        let days_until_due = deps.config.stripe.as_ref().map_or(14, |s| s.days_until_due);
        let customer = customer(deps, &stripe, &invoice).await?;
        let mut conn = deps.pool.acquire().await?;
        let ours = invoice.id.to_string();

        // The invoice: ours by its stored id, else by our id in its metadata, else a new draft.
        let mut draft = match &invoice.stripe_invoice_id {
            Some(id) => stripe.invoice(id).await?,
            None => match stripe.find_invoice(&ours).await? {
                Some(found) => found,
                None => {
                    let form = Form::new()
                        .set("customer", &customer)
                        .set("collection_method", "send_invoice")
                        .set("days_until_due", days_until_due)
                        .set("auto_advance", false)
                        .set("currency", "usd")
                        .set("pending_invoice_items_behavior", "exclude")
                        .set("description", invoice_title(&invoice))
                        .set("metadata[invoice_id]", &ours)
                        .set("metadata[agent_id]", invoice.agent_id);
                    let key = format!("agent-meter:invoice:{ours}:create");
                    let created = stripe.create_invoice(&form, &key).await?;
                    crate::failpoint::hit(crate::failpoint::AFTER_STRIPE_INVOICE);
                    created
                }
            },
        };
        if invoice.stripe_invoice_id.as_deref() != Some(draft.id.as_str()) {
            store::stripe::set_id(&mut conn, StripeId::Invoice, invoice.id, &draft.id).await?;
        }

        if draft.status.as_deref() == Some("draft") {
            // One item per line that has an amount; items Stripe has are matched by our line id.
            let items = stripe.invoice_items(&draft.id).await?;
            for line in lines.iter().filter(|l| !l.amount_usd.is_zero()) {
                let line_id = line.id.to_string();
                let existing = items
                    .iter()
                    .find(|i| i.metadata.get("line_id") == Some(&line_id));
                let item_id = match existing {
                    Some(item) => item.id.clone(),
                    None => {
                        let form = Form::new()
                            .set("customer", &customer)
                            .set("invoice", &draft.id)
                            .set("amount", cents(line.amount_usd)?)
                            .set("currency", "usd")
                            .set("description", &line.description)
                            .set("metadata[invoice_id]", &ours)
                            .set("metadata[line_id]", &line_id);
                        let key = format!("agent-meter:invoice:{ours}:line:{line_id}");
                        stripe.create_invoice_item(&form, &key).await?.id
                    }
                };
                if line.stripe_item_id.as_deref() != Some(item_id.as_str()) {
                    store::stripe::set_id(&mut conn, StripeId::Item, line.id, &item_id).await?;
                }
            }
            draft = stripe.invoice(&draft.id).await?;
        }

        // Stripe must ask for exactly our total before anyone is sent a bill.
        let total = cents(invoice.total_usd)?;
        if draft.amount_due != total {
            let why = format!(
                "Stripe's amount_due is {} cents but our total is {total} cents (invoice {}, Stripe {})",
                draft.amount_due, invoice.id, draft.id
            );
            store::stripe::set_error(&mut conn, invoice.id, Some(&why)).await?;
            return Err(JobError::Permanent(why));
        }

        if draft.status.as_deref() == Some("draft") {
            let form = Form::new().set("auto_advance", false);
            let key = format!("agent-meter:invoice:{ours}:finalize");
            draft = stripe
                .invoice_action(&draft.id, "finalize", &form, &key)
                .await?;
        }
        if draft.status.as_deref() == Some("open") {
            let key = format!("agent-meter:invoice:{ours}:send");
            draft = stripe
                .invoice_action(&draft.id, "send", &Form::new(), &key)
                .await?;
        }
        let sent = store::stripe::Sent {
            number: draft.number.as_deref(),
            hosted_invoice_url: draft.hosted_invoice_url.as_deref(),
            due_at: draft.due_date.and_then(unix),
        };
        store::stripe::set_sent(&mut conn, invoice.id, &sent).await?;
        tracing::info!(invoice.id = %invoice.id, stripe.invoice = %draft.id, cents = total,
                       "invoice sent to Stripe");
        Ok(())
    }
}

/// The agency's Stripe customer: stored, else found by our agent id, else made. The agent's row
/// stays locked meanwhile, so two pushes for one agency make one customer.
async fn customer(
    deps: &Deps,
    stripe: &StripeClient,
    invoice: &PushInvoice,
) -> Result<String, JobError> {
    let mut conn = deps.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    if let Some(id) = store::stripe::lock_customer(&mut tx, invoice.agent_id).await? {
        return Ok(id);
    }
    let agent_id = invoice.agent_id.to_string();
    let customer = match stripe.find_customer(&agent_id).await? {
        Some(found) => found,
        None => {
            let form = Form::new()
                .set("email", &invoice.email)
                .set("name", &invoice.agency_name)
                .set("metadata[agent_id]", &agent_id);
            // Per invoice: after Stripe deletes a customer, the next invoice makes a new one.
            let key = format!("agent-meter:invoice:{}:customer", invoice.id);
            stripe.create_customer(&form, &key).await?
        }
    };
    store::stripe::set_id(&mut tx, StripeId::Customer, invoice.agent_id, &customer.id).await?;
    tx.commit().await?;
    Ok(customer.id)
}

fn invoice_title(invoice: &PushInvoice) -> String {
    format!(
        "{} — agent-meter, {}",
        invoice.agency_name,
        invoice.period_start.format("%B %Y")
    )
}

fn unix(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

/// Applies one stored Stripe event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StripeEvent {
    pub event_id: String,
}

impl StripeEvent {
    pub fn idempotency_key(&self) -> String {
        format!("stripe-event:{}", self.event_id)
    }
}

/// The payment status an invoice event sets.
pub fn payment_status(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "invoice.finalized" => "open",
        "invoice.paid" => "paid",
        "invoice.payment_failed" => "past_due",
        "invoice.voided" => "void",
        "invoice.marked_uncollectible" => "uncollectible",
        _ => return None,
    })
}

impl Job for StripeEvent {
    const QUEUE: &'static str = "stripe_event";
    const MAX_ATTEMPTS: usize = 8;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let mut conn = deps.pool.acquire().await?;
        let Some((kind, payload)) = store::stripe::event(&mut conn, &self.event_id).await? else {
            return Err(JobError::Permanent(format!("no event {}", self.event_id)));
        };
        let object = &payload["data"]["object"];
        let mut tx = conn.begin().await?;
        if kind == "customer.deleted" {
            if let Some(id) = object["id"].as_str() {
                let n = store::stripe::forget_customer(&mut tx, id).await?;
                tracing::info!(stripe.customer = id, agents = n, "Stripe customer deleted");
            }
        } else if let Some(status) = payment_status(&kind) {
            let invoice: Invoice = serde_json::from_value(object.clone())
                .map_err(|e| JobError::Permanent(format!("{kind}: not an invoice: {e}")))?;
            let payment = store::stripe::Payment {
                stripe_invoice_id: &invoice.id,
                invoice_id: invoice
                    .metadata
                    .get("invoice_id")
                    .and_then(|id| id.parse().ok()),
                status,
                paid_at: invoice
                    .status_transitions
                    .as_ref()
                    .and_then(|t| t.paid_at)
                    .and_then(unix),
                hosted_invoice_url: invoice.hosted_invoice_url.as_deref(),
                number: invoice.number.as_deref(),
            };
            match store::stripe::apply_payment(&mut tx, &payment).await? {
                Some(moved) => {
                    tracing::info!(invoice.id = %moved.id, status, event = %self.event_id,
                                   "payment status moved");
                    let kind = match status {
                        "paid" => Some("invoice.paid"),
                        "past_due" => Some("invoice.payment_failed"),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        let data = serde_json::json!({
                            "invoice_id": moved.id,
                            "period": moved.period_start.format("%Y-%m").to_string(),
                            "total_usd": store::reports::cents(moved.total_usd),
                            "payment_status": status,
                            "hosted_invoice_url": invoice.hosted_invoice_url,
                        });
                        let id = format!("msg_{}_{}", kind.replace('.', "_"), self.event_id);
                        store::outbound::emit(&mut tx, moved.agent_id, &id, kind, data).await?;
                    }
                    if status == "past_due" && deps.config.ops_discord_webhook_url.is_some() {
                        let note = NotifyOps {
                            content: format!(
                                "⚠️ Payment failed: {} for {}, {} USD (Stripe {})",
                                moved.agency_name,
                                moved.period_start.format("%Y-%m"),
                                store::reports::cents(moved.total_usd),
                                invoice.id
                            ),
                        };
                        let key = format!("ops-note:{}", self.event_id);
                        super::enqueue(&mut tx, &note, Some(&key))
                            .await
                            .map_err(|e| JobError::Transient(format!("enqueue: {e}")))?;
                    }
                }
                None => tracing::info!(event = %self.event_id, kind, stripe.invoice = %invoice.id,
                                       "event changes nothing (not ours, late or repeated)"),
            }
        }
        store::stripe::mark_applied(&mut tx, &self.event_id).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// An event's id and type, read from its body (after the signature is checked).
pub fn event_head(body: &[u8]) -> Option<(String, String, Value)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let id = value["id"].as_str()?.to_string();
    let kind = value["type"].as_str()?.to_string();
    (id.starts_with("evt_") && !kind.is_empty()).then_some((id, kind, value))
}
