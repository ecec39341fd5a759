//! Margins (issue 21, item 4): what usage cost us, the provider's reported cost else the price's
//! unit cost, through `agent-meter usage`.

use crate::helpers::*;

const MINUTES: &str = "vapi_call_minutes";
const SCANS: &str = "solar_ocr_scan";

/// One `usage` ledger row for `agent` as a test inserts it, at the seeded price of `metric`:
/// `provider` is the provider's reported cost, when it reported one.
async fn metered(
    db: &TestDb,
    (agent, metric): (uuid::Uuid, &str),
    (quantity, provider): (&str, Option<&str>),
    occurred: &str,
    key: &str,
) {
    let price = if metric == MINUTES { "0.20" } else { "0.075" };
    UsageRow::new(agent, (metric, quantity, Some(price)), occurred, key)
        .provider_cost(provider)
        .insert(&db.pool)
        .await;
}

/// `rows` with `agent`'s `metric` row showing `figures` instead.
fn with_figures(
    mut rows: Vec<(String, String, String)>,
    (agent, metric): (uuid::Uuid, &str),
    figures: &str,
) -> Vec<(String, String, String)> {
    let row = rows
        .iter_mut()
        .find(|r| r.0 == agent.to_string() && r.1 == metric)
        .expect("the agent's row");
    row.2 = figures.to_string();
    rows
}

/// An agent's own `price` of `metric` with a unit `cost` over `[from, to)`.
async fn price_with_cost(
    db: &TestDb,
    agent: uuid::Uuid,
    (metric, price, cost): (&str, &str, &str),
    (from, to): (&str, Option<&str>),
) {
    sqlx::query(
        "INSERT INTO pricing_config (agent_id, metric_type, unit, unit_price_usd, unit_cost_usd,
                                     effective_from, effective_to)
         VALUES ($1, $2, 'unit', $3::numeric, $4::numeric, $5::date, $6::date)",
    )
    .bind(agent)
    .bind(metric)
    .bind(price)
    .bind(cost)
    .bind(from)
    .bind(to)
    .execute(&db.pool)
    .await
    .expect("price");
}

/// `usage --month 2026-11 --format json`, per (agent, metric): "count billed provider_cost cost
/// margin cost_source" (the count as JSON writes it).
async fn usage_json(db: &TestDb) -> Vec<(String, String, String)> {
    let out = agent_meter_on(db, &["usage", "--month", "2026-11", "--format", "json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let mut rows: Vec<(String, String, String)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            let figures = ["billed", "provider_cost", "cost", "margin", "cost_source"].map(s);
            let figures = format!("{} {}", r["count"], figures.join(" "));
            (s("agent_id"), s("metric_type"), figures)
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rows
}

/// Margins (issue 21, item 4): a usage row costs us what the provider reported for it when it
/// did, else its quantity at the unit cost of the price in force for it (on its day in the
/// billing zone); `usage --format json` says which per row, the same whether read from the ledger,
/// the daily summary or both, and the migration that added the summary's columns backfills them.
#[tokio::test]
async fn margins_use_the_providers_cost_else_the_prices_unit_cost_and_say_which() {
    let db = TestDb::seeded().await;
    let (a, b) = db.two_agents().await;
    // Agent a's minutes cost 0.05 until November 20th (Phoenix), then 0.07; its scans 0.02.
    for (price, from, to) in [
        ((MINUTES, "0.20", "0.05"), "2026-11-01", Some("2026-11-20")),
        ((MINUTES, "0.20", "0.07"), "2026-11-20", None),
        ((SCANS, "0.075", "0.02"), "2026-11-01", None),
    ] {
        price_with_cost(&db, a, price, (from, to)).await;
    }
    // With the provider's cost: 0.90, whatever the unit cost.
    let tenth = "2026-11-10T17:00:00Z";
    metered(&db, (a, MINUTES), ("10", Some("0.90")), tenth, "m1").await;
    // Without: 5 x 0.05.
    metered(&db, (a, MINUTES), ("5", None), "2026-11-10T18:00:00Z", "m2").await;
    // 03:00 UTC on the 20th is still the 19th in Phoenix: 2 x 0.05, not 0.07.
    metered(&db, (a, MINUTES), ("2", None), "2026-11-20T03:00:00Z", "m3").await;
    // Three scans without a provider cost: 3 x 0.02.
    for key in ["s1", "s2", "s3"] {
        metered(&db, (a, SCANS), ("1", None), "2026-11-12T17:00:00Z", key).await;
    }
    // Agent b: the default prices have no unit cost for minutes or scans.
    metered(&db, (b, MINUTES), ("10", Some("0.90")), tenth, "b1").await;
    metered(&db, (b, SCANS), ("1", None), tenth, "b2").await;

    let row = |agent: uuid::Uuid, metric: &str, figures: &str| {
        (agent.to_string(), metric.to_string(), figures.to_string())
    };
    let mut before_21st = vec![
        // 3.40 billed; 0.90 + 0.25 + 0.10 = 1.25; the provider's and unit costs: mixed.
        row(a, MINUTES, "3 3.40 0.90 1.25 2.15 mixed"),
        // 0.225 billed, rounded once: 0.23; 0.06 at the unit cost.
        row(a, SCANS, "3 0.23 0.00 0.06 0.17 unit_cost"),
        row(b, MINUTES, "1 2.00 0.90 0.90 1.10 provider"),
        row(b, SCANS, "1 0.08 0.00 0.00 0.08 none"),
    ];
    before_21st.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    // From the ledger alone (no summary yet), then from the summary.
    assert_eq!(usage_json(&db).await, before_21st);
    agent_meter_on(&db, &["summarize-usage"]).await;
    assert_eq!(usage_json(&db).await, before_21st);
    // A row after the summary's cut, on the 21st: 1 x 0.07, read from the ledger.
    metered(&db, (a, MINUTES), ("1", None), "2026-11-21T17:00:00Z", "m4").await;
    let after = with_figures(before_21st, (a, MINUTES), "4 3.60 0.90 1.32 2.28 mixed");
    assert_eq!(usage_json(&db).await, after);
    // A unit cost set afterwards shows at once (it is read, not summarized).
    db.execute(
        "UPDATE pricing_config SET unit_cost_usd = 0.01
          WHERE agent_id IS NULL AND metric_type = 'solar_ocr_scan'",
    )
    .await;
    let after = with_figures(after, (b, SCANS), "1 0.08 0.00 0.01 0.07 unit_cost");
    assert_eq!(usage_json(&db).await, after);
    // The summary again, then the migration undone and redone: its backfill is exact.
    agent_meter_on(&db, &["summarize-usage"]).await;
    assert_eq!(usage_json(&db).await, after);
    agent_meter::store::db::MIGRATOR
        .undo(&db.pool, 20261203000025)
        .await
        .expect("down to 0025");
    agent_meter::app::migrate(&db.pool).await.expect("up again");
    let summarized: i64 = db
        .count("SELECT count(*) FROM usage_daily WHERE events_without_provider_cost > 0")
        .await;
    assert!(summarized > 0, "the summary was kept and backfilled");
    assert_eq!(usage_json(&db).await, after);
    // The table and CSV carry the same cost, margin and source.
    let csv = agent_meter_on(&db, &["usage", "--month", "2026-11", "--format", "csv"]).await;
    let csv = String::from_utf8_lossy(&csv);
    assert!(
        csv.starts_with(
            "agent_id,agency_name,metric_type,count,quantity,billed,cost,margin,cost_source\n"
        ),
        "{csv}"
    );
    assert_has(&csv, ",vapi_call_minutes,4,18,3.60,1.32,2.28,mixed\n");
    let table = agent_meter_on(&db, &["usage", "--month", "2026-11"]).await;
    let table = String::from_utf8_lossy(&table);
    let line = table
        .lines()
        .find(|l| l.starts_with(&a.to_string()) && l.contains("solar_ocr_scan"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.ends_with("0.23       0.06       0.17 unit_cost"),
        "{line:?}"
    );
}
