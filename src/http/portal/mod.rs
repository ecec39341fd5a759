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
//!
//! By concern: `auth` (sign-in, sessions, the agency behind a request), `pages` (the overview,
//! leads, usage and invoices), `calls` (the calls list, its search, and one call's page),
//! `integrations` (the agency's own webhook endpoints and deliveries), `render` (the shared
//! markup: layout, tables, paging, money) and `i18n` (the labels).

mod auth;
mod calls;
mod i18n;
mod integrations;
mod pages;
mod render;

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Redirect, Response},
    routing::{MethodRouter, get, post},
};
use futures::future::BoxFuture;
use maud::Markup;
use serde::Deserialize;
use sqlx::PgConnection;

use self::{auth::Agency, i18n::lang_of, render::page};
use super::{AppState, error::ApiError};
use crate::store::db;

pub const SESSION_COOKIE: &str = "portal_session";
const LANG_COOKIE: &str = "portal_lang";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/portal/sign-in",
            get(auth::sign_in_page).post(auth::sign_in),
        )
        .route("/portal/sign-in/supabase", post(auth::sign_in_supabase))
        .route("/portal/sign-out", post(auth::sign_out))
        .route("/portal/", tenant(Shows::Service, pages::overview))
        .route("/portal/calls", tenant(Shows::Service, calls::calls))
        .route("/portal/calls/{id}", get(calls::call))
        .route("/portal/leads", tenant(Shows::Service, pages::leads))
        .route("/portal/usage", tenant(Shows::Service, pages::usage))
        .route("/portal/invoices", tenant(Shows::Invoices, pages::invoices))
        .route("/portal/invoices/{month}", get(pages::invoice))
        .route(
            "/portal/integrations",
            tenant(Shows::Service, integrations::integrations).post(integrations::add),
        )
        .route(
            "/portal/integrations/{id}/remove",
            integrations::button(integrations::Button::Remove),
        )
        .route(
            "/portal/integrations/deliveries/{id}/replay",
            integrations::button(integrations::Button::Replay),
        )
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
    /// Page of a long list (calls, leads), from 0, [`PAGE`] rows each.
    page: Option<u32>,
    /// The calls page's search: words of a transcript or summary ([`calls::search_pattern`]).
    q: Option<String>,
}

/// What a page reads besides the agency's rows: the billing timezone and the list's page and
/// search, as asked.
struct Ask {
    tz: chrono_tz::Tz,
    page: Option<u32>,
    q: Option<String>,
}

/// A page's title and body.
type Built<'c> = BoxFuture<'c, Result<(String, Markup), ApiError>>;

/// A page read and rendered in the agency's tenant transaction.
type View = for<'c> fn(&'c mut PgConnection, &'c Agency, Ask) -> Built<'c>;

/// The `GET` handler of a page that `view` makes, shown to agencies that may see `shows`.
fn tenant(shows: Shows, view: View) -> MethodRouter<AppState> {
    get(
        move |State(app): State<AppState>, headers: HeaderMap, Query(q): Query<LangQuery>| async move {
            let ask = Ask {
                tz: app.config.billing_timezone,
                page: q.page,
                q: q.q,
            };
            tenant_page(&app, &headers, q.lang, shows, move |c, who| {
                view(c, who, ask)
            })
            .await
        },
    )
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

/// What a page shows: a cancelled agency sees only its invoices.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shows {
    Invoices,
    Service,
}

/// A page for the signed-in agency, built (its title and body) in its tenant transaction;
/// `?lang=` (`lang`) is remembered.
async fn tenant_page<F>(
    app: &AppState,
    headers: &HeaderMap,
    lang: Option<String>,
    shows: Shows,
    build: F,
) -> Response
where
    F: for<'c> FnOnce(&'c mut PgConnection, &'c Agency) -> Built<'c>,
{
    let who = match auth::agency(app, headers, lang.as_deref()).await {
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
            let html = page(who.lang, Some(&who.name), &title, body);
            match lang {
                Some(l) => {
                    let l = lang_of(&HeaderMap::new(), Some(&l)).code();
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
