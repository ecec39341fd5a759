//! `invoice_rollup`: builds every billable agent's draft invoice for a month (the previous one,
//! when enqueued by the clock on the 1st). Re-running gives the same drafts; finalized invoices
//! are left as they are.

use serde::{Deserialize, Serialize};

use super::{Deps, Job, JobError};
use crate::billing::{self, Month};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvoiceRollup {
    /// `YYYY-MM`.
    pub month: String,
}

impl InvoiceRollup {
    pub fn idempotency_key(&self) -> String {
        format!("invoice-rollup:{}", self.month)
    }
}

impl Job for InvoiceRollup {
    const QUEUE: &'static str = "invoice_rollup";
    const MAX_ATTEMPTS: usize = 6;

    async fn run(self, deps: &Deps) -> Result<(), JobError> {
        let month = Month::parse(&self.month).map_err(JobError::Permanent)?;
        let outcomes =
            billing::rollup(&deps.pool, month, deps.config.billing_timezone, None).await?;
        tracing::info!(month = %month, invoices = outcomes.len(), "invoices rolled up");
        // A finalize that stopped before queueing its Stripe pushes is caught up here.
        if deps.config.stripe.is_some() {
            let queued = super::stripe::enqueue_pending(&deps.pool).await?;
            tracing::info!(queued, "invoices pending for Stripe queued");
        }
        Ok(())
    }
}
