//! The ops web page (`/ops/`): queues, failed jobs with their errors, filters, retry and cancel
//! buttons, "retry all matching", and jobs and cost per agent over the last 30 days.
//!
//! Server-rendered HTML with plain forms (no script needed). Who may use it: the operators of
//! `OPS_TOKENS`/`OPS_TOKEN`. Logging in with a token opens a server-side session (`ops_sessions`:
//! a random id in an `HttpOnly; SameSite=Strict` cookie scoped to `/ops`, `Secure` behind https,
//! only its hash at rest, an expiry, revoked by logging out, refused once its operator or their
//! token is no longer configured); the token itself never goes into a cookie. Every form post must come from our own origin (`Sec-Fetch-Site`/`Origin`), so a
//! cross-site post gets 403. Ten failed logins in a minute from one client get 429
//! ([`super::throttle`]). Every action goes through the same store functions and audit as the
//! ops API.

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;

use std::time::Instant;

use super::{
    AppState, cookie,
    error::ApiError,
    esc,
    ops::{Operator, SESSION_COOKIE, foreign_post, same_origin, session_cookie},
    throttle::{self, Client},
};
use crate::{
    billing::Month,
    store::{
        queue::{self, JobFilter},
        reports, sessions,
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops/", get(page))
        .route("/ops/login", post(login))
        .route("/ops/logout", post(logout))
        .route("/ops/ui/jobs/{id}/retry", post(retry_one))
        .route("/ops/ui/jobs/{id}/cancel", post(cancel_one))
        .route("/ops/ui/retry", post(retry_matching))
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}
.err{color:#a00;max-width:40em}form.inline{display:inline}button{cursor:pointer}.bar{fill:#4a7bd0}.cost{fill:#d08a4a}";

fn shell(body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>agent-meter ops</title><style>{STYLE}</style></head><body>{body}</body></html>"
    ))
}

fn login_form(message: &str) -> Html<String> {
    shell(&format!(
        "<h1>agent-meter ops</h1><p>{}</p><form method=post action=/ops/login>
         <label>Ops token <input type=password name=token id=token autofocus></label>
         <button type=submit id=login>Log in</button></form>",
        esc(message)
    ))
}

#[derive(Deserialize)]
struct LoginIn {
    token: String,
}

async fn login(
    State(app): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Form(f): Form<LoginIn>,
) -> Response {
    if app.config.ops_tokens.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            login_form("The ops page is disabled: OPS_TOKEN and OPS_TOKENS are unset."),
        )
            .into_response();
    }
    // A foreign page cannot log us in.
    if foreign_post(&headers, &app) {
        return (
            StatusCode::FORBIDDEN,
            login_form("Cross-site login refused."),
        )
            .into_response();
    }
    // Checked before the token: once refused, even the right token waits (guessing gains nothing).
    let now = Instant::now();
    if let Err(wait) = app.sign_ins.ops.check(client.0, now) {
        tracing::warn!(client = %client.0, "ops login refused: too many failed logins");
        return throttle::too_many(
            wait,
            login_form("Too many failed logins from here; try again in a minute."),
        );
    }
    let Some(credential) = app.config.ops_token(f.token.as_bytes()) else {
        app.sign_ins.ops.failed(client.0, now);
        return (StatusCode::UNAUTHORIZED, login_form("Wrong token.")).into_response();
    };
    let operator = credential.name.as_str();
    let ttl = app.config.ops_session_ttl;
    let session = match app.pool.acquire().await {
        Ok(mut conn) => {
            sessions::OPS
                .create_bound(&mut conn, operator, ttl, |id| credential.session_mac(id))
                .await
        }
        Err(e) => Err(e),
    };
    let Ok(id) = session else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            login_form("The database is unavailable; try again."),
        )
            .into_response();
    };
    let cookie = session_cookie(
        &app,
        SESSION_COOKIE,
        "/ops",
        "Strict",
        Some((id.as_str(), ttl)),
    );
    tracing::info!(operator, "ops page login");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ops/")).into_response()
}

async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let session = cookie(&headers, SESSION_COOKIE).map(str::to_string);
    if let Some(id) = session
        && same_origin(&headers, &app)
        && let Ok(mut conn) = app.pool.acquire().await
        && let Err(e) = sessions::OPS.revoke(&mut conn, &id).await
    {
        tracing::warn!(error = %e, "ops session not revoked");
    }
    let cookie = session_cookie(&app, SESSION_COOKIE, "/ops", "Strict", None);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ops/")).into_response()
}

async fn page(
    State(app): State<AppState>,
    op: Result<Operator, ApiError>,
    Query(f): Query<JobFilter>,
    Query(money): Query<MoneyQuery>,
) -> Result<Response, ApiError> {
    if op.is_err() {
        return Ok(login_form("Log in with the ops token.").into_response());
    }
    let mut f = f;
    if f.status.as_deref() == Some("") {
        f.status = None;
    }
    f.kind = f.kind.filter(|k| !k.is_empty());
    f.agent = f.agent.filter(|a| !a.is_empty());
    if f.status.is_none() && f.kind.is_none() && f.agent.is_none() {
        f.status = Some("failed".into());
    }
    f.validate()
        .map_err(|m| ApiError::bad_request("invalid_filter", m))?;
    let mut conn = app.pool.acquire().await.map_err(ApiError::unavailable)?;
    let queues = queue::queues(&mut conn).await?;
    let jobs = queue::list(
        &mut conn,
        &JobFilter {
            limit: Some(200),
            ..f.clone()
        },
    )
    .await?;
    // The last 30 days in the billing timezone, today included.
    let tz = app.config.billing_timezone;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let activity = reports::activity(
        &mut conn,
        today - chrono::Duration::days(29),
        today + chrono::Duration::days(1),
        tz,
    )
    .await?;

    let mut html = String::from(
        "<h1>agent-meter ops</h1><form method=post action=/ops/logout class=inline><button>Log out</button></form>",
    );
    html.push_str("<h2>Queues</h2><table id=queues><tr><th>kind</th><th>agent</th><th>waiting</th><th>running</th><th>failed</th><th>oldest wait (s)</th></tr>");
    for q in &queues {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
            esc(&q.kind),
            esc(q.agent_email.as_deref().unwrap_or("-")),
            q.depth,
            q.running,
            q.failed,
            q.oldest_age_secs.unwrap_or(0.0)
        ));
    }
    html.push_str("</table>");
    let opt = |v: &Option<String>| esc(v.as_deref().unwrap_or(""));
    html.push_str(&format!(
        "<h2>Jobs</h2><form method=get action=/ops/ id=filters>status <select name=status>{}</select>
         kind <input name=kind value=\"{}\"> agent <input name=agent value=\"{}\"> <button>Filter</button></form>",
        std::iter::once("")
            .chain(queue::STATUSES.iter().copied())
            .map(|s| format!("<option{}>{s}</option>", if f.status.as_deref() == Some(s) { " selected" } else { "" }))
            .collect::<String>(),
        opt(&f.kind),
        opt(&f.agent)
    ));
    html.push_str(&format!(
        "<form method=post action=/ops/ui/retry><input type=hidden name=kind value=\"{}\"><input type=hidden name=agent value=\"{}\">
         <button id=retry-all>Retry all matching failed jobs</button></form>",
        opt(&f.kind),
        opt(&f.agent)
    ));
    html.push_str("<table id=jobs><tr><th>id</th><th>kind</th><th>status</th><th>agent</th><th>attempts</th><th>run at</th><th>last error</th><th></th></tr>");
    for j in &jobs {
        let action = match j.status.as_str() {
            "failed" | "cancelled" => format!(
                "<form method=post action=/ops/ui/jobs/{id}/retry class=inline><button class=retry data-job=\"{id}\">Retry</button></form>",
                id = esc(&j.id)
            ),
            "pending" => format!(
                "<form method=post action=/ops/ui/jobs/{id}/cancel class=inline><button class=cancel>Cancel</button></form>",
                id = esc(&j.id)
            ),
            _ => String::new(),
        };
        html.push_str(&format!(
            "<tr class=\"job {status}\" data-job=\"{id}\"><td>{id}</td><td>{kind}</td><td class=status>{status}</td><td>{agent}</td><td>{a}/{m}</td><td>{run}</td><td class=err>{err}</td><td>{action}</td></tr>",
            id = esc(&j.id), kind = esc(&j.kind), status = esc(&j.status),
            agent = esc(j.agent_email.as_deref().unwrap_or("-")), a = j.attempts, m = j.max_attempts,
            run = j.run_at.format("%Y-%m-%d %H:%M:%S"), err = esc(j.last_error.as_deref().unwrap_or("")),
        ));
    }
    html.push_str("</table>");
    html.push_str(&chart(&activity));
    html.push_str(&money_view(&mut conn, &app, money.month.as_deref()).await?);
    Ok(shell(&html).into_response())
}

#[derive(Deserialize, Default)]
struct MoneyQuery {
    /// The money view's month, YYYY-MM (default: the running month).
    month: Option<String>,
}

/// The operator's money view: per agency for a month, what it used, what we billed so far, what
/// it cost us and the margin; then six months of subscription (MRR) and usage revenue, by the
/// same definition as the per-agency figures, with where each month's invoices stand.
async fn money_view(
    conn: &mut sqlx::PgConnection,
    app: &AppState,
    asked: Option<&str>,
) -> Result<String, ApiError> {
    let tz = app.config.billing_timezone;
    let month = match asked.filter(|m| !m.is_empty()) {
        Some(m) => Month::parse(m).map_err(|e| ApiError::bad_request("invalid_month", e))?,
        None => Month::containing(chrono::Utc::now(), tz),
    };
    let rows = reports::money(conn, month, tz).await?;
    let mut html = format!(
        "<h2>Money, {month}</h2><form method=get action=/ops/>month <input name=month value=\"{month}\" size=7> <button>Show</button></form>
         <p>Billed so far: the usage that occurred in the month at its prices, per metric and price rounded once (as on the invoice), on an invoice yet or not.
         Cost: per usage row the provider's reported cost, else its quantity at the unit cost of its price (<code>prices set --cost</code>); rows with neither cost nothing.</p>
         <table id=money><tr><th>agency</th><th>calls</th><th>minutes</th><th>scans</th><th>lookups</th><th>billed so far</th><th>cost</th><th>margin</th><th>cost from</th></tr>"
    );
    let cents = reports::cents;
    for r in &rows {
        html.push_str(&format!(
            "<tr data-agent=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=margin>{}</td><td class=cost-source>{}</td></tr>",
            r.agent_id,
            esc(&r.agency_name),
            r.calls,
            r.minutes.round_dp(1).normalize(),
            r.quantity_of(&crate::tools::metrics_of(crate::tools::Category::Scan)).normalize(),
            r.quantity_of(&crate::tools::metrics_of(crate::tools::Category::Lookup)).normalize(),
            cents(r.billed_usd),
            cents(r.cost_usd),
            cents(r.margin_usd()),
            r.costs.source()
        ));
    }
    let (billed, cost): (rust_decimal::Decimal, rust_decimal::Decimal) =
        rows.iter().fold(Default::default(), |(b, c), r| {
            (b + r.billed_usd, c + r.cost_usd)
        });
    html.push_str(&format!(
        "<tr><th>total</th><th></th><th></th><th></th><th></th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></table>",
        cents(billed),
        cents(cost),
        cents(billed - cost)
    ));
    // Usage revenue is the per-agency "billed so far" of each month (so the shown month's row is
    // the total above); the invoices column says whether the month's invoices are final.
    html.push_str(
        "<h3>Month over month</h3>
         <p>Usage revenue: as billed so far above, the usage that occurred in the month (late usage billed as an adjustment on a later invoice counts in its own month).
         Invoices: <em>finalized</em> when every invoice of the month is, <em>draft</em> while any is a draft (its figures may still change), <em>none</em> before the month is rolled up.</p>
         <table id=mom><tr><th>month</th><th>MRR (subscriptions)</th><th>usage revenue</th><th>invoices</th></tr>",
    );
    let months: Vec<Month> = std::iter::successors(Some(month), |m| Some(m.previous()))
        .take(6)
        .collect();
    let oldest = months.last().copied().unwrap_or(month);
    let revenue = reports::usage_revenue(conn, oldest, month.next(), tz).await?;
    let first_days: Vec<chrono::NaiveDate> = months.iter().map(|m| m.first_day).collect();
    let states = reports::invoice_states(conn, &first_days).await?;
    for m in months {
        let mrr = reports::mrr(conn, m.first_day).await?;
        let usage = revenue.get(&m.first_day).copied().unwrap_or_default();
        let state = states.get(&m.first_day).copied().unwrap_or_default();
        html.push_str(&format!(
            "<tr><td>{m}</td><td>{}</td><td>{}</td><td class=\"invoices {label}\" title=\"{} finalized, {} draft\">{label}</td></tr>",
            cents(mrr),
            cents(usage),
            state.finalized,
            state.drafts,
            label = state.label(),
        ));
    }
    html.push_str("</table>");
    Ok(html)
}

/// Jobs (blue) and billed cost (orange) per agent over the last 30 days, as inline SVG bars.
fn chart(rows: &[(String, i64, rust_decimal::Decimal)]) -> String {
    let max_n = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let max_c = rows.iter().map(|r| r.2).max().unwrap_or_default();
    let max_c = if max_c.is_zero() {
        rust_decimal::Decimal::ONE
    } else {
        max_c
    };
    let mut svg = format!(
        "<h2>Last 30 days per agent: metered events and billed usage</h2><svg id=chart width=720 height={}>",
        rows.len() * 34 + 10
    );
    for (i, (name, n, cost)) in rows.iter().enumerate() {
        let y = i * 34 + 5;
        let w_n = (*n as f64 / max_n * 300.0).round();
        let w_c = ((*cost / max_c) * rust_decimal::Decimal::from(300)).round();
        svg.push_str(&format!(
            "<text x=0 y={} font-size=12>{}</text><rect class=bar x=220 y={} width={w_n} height=12/><rect class=cost x=220 y={} width={w_c} height=12/><text x=530 y={} font-size=11>{n} events, ${}</text>",
            y + 12, esc(name), y, y + 14, y + 12, crate::store::reports::cents(*cost)
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn back(headers: &HeaderMap) -> Redirect {
    // Return to the page the form was on (same origin only).
    let to = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.find("/ops/").map(|i| r[i..].to_string()))
        .unwrap_or_else(|| "/ops/".into());
    Redirect::to(&to)
}

async fn retry_one(
    State(app): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Redirect, ApiError> {
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let retried = queue::retry(&mut tx, std::slice::from_ref(&id)).await?;
    queue::audit(&mut tx, &op.actor, "retry", &retried, None).await?;
    tx.commit().await?;
    Ok(back(&headers))
}

async fn cancel_one(
    State(app): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Redirect, ApiError> {
    let actor = op.actor.clone();
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let cancelled = queue::cancel(&mut tx, std::slice::from_ref(&id), &actor).await?;
    queue::audit(&mut tx, &actor, "cancel", &cancelled, None).await?;
    tx.commit().await?;
    Ok(back(&headers))
}

#[derive(Deserialize)]
struct RetryAllIn {
    kind: Option<String>,
    agent: Option<String>,
}

async fn retry_matching(
    State(app): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Form(f): Form<RetryAllIn>,
) -> Result<Redirect, ApiError> {
    let filter = JobFilter {
        status: Some("failed".into()),
        kind: f.kind.filter(|k| !k.is_empty()),
        agent: f.agent.filter(|a| !a.is_empty()),
        since: None,
        limit: Some(10_000),
    };
    let mut tx = app.pool.begin().await.map_err(ApiError::unavailable)?;
    let ids: Vec<String> = queue::list(&mut tx, &filter)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let retried = queue::retry(&mut tx, &ids).await?;
    queue::audit(&mut tx, &op.actor, "retry", &retried, Some(&filter)).await?;
    tx.commit().await?;
    Ok(back(&headers))
}
