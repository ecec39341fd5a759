//! Money edges (issue 21, item 4): a change of billing zone, past prices, margins, corrections.

use agent_meter::billing::{self, Month};
use chrono::{DateTime, Utc};
use chrono_tz::{America::Phoenix, Tz, UTC};
use rust_decimal::Decimal;

use crate::helpers::*;

fn month(m: &str) -> Month {
    Month::parse(m).expect("month")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("time")
}

async fn scan(db: &TestDb, agent: uuid::Uuid, occurred: &str, key: &str) {
    sqlx::query(
        "INSERT INTO agent_usage_metrics (agent_id, metric_type, quantity, unit_price_usd, cost_usd,
                                          occurred_at, idempotency_key)
         VALUES ($1, 'solar_ocr_scan', 1, 0.075, 0.075, $2::timestamptz, $3)",
    )
    .bind(agent)
    .bind(occurred)
    .bind(key)
    .execute(&db.pool)
    .await
    .expect("usage row");
}

/// Per invoice: (month, zone, starts_at, scans held as usage or adjustment).
async fn held(db: &TestDb) -> Vec<(String, String, DateTime<Utc>, Decimal)> {
    sqlx::query_as(
        "SELECT to_char(i.period_start, 'YYYY-MM'), i.time_zone, i.starts_at,
                COALESCE(sum(l.quantity) FILTER (WHERE l.kind IN ('usage', 'adjustment')), 0)
           FROM invoices i LEFT JOIN invoice_lines l ON l.invoice_id = i.id
          GROUP BY i.id ORDER BY i.period_start",
    )
    .fetch_all(&db.pool)
    .await
    .expect("invoices")
}

/// Finalizes November in `first`, then drafts December in `second`: the row at 03:00 UTC on
/// December 1st (November in Phoenix, December in UTC) is on exactly one of the two.
async fn zone_change(first: Tz, second: Tz) -> Vec<(String, String, DateTime<Utc>, Decimal)> {
    let db = TestDb::seeded().await;
    let agent = db.agent_id(PHONE_1).await;
    let email = db.email_of(agent).await;
    scan(&db, agent, "2026-12-01T03:00:00Z", "edge").await;
    billing::rollup(&db.pool, month("2026-11"), first, Some(&email))
        .await
        .expect("rollup");
    billing::finalize(
        &db.pool,
        month("2026-11"),
        first,
        Some(&email),
        at("2027-06-01T00:00:00Z"),
    )
    .await
    .expect("finalize");
    billing::rollup(&db.pool, month("2026-12"), second, Some(&email))
        .await
        .expect("rollup");
    let out = held(&db).await;
    let provenance: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state, to_char(invoice_month, 'YYYY-MM') FROM usage_provenance")
            .fetch_all(&db.pool)
            .await
            .expect("provenance");
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
    scan(&db, agent, "2027-01-01T06:59:59Z", "edge").await;
    billing::rollup(&db.pool, month("2027-01"), UTC, Some(&email))
        .await
        .expect("january in UTC");
    for m in ["2026-11", "2026-12"] {
        billing::finalize(
            &db.pool,
            month(m),
            Phoenix,
            Some(&email),
            at("2027-06-01T00:00:00Z"),
        )
        .await
        .expect("finalize in Phoenix");
    }
    let holders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM invoices i JOIN agent_usage_metrics u ON invoice_holds(i, u)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("holders");
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
