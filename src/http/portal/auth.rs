//! Who is signed in to the portal: the sign-in page and its two doors (a one-time link's token,
//! a Supabase access token), sessions, signing out, and the agency behind a request (its session
//! cookie, or a Supabase bearer token presented directly).

use std::{future::Future, time::Instant};

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    SESSION_COOKIE,
    i18n::{Lang, lang_of, t},
    render::{notice, page},
};
use crate::{
    http::{
        AppState, cookie,
        error::ApiError,
        ops::{foreign_post, same_origin, session_cookie},
        throttle::{self, Client},
    },
    store::{portal, sessions},
};

#[derive(Deserialize)]
pub(super) struct SignInQuery {
    token: Option<String>,
    lang: Option<String>,
}

/// The page a sign-in link opens: a button that uses the token up (a link preview only GETs).
pub(super) async fn sign_in_page(headers: HeaderMap, Query(q): Query<SignInQuery>) -> Markup {
    let lang = lang_of(&headers, q.lang.as_deref());
    let Some(token) = q.token.as_deref().filter(|t| !t.is_empty()) else {
        return notice(lang, "need_link");
    };
    let body = html! {
        p { (t(lang, "press")) }
        form method="post" action="/portal/sign-in" {
            input type="hidden" name="token" value=(token);
            button #sign-in type="submit" { (t(lang, "sign_in")) }
        }
    };
    page(lang, None, "agent-meter", body)
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    token: String,
}

/// Sign-in with a one-time link's token.
pub(super) async fn sign_in(
    State(app): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let redeemed = async {
        let mut conn = app.pool.acquire().await?;
        portal::redeem_link(&mut conn, f.token.trim()).await
    };
    enter(&app, client, &headers, "link_used", redeemed).await
}

#[derive(Deserialize)]
pub(super) struct SupabaseForm {
    access_token: String,
}

/// Sign-in with the agency's Supabase session: its access token for a portal session.
pub(super) async fn sign_in_supabase(
    State(app): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Form(f): Form<SupabaseForm>,
) -> Response {
    let agent = async { Ok(supabase_agent(&app, f.access_token.trim()).await) };
    enter(&app, client, &headers, "need_link", agent).await
}

/// The door both sign-ins pass: a post from our own origin (else 403), from a client that has not
/// failed too often lately (else 429, even with good credentials), then `agent`, the agency the
/// credentials name (asked only then): a session for it, or 401 saying `refusal`.
async fn enter(
    app: &AppState,
    client: Client,
    headers: &HeaderMap,
    refusal: &str,
    agent: impl Future<Output = Result<Option<Uuid>, sqlx::Error>>,
) -> Response {
    let lang = lang_of(headers, None);
    if foreign_post(headers, app) {
        return refused(lang, StatusCode::FORBIDDEN, "need_link");
    }
    let now = Instant::now();
    if let Err(wait) = app.sign_ins.portal.check(client.0, now) {
        tracing::warn!(client = %client.0, "portal sign-in refused: too many failed sign-ins");
        return throttle::too_many(wait, notice(lang, "too_many"));
    }
    match agent.await {
        Ok(Some(agent)) => start_session(app, agent).await,
        Ok(None) => {
            app.sign_ins.portal.failed(client.0, now);
            refused(lang, StatusCode::UNAUTHORIZED, refusal)
        }
        Err(e) => ApiError::unavailable(e).into_response(),
    }
}

/// A sign-in refused with `status`, saying the label `key`.
fn refused(lang: Lang, status: StatusCode, key: &str) -> Response {
    (status, notice(lang, key)).into_response()
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

pub(super) async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> Response {
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
pub(super) struct Agency {
    pub id: Uuid,
    pub name: String,
    pub lang: Lang,
    /// Cancelled: it may read its invoices, and nothing else ([`crate::lifecycle`]).
    pub cancelled: bool,
}

/// The session's agency, or the response for a visitor without one (back to sign-in).
pub(super) async fn agency(
    app: &AppState,
    headers: &HeaderMap,
    asked: Option<&str>,
) -> Result<Agency, Response> {
    let lang = lang_of(headers, asked);
    let to_sign_in = || Redirect::to("/portal/sign-in").into_response();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| crate::http::auth::strip_bearer(v.as_bytes()))
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
