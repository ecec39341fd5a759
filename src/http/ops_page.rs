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

use std::time::Instant;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{MethodRouter, get, post},
};
use maud::{Markup, html};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{
    AppState, cookie,
    error::ApiError,
    html::{Head, document, head_row},
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
        .route(
            "/ops/ui/jobs/{id}/retry",
            job_button(super::ops::Act::Retry),
        )
        .route(
            "/ops/ui/jobs/{id}/cancel",
            job_button(super::ops::Act::Cancel),
        )
        .route("/ops/ui/retry", post(retry_matching))
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}
.err{color:#a00;max-width:40em}form.inline{display:inline}button{cursor:pointer}.bar{fill:#4a7bd0}.cost{fill:#d08a4a}";

fn shell(body: Markup) -> Markup {
    let head = Head {
        title: "agent-meter ops",
        lang: None,
        style: STYLE,
        phone: false,
    };
    document(&head, body)
}

fn login_form(message: &str) -> Markup {
    shell(html! {
        h1 { "agent-meter ops" }
        p { (message) }
        form method="post" action="/ops/login" {
            label { "Ops token " input #token type="password" name="token" autofocus; }
            " "
            button #login type="submit" { "Log in" }
        }
    })
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
    let money = money_view(&mut conn, &app, money.month.as_deref()).await?;
    Ok(shell(html! {
        h1 { "agent-meter ops" }
        form.inline method="post" action="/ops/logout" { button { "Log out" } }
        (queues_table(&queues))
        (jobs_view(&f, &jobs))
        (chart(&activity))
        (money)
    })
    .into_response())
}

fn queues_table(queues: &[queue::QueueRow]) -> Markup {
    let head = [
        "kind",
        "agent",
        "waiting",
        "running",
        "failed",
        "oldest wait (s)",
    ];
    html! {
        h2 { "Queues" }
        table #queues {
            (head_row(&head))
            @for q in queues {
                tr {
                    td { (q.kind) }
                    td { (q.agent_email.as_deref().unwrap_or("-")) }
                    td { (q.depth) }
                    td { (q.running) }
                    td { (q.failed) }
                    td { (format!("{:.0}", q.oldest_age_secs.unwrap_or(0.0))) }
                }
            }
        }
    }
}

/// The job filters, "retry all matching" and the jobs that match, each with its button.
fn jobs_view(f: &JobFilter, jobs: &[queue::JobRow]) -> Markup {
    let kind = f.kind.as_deref().unwrap_or("");
    let agent = f.agent.as_deref().unwrap_or("");
    let statuses = std::iter::once("").chain(queue::STATUSES.iter().copied());
    let head = [
        "id",
        "kind",
        "status",
        "agent",
        "attempts",
        "run at",
        "last error",
        "",
    ];
    html! {
        h2 { "Jobs" }
        form #filters method="get" action="/ops/" {
            "status "
            select name="status" {
                @for s in statuses {
                    option selected[f.status.as_deref() == Some(s)] { (s) }
                }
            }
            " kind " input name="kind" value=(kind);
            " agent " input name="agent" value=(agent);
            " " button { "Filter" }
        }
        form method="post" action="/ops/ui/retry" {
            input type="hidden" name="kind" value=(kind);
            input type="hidden" name="agent" value=(agent);
            button #retry-all { "Retry all matching failed jobs" }
        }
        table #jobs {
            (head_row(&head))
            @for j in jobs {
                tr class={ "job " (j.status) } data-job=(j.id) {
                    td { (j.id) }
                    td { (j.kind) }
                    td.status { (j.status) }
                    td { (j.agent_email.as_deref().unwrap_or("-")) }
                    td { (j.attempts) "/" (j.max_attempts) }
                    td { (j.run_at.format("%Y-%m-%d %H:%M:%S")) }
                    td.err { (j.last_error.as_deref().unwrap_or("")) }
                    td {
                        @match j.status.as_str() {
                            "failed" | "cancelled" => {
                                form.inline method="post" action={ "/ops/ui/jobs/" (j.id) "/retry" } {
                                    button.retry data-job=(j.id) { "Retry" }
                                }
                            }
                            "pending" => {
                                form.inline method="post" action={ "/ops/ui/jobs/" (j.id) "/cancel" } {
                                    button.cancel { "Cancel" }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct MoneyQuery {
    /// The money view's month, YYYY-MM (default: the running month).
    month: Option<String>,
}

/// One month of the money view's month-over-month table.
struct MonthFigures {
    month: Month,
    mrr: Decimal,
    usage: Decimal,
    invoices: reports::InvoiceStates,
}

/// The operator's money view: per agency for a month, what it used, what we billed so far, what
/// it cost us and the margin; then six months of subscription (MRR) and usage revenue, by the
/// same definition as the per-agency figures, with where each month's invoices stand.
async fn money_view(
    conn: &mut sqlx::PgConnection,
    app: &AppState,
    asked: Option<&str>,
) -> Result<Markup, ApiError> {
    let tz = app.config.billing_timezone;
    let month = match asked.filter(|m| !m.is_empty()) {
        Some(m) => Month::parse(m).map_err(|e| ApiError::bad_request("invalid_month", e))?,
        None => Month::containing(chrono::Utc::now(), tz),
    };
    let rows = reports::money(conn, month, tz).await?;
    // Usage revenue is the per-agency "billed so far" of each month (so the shown month's row is
    // the total of the per-agency table); the invoices column says whether the month's invoices
    // are final.
    let months: Vec<Month> = std::iter::successors(Some(month), |m| Some(m.previous()))
        .take(6)
        .collect();
    let oldest = months.last().copied().unwrap_or(month);
    let revenue = reports::usage_revenue(conn, oldest, month.next(), tz).await?;
    let first_days: Vec<chrono::NaiveDate> = months.iter().map(|m| m.first_day).collect();
    let states = reports::invoice_states(conn, &first_days).await?;
    let mut figures = Vec::with_capacity(months.len());
    for m in months {
        figures.push(MonthFigures {
            month: m,
            mrr: reports::mrr(conn, m.first_day).await?,
            usage: revenue.get(&m.first_day).copied().unwrap_or_default(),
            invoices: states.get(&m.first_day).copied().unwrap_or_default(),
        });
    }
    let now = chrono::Utc::now();
    let this_month = Month::containing(now, tz).start(tz);
    let owed = crate::store::stripe::receivables(conn, now, this_month).await?;
    let errors = crate::store::stripe::push_errors(conn).await?;
    let capped = crate::store::caps::status(conn, None, now, tz).await?;
    Ok(html! {
        (per_agency(month, &rows))
        (month_over_month(&figures))
        (receivables(&owed, &errors))
        h3 { "Usage caps (this month)" }
        table #caps {
            (head_row(&["agency", "usage", "cap", "share", "at the cap", "noticed"]))
            @for c in &capped {
                tr { td { (c.agency_name) } td { (reports::cents(c.usage_usd)) }
                     td { (reports::cents(c.cap_usd)) } td { (c.percent()) "%" }
                     td { (c.cap_action) } td { (c.noticed.map_or("-".into(), |t| format!("{t}%"))) } }
            }
        }
    })
}

/// What agencies owe at Stripe and what came in this month.
fn receivables(
    r: &crate::store::stripe::Receivables,
    errors: &[(String, String, String)],
) -> Markup {
    let cents = reports::cents;
    html! {
        h3 { "Receivables (Stripe)" }
        table #receivables {
            (head_row(&["open", "overdue 1-30 days", "31-60 days", "over 60 days",
                        "paid this month", "push errors"]))
            tr {
                td { (cents(r.open_usd)) " (" (r.open_count) ")" }
                td { (cents(r.overdue_1_30_usd)) }
                td { (cents(r.overdue_31_60_usd)) }
                td { (cents(r.overdue_over_60_usd)) }
                td { (cents(r.paid_usd)) " (" (r.paid_count) ")" }
                td { (r.push_errors) }
            }
        }
        @if !errors.is_empty() {
            table #push-errors {
                (head_row(&["agency", "month", "why the push to Stripe stopped"]))
                @for (agency, month, why) in errors {
                    tr { td { (agency) } td { (month) } td { (why) } }
                }
            }
        }
    }
}

/// The money view's table of agencies for `month`, with its total row.
fn per_agency(month: Month, rows: &[reports::MoneyRow]) -> Markup {
    let head = [
        "agency",
        "calls",
        "minutes",
        "scans",
        "lookups",
        "billed so far",
        "cost",
        "margin",
        "cost from",
    ];
    let cents = reports::cents;
    let (billed, cost): (Decimal, Decimal) = rows.iter().fold(Default::default(), |(b, c), r| {
        (b + r.billed_usd, c + r.cost_usd)
    });
    html! {
        h2 { "Money, " (month) }
        form method="get" action="/ops/" {
            "month " input name="month" value=(month) size="7";
            " " button { "Show" }
        }
        p {
            "Billed so far: the usage that occurred in the month at its prices, per metric and price \
             rounded once (as on the invoice), on an invoice yet or not. Cost: per usage row the \
             provider's reported cost, else its quantity at the unit cost of its price ("
            code { "prices set --cost" }
            "); rows with neither cost nothing."
        }
        table #money {
            (head_row(&head))
            @for r in rows {
                tr data-agent=(r.agent_id) {
                    td { (r.agency_name) }
                    td { (r.calls) }
                    td { (r.minutes.round_dp(1).normalize()) }
                    td { (r.quantity_of(&crate::tools::metrics_of(crate::tools::Category::Scan)).normalize()) }
                    td { (r.quantity_of(&crate::tools::metrics_of(crate::tools::Category::Lookup)).normalize()) }
                    td { (cents(r.billed_usd)) }
                    td { (cents(r.cost_usd)) }
                    td.margin { (cents(r.margin_usd())) }
                    td.cost-source { (r.costs.source()) }
                }
            }
            tr {
                th { "total" } th {} th {} th {} th {}
                th { (cents(billed)) }
                th { (cents(cost)) }
                th { (cents(billed - cost)) }
                th {}
            }
        }
    }
}

/// Six months of subscription (MRR) and usage revenue, newest first.
fn month_over_month(months: &[MonthFigures]) -> Markup {
    let cents = reports::cents;
    html! {
        h3 { "Month over month" }
        p {
            "Usage revenue: as billed so far above, the usage that occurred in the month (late \
             usage billed as an adjustment on a later invoice counts in its own month). Invoices: "
            em { "finalized" } " when every invoice of the month is, "
            em { "draft" } " while any is a draft (its figures may still change), "
            em { "none" } " before the month is rolled up."
        }
        table #mom {
            (head_row(&["month", "MRR (subscriptions)", "usage revenue", "invoices"]))
            @for m in months {
                @let label = m.invoices.label();
                tr {
                    td { (m.month) }
                    td { (cents(m.mrr)) }
                    td { (cents(m.usage)) }
                    td class={ "invoices " (label) }
                        title={ (m.invoices.finalized) " finalized, " (m.invoices.drafts) " draft" } {
                        (label)
                    }
                }
            }
        }
    }
}

/// Jobs (blue) and billed cost (orange) per agent over the last 30 days, as inline SVG bars.
fn chart(rows: &[(String, i64, Decimal)]) -> Markup {
    let max_n = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let max_c = rows.iter().map(|r| r.2).max().unwrap_or_default();
    let max_c = if max_c.is_zero() { Decimal::ONE } else { max_c };
    html! {
        h2 { "Last 30 days per agent: metered events and billed usage" }
        svg #chart width="720" height=(rows.len() * 34 + 10) {
            @for (i, (name, n, cost)) in rows.iter().enumerate() {
                @let y = i * 34 + 5;
                @let w_n = (*n as f64 / max_n * 300.0).round();
                @let w_c = ((*cost / max_c) * Decimal::from(300)).round();
                text x="0" y=(y + 12) font-size="12" { (name) }
                rect.bar x="220" y=(y) width=(w_n) height="12" {}
                rect.cost x="220" y=(y + 14) width=(w_c) height="12" {}
                text x="530" y=(y + 12) font-size="11" {
                    (n) " events, $" (reports::cents(*cost))
                }
            }
        }
    }
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

/// The handler of one job's button: `act` on the job of the path, audited, then back to the page.
fn job_button(act: super::ops::Act) -> MethodRouter<AppState> {
    post(
        move |State(app): State<AppState>,
              op: Operator,
              headers: HeaderMap,
              Path(id): Path<String>| async move {
            super::ops::act_on_one(&app, &op, id, act).await?;
            Ok::<_, ApiError>(back(&headers))
        },
    )
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
