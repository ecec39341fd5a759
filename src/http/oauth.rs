//! `POST /oauth/token`: the token server of Vapi's OAuth2 webhook credential (RFC 6749, client
//! credentials grant). Who may call it: anyone holding a configured `oauth2` plan's client id and
//! secret (in the form body or HTTP Basic); the tokens it issues pass the webhook until they
//! expire. Tokens are self-contained (HMAC-signed by the client's secret with their expiry), so
//! every web process accepts what any of them issued, and nothing is stored.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{AppState, auth::AuthError};
use crate::config::credentials::{Credential, OAuth2};

/// How long an issued token passes the webhook.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;
const PREFIX: &str = "amo";

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

/// An RFC 6749 §5.2 error: `{"error": code, "error_description": ..}`.
fn refuse(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"agent-meter\""),
        );
    }
    r
}

pub async fn token(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: TokenRequest = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            );
        }
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    // HTTP Basic (RFC 6749 §2.3.1) or the form body; not both.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(i, p)| (i.to_string(), p.to_string()))
        });
    let (id, secret) = match (basic, form.client_id, form.client_secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client credentials in both the Authorization header and the body",
            );
        }
        (Some((id, secret)), None, None) => (id, secret),
        (None, Some(id), Some(secret)) => (id, secret),
        _ => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
    };
    let client = app.auth.credentials.iter().find_map(|c| match c {
        Credential::OAuth2(o)
            if bool::from(o.client_id.as_bytes().ct_eq(id.as_bytes()))
                && super::auth::matches(secret.as_bytes(), &o.client_secret) =>
        {
            Some(o)
        }
        _ => None,
    });
    let Some(client) = client else {
        tracing::warn!("oauth token refused: invalid client");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    if let Some(asked) = form.scope.as_deref().filter(|s| !s.trim().is_empty()) {
        let allowed = client.scope.as_deref().unwrap_or_default();
        let granted: Vec<&str> = allowed.split_whitespace().collect();
        if !asked.split_whitespace().all(|s| granted.contains(&s)) {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "the requested scope is not granted to this client",
            );
        }
    }
    let now = Utc::now();
    tracing::info!(client_id = %client.client_id, "oauth token issued");
    let mut r = Json(json!({
        "access_token": issue(client, now),
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
        "scope": client.scope,
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `amo.{client id, base64url}.{expiry, unix s}.{HMAC-SHA256 of the rest by the client secret}`.
pub fn issue(client: &OAuth2, now: DateTime<Utc>) -> String {
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&client.client_id);
    let claims = format!("{PREFIX}.{id}.{}", now.timestamp() + TOKEN_LIFETIME_SECS);
    format!("{claims}.{}", hex::encode(sign(client, &claims)))
}

fn sign(client: &OAuth2, claims: &str) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(client.client_secret.expose().as_bytes()) {
        Ok(mut m) => {
            m.update(claims.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// A token `client` issued and that has not expired.
pub fn verify(client: &OAuth2, token: &[u8], now: DateTime<Utc>) -> Result<(), AuthError> {
    let token = std::str::from_utf8(token).map_err(|_| AuthError::WrongToken)?;
    let (claims, signature) = token.rsplit_once('.').ok_or(AuthError::WrongToken)?;
    let mut parts = claims.split('.');
    let (Some(PREFIX), Some(id), Some(expiry), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::WrongToken);
    };
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .map_err(|_| AuthError::WrongToken)?;
    if !bool::from(id.ct_eq(client.client_id.as_bytes())) {
        return Err(AuthError::WrongToken);
    }
    let signature = hex::decode(signature).map_err(|_| AuthError::WrongToken)?;
    if !bool::from(signature.ct_eq(&sign(client, claims))) {
        return Err(AuthError::WrongToken);
    }
    let expiry: i64 = expiry.parse().map_err(|_| AuthError::WrongToken)?;
    if now.timestamp() >= expiry {
        return Err(AuthError::StaleTimestamp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn client(secret: &str) -> OAuth2 {
        OAuth2 {
            client_id: "vapi".into(),
            client_secret: Secret::new(secret),
            scope: None,
        }
    }

    #[test]
    fn a_token_passes_until_it_expires_and_only_for_its_client() {
        let now = Utc::now();
        let c = client("s3cret");
        let t = issue(&c, now);
        assert!(!t.contains("s3cret"));
        assert_eq!(verify(&c, t.as_bytes(), now), Ok(()));
        let later = now + chrono::Duration::seconds(TOKEN_LIFETIME_SECS);
        assert_eq!(
            verify(&c, t.as_bytes(), later),
            Err(AuthError::StaleTimestamp)
        );
        assert!(verify(&client("other"), t.as_bytes(), now).is_err());
        // Tampering with the expiry breaks the signature.
        let (claims, sig) = t.rsplit_once('.').expect("token");
        let stretched = format!(
            "{}.{sig}",
            claims.replace(&format!("{}", now.timestamp() + 3600), "9999999999")
        );
        assert!(verify(&c, stretched.as_bytes(), now).is_err());
        for junk in ["", "amo", "amo.x.y.z", "amo..1.00", "a.b.c.d.e", "\u{0}"] {
            assert!(verify(&c, junk.as_bytes(), now).is_err(), "{junk:?}");
        }
    }
}
