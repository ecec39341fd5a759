//! `POST /stripe/webhook`: Stripe's events about our invoices. Who may call it: Stripe, proven
//! by `Stripe-Signature` (HMAC-SHA256 with an endpoint secret of `STRIPE_WEBHOOK_SECRET`); 404
//! when no secret is set. The signature is checked on the raw bytes, in constant time, before
//! anything is parsed; an event is stored once by its id (a redelivery is 200 and changes
//! nothing) and applied by a job ([`crate::jobs::stripe::StripeEvent`]).

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{AppState, error::ApiError};
use crate::{config::Secret, jobs::stripe::StripeEvent, store};

/// How far a signature's timestamp may be from our clock, either way (Stripe's own default).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused (each a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl SignatureError {
    fn message(self) -> &'static str {
        match self {
            Self::Missing => "missing Stripe-Signature header",
            Self::Malformed => "Stripe-Signature is not t=<seconds>,v1=<hex>",
            Self::Stale => "Stripe-Signature timestamp is more than 300 s from now",
            Self::Mismatch => "no v1 signature matches",
        }
    }
}

/// Checks `header` (`t=...,v1=...[,v1=...]`) for `body` against every secret: some `v1` must be
/// the hex HMAC-SHA256 of `"{t}.{body}"` under some secret, and `t` within
/// [`TOLERANCE_SECS`] of `now`.
pub fn verify(
    header: Option<&[u8]>,
    body: &[u8],
    secrets: &[Secret],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.timestamp().abs_diff(t) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let mut matched = false;
    for secret in secrets {
        for signature in &signatures {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
                continue;
            };
            mac.update(t.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            // Constant time; every pair is tried, so timing does not say which matched.
            matched |= mac.verify_slice(signature).is_ok();
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

pub async fn stripe_webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if app.config.stripe_webhook_secrets.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    }
    let body = body.map_err(ApiError::from_body_rejection)?;
    let signature = headers.get("stripe-signature").map(|v| v.as_bytes());
    if let Err(e) = verify(
        signature,
        &body,
        &app.config.stripe_webhook_secrets,
        Utc::now(),
    ) {
        tracing::warn!(reason = e.message(), "Stripe event refused");
        return Err(ApiError::bad_request("bad_signature", e.message()));
    }
    let Some((id, kind, payload)) = crate::jobs::stripe::event_head(&body) else {
        return Err(ApiError::bad_request(
            "invalid_event",
            "not a Stripe event (JSON with an evt_ id and a type)",
        ));
    };
    let mut tx = app.pool.begin().await?;
    let new = store::stripe::insert_event(&mut tx, &id, &kind, &payload).await?;
    if new {
        let job = StripeEvent {
            event_id: id.clone(),
        };
        crate::jobs::enqueue(&mut tx, &job, Some(&job.idempotency_key()))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "enqueueing a Stripe event failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "enqueue_failed",
                    "could not queue the event; retry later",
                )
            })?;
    }
    tx.commit().await?;
    tracing::info!(event = %id, kind, new, "Stripe event received");
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({"received": true, "duplicate": !new})),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn any_v1_under_any_secret_within_the_tolerance() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let t = now.timestamp();
        let body = br#"{"id": "evt_1"}"#;
        let secrets = [Secret::new("whsec_old"), Secret::new("whsec_new")];
        let good = sign("whsec_new", t, body);
        let header = format!("t={t},v1=00ff,v1={good}");
        assert_eq!(verify(Some(header.as_bytes()), body, &secrets, now), Ok(()));
        let cases: [(Option<String>, SignatureError); 6] = [
            (None, SignatureError::Missing),
            (Some(format!("v1={good}")), SignatureError::Malformed),
            (Some(format!("t={t}")), SignatureError::Malformed),
            (
                Some(format!("t={},v1={good}", t - 301)),
                SignatureError::Stale,
            ),
            (
                Some(format!("t={t},v1={}", sign("whsec_other", t, body))),
                SignatureError::Mismatch,
            ),
            (
                Some(format!("t={},v1={good}", t + 1)),
                SignatureError::Mismatch,
            ),
        ];
        for (header, want) in cases {
            let got = verify(header.as_deref().map(str::as_bytes), body, &secrets, now);
            assert_eq!(got, Err(want), "{header:?}");
        }
        // A changed byte of the body fails.
        assert_eq!(
            verify(
                Some(header.as_bytes()),
                br#"{"id": "evt_2"}"#,
                &secrets,
                now
            ),
            Err(SignatureError::Mismatch)
        );
    }
}
