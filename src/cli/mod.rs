//! The operator's commands, one module per family: `agents` (tenants and their lives), `billing`
//! (prices, invoices, usage, the sync), `jobs` (see, re-run and cancel) and `tools` (the billable
//! tool registry). `main.rs` parses the command line and hands each command here.

pub mod agents;
pub mod billing;
pub mod demo;
pub mod export;
pub mod jobs;
pub mod tools;
pub mod webhooks;

/// The agent with `email`; an unknown email is an error naming it (a typo, never "nothing").
pub async fn agent(
    conn: &mut sqlx::PgConnection,
    email: &str,
) -> anyhow::Result<crate::store::agents::Agent> {
    crate::store::agents::find_by_email(conn, email)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no agent with email {email}"))
}

/// Prints `rows` as pretty JSON (`json`), or as a table ([`print_table`]) with a line of
/// `cells` per row.
pub fn print_rows<T: serde::Serialize>(
    json: bool,
    rows: &[T],
    columns: &[(&str, i32)],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        print_table(columns, rows.iter().map(cells));
    }
    Ok(())
}

/// A plain-text table: each column's header and width (a negative width aligns right); the last
/// column is not padded.
pub fn print_table(columns: &[(&str, i32)], rows: impl IntoIterator<Item = Vec<String>>) {
    let line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        let mut out = Vec::with_capacity(cells.len());
        for (i, cell) in cells.iter().enumerate() {
            let width = columns.get(i).map_or(0, |c| c.1);
            let w = width.unsigned_abs() as usize;
            out.push(match (i == last, width < 0) {
                (true, false) => cell.clone(),
                (_, true) => format!("{cell:>w$}"),
                (false, false) => format!("{cell:<w$}"),
            });
        }
        out.join(" ")
    };
    let header: Vec<String> = columns.iter().map(|c| c.0.to_string()).collect();
    println!("{}", line(&header));
    for row in rows {
        println!("{}", line(&row));
    }
}

/// `-` for a missing value in a table cell.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}
