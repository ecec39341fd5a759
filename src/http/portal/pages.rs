//! The portal's overview, leads, usage and invoices (a printable page and a PDF), each read in the
//! agency's tenant transaction.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{NaiveDate, Utc};
use maud::{Markup, Render, html};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Ask, Built, LangQuery, Shows,
    auth::Agency,
    i18n::t,
    one_page, paging,
    render::{Paged, chart, money_text, table},
    tenant_page,
};
use crate::{
    billing::Month,
    http::{AppState, error::ApiError},
    money,
    store::usage_daily,
    tools::{self, Category},
};

/// Amount of usage summed per price, given as (unit price, quantity): each line rounded once, as
/// on an invoice.
fn amount(lines: impl IntoIterator<Item = (Decimal, Decimal)>) -> Decimal {
    lines
        .into_iter()
        .map(|(p, q)| money::round_line(money::usage_cost(q, p)))
        .sum()
}

/// The tenant's usage of `month` per metric and price: (metric, price, quantity, events).
async fn month_usage(
    c: &mut PgConnection,
    month: Month,
    tz: chrono_tz::Tz,
) -> Result<Vec<(String, Decimal, Decimal, i64)>, sqlx::Error> {
    let totals = usage_daily::totals(
        c,
        month.first_day,
        month.next().first_day,
        tz,
        usage_daily::Periods::Whole,
    )
    .await?;
    Ok(totals
        .into_iter()
        .map(|t| (t.metric_type, t.unit_price_usd, t.quantity, t.events))
        .collect())
}

/// `/portal/`: this month's calls, minutes, scans, lookups and amount so far, and calls per day.
pub(super) fn overview<'c>(c: &'c mut PgConnection, who: &'c Agency, ask: Ask) -> Built<'c> {
    Box::pin(async move {
        let (l, tz) = (who.lang, ask.tz);
        let month = Month::containing(Utc::now(), tz);
        let (start, end) = (month.start(tz), month.next().start(tz));
        let groups = month_usage(c, month, tz).await?;
        let sum = |metrics: &[&str]| -> Decimal {
            groups
                .iter()
                .filter(|g| metrics.contains(&g.0.as_str()))
                .map(|g| g.2)
                .sum()
        };
        let calls: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM calls WHERE COALESCE(started_at, created_at) >= $1
                    AND COALESCE(started_at, created_at) < $2",
        )
        .bind(start)
        .bind(end)
        .fetch_one(&mut *c)
        .await?;
        let days: Vec<(NaiveDate, i64)> = sqlx::query_as(
            "SELECT (COALESCE(started_at, created_at) AT TIME ZONE $1)::date, count(*) FROM calls
                  WHERE COALESCE(started_at, created_at) >= now() - interval '30 days'
                  GROUP BY 1 ORDER BY 1",
        )
        .bind(tz.name())
        .fetch_all(&mut *c)
        .await?;
        let cards = [
            ("calls", calls.to_string()),
            (
                "minutes",
                sum(&["vapi_call_minutes"])
                    .round_dp(1)
                    .normalize()
                    .to_string(),
            ),
            (
                "scans",
                sum(&tools::metrics_of(Category::Scan))
                    .normalize()
                    .to_string(),
            ),
            (
                "lookups",
                sum(&tools::metrics_of(Category::Lookup))
                    .normalize()
                    .to_string(),
            ),
            (
                "amount",
                money_text(amount(groups.iter().map(|g| (g.1, g.2)))),
            ),
        ];
        let today = Utc::now().with_timezone(&tz).date_naive();
        // The agency's own cap (RLS: the tenant sees its own row), and a banner once noticed.
        let cap = crate::store::caps::status(c, None, Utc::now(), tz)
            .await?
            .pop();
        let body = html! {
            @if let Some(cap) = cap.as_ref().filter(|c| c.noticed.is_some()) {
                p.banner #cap-notice role="status" {
                    b { (cap.noticed.unwrap_or_default()) "% " } (t(l, "cap_notice")) ": "
                    (money_text(cap.usage_usd)) " / " (money_text(cap.cap_usd)) "."
                    @if cap.cap_action == "block" && cap.noticed >= Some(100) {
                        " " (t(l, "cap_blocked"))
                    }
                }
            }
            h2 { (t(l, "this_month")) " (" (month) ")" }
            div.cards #overview {
                @for (label, value) in &cards {
                    div.card { (t(l, label)) b { (value) } }
                }
                @if let Some(cap) = &cap {
                    div.card #usage-cap { (t(l, "usage_cap")) b { (cap.percent()) "%" }
                        (money_text(cap.usage_usd)) " / " (money_text(cap.cap_usd)) }
                }
            }
            h2 { (t(l, "last_30")) }
            (chart(&days, today))
        };
        Ok((format!("{} — {}", who.name, t(l, "overview")), body))
    })
}

/// `/portal/leads`: each lead with its latest property, facts and tags, newest first, paged.
pub(super) fn leads<'c>(c: &'c mut PgConnection, who: &'c Agency, ask: Ask) -> Built<'c> {
    Box::pin(async move {
        let l = who.lang;
        let (offset, fetch, page) = paging(ask.page);
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<serde_json::Value>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
                // The page first, then each lead's latest property and tags (by index).
                "WITH page AS (
                     SELECT le.id, le.phone, le.name, le.updated_at FROM leads le
                      ORDER BY le.updated_at DESC, le.id LIMIT $2 OFFSET $1)
                 SELECT pg.phone, pg.name, pr.address, pr.facts,
                        (SELECT string_agg(tg.tag, ', ' ORDER BY tg.tag) FROM tags tg WHERE tg.lead_id = pg.id)
                   FROM page pg
                   LEFT JOIN LATERAL (SELECT p.address, p.facts FROM properties p WHERE p.lead_id = pg.id
                                       ORDER BY p.created_at DESC LIMIT 1) pr ON true
                  ORDER BY pg.updated_at DESC, pg.id",
            )
            .bind(offset)
            .bind(fetch)
            .fetch_all(&mut *c)
            .await?;
        let (rows, more) = one_page(rows);
        let rows = rows
            .into_iter()
            .map(|(phone, name, address, facts, tags)| {
                vec![
                    phone.render(),
                    name.unwrap_or_default().render(),
                    address.unwrap_or_default().render(),
                    facts_text(facts.as_ref()).render(),
                    tags.unwrap_or_default().render(),
                ]
            })
            .collect();
        let list = Paged {
            list: "leads",
            head: &["phone", "name", "property", "facts", "tags"],
            rows,
            page,
            more,
            query: String::new(),
        };
        Ok((t(l, "leads").to_string(), list.render(l)))
    })
}

/// A property's facts as `key: value; ...` (strings without their quotes).
fn facts_text(facts: Option<&serde_json::Value>) -> String {
    let Some(o) = facts.and_then(|f| f.as_object()) else {
        return String::new();
    };
    o.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `/portal/usage`: the last 12 months per month and metric, newest first.
pub(super) fn usage<'c>(c: &'c mut PgConnection, who: &'c Agency, ask: Ask) -> Built<'c> {
    Box::pin(async move {
        let (l, tz) = (who.lang, ask.tz);
        // The last 12 months in one grouped read, newest first.
        let newest = Month::containing(Utc::now(), tz);
        let oldest = (0..11).fold(newest, |m, _| m.previous());
        let mut groups: Vec<(String, String, Decimal, Decimal, i64)> = usage_daily::totals(
            &mut *c,
            oldest.first_day,
            newest.next().first_day,
            tz,
            usage_daily::Periods::Months,
        )
        .await?
        .into_iter()
        .map(|t| {
            let label = t.period.format("%Y-%m").to_string();
            (label, t.metric_type, t.unit_price_usd, t.quantity, t.events)
        })
        .collect();
        groups.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (&a.1, a.2).cmp(&(&b.1, b.2))));
        let rows: Vec<Vec<Markup>> = groups
            .chunk_by(|a, b| a.0 == b.0 && a.1 == b.1)
            .map(|chunk| {
                let (label, metric) = (&chunk[0].0, &chunk[0].1);
                let count: i64 = chunk.iter().map(|g| g.4).sum();
                let quantity: Decimal = chunk.iter().map(|g| g.3).sum();
                vec![
                    label.render(),
                    metric.render(),
                    count.render(),
                    quantity.normalize().to_string().render(),
                    money_text(amount(chunk.iter().map(|g| (g.2, g.3)))).render(),
                ]
            })
            .collect();
        let head = ["month", "metric", "count", "quantity", "amount"];
        Ok((t(l, "usage").to_string(), table(l, &head, &rows)))
    })
}

/// `/portal/invoices`: every invoice, newest first, linking to its page.
pub(super) fn invoices<'c>(c: &'c mut PgConnection, who: &'c Agency, _: Ask) -> Built<'c> {
    Box::pin(async move {
        let l = who.lang;
        let rows: Vec<(NaiveDate, String, Decimal, Option<String>)> = sqlx::query_as(
            "SELECT period_start, status, total_usd, payment_status FROM invoices
              ORDER BY period_start DESC",
        )
        .fetch_all(&mut *c)
        .await?;
        let rows: Vec<Vec<Markup>> = rows
            .into_iter()
            .map(|(p, status, total, payment)| {
                let m = p.format("%Y-%m").to_string();
                vec![
                    html! { a href={ "/portal/invoices/" (m) } { (m) } },
                    status.render(),
                    money_text(total).render(),
                    payment.map_or("-", |p| t(l, &p)).render(),
                ]
            })
            .collect();
        let head = ["month", "status", "total", "payment"];
        Ok((t(l, "invoices").to_string(), table(l, &head, &rows)))
    })
}

/// An invoice as the tenant sees it.
struct InvoiceView {
    status: String,
    total: Decimal,
    lines: Vec<crate::billing::pdf::PdfLine>,
    /// Its payment at Stripe: status, when paid, and where to pay.
    payment: Option<String>,
    paid_at: Option<chrono::DateTime<chrono::Utc>>,
    pay_url: Option<String>,
}

/// An invoice's head and lines as the tenant sees it, or 404.
async fn invoice_of(c: &mut PgConnection, month: Month) -> Result<InvoiceView, ApiError> {
    type Head = (
        Uuid,
        String,
        Decimal,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<String>,
    );
    let head: Option<Head> = sqlx::query_as(
        "SELECT id, status, total_usd, payment_status, paid_at, hosted_invoice_url
           FROM invoices WHERE period_start = $1",
    )
    .bind(month.first_day)
    .fetch_optional(&mut *c)
    .await?;
    let Some((id, status, total, payment, paid_at, pay_url)) = head else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such invoice",
        ));
    };
    let lines = sqlx::query_as(
        "SELECT description, quantity, unit_price_usd, amount_usd FROM invoice_lines
          WHERE invoice_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await?;
    Ok(InvoiceView {
        status,
        total,
        lines,
        payment,
        paid_at,
        // Only Stripe's own https pages become a button.
        pay_url: pay_url.filter(|u| u.starts_with("https://")),
    })
}

/// `/portal/invoices/{YYYY-MM}` (a printable page) and `/portal/invoices/{YYYY-MM}.pdf`.
pub(super) async fn invoice(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(month): Path<String>,
    Query(q): Query<LangQuery>,
) -> Response {
    let (month, pdf) = match month.strip_suffix(".pdf") {
        Some(m) => (m.to_string(), true),
        None => (month, false),
    };
    let Ok(month) = Month::parse(&month) else {
        return ApiError::bad_request("invalid_month", "the month is YYYY-MM").into_response();
    };
    if pdf {
        return invoice_pdf(&app, &headers, month).await;
    }
    tenant_page(&app, &headers, q.lang, Shows::Invoices, |c, who| {
        Box::pin(async move {
            let l = who.lang;
            let InvoiceView {
                status,
                total,
                lines,
                payment,
                paid_at,
                pay_url,
            } = invoice_of(c, month).await?;
            let payable = matches!(payment.as_deref(), Some("open" | "past_due"));
            let rows: Vec<Vec<Markup>> = lines
                .into_iter()
                .map(|(text, q, p, a)| {
                    vec![
                        text.render(),
                        q.normalize().to_string().render(),
                        p.normalize().to_string().render(),
                        money_text(a).render(),
                    ]
                })
                .collect();
            let head = ["metric", "quantity", "unit_price", "amount"];
            let body = html! {
                p { (who.name) " · " (t(l, "status")) ": " (status) }
                (table(l, &head, &rows))
                p #total { strong { (t(l, "total")) ": " (money_text(total)) } }
                @if let Some(p) = &payment {
                    p #payment {
                        (t(l, "payment")) ": " span.status { (t(l, p)) }
                        @if let Some(at) = paid_at { " (" (t(l, "paid_on")) " " (at.format("%Y-%m-%d")) ")" }
                        @if let (true, Some(url)) = (payable, &pay_url) {
                            " " a #pay.button href=(url) rel="noopener" { (t(l, "pay")) }
                        }
                    }
                }
                p {
                    a #pdf href={ "/portal/invoices/" (month) ".pdf" } { "PDF" }
                    " · "
                    button onclick="window.print()" { (t(l, "print")) }
                }
            };
            Ok((format!("{} {month}", t(l, "invoices")), body))
        })
    })
    .await
}

/// The month's invoice as a PDF download.
async fn invoice_pdf(app: &AppState, headers: &HeaderMap, month: Month) -> Response {
    let who = match super::auth::agency(app, headers, None).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let read = crate::http::api::as_tenant(app, who.id, |c| Box::pin(invoice_of(c, month)));
    match read.await {
        Ok(v) => {
            let bytes = crate::billing::pdf::render(
                &who.name,
                &month.label(),
                &v.status,
                &v.lines,
                v.total,
            );
            let name = format!("attachment; filename=\"invoice-{month}.pdf\"");
            (
                [
                    (header::CONTENT_TYPE, "application/pdf".to_string()),
                    (header::CONTENT_DISPOSITION, name),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}
