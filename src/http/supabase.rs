//! Supabase Auth sessions: agencies already signed in to their Supabase project present its access
//! token (a JWT whose `sub` is an agent's `user_id`) to `/v1` and the portal.
//!
//! Keys: ES256/RS256 against the project's signing keys, read from
//! `{SUPABASE_URL}/auth/v1/.well-known/jwks.json` (cached; refetched, at most every
//! [`MIN_REFRESH`], when a token names an unknown `kid`), or the legacy HS256
//! `SUPABASE_JWT_SECRET`. Checked: signature, `exp`, `aud` (`SUPABASE_JWT_AUDIENCE`, default
//! `authenticated`) and, with `SUPABASE_URL`, `iss`. Refused: `alg: none` (not an algorithm
//! here), any algorithm but those three, and algorithm confusion (an HS256 token is checked only
//! with the HS256 secret, never with a published public key; a JWK is used only for its own
//! algorithm).

use std::time::{Duration, Instant};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{AlgorithmParameters, JwkSet},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::{Config, Secret};

/// Refetch the JWKS for an unknown `kid` no more often than this (a flood of made-up key ids
/// must not become a flood of requests to Supabase).
pub const MIN_REFRESH: Duration = Duration::from_secs(30);

pub struct SupabaseAuth {
    jwks_url: Option<String>,
    issuer: Option<String>,
    audience: String,
    hs256: Option<Secret>,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Option<(Instant, JwkSet)>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl SupabaseAuth {
    /// `None` when neither `SUPABASE_URL` nor `SUPABASE_JWT_SECRET` is set.
    pub fn from_config(config: &Config) -> Option<SupabaseAuth> {
        let base = config.supabase_url.clone();
        if base.is_none() && config.supabase_jwt_secret.is_none() {
            return None;
        }
        Some(SupabaseAuth {
            jwks_url: base
                .as_ref()
                .map(|b| format!("{b}/auth/v1/.well-known/jwks.json")),
            issuer: base.map(|b| format!("{b}/auth/v1")),
            audience: config.supabase_jwt_audience.clone(),
            hs256: config.supabase_jwt_secret.clone(),
            http: crate::providers::http_client(Duration::from_secs(5)),
            keys: tokio::sync::Mutex::new(None),
        })
    }

    /// The `sub` (Supabase user id) of a valid access token; `None` for anything else.
    pub async fn user_of(&self, token: &str) -> Option<Uuid> {
        let header = decode_header(token).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => DecodingKey::from_secret(self.hs256.as_ref()?.expose().as_bytes()),
            Algorithm::RS256 | Algorithm::ES256 => {
                let kid = header.kid.as_deref()?;
                let jwk = self.key(kid).await?;
                let fits = matches!(
                    (&jwk.algorithm, header.alg),
                    (AlgorithmParameters::RSA(_), Algorithm::RS256)
                        | (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
                );
                if !fits {
                    return None;
                }
                DecodingKey::from_jwk(&jwk).ok()?
            }
            _ => return None,
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_audience(&[&self.audience]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        let data = decode::<Claims>(token, &key, &validation).ok()?;
        Uuid::parse_str(&data.claims.sub).ok()
    }

    /// The published key `kid`, from the cache or, when unknown, a fresh copy of the JWKS.
    async fn key(&self, kid: &str) -> Option<jsonwebtoken::jwk::Jwk> {
        let url = self.jwks_url.as_deref()?;
        let mut cached = self.keys.lock().await;
        if let Some((_, set)) = &*cached
            && let Some(k) = set.find(kid)
        {
            return Some(k.clone());
        }
        let stale = cached
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= MIN_REFRESH);
        if !stale {
            return None;
        }
        let fetched = async {
            let resp = self.http.get(url).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            resp.json::<JwkSet>().await.ok()
        };
        match fetched.await {
            Some(set) => {
                let found = set.find(kid).cloned();
                *cached = Some((Instant::now(), set));
                found
            }
            None => {
                tracing::warn!("Supabase JWKS unavailable");
                None
            }
        }
    }
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}
