//! Supabase Auth sessions: agencies already signed in to their Supabase project present its access
//! token (a JWT whose `sub` is an agent's `user_id`) to `/v1` and the portal.
//!
//! Keys: ES256/RS256 against the project's signing keys, read from
//! `{SUPABASE_URL}/auth/v1/.well-known/jwks.json` (cached; refetched, at most every
//! [`MIN_REFRESH`], when a token names an unknown `kid`), or the legacy HS256
//! `SUPABASE_JWT_SECRET`. Checked: signature, `exp`, `aud` (`SUPABASE_JWT_AUDIENCE`, default
//! `authenticated`) and, with `SUPABASE_URL`, `iss` (required, exactly `{SUPABASE_URL}/auth/v1`).
//! The JWKS is refetched by one request at a time and outside any lock on the cached keys, so a
//! slow Supabase delays only the tokens naming an unknown `kid`. Refused: `alg: none` (not an
//! algorithm here), any algorithm but those three, and algorithm confusion (an HS256 token is
//! checked only with the HS256 secret, never with a published public key; a JWK is used only for
//! its own algorithm).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{AlgorithmParameters, Jwk, JwkSet},
};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::{Config, Secret};

/// Refetch the JWKS for an unknown `kid` no more often than this (a flood of made-up key ids
/// must not become a flood of requests to Supabase).
pub const MIN_REFRESH: Duration = Duration::from_secs(30);

pub struct SupabaseAuth {
    jwks_url: Option<String>,
    /// `{SUPABASE_URL}/auth/v1`, the `iss` every token must carry when `SUPABASE_URL` is set.
    issuer: Option<String>,
    audience: String,
    hs256: Option<Secret>,
    http: reqwest::Client,
    min_refresh: Duration,
    /// The last key set fetched and when. Held only to read or swap it, never across a fetch:
    /// sign-ins with a known `kid` never wait for Supabase.
    keys: tokio::sync::RwLock<Option<(Instant, Arc<JwkSet>)>>,
    /// One JWKS fetch at a time (single flight): requests naming an unknown `kid` wait for the
    /// fetch in flight, then look again, instead of each fetching.
    refetch: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// A string, exactly; an array (which the JWT spec allows) is refused by failing to parse.
    iss: Option<String>,
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
            issuer: base.map(|b| format!("{}/auth/v1", b.trim_end_matches('/'))),
            audience: config.supabase_jwt_audience.clone(),
            hs256: config.supabase_jwt_secret.clone(),
            http: crate::providers::http_client(Duration::from_secs(5)),
            min_refresh: MIN_REFRESH,
            keys: tokio::sync::RwLock::new(None),
            refetch: tokio::sync::Mutex::new(()),
        })
    }

    /// The same, refetching for an unknown `kid` at most every `min_refresh` (tests use zero
    /// rather than wait [`MIN_REFRESH`]).
    pub fn with_min_refresh(self, min_refresh: Duration) -> SupabaseAuth {
        SupabaseAuth {
            min_refresh,
            ..self
        }
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
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        if let Some(iss) = &self.issuer {
            // `set_issuer` alone lets a token without `iss` through: it must be required too.
            validation.set_issuer(&[iss]);
            validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        }
        let data = decode::<Claims>(token, &key, &validation).ok()?;
        if let Some(expected) = &self.issuer
            && data.claims.iss.as_deref() != Some(expected.as_str())
        {
            return None;
        }
        Uuid::parse_str(&data.claims.sub).ok()
    }

    /// The published key `kid`, from the cache or, when unknown, a fresh copy of the JWKS.
    async fn key(&self, kid: &str) -> Option<Jwk> {
        let url = self.jwks_url.as_deref()?;
        if let Some(found) = self.cached(kid).await {
            return Some(found);
        }
        // Wait for a fetch in flight, if any; it may have brought the key.
        let _flight = self.refetch.lock().await;
        let fetched_at = {
            let cached = self.keys.read().await;
            if let Some((_, set)) = &*cached
                && let Some(k) = set.find(kid)
            {
                return Some(k.clone());
            }
            cached.as_ref().map(|(at, _)| *at)
        };
        if fetched_at.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return None;
        }
        // The network call holds no lock on the keys: other sign-ins keep using the old set.
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
                *self.keys.write().await = Some((Instant::now(), Arc::new(set)));
                found
            }
            None => {
                tracing::warn!("Supabase JWKS unavailable");
                None
            }
        }
    }

    /// Key `kid` from the last key set fetched.
    async fn cached(&self, kid: &str) -> Option<Jwk> {
        let cached = self.keys.read().await;
        cached.as_ref()?.1.find(kid).cloned()
    }
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}
