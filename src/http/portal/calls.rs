//! The portal's calls: the paged list (searchable by the words of a transcript or summary) and one
//! call's page with all it said.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use chrono::{DateTime, Utc};
use maud::{Markup, Render, html};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Ask, Built, LangQuery, Shows,
    auth::Agency,
    i18n::{Lang, t},
    one_page, paging,
    render::{Paged, table},
    tenant_page,
};
use crate::http::{AppState, error::ApiError};

/// Characters of a search kept (longer ones are cut): a bounded pattern for a bounded scan.
const MAX_SEARCH_CHARS: usize = 100;

/// `?q=` as an `ILIKE` pattern: trimmed, at most [`MAX_SEARCH_CHARS`] characters, `%`, `_` and
/// `\` matched literally, anywhere in the text; `None` when blank. With the text kept, shown
/// back in the search box.
pub(super) fn search_pattern(q: Option<&str>) -> Option<(String, String)> {
    let q: String = q?.trim().chars().take(MAX_SEARCH_CHARS).collect();
    if q.is_empty() {
        return None;
    }
    let mut pattern = String::from("%");
    for ch in q.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    Some((pattern, q))
}

/// A row of the calls list: id, start, caller, seconds, billed minutes, findings, transfers and
/// the summary's start.
type CallsRow = (
    Uuid,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<Decimal>,
    Decimal,
    Option<String>,
    serde_json::Value,
    Option<String>,
);

/// `/portal/calls`: the calls, newest first, paged, with what each cost and found; `?q=`
/// keeps those whose transcript or summary has the words.
pub(super) fn calls<'c>(c: &'c mut PgConnection, who: &'c Agency, ask: Ask) -> Built<'c> {
    Box::pin(async move {
        let (l, tz) = (who.lang, ask.tz);
        let (offset, fetch, page) = paging(ask.page);
        let search = search_pattern(ask.q.as_deref());
        // A search keeps the calls whose transcript or summary contains the words:
        // `search_call_content` (migration 0030) matches the agency's own `call_content`
        // through the trigram indexes, which ILIKE under RLS could not use; the calls
        // themselves are still read through RLS.
        let filter = if search.is_some() {
            "WHERE c.id IN (SELECT s FROM search_call_content($3) s)"
        } else {
            "WHERE $3::text IS NULL"
        };
        let sql = format!(
            // The page first, then each call's minutes by key (its base row and its
            // corrections, both indexed): written over `calls` directly, the lookups
            // scanned the agency's whole ledger once per row shown (1.8 s at 20,000 calls).
            // Findings are the call's own; one saved before findings named their call
            // (migration 0020) is shown with every call of its lead.
            "WITH page AS (
                     SELECT c.id, c.started_at, c.created_at, c.customer_number, c.duration_seconds,
                            c.lead_id, c.vapi_call_id, 'vapi_call:' || c.vapi_call_id AS key
                       FROM calls c {filter}
                      ORDER BY COALESCE(c.started_at, c.created_at) DESC, c.id
                      LIMIT $2 OFFSET $1)
                 SELECT p.id, p.started_at, p.customer_number, p.duration_seconds,
                        COALESCE((SELECT sum(u.quantity) FROM agent_usage_metrics u
                                   WHERE u.metric_type = 'vapi_call_minutes'
                                     AND (u.idempotency_key = p.key OR u.corrects = p.key)), 0),
                        (SELECT string_agg(DISTINCT r.kind, ', ') FROM risk_assessments r
                          WHERE r.vapi_call_id = p.vapi_call_id
                             OR (r.vapi_call_id IS NULL AND r.lead_id = p.lead_id)),
                        COALESCE((SELECT jsonb_agg(jsonb_build_object('at', t.requested_at,
                                         'number', t.number, 'in_hours', t.in_hours)
                                         ORDER BY t.requested_at, t.id)
                                    FROM call_transfers t WHERE t.vapi_call_id = p.vapi_call_id),
                                 '[]'::jsonb),
                        (SELECT left(cc.summary, 160) FROM call_content cc WHERE cc.call_id = p.id)
                   FROM page p ORDER BY COALESCE(p.started_at, p.created_at) DESC, p.id"
        );
        let rows: Vec<CallsRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(offset)
            .bind(fetch)
            .bind(search.as_ref().map(|s| s.0.as_str()))
            .fetch_all(&mut *c)
            .await?;
        let (rows, more) = one_page(rows);
        let rows = rows.iter().map(|row| calls_row(l, tz, row)).collect();
        let (shown, query) = match &search {
            Some((_, q)) => {
                let encoded: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
                (q.as_str(), format!("&q={encoded}"))
            }
            None => ("", String::new()),
        };
        let list = Paged {
            list: "calls",
            head: &[
                "time",
                "caller",
                "duration",
                "billed_minutes",
                "transfers",
                "summary",
                "findings",
            ],
            rows,
            page,
            more,
            query,
        };
        let body = html! {
            form #search method="get" action="/portal/calls" role="search" {
                input type="search" name="q" value=(shown) maxlength=(MAX_SEARCH_CHARS)
                    aria-label=(t(l, "search")) placeholder=(t(l, "search"));
                " "
                button type="submit" { (t(l, "search_button")) }
            }
            (list.render(l))
        };
        Ok((t(l, "calls").to_string(), body))
    })
}

/// The cells of one call in the list; its time links to the call's page.
fn calls_row(l: Lang, tz: chrono_tz::Tz, row: &CallsRow) -> Vec<Markup> {
    let (id, at, caller, secs, minutes, findings, transfers, summary) = row;
    let when = at
        .map(|a| a.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".to_string());
    vec![
        html! { a href={ "/portal/calls/" (id) } { (when) } },
        caller.as_deref().unwrap_or("-").render(),
        seconds(*secs).render(),
        minutes.normalize().to_string().render(),
        transfers_text(l, tz, transfers).render(),
        summary.as_deref().unwrap_or("").render(),
        findings.as_deref().unwrap_or("").render(),
    ]
}

/// A call's length in whole seconds; empty when unknown.
fn seconds(secs: Option<Decimal>) -> String {
    secs.map(|s| s.round_dp(0).to_string()).unwrap_or_default()
}

/// A call's transfers on the calls page: `→ +19285550100 10:02`, each, with the out-of-hours
/// ones saying a message was taken.
fn transfers_text(l: Lang, tz: chrono_tz::Tz, transfers: &serde_json::Value) -> String {
    let items = transfers.as_array().map(Vec::as_slice).unwrap_or_default();
    let shown: Vec<String> = items
        .iter()
        .map(|x| {
            let at = x["at"]
                .as_str()
                .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
                .map(|a| a.with_timezone(&tz).format("%H:%M").to_string())
                .unwrap_or_default();
            let number = x["number"].as_str().unwrap_or("");
            match x["in_hours"].as_bool() {
                Some(true) => format!("→ {number} {at}"),
                _ => format!("{at} ({})", t(l, "out_of_hours")),
            }
        })
        .collect();
    shown.join("; ")
}

/// What one call said, as stored from its end-of-call report.
#[derive(sqlx::FromRow)]
struct CallContent {
    started_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    customer_number: Option<String>,
    duration_seconds: Option<Decimal>,
    ended_reason: Option<String>,
    call_type: Option<String>,
    summary: Option<String>,
    structured_data: Option<serde_json::Value>,
    success_evaluation: Option<String>,
    transcript: Option<String>,
    recording_url: Option<String>,
    costs: Option<serde_json::Value>,
}

/// `/portal/calls/{id}`: what one call said (summary, success evaluation, caller details,
/// recording, Vapi's costs, transcript), all escaped; the recording is a link only when it is an
/// `https` URL. Another agency's call, like a missing one, is 404 (RLS hides it).
pub(super) async fn call(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LangQuery>,
) -> Response {
    let tz = app.config.billing_timezone;
    let id: Option<Uuid> = id.parse().ok();
    tenant_page(&app, &headers, q.lang, Shows::Service, |c, who| {
        Box::pin(async move {
            let l = who.lang;
            let content: Option<CallContent> =
                match id {
                    Some(id) => sqlx::query_as(
                        "SELECT c.started_at, c.created_at, c.customer_number, c.duration_seconds,
                                c.ended_reason, cc.call_type, cc.summary, cc.structured_data,
                                cc.success_evaluation, cc.transcript, cc.recording_url, cc.costs
                           FROM calls c LEFT JOIN call_content cc ON cc.call_id = c.id
                          WHERE c.id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await?,
                    None => None,
                };
            let Some(call) = content else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    t(l, "no_call"),
                ));
            };
            let when = call
                .started_at
                .unwrap_or(call.created_at)
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M")
                .to_string();
            Ok((
                format!("{} {when}", t(l, "call")),
                call_page(l, &when, &call),
            ))
        })
    })
    .await
}

/// The body of a call's page.
fn call_page(l: Lang, when: &str, call: &CallContent) -> Markup {
    let kind = match call.call_type.as_deref() {
        Some("inboundPhoneCall") => t(l, "inbound"),
        Some("outboundPhoneCall") => t(l, "outbound"),
        Some("webCall") => t(l, "web"),
        Some(other) => other,
        None => "",
    };
    let facts = [
        ("time", when.to_string()),
        (
            "caller",
            call.customer_number.as_deref().unwrap_or("-").to_string(),
        ),
        ("type", kind.to_string()),
        ("duration", seconds(call.duration_seconds)),
        (
            "ended_reason",
            call.ended_reason.clone().unwrap_or_default(),
        ),
        (
            "success",
            call.success_evaluation.clone().unwrap_or_default(),
        ),
    ];
    let data_rows: Vec<Vec<Markup>> = call
        .structured_data
        .as_ref()
        .and_then(|d| d.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| vec![k.render(), data_text(v).render()])
                .collect()
        })
        .unwrap_or_default();
    let cost_rows: Vec<Vec<Markup>> = call
        .costs
        .as_ref()
        .and_then(|c| c.as_array())
        .map(|items| items.iter().map(cost_row).collect())
        .unwrap_or_default();
    html! {
        p { a href="/portal/calls" { (t(l, "all_calls")) } }
        table #call {
            @for (label, value) in &facts {
                tr { th { (t(l, label)) } td { (value) } }
            }
        }
        h2 { (t(l, "summary")) }
        p #summary { (call.summary.as_deref().unwrap_or("-")) }
        h2 { (t(l, "structured")) }
        div #structured { (table(l, &["field", "value"], &data_rows)) }
        h2 { (t(l, "recording")) }
        p #recording {
            @match call.recording_url.as_deref() {
                Some(url) if crate::vapi::is_https_url(url) => {
                    a href=(url) rel="noopener noreferrer" target="_blank" id="recording-link" {
                        (t(l, "listen"))
                    }
                }
                Some(other) => span { (other) },
                None => "-",
            }
        }
        h2 { (t(l, "costs")) }
        div #costs { (table(l, &["part", "minutes", "cost"], &cost_rows)) }
        h2 { (t(l, "transcript")) }
        pre #transcript style="white-space:pre-wrap;font:inherit" {
            (call.transcript.as_deref().unwrap_or("-"))
        }
    }
}

/// A value of the caller details: a string as it is, a list as `a, b`, anything else as JSON.
fn data_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// One part of Vapi's `costs[]`: its type (with the provider, model or sub-type that names it),
/// its minutes and its cost, exact as Vapi wrote them.
fn cost_row(part: &serde_json::Value) -> Vec<Markup> {
    let word = |key: &str| part.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let number = |key: &str| match part.get(key) {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let detail = [
        word("provider"),
        word("subType"),
        part.pointer("/model/model")
            .and_then(|v| v.as_str())
            .unwrap_or(""),
    ]
    .into_iter()
    .filter(|w| !w.is_empty())
    .collect::<Vec<_>>()
    .join(", ");
    let name = if detail.is_empty() {
        word("type").to_string()
    } else {
        format!("{} ({detail})", word("type"))
    };
    vec![
        name.render(),
        number("minutes").render(),
        number("cost").render(),
    ]
}
