//! The operator's commands, one module per family: `agents` (tenants and their lives), `billing`
//! (prices, invoices, usage, the sync), `jobs` (see, re-run and cancel) and `tools` (the billable
//! tool registry). `main.rs` parses the command line and hands each command here.

pub mod agents;
pub mod billing;
pub mod demo;
pub mod export;
pub mod jobs;
pub mod tools;

/// The agent with `email`; an unknown email is an error naming it (a typo, never "nothing").
pub async fn agent(
    conn: &mut sqlx::PgConnection,
    email: &str,
) -> anyhow::Result<crate::store::agents::Agent> {
    crate::store::agents::find_by_email(conn, email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no agent with email {email}"))
}
