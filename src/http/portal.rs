//! The agency portal (`/portal/`): each agency signs in with a one-time link and sees only its own
//! calls, leads and findings, usage and invoices. Who may call it: an agency with a live portal
//! session (from a link made by `agent-meter agents invite`); everything else is the sign-in page.
//!
//! Server-rendered HTML, usable without JavaScript and on a phone, in English or Spanish
//! (`?lang=es|en`, remembered in a cookie, else `Accept-Language`). Every query runs in the
//! agency's tenant transaction (`db::tenant_tx`), so Row Level Security, not these handlers,
//! decides what is visible.
//!
//! Sign-in: `GET /portal/sign-in?token=...` shows a button and `POST /portal/sign-in` uses the
//! token up (a link preview, such as Discord's, only GETs, so it cannot spend the link). The
//! session cookie (`portal_session`, `HttpOnly; SameSite=Lax; Path=/portal`, `Secure` behind
//! https) holds a random id whose SHA-256 is all that is stored; signing out revokes it. Ten
//! failed sign-ins in a minute from one client get 429 ([`super::throttle`]).

use std::time::Instant;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    AppState, cookie,
    error::ApiError,
    esc,
    ops::{foreign_post, same_origin, session_cookie},
    throttle::{self, Client},
};
use crate::{
    billing::Month,
    money,
    store::{db, portal, sessions, usage_daily},
};

pub const SESSION_COOKIE: &str = "portal_session";
const LANG_COOKIE: &str = "portal_lang";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal/sign-in", get(sign_in_page).post(sign_in))
        .route("/portal/sign-in/supabase", post(sign_in_supabase))
        .route("/portal/sign-out", post(sign_out))
        .route("/portal/", get(overview))
        .route("/portal/calls", get(calls))
        .route("/portal/calls/{id}", get(call))
        .route("/portal/leads", get(leads))
        .route("/portal/usage", get(usage))
        .route("/portal/invoices", get(invoices))
        .route("/portal/invoices/{month}", get(invoice))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lang {
    En,
    Es,
}

/// Labels in both languages.
fn t(lang: Lang, key: &str) -> &'static str {
    let (en, es) = match key {
        "overview" => ("Overview", "Resumen"),
        "calls" => ("Calls", "Llamadas"),
        "leads" => ("Leads", "Clientes potenciales"),
        "usage" => ("Usage", "Consumo"),
        "invoices" => ("Invoices", "Facturas"),
        "sign_out" => ("Sign out", "Cerrar sesión"),
        "sign_in" => ("Sign in", "Entrar"),
        "this_month" => ("This month", "Este mes"),
        "minutes" => ("Minutes", "Minutos"),
        "scans" => ("Solar scans", "Escaneos solares"),
        "lookups" => ("Lookups", "Consultas"),
        "amount" => ("Amount so far", "Importe hasta hoy"),
        "last_30" => ("Calls, last 30 days", "Llamadas, últimos 30 días"),
        "time" => ("Time", "Hora"),
        "caller" => ("Caller", "Llamante"),
        "duration" => ("Duration (s)", "Duración (s)"),
        "billed_minutes" => ("Minutes billed", "Minutos facturados"),
        "findings" => ("Findings", "Hallazgos"),
        "transfers" => ("Transfers", "Transferencias"),
        "out_of_hours" => (
            "out of hours: message taken",
            "fuera de horario: se tomó un mensaje",
        ),
        "phone" => ("Phone", "Teléfono"),
        "name" => ("Name", "Nombre"),
        "property" => ("Property", "Propiedad"),
        "facts" => ("Solar, water, flood", "Solar, agua, inundación"),
        "tags" => ("Tags", "Etiquetas"),
        "month" => ("Month", "Mes"),
        "metric" => ("Metric", "Concepto"),
        "count" => ("Count", "Cantidad"),
        "quantity" => ("Quantity", "Unidades"),
        "status" => ("Status", "Estado"),
        "total" => ("Total", "Total"),
        "unit_price" => ("Unit price", "Precio unitario"),
        "print" => ("Print", "Imprimir"),
        "link_used" => (
            "This sign-in link is used up or expired. Ask your account manager for a new one.",
            "Este enlace ya se usó o caducó. Pida uno nuevo a su gestor de cuenta.",
        ),
        "need_link" => (
            "Sign in with the link you received.",
            "Entre con el enlace que recibió.",
        ),
        "press" => (
            "Press the button to sign in to your portal.",
            "Pulse el botón para entrar en su portal.",
        ),
        "too_many" => (
            "Too many failed sign-ins from here. Try again in a minute.",
            "Demasiados intentos fallidos desde aquí. Inténtelo de nuevo en un minuto.",
        ),
        "none" => ("Nothing yet.", "Nada todavía."),
        "older" => ("Older →", "Anteriores →"),
        "newer" => ("← Newer", "← Recientes"),
        "call" => ("Call", "Llamada"),
        "summary" => ("Summary", "Resumen de la llamada"),
        "success" => ("Success evaluation", "Evaluación del resultado"),
        "structured" => ("Caller details", "Datos del llamante"),
        "transcript" => ("Transcript", "Transcripción"),
        "recording" => ("Recording", "Grabación"),
        "listen" => ("Listen", "Escuchar"),
        "costs" => ("Vapi costs", "Costes de Vapi"),
        "cost" => ("Cost (USD)", "Coste (USD)"),
        "part" => ("Part", "Concepto"),
        "type" => ("Type", "Tipo"),
        "inbound" => ("Inbound", "Entrante"),
        "outbound" => ("Outbound", "Saliente"),
        "web" => ("Web", "Web"),
        "ended_reason" => ("Ended", "Finalizó"),
        "search" => (
            "Search transcripts and summaries",
            "Buscar en transcripciones y resúmenes",
        ),
        "search_button" => ("Search", "Buscar"),
        "all_calls" => ("← All calls", "← Todas las llamadas"),
        "no_call" => ("No such call.", "No existe esa llamada."),
        "field" => ("Field", "Campo"),
        "value" => ("Value", "Valor"),
        _ => ("?", "?"),
    };
    match lang {
        Lang::En => en,
        Lang::Es => es,
    }
}

/// `?lang=`, else the remembered choice, else the browser's first language.
fn lang_of(headers: &HeaderMap, asked: Option<&str>) -> Lang {
    let pick = |v: &str| {
        v.trim()
            .get(..2)
            .is_some_and(|p| p.eq_ignore_ascii_case("es"))
    };
    if let Some(a) = asked {
        return if pick(a) { Lang::Es } else { Lang::En };
    }
    if let Some(c) = cookie(headers, LANG_COOKIE) {
        return if pick(c) { Lang::Es } else { Lang::En };
    }
    let first = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .unwrap_or("en");
    if pick(first) { Lang::Es } else { Lang::En }
}

const STYLE: &str = "body{font:15px system-ui,sans-serif;margin:0;color:#222}main{padding:1em;max-width:60em;margin:auto}
nav{background:#23395d;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.8em;align-items:center}nav a{color:#fff;text-decoration:none}
nav form{margin-left:auto}table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:8em}
.card b{display:block;font-size:1.4em}.bar{fill:#4a7bd0}.num{text-align:right}@media print{nav{display:none}}";

fn page(lang: Lang, agency: Option<&str>, title: &str, body: &str) -> Html<String> {
    let code = if lang == Lang::Es { "es" } else { "en" };
    let nav = match agency {
        Some(name) => format!(
            "<nav><strong style=color:#fff>{}</strong><a href=/portal/>{}</a><a href=/portal/calls>{}</a>\
             <a href=/portal/leads>{}</a><a href=/portal/usage>{}</a><a href=/portal/invoices>{}</a>\
             <a href=\"?lang={}\">{}</a><form method=post action=/portal/sign-out><button>{}</button></form></nav>",
            esc(name),
            t(lang, "overview"),
            t(lang, "calls"),
            t(lang, "leads"),
            t(lang, "usage"),
            t(lang, "invoices"),
            if lang == Lang::Es { "en" } else { "es" },
            if lang == Lang::Es {
                "English"
            } else {
                "Español"
            },
            t(lang, "sign_out"),
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang={code}><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{nav}<main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    ))
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
    /// Page of a long list (calls, leads), from 0, [`PAGE`] rows each.
    page: Option<u32>,
    /// The calls page's search: words of a transcript or summary ([`search_pattern`]).
    q: Option<String>,
}

/// Characters of a search kept (longer ones are cut): a bounded pattern for a bounded scan.
const MAX_SEARCH_CHARS: usize = 100;

/// `?q=` as an `ILIKE` pattern: trimmed, at most [`MAX_SEARCH_CHARS`] characters, `%`, `_` and
/// `\` matched literally, anywhere in the text; `None` when blank. With the text kept, shown
/// back in the search box.
fn search_pattern(q: Option<&str>) -> Option<(String, String)> {
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

/// Rows per page of the calls and leads lists.
const PAGE: i64 = 100;

/// The page's offset (bounded) and the rows to fetch to know whether an older page exists.
fn paging(page: Option<u32>) -> (i64, i64, u32) {
    let page = page.unwrap_or(0).min(100_000);
    (i64::from(page) * PAGE, PAGE + 1, page)
}

/// The page's rows (fetched one over [`PAGE`]) and whether an older page exists.
fn one_page<T>(mut rows: Vec<T>) -> (Vec<T>, bool) {
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    (rows, more)
}

/// The title and body of a paged list (`/portal/{list}`): its labelled table and the links to
/// newer and older pages.
fn list_page(
    l: Lang,
    list: &str,
    head: &[&str],
    rows: &[Vec<String>],
    page: u32,
    more: bool,
) -> (String, String) {
    let head: Vec<&str> = head.iter().map(|key| t(l, key)).collect();
    let body = table(&head, rows, l) + &pager(l, &format!("/portal/{list}"), "", page, more);
    (t(l, list).to_string(), body)
}

/// "Newer" and "Older" links around a page of a list at `path`; `extra` is more of the query
/// (`&q=...`, already URL-encoded).
fn pager(lang: Lang, path: &str, extra: &str, page: u32, more: bool) -> String {
    let extra = esc(extra);
    let mut html = String::from("<p class=pager>");
    if page > 0 {
        html.push_str(&format!(
            "<a href=\"{path}?page={}{extra}\" rel=prev>{}</a> ",
            page - 1,
            t(lang, "newer")
        ));
    }
    if more {
        html.push_str(&format!(
            "<a href=\"{path}?page={}{extra}\" rel=next id=older>{}</a>",
            page + 1,
            t(lang, "older")
        ));
    }
    html.push_str("</p>");
    html
}

#[derive(Deserialize)]
struct SignInQuery {
    token: Option<String>,
    lang: Option<String>,
}

async fn sign_in_page(headers: HeaderMap, Query(q): Query<SignInQuery>) -> Html<String> {
    let lang = lang_of(&headers, q.lang.as_deref());
    let body = match q.token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => format!(
            "<p>{}</p><form method=post action=/portal/sign-in><input type=hidden name=token value=\"{}\">\
             <button type=submit id=sign-in>{}</button></form>",
            t(lang, "press"),
            esc(token),
            t(lang, "sign_in")
        ),
        None => format!("<p>{}</p>", t(lang, "need_link")),
    };
    page(lang, None, "agent-meter", &body)
}

/// A sign-in refused with `status`, saying the label `key`.
fn refused(lang: Lang, status: StatusCode, key: &str) -> Response {
    let body = format!("<p>{}</p>", t(lang, key));
    (status, page(lang, None, "agent-meter", &body)).into_response()
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(
    State(app): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let lang = lang_of(&headers, None);
    if foreign_post(&headers, &app) {
        return refused(lang, StatusCode::FORBIDDEN, "need_link");
    }
    let now = Instant::now();
    if let Err(wait) = app.sign_ins.portal.check(client.0, now) {
        return too_many_sign_ins(lang, client, wait);
    }
    let redeemed = async {
        let mut conn = app.pool.acquire().await?;
        portal::redeem_link(&mut conn, f.token.trim()).await
    };
    match redeemed.await {
        Ok(Some(agent)) => start_session(&app, agent).await,
        Ok(None) => {
            app.sign_ins.portal.failed(client.0, now);
            refused(lang, StatusCode::UNAUTHORIZED, "link_used")
        }
        Err(e) => ApiError::unavailable(e).into_response(),
    }
}

/// 429: this client failed to sign in too often lately (even a good link waits).
fn too_many_sign_ins(lang: Lang, client: Client, wait: std::time::Duration) -> Response {
    tracing::warn!(client = %client.0, "portal sign-in refused: too many failed sign-ins");
    let body = format!("<p>{}</p>", t(lang, "too_many"));
    throttle::too_many(wait, page(lang, None, "agent-meter", &body))
}

#[derive(Deserialize)]
struct SupabaseForm {
    access_token: String,
}

/// Sign-in with the agency's Supabase session: its access token for a portal session.
async fn sign_in_supabase(
    State(app): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Form(f): Form<SupabaseForm>,
) -> Response {
    let lang = lang_of(&headers, None);
    if foreign_post(&headers, &app) {
        return refused(lang, StatusCode::FORBIDDEN, "need_link");
    }
    let now = Instant::now();
    if let Err(wait) = app.sign_ins.portal.check(client.0, now) {
        return too_many_sign_ins(lang, client, wait);
    }
    let Some(agent) = supabase_agent(&app, f.access_token.trim()).await else {
        app.sign_ins.portal.failed(client.0, now);
        return refused(lang, StatusCode::UNAUTHORIZED, "need_link");
    };
    start_session(&app, agent).await
}

/// The agent of a valid Supabase access token whose `sub` is an agent's user.
async fn supabase_agent(app: &AppState, token: &str) -> Option<Uuid> {
    let user = app.supabase.as_ref()?.user_of(token).await?;
    let mut conn = app.pool.acquire().await.ok()?;
    crate::store::agents::agent_for_user(&mut conn, user, app.config.billing_timezone)
        .await
        .ok()
        .flatten()
}

/// A new portal session for `agent`, as a cookie and a redirect to the overview.
async fn start_session(app: &AppState, agent: Uuid) -> Response {
    let ttl = app.config.portal_session_ttl;
    let created = async {
        let mut conn = app.pool.acquire().await?;
        sessions::PORTAL.create(&mut conn, agent, ttl).await
    };
    match created.await {
        Ok(id) => {
            tracing::info!(agent.id = %agent, "portal sign-in");
            let cookie = session_cookie(
                app,
                SESSION_COOKIE,
                "/portal",
                "Lax",
                Some((id.as_str(), ttl)),
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/portal/")).into_response()
        }
        Err(e) => ApiError::unavailable(e).into_response(),
    }
}

async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && same_origin(&headers, &app)
        && let Ok(mut conn) = app.pool.acquire().await
        && let Err(e) = sessions::PORTAL.revoke(&mut conn, id).await
    {
        tracing::warn!(error = %e, "portal session not revoked");
    }
    let cookie = session_cookie(&app, SESSION_COOKIE, "/portal", "Lax", None);
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/portal/sign-in"),
    )
        .into_response()
}

/// A signed-in agency: its id and name, and the language to speak.
struct Agency {
    id: Uuid,
    name: String,
    lang: Lang,
    /// Cancelled: it may read its invoices, and nothing else ([`crate::lifecycle`]).
    cancelled: bool,
}

/// The session's agency, or the response for a visitor without one (back to sign-in).
async fn agency(
    app: &AppState,
    headers: &HeaderMap,
    asked: Option<&str>,
) -> Result<Agency, Response> {
    let lang = lang_of(headers, asked);
    let to_sign_in = || Redirect::to("/portal/sign-in").into_response();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| super::auth::strip_bearer(v.as_bytes()))
        .and_then(|b| std::str::from_utf8(b).ok());
    let mut conn = app
        .pool
        .acquire()
        .await
        .map_err(|e| ApiError::unavailable(e).into_response())?;
    let agent = match (cookie(headers, SESSION_COOKIE), bearer) {
        (Some(id), _) => sessions::PORTAL
            .owner(&mut conn, id)
            .await
            .map_err(|e| ApiError::from(e).into_response())?,
        // A Supabase session presented directly (the agency's own front end).
        (None, Some(token)) => supabase_agent(app, token).await,
        (None, None) => None,
    }
    .ok_or_else(to_sign_in)?;
    let (name, status, cancelled_on): (String, String, Option<NaiveDate>) =
        sqlx::query_as("SELECT agency_name, status, cancelled_on FROM agents WHERE id = $1")
            .bind(agent)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
    let (tz, now) = (app.config.billing_timezone, Utc::now());
    if !crate::lifecycle::invoices_readable(cancelled_on, now, tz) {
        return Err(to_sign_in());
    }
    Ok(Agency {
        id: agent,
        name,
        lang,
        cancelled: crate::lifecycle::state(&status, cancelled_on, now, tz)
            == crate::lifecycle::State::Cancelled,
    })
}

/// What a page shows: a cancelled agency sees only its invoices.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shows {
    Invoices,
    Service,
}

/// A page for the signed-in agency, built in its tenant transaction; `?lang=` is remembered.
async fn tenant_page<F>(
    app: &AppState,
    headers: &HeaderMap,
    q: LangQuery,
    shows: Shows,
    build: F,
) -> Response
where
    F: for<'c> FnOnce(
        &'c mut PgConnection,
        &'c Agency,
    ) -> futures::future::BoxFuture<'c, Result<(String, String), ApiError>>,
{
    let who = match agency(app, headers, q.lang.as_deref()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if who.cancelled && shows != Shows::Invoices {
        return Redirect::to("/portal/invoices").into_response();
    }
    let built = async {
        let mut tx = db::tenant_tx(&app.pool, who.id)
            .await
            .map_err(ApiError::unavailable)?;
        let out = build(&mut tx, &who).await?;
        tx.rollback().await?;
        Ok::<_, ApiError>(out)
    };
    match built.await {
        Ok((title, body)) => {
            let html = page(who.lang, Some(&who.name), &title, &body);
            match q.lang {
                Some(l) => {
                    let l = if lang_of(&HeaderMap::new(), Some(&l)) == Lang::Es {
                        "es"
                    } else {
                        "en"
                    };
                    let c =
                        format!("{LANG_COOKIE}={l}; Path=/portal; SameSite=Lax; Max-Age=31536000");
                    ([(header::SET_COOKIE, c)], html).into_response()
                }
                None => html.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

fn money_text(d: Decimal) -> String {
    format!("${:.2}", money::round_line(d))
}

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

async fn overview(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let tz = app.config.billing_timezone;
    tenant_page(&app, &headers, q, Shows::Service, |c, who| {
        Box::pin(async move {
            let l = who.lang;
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
            let card = |label: &str, value: String| {
                format!("<div class=card>{label}<b>{value}</b></div>")
            };
            let mut body = format!("<h2>{} ({month})</h2><div class=cards id=overview>", t(l, "this_month"));
            body.push_str(&card(t(l, "calls"), calls.to_string()));
            body.push_str(&card(t(l, "minutes"), sum(&["vapi_call_minutes"]).round_dp(1).normalize().to_string()));
            body.push_str(&card(t(l, "scans"), sum(&crate::tools::metrics_of(crate::tools::Category::Scan)).normalize().to_string()));
            body.push_str(&card(
                t(l, "lookups"),
                sum(&crate::tools::metrics_of(crate::tools::Category::Lookup)).normalize().to_string(),
            ));
            body.push_str(&card(t(l, "amount"), money_text(amount(groups.iter().map(|g| (g.1, g.2))))));
            body.push_str("</div>");
            body.push_str(&format!("<h2>{}</h2>{}", t(l, "last_30"), chart(&days, Utc::now().with_timezone(&tz).date_naive())));
            Ok((format!("{} — {}", who.name, t(l, "overview")), body))
        })
    })
    .await
}

/// Calls per day up to `today` as bars (inline SVG: no script, prints).
fn chart(days: &[(NaiveDate, i64)], today: NaiveDate) -> String {
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg id=chart viewBox=\"0 0 310 110\" width=\"100%\" height=150 preserveAspectRatio=none \
         role=img aria-label=\"calls per day, most {max}\"><line x1=0 y1=105.5 x2=310 y2=105.5 stroke=#999 stroke-width=.5 />",
    );
    for (day, n) in days {
        let back = (today - *day).num_days().clamp(0, 30);
        let x = (30 - back) * 10;
        let h = n * 100 / max;
        svg.push_str(&format!(
            "<rect class=bar x={x} y={} width=8 height={h}><title>{day}: {n}</title></rect>",
            105 - h
        ));
    }
    svg.push_str("</svg>");
    svg.push_str(&format!(
        "<p style=\"display:flex;justify-content:space-between;color:#666;margin:0\"><span>{}</span><span>max {max}</span><span>{today}</span></p>",
        today - chrono::Duration::days(30)
    ));
    svg
}

fn table(head: &[&str], rows: &[Vec<String>], lang: Lang) -> String {
    if rows.is_empty() {
        return format!("<p>{}</p>", t(lang, "none"));
    }
    let mut html = String::from("<table><tr>");
    for h in head {
        html.push_str(&format!("<th>{h}</th>"));
    }
    html.push_str("</tr>");
    for r in rows {
        html.push_str("<tr>");
        for cell in r {
            html.push_str(&format!("<td>{cell}</td>"));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    html
}

async fn calls(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let tz = app.config.billing_timezone;
    let (offset, fetch, page) = paging(q.page);
    let search = search_pattern(q.q.as_deref());
    tenant_page(&app, &headers, q, Shows::Service, |c, who| {
        Box::pin(async move {
            let l = who.lang;
            type Row = (
                Uuid,
                Option<DateTime<Utc>>,
                Option<String>,
                Option<Decimal>,
                Decimal,
                Option<String>,
                serde_json::Value,
                Option<String>,
            );
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
            let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(offset)
                .bind(fetch)
                .bind(search.as_ref().map(|s| s.0.as_str()))
                .fetch_all(&mut *c)
                .await?;
            let (rows, more) = one_page(rows);
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(id, at, caller, secs, minutes, findings, transfers, summary)| {
                    let when = at
                        .map(|a| a.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".to_string());
                    vec![
                        format!("<a href=/portal/calls/{id}>{when}</a>"),
                        esc(caller.as_deref().unwrap_or("-")),
                        secs.map(|s| s.round_dp(0).to_string()).unwrap_or_default(),
                        minutes.normalize().to_string(),
                        transfers_text(l, tz, &transfers),
                        esc(summary.as_deref().unwrap_or("")),
                        esc(findings.as_deref().unwrap_or("")),
                    ]
                })
                .collect();
            let head: Vec<&str> = [
                "time",
                "caller",
                "duration",
                "billed_minutes",
                "transfers",
                "summary",
                "findings",
            ]
            .iter()
            .map(|key| t(l, key))
            .collect();
            let shown = search.as_ref().map_or("", |s| s.1.as_str());
            let extra = match &search {
                Some((_, q)) => {
                    format!("&q={}", url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>())
                }
                None => String::new(),
            };
            let body = format!(
                "<form method=get action=/portal/calls role=search id=search>\
                 <input type=search name=q value=\"{}\" maxlength={MAX_SEARCH_CHARS} aria-label=\"{}\" placeholder=\"{}\"> \
                 <button type=submit>{}</button></form>{}{}",
                esc(shown),
                t(l, "search"),
                t(l, "search"),
                t(l, "search_button"),
                table(&head, &rows, l),
                pager(l, "/portal/calls", &extra, page, more)
            );
            Ok((t(l, "calls").to_string(), body))
        })
    })
    .await
}

/// `/portal/calls/{id}`: what one call said (summary, success evaluation, caller details,
/// recording, Vapi's costs, transcript), all HTML-escaped; the recording is a link only when it is
/// an `https` URL. Another agency's call, like a missing one, is 404 (RLS hides it).
async fn call(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LangQuery>,
) -> Response {
    let tz = app.config.billing_timezone;
    let id: Option<Uuid> = id.parse().ok();
    tenant_page(&app, &headers, q, Shows::Service, |c, who| {
        Box::pin(async move {
            let l = who.lang;
            type Row = (
                Option<DateTime<Utc>>,
                DateTime<Utc>,
                Option<String>,
                Option<Decimal>,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<serde_json::Value>,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<serde_json::Value>,
            );
            let row: Option<Row> = match id {
                Some(id) => {
                    sqlx::query_as(
                        "SELECT c.started_at, c.created_at, c.customer_number, c.duration_seconds,
                                c.ended_reason, cc.call_type, cc.summary, cc.structured_data,
                                cc.success_evaluation, cc.transcript, cc.recording_url, cc.costs
                           FROM calls c LEFT JOIN call_content cc ON cc.call_id = c.id
                          WHERE c.id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await?
                }
                None => None,
            };
            let Some((started, created, caller, secs, ended, kind, summary, data, success, transcript, recording, costs)) = row
            else {
                return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", t(l, "no_call")));
            };
            let when = started
                .unwrap_or(created)
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M")
                .to_string();
            let kind = match kind.as_deref() {
                Some("inboundPhoneCall") => t(l, "inbound").to_string(),
                Some("outboundPhoneCall") => t(l, "outbound").to_string(),
                Some("webCall") => t(l, "web").to_string(),
                Some(other) => esc(other),
                None => String::new(),
            };
            let facts = [
                (t(l, "time"), esc(&when)),
                (t(l, "caller"), esc(caller.as_deref().unwrap_or("-"))),
                (t(l, "type"), kind),
                (t(l, "duration"), secs.map(|s| s.round_dp(0).to_string()).unwrap_or_default()),
                (t(l, "ended_reason"), esc(ended.as_deref().unwrap_or(""))),
                (t(l, "success"), esc(success.as_deref().unwrap_or(""))),
            ];
            let mut body = format!("<p><a href=/portal/calls>{}</a></p><table id=call>", t(l, "all_calls"));
            for (label, value) in facts {
                body.push_str(&format!("<tr><th>{label}</th><td>{value}</td></tr>"));
            }
            body.push_str("</table>");
            body.push_str(&format!(
                "<h2>{}</h2><p id=summary>{}</p>",
                t(l, "summary"),
                esc(summary.as_deref().unwrap_or("-"))
            ));
            let data_rows: Vec<Vec<String>> = data
                .as_ref()
                .and_then(|d| d.as_object())
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                serde_json::Value::String(s) => s.clone(),
                                serde_json::Value::Array(items) => items
                                    .iter()
                                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                other => other.to_string(),
                            };
                            vec![esc(k), esc(&v)]
                        })
                        .collect()
                })
                .unwrap_or_default();
            body.push_str(&format!(
                "<h2>{}</h2><div id=structured>{}</div>",
                t(l, "structured"),
                table(&[t(l, "field"), t(l, "value")], &data_rows, l)
            ));
            let recording = match recording.as_deref() {
                Some(url) if crate::vapi::is_https_url(url) => format!(
                    "<a href=\"{}\" rel=\"noopener noreferrer\" target=_blank id=recording-link>{}</a>",
                    esc(url),
                    t(l, "listen")
                ),
                Some(other) => format!("<span>{}</span>", esc(other)),
                None => "-".to_string(),
            };
            body.push_str(&format!("<h2>{}</h2><p id=recording>{recording}</p>", t(l, "recording")));
            let cost_rows: Vec<Vec<String>> = costs
                .as_ref()
                .and_then(|c| c.as_array())
                .map(|items| items.iter().map(cost_row).collect())
                .unwrap_or_default();
            body.push_str(&format!(
                "<h2>{}</h2><div id=costs>{}</div>",
                t(l, "costs"),
                table(&[t(l, "part"), t(l, "minutes"), t(l, "cost")], &cost_rows, l)
            ));
            body.push_str(&format!(
                "<h2>{}</h2><pre id=transcript style=\"white-space:pre-wrap;font:inherit\">{}</pre>",
                t(l, "transcript"),
                esc(transcript.as_deref().unwrap_or("-"))
            ));
            Ok((format!("{} {when}", t(l, "call")), body))
        })
    })
    .await
}

/// One part of Vapi's `costs[]`: its type (with the provider, model or sub-type that names it),
/// its minutes and its cost, exact as Vapi wrote them, escaped.
fn cost_row(part: &serde_json::Value) -> Vec<String> {
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
    vec![esc(&name), esc(&number("minutes")), esc(&number("cost"))]
}

/// A call's transfers on the calls page: `→ +19285550100 10:02`, each, with the out-of-hours
/// ones saying a message was taken (HTML-escaped).
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
    esc(&shown.join("; "))
}

async fn leads(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let (offset, fetch, page) = paging(q.page);
    tenant_page(&app, &headers, q, Shows::Service, |c, who| {
        Box::pin(async move {
            let l = who.lang;
            type Row = (String, Option<String>, Option<String>, Option<serde_json::Value>, Option<String>);
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
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(phone, name, address, facts, tags)| {
                    let facts = facts
                        .as_ref()
                        .and_then(|f| f.as_object())
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| match v {
                                    serde_json::Value::String(s) => format!("{k}: {s}"),
                                    other => format!("{k}: {other}"),
                                })
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    vec![
                        esc(&phone),
                        esc(name.as_deref().unwrap_or("")),
                        esc(address.as_deref().unwrap_or("")),
                        esc(&facts),
                        esc(tags.as_deref().unwrap_or("")),
                    ]
                })
                .collect();
            let head = ["phone", "name", "property", "facts", "tags"];
            Ok(list_page(l, "leads", &head, &rows, page, more))
        })
    })
    .await
}

async fn usage(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let tz = app.config.billing_timezone;
    tenant_page(&app, &headers, q, Shows::Service, |c, who| {
        Box::pin(async move {
            let l = who.lang;
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
            let mut rows: Vec<Vec<String>> = Vec::new();
            for chunk in groups.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
                let (label, metric) = (&chunk[0].0, &chunk[0].1);
                rows.push(vec![
                    esc(label),
                    esc(metric),
                    chunk.iter().map(|g| g.4).sum::<i64>().to_string(),
                    chunk
                        .iter()
                        .map(|g| g.3)
                        .sum::<Decimal>()
                        .normalize()
                        .to_string(),
                    money_text(amount(chunk.iter().map(|g| (g.2, g.3)))),
                ]);
            }
            let head = [
                t(l, "month"),
                t(l, "metric"),
                t(l, "count"),
                t(l, "quantity"),
                t(l, "amount"),
            ];
            Ok((t(l, "usage").to_string(), table(&head, &rows, l)))
        })
    })
    .await
}

async fn invoices(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    tenant_page(&app, &headers, q, Shows::Invoices, |c, who| {
        Box::pin(async move {
            let l = who.lang;
            let rows: Vec<(NaiveDate, String, Decimal)> = sqlx::query_as(
                "SELECT period_start, status, total_usd FROM invoices ORDER BY period_start DESC",
            )
            .fetch_all(&mut *c)
            .await?;
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(p, status, total)| {
                    let m = p.format("%Y-%m");
                    vec![
                        format!("<a href=/portal/invoices/{m}>{m}</a>"),
                        esc(&status),
                        money_text(total),
                    ]
                })
                .collect();
            let head = [t(l, "month"), t(l, "status"), t(l, "total")];
            Ok((t(l, "invoices").to_string(), table(&head, &rows, l)))
        })
    })
    .await
}

/// An invoice's head and lines as the tenant sees it, or 404.
async fn invoice_of(
    c: &mut PgConnection,
    month: Month,
) -> Result<(String, Decimal, Vec<crate::billing::pdf::PdfLine>), ApiError> {
    let head: Option<(Uuid, String, Decimal)> =
        sqlx::query_as("SELECT id, status, total_usd FROM invoices WHERE period_start = $1")
            .bind(month.first_day)
            .fetch_optional(&mut *c)
            .await?;
    let Some((id, status, total)) = head else {
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
    Ok((status, total, lines))
}

/// `/portal/invoices/{YYYY-MM}` (a printable page) and `/portal/invoices/{YYYY-MM}.pdf`.
async fn invoice(
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
        let who = match agency(&app, &headers, None).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let read = super::api::as_tenant(&app, who.id, |c| Box::pin(invoice_of(c, month)));
        return match read.await {
            Ok((status, total, lines)) => {
                let bytes =
                    crate::billing::pdf::render(&who.name, &month.label(), &status, &lines, total);
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
        };
    }
    tenant_page(&app, &headers, q, Shows::Invoices, |c, who| {
        Box::pin(async move {
            let l = who.lang;
            let (status, total, lines) = invoice_of(c, month).await?;
            let rows: Vec<Vec<String>> = lines
                .into_iter()
                .map(|(text, q, p, a)| {
                    vec![
                        esc(&text),
                        q.normalize().to_string(),
                        p.normalize().to_string(),
                        money_text(a),
                    ]
                })
                .collect();
            let head = [t(l, "metric"), t(l, "quantity"), t(l, "unit_price"), t(l, "amount")];
            let body = format!(
                "<p>{} · {}: {}</p>{}<p id=total><strong>{}: {}</strong></p>\
                 <p><a href=/portal/invoices/{month}.pdf id=pdf>PDF</a> · <button onclick=\"window.print()\">{}</button></p>",
                esc(&who.name),
                t(l, "status"),
                esc(&status),
                table(&head, &rows, l),
                t(l, "total"),
                money_text(total),
                t(l, "print")
            );
            Ok((format!("{} {month}", t(l, "invoices")), body))
        })
    })
    .await
}
