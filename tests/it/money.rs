//! Money edges (issue 21, item 4): a change of billing zone, past prices, margins, corrections.

use agent_meter::billing;
use chrono::{DateTime, Utc};
use chrono_tz::{America::Phoenix, Tz, UTC};
use rust_decimal::Decimal;

use crate::{cli::run_line, helpers::*};

/// Per invoice: (month, zone, starts_at, scans held as usage or adjustment).
async fn held(db: &TestDb) -> Vec<(String, String, DateTime<Utc>, Decimal)> {
    db.rows(
        "SELECT to_char(i.period_start, 'YYYY-MM'), i.time_zone, i.starts_at,
                COALESCE(sum(l.quantity) FILTER (WHERE l.kind IN ('usage', 'adjustment')), 0)
           FROM invoices i LEFT JOIN invoice_lines l ON l.invoice_id = i.id
          GROUP BY i.id ORDER BY i.period_start",
    )
    .await
}

/// Finalizes November in `first`, then drafts December in `second`: the row at 03:00 UTC on
/// December 1st (November in Phoenix, December in UTC) is on exactly one of the two.
async fn zone_change(first: Tz, second: Tz) -> Vec<(String, String, DateTime<Utc>, Decimal)> {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let email = db.email_of(agent).await;
    add_usage(&db.pool, agent, SCAN, "2026-12-01T03:00:00Z", "edge").await;
    let nov = month("2026-11");
    billing::rollup(&db.pool, nov, first, Some(&email))
        .await
        .expect("rollup");
    billing::finalize(&db.pool, nov, first, Some(&email), later())
        .await
        .expect("finalize");
    billing::rollup(&db.pool, nov.next(), second, Some(&email))
        .await
        .expect("rollup");
    let out = held(&db).await;
    let provenance: Vec<(String, Option<String>)> = db
        .rows("SELECT state, to_char(invoice_month, 'YYYY-MM') FROM usage_provenance")
        .await;
    assert_eq!(provenance.len(), 1, "{provenance:?}");
    out
}

#[tokio::test]
async fn a_change_of_billing_zone_bills_a_boundary_row_once() {
    // Phoenix, then UTC: November (Phoenix) holds it; December starts where November ended.
    let nov_ends = at("2026-12-01T07:00:00Z");
    assert_eq!(
        zone_change(Phoenix, UTC).await,
        [
            (
                "2026-11".into(),
                "America/Phoenix".into(),
                at("2026-11-01T07:00:00Z"),
                Decimal::ONE
            ),
            ("2026-12".into(), "UTC".into(), nov_ends, Decimal::ZERO),
        ]
    );
    // UTC, then Phoenix: November (UTC) ended at midnight UTC, so December holds it.
    assert_eq!(
        zone_change(UTC, Phoenix).await,
        [
            (
                "2026-11".into(),
                "UTC".into(),
                at("2026-11-01T00:00:00Z"),
                Decimal::ZERO
            ),
            (
                "2026-12".into(),
                "America/Phoenix".into(),
                at("2026-12-01T00:00:00Z"),
                Decimal::ONE
            ),
        ]
    );
}

/// A scan metered at the price in force on `occurred`, as metering writes it.
async fn metered_scan(db: &TestDb, agent: uuid::Uuid, occurred: &str, key: &str) {
    UsageRow::new(agent, ("solar_ocr_scan", "1", None), occurred, key)
        .provider_cost(Some("0.01"))
        .insert(&db.pool)
        .await;
}

/// The agent's November scans as invoiced: (kind, price, quantity, amount), by price.
async fn scan_lines(db: &TestDb) -> Vec<(String, String, String, String)> {
    let rows: Vec<(String, Decimal, Decimal, Decimal)> = db
        .rows(
            "SELECT l.kind, l.unit_price_usd, l.quantity, l.amount_usd FROM invoice_lines l
           JOIN invoices i ON i.id = l.invoice_id
          WHERE l.metric_type = 'solar_ocr_scan' AND i.period_start = '2026-11-01'
          ORDER BY l.unit_price_usd",
        )
        .await;
    rows.into_iter()
        .map(|(k, p, q, a)| {
            (
                k,
                p.normalize().to_string(),
                q.normalize().to_string(),
                a.to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_price_from_a_past_day_re_prices_only_when_asked_and_never_a_final_invoice() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let email = db.email_of(agent).await;
    metered_scan(&db, agent, "2026-11-10T18:00:00Z", "scan-a").await;
    metered_scan(&db, agent, "2026-11-20T18:00:00Z", "scan-b").await;
    let prices = || async { crate::cli::run_ok(&db.url, "prices list --json").await };
    let before = prices().await;
    // Refused, saying what it would re-price; nothing changes.
    let set_price = "prices set solar_ocr_scan 0.10 --from 2026-11-15";
    let (ok, _, err) = run_line(&db.url, set_price).await;
    assert!(
        !ok && err.contains("1 metered solar_ocr_scan row(s) since then would be re-priced")
            && err.contains("--reprice"),
        "{err}"
    );
    assert_eq!(prices().await, before, "the price was rolled back");
    // Asked: the November 20th scan is reversed and entered again at 0.10, in its own month.
    let (ok, out, err) = run_line(&db.url, &format!("{set_price} --reprice")).await;
    assert!(
        ok && out.contains("re-priced 1 metered row(s)"),
        "{out}{err}"
    );
    type Row = (
        String,
        Decimal,
        Decimal,
        Option<Decimal>,
        DateTime<Utc>,
        Option<String>,
    );
    let rows: Vec<Row> = db
        .rows(
            "SELECT idempotency_key, quantity, unit_price_usd, provider_cost_usd, occurred_at,
                    corrects
               FROM agent_usage_metrics WHERE idempotency_key LIKE 'scan-b%'
              ORDER BY idempotency_key",
        )
        .await;
    let at_b = at("2026-11-20T18:00:00Z");
    let d = |s: &str| s.parse::<Decimal>().expect("decimal");
    let keys: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(keys.len(), 3, "{rows:?}");
    assert!(
        keys[0] == "scan-b"
            && keys[1].starts_with("scan-b:p")
            && keys[2].starts_with("scan-b:rev-p"),
        "{keys:?}"
    );
    assert_eq!(
        (rows[1].1, rows[1].2, rows[1].3, rows[1].4),
        (d("1"), d("0.10"), Some(d("0.01")), at_b)
    );
    assert_eq!(
        (rows[2].1, rows[2].2, rows[2].3, rows[2].4),
        (d("-1"), d("0.075"), Some(d("-0.01")), at_b)
    );
    assert!(
        rows[1..].iter().all(|r| r.5.as_deref() == Some("scan-b")),
        "provenance kept"
    );
    // A scan metered after the change costs what the re-priced one does.
    metered_scan(&db, agent, "2026-11-25T18:00:00Z", "scan-c").await;
    rollup(&db.pool, "2026-11", Some(&email)).await;
    assert_eq!(
        scan_lines(&db).await,
        [
            ("usage".into(), "0.075".into(), "1".into(), "0.08".into()),
            ("usage".into(), "0.1".into(), "2".into(), "0.20".into()),
        ]
    );
    // Under a finalized invoice nothing may be re-priced.
    finalize(&db.pool, "2026-11", Some(&email))
        .await
        .expect("finalize");
    let before = prices().await;
    let set_price = "prices set solar_ocr_scan 0.20 --from 2026-11-20 --reprice";
    let (ok, _, err) = run_line(&db.url, set_price).await;
    assert!(
        !ok && err.contains("finalized invoices (2026-11) hold some of them"),
        "{err}"
    );
    assert_eq!(prices().await, before);
}

/// Found by the ledger property test: a month's draft made in one zone before the previous
/// month's invoice exists starts where the month starts in that zone (UTC: midnight); the previous
/// month, made later in another zone (Phoenix), ends 7 hours after that. A row in between (Dec 31
/// in Phoenix, January in UTC) was held by both, December's final invoice and January's draft,
/// until January was rebuilt. A month now ends where the next month's invoice starts when there
/// is one, as it starts where the previous one ended: the edge is set once.
#[tokio::test]
async fn a_draft_made_in_another_zone_before_the_previous_month_never_shares_a_row() {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let email = db.email_of(agent).await;
    add_usage(&db.pool, agent, SCAN, "2027-01-01T06:59:59Z", "edge").await;
    billing::rollup(&db.pool, month("2027-01"), UTC, Some(&email))
        .await
        .expect("january in UTC");
    for m in ["2026-11", "2026-12"] {
        finalize(&db.pool, m, Some(&email))
            .await
            .expect("finalize in Phoenix");
    }
    let holders: i64 = db
        .scalar("SELECT count(*) FROM invoices i JOIN agent_usage_metrics u ON invoice_holds(i, u)")
        .await;
    assert_eq!(holders, 1, "{:?}", held(&db).await);
    // December ends where January's draft starts (midnight UTC): the row is January's.
    let jan_starts = at("2027-01-01T00:00:00Z");
    assert_eq!(
        held(&db).await[1..],
        [
            (
                "2026-12".into(),
                "America/Phoenix".into(),
                at("2026-12-01T07:00:00Z"),
                Decimal::ZERO
            ),
            ("2027-01".into(), "UTC".into(), jan_starts, Decimal::ONE),
        ]
    );
}
