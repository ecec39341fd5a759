//! Monthly invoices from the usage ledger: subscription, the one-time setup fee, one line per
//! metric and price, and adjustment lines for usage that arrived after its month was finalized.
//!
//! Months are calendar months in `BILLING_TIMEZONE`. Each amount is rounded once, half away from
//! zero, to cents (`money::round_line`); the total is the sum of the rounded lines. A draft can be
//! rebuilt any number of times (same inputs, same invoice); a finalized invoice is never changed.
//!
//! Every usage row is billed on exactly one invoice, ever. An invoice records what of the ledger
//! it holds (its month's bounds, a `created_at` watermark, and after which instant it takes late
//! rows), never a write per usage row; SQL's `invoice_holds` is the rule and `usage_provenance`
//! shows, per row, the invoice and line that bills it.
//!
//! - [`month`]: calendar months in the billing timezone ([`crate::money::calendar`], re-exported).
//! - [`lines`]: invoice lines and their rounding.
//! - [`rollup`]: drafts, and what each holds.
//! - [`finalize`]: closing months in order.

pub mod finalize;
pub mod lines;
pub mod pdf;
pub mod rollup;
pub use crate::money::calendar as month;

pub use finalize::{FinalizeError, finalize, finalize_for};
pub use lines::{Line, total};
pub use month::Month;
pub use rollup::{RollupOutcome, billable_agents, ledger_cut, rollup};
