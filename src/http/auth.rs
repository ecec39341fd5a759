//! Webhook authentication on the raw bytes, in constant time, before anything is parsed.
//!
//! Either the legacy shared secret (`X-Vapi-Secret`) or Vapi's HMAC credential: hex
//! HMAC-SHA256 in `x-signature` over `{x-timestamp}.{body}`, timestamp within 300 s.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// How far a signed timestamp may be from our clock, either way.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone)]
pub struct VapiAuth {
    pub shared_secret: Option<Secret>,
    pub hmac_secret: Option<Secret>,
}

/// Why a request was refused; logged, never echoed in detail to the caller.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials presented")]
    Missing,
    #[error("shared secret does not match")]
    WrongSecret,
    #[error("signature does not match")]
    BadSignature,
    #[error("timestamp missing, malformed or outside the window")]
    StaleTimestamp,
}

impl VapiAuth {
    /// Accepts the request if any configured method vouches for it.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
        let mut outcome = Err(AuthError::Missing);
        if let (Some(secret), Some(given)) = (&self.hmac_secret, header("x-signature")) {
            outcome = verify_hmac(secret, header("x-timestamp"), given, body, now);
            if outcome.is_ok() {
                return outcome;
            }
        }
        if let (Some(secret), Some(given)) = (&self.shared_secret, header("x-vapi-secret")) {
            // Compare digests so the comparison takes the same time whatever the lengths.
            let ok: bool = sha256(given)
                .ct_eq(&sha256(secret.expose().as_bytes()))
                .into();
            return if ok {
                Ok(())
            } else {
                Err(AuthError::WrongSecret)
            };
        }
        outcome
    }
}

fn verify_hmac(
    secret: &Secret,
    timestamp: Option<&[u8]>,
    signature: &[u8],
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let timestamp = timestamp.ok_or(AuthError::StaleTimestamp)?;
    let seconds = parse_timestamp(timestamp).ok_or(AuthError::StaleTimestamp)?;
    if (now.timestamp() - seconds).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(AuthError::StaleTimestamp);
    }
    let signature = std::str::from_utf8(signature).map_err(|_| AuthError::BadSignature)?;
    let signature = signature.trim();
    let hex_sig = signature.strip_prefix("sha256=").unwrap_or(signature);
    let expected = hex::decode(hex_sig).map_err(|_| AuthError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| AuthError::BadSignature)?;
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| AuthError::BadSignature)
}

/// Unix seconds, or milliseconds when the number is too large to be seconds.
fn parse_timestamp(raw: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(raw).ok()?.trim().parse().ok()?;
    Some(if n > 100_000_000_000 { n / 1000 } else { n })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(bytes).into()
}

/// Signs a body the way Vapi's HMAC credential does (for tests, the benchmark and the demo).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> VapiAuth {
        VapiAuth {
            shared_secret: Some(Secret::new("shh")),
            hmac_secret: Some(Secret::new("mac-key")),
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn hmac_signature_in_window_passes_and_tampering_fails() {
        let now = Utc::now();
        let ts = now.timestamp();
        let sig = sign("mac-key", ts, b"{}");
        let ok = headers(&[
            ("x-timestamp", ts.to_string()),
            ("x-signature", sig.clone()),
        ]);
        assert_eq!(auth().verify(&ok, b"{}", now), Ok(()));
        assert_eq!(
            auth().verify(&ok, b"{ }", now),
            Err(AuthError::BadSignature)
        );
        let stale_ts = ts - 301;
        let stale = headers(&[
            ("x-timestamp", stale_ts.to_string()),
            ("x-signature", sign("mac-key", stale_ts, b"{}")),
        ]);
        assert_eq!(
            auth().verify(&stale, b"{}", now),
            Err(AuthError::StaleTimestamp)
        );
    }

    #[test]
    fn shared_secret_must_match_exactly() {
        let now = Utc::now();
        assert!(
            auth()
                .verify(&headers(&[("x-vapi-secret", "shh".into())]), b"", now)
                .is_ok()
        );
        assert_eq!(
            auth().verify(&headers(&[("x-vapi-secret", "shh!".into())]), b"", now),
            Err(AuthError::WrongSecret)
        );
        assert_eq!(
            auth().verify(&HeaderMap::new(), b"", now),
            Err(AuthError::Missing)
        );
    }
}
