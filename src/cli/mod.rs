//! The operator's commands, one module per family: `agents` (tenants and their lives), `billing`
//! (prices, invoices, usage, the sync), `jobs` (see, re-run and cancel) and `tools` (the billable
//! tool registry). `main.rs` parses the command line and hands each command here.

pub mod agents;
pub mod billing;
pub mod jobs;
pub mod tools;
