//! `/portal/integrations`: the agency's own webhook endpoints ([`crate::store::outbound`]): add
//! one (its secret shown once), remove one, see the latest deliveries and replay a failed one.
//! Who may call it: the signed-in agency, for its own endpoints and deliveries only; every POST
//! must come from our own origin (403 otherwise).

use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{MethodRouter, post},
};
use maud::{Markup, html};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Ask, Built, auth::Agency, i18n::t, render::page};
use crate::{
    http::{AppState, error::ApiError, ops::same_origin},
    providers::outbound::{self, OutboundClient},
    store::outbound as store,
};

/// `GET /portal/integrations`: endpoints, the add form, and the latest deliveries.
pub(super) fn integrations<'c>(c: &'c mut PgConnection, who: &'c Agency, _: Ask) -> Built<'c> {
    Box::pin(async move {
        let l = who.lang;
        let endpoints = store::endpoints(c, who.id).await?;
        let deliveries = store::deliveries(c, who.id, 50).await?;
        let body = html! {
            p { (t(l, "integrations_about")) }
            table #endpoints {
                tr { th { "URL" } th { (t(l, "events")) } th { (t(l, "status")) } th {} }
                @for e in &endpoints {
                    tr {
                        td { (e.url) }
                        td { (e.events.as_ref().map_or("*".to_string(), |v| v.join(", "))) }
                        td {
                            @if let Some(why) = &e.disabled_reason { (t(l, "disabled")) ": " (why) }
                            @else if e.failing_since.is_some() { (t(l, "failing")) }
                            @else { "ok" }
                        }
                        td {
                            form method="post" action={ "/portal/integrations/" (e.id) "/remove" } {
                                button { (t(l, "remove")) }
                            }
                        }
                    }
                }
            }
            h2 { (t(l, "add_endpoint")) }
            form #add method="post" action="/portal/integrations" {
                label { "URL (https) " input name="url" type="url" required; }
                " "
                label { (t(l, "events")) " " input name="events" placeholder="call.ended,lead.created"; }
                " "
                button { (t(l, "add_endpoint")) }
            }
            h2 { (t(l, "deliveries")) }
            table #deliveries {
                tr {
                    th { (t(l, "time")) } th { (t(l, "type")) } th { "URL" }
                    th { (t(l, "status")) } th { (t(l, "attempts")) } th { "HTTP" } th {}
                }
                @for d in &deliveries {
                    tr {
                        td { (d.created_at.format("%Y-%m-%d %H:%M:%S")) }
                        td { (d.event_type) }
                        td { (d.url) }
                        td class=(d.status) { (d.status) }
                        td { (d.attempts) }
                        td { (d.last_status_code.map_or("-".to_string(), |c| c.to_string())) }
                        td {
                            @if d.status == "failed" {
                                form method="post" action={ "/portal/integrations/deliveries/" (d.id) "/replay" } {
                                    button { (t(l, "replay")) }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok((t(l, "integrations").to_string(), body))
    })
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    url: String,
    #[serde(default)]
    events: String,
}

/// The signed-in agency for a POST from our own origin, or the refusal.
async fn poster(app: &AppState, headers: &HeaderMap) -> Result<Agency, Response> {
    if !same_origin(headers, app) {
        return Err(
            ApiError::new(StatusCode::FORBIDDEN, "cross_site", "cross-site request")
                .into_response(),
        );
    }
    let who = super::auth::agency(app, headers, None).await?;
    if who.cancelled {
        return Err(Redirect::to("/portal/invoices").into_response());
    }
    Ok(who)
}

/// A page that says `message` with `status` (a refused form, or the new secret).
fn said(who: &Agency, status: StatusCode, title: &str, body: Markup) -> Response {
    let back =
        html! { (body) p { a href="/portal/integrations" { "← " (t(who.lang, "integrations")) } } };
    (status, page(who.lang, Some(&who.name), title, back)).into_response()
}

/// `POST /portal/integrations`: registers an endpoint and shows its secret once.
pub(super) async fn add(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<AddForm>,
) -> Response {
    let who = match poster(&app, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let l = who.lang;
    let refused = |why: String| {
        said(
            &who,
            StatusCode::BAD_REQUEST,
            t(l, "add_endpoint"),
            html! { p.error { (why) } },
        )
    };
    let client = OutboundClient::new(app.config.outbound_allow_private);
    let url = match client.check_url(f.url.trim()) {
        Ok(u) => u,
        Err(e) => return refused(format!("URL: {e}")),
    };
    let events: Vec<String> = f
        .events
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = events
        .iter()
        .find(|e| !store::EVENT_TYPES.contains(&e.as_str()))
    {
        return refused(format!("{bad:?}: {}", store::EVENT_TYPES.join(", ")));
    }
    let events = (!events.is_empty()).then_some(events);
    let Ok(secret) = outbound::new_secret() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_randomness",
            "try again",
        )
        .into_response();
    };
    let added = async {
        let mut conn = app.pool.acquire().await?;
        store::add_endpoint(&mut conn, who.id, url.as_str(), events.as_deref(), &secret).await
    };
    match added.await {
        Ok(_) => said(
            &who,
            StatusCode::OK,
            t(l, "add_endpoint"),
            html! {
                p { (t(l, "secret_once")) }
                pre #secret { (secret) }
            },
        ),
        Err(e) => ApiError::unavailable(e).into_response(),
    }
}

/// What a row's button does: remove an endpoint, or send a failed delivery again.
#[derive(Clone, Copy)]
pub(super) enum Button {
    Remove,
    Replay,
}

/// `POST /portal/integrations/{id}/remove` and `/portal/integrations/deliveries/{id}/replay`:
/// the agency's own endpoint or delivery only (404 otherwise), then back to the page.
pub(super) fn button(kind: Button) -> MethodRouter<AppState> {
    post(
        move |State(app): State<AppState>, headers: HeaderMap, Path(id): Path<Uuid>| async move {
            let who = match poster(&app, &headers).await {
                Ok(w) => w,
                Err(r) => return r,
            };
            let done = async {
                let mut tx = app.pool.begin().await?;
                let done = match kind {
                    Button::Remove => store::remove_endpoint(&mut tx, id, Some(who.id)).await?,
                    Button::Replay => !store::replay(&mut tx, Some(id), Some(who.id), None)
                        .await?
                        .is_empty(),
                };
                tx.commit().await?;
                Ok::<_, sqlx::Error>(done)
            };
            match done.await {
                Ok(true) => Redirect::to("/portal/integrations").into_response(),
                Ok(false) => {
                    let why = "no such endpoint or delivery of yours";
                    ApiError::new(StatusCode::NOT_FOUND, "not_found", why).into_response()
                }
                Err(e) => ApiError::unavailable(e).into_response(),
            }
        },
    )
}
