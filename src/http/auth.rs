//! Webhook authentication on the raw bytes, in constant time, before anything is parsed.
//!
//! Every plan Vapi's webhook credentials offer (see [`crate::config::credentials`]): a Bearer token in
//! any header, HMAC with any algorithm, header, prefix, encoding and payload format, and OAuth2
//! (we are the token server, `POST /oauth/token`, see [`super::oauth`]), plus the legacy
//! `X-Vapi-Secret`. A request passes when any configured plan verifies it, so a secret is rotated
//! by listing the old and the new. A signed timestamp must be within 300 s of our clock.

use axum::http::HeaderMap;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::config::{
    Config, Secret,
    credentials::{self, Credential, HmacAlgorithm},
};

/// How far a signed timestamp may be from our clock, either way.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// The configured plans, shorthands included.
#[derive(Debug, Clone)]
pub struct VapiAuth {
    pub credentials: Vec<Credential>,
    /// Our public base URL, for `{url}` in HMAC payloads.
    pub public_base_url: Option<String>,
}

/// What a request brings to be verified.
pub struct Presented<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub method: &'a str,
    /// The request path (with its query), as received.
    pub path: &'a str,
}

/// Why a request was refused; logged, never echoed in detail to the caller.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials presented")]
    Missing,
    #[error("shared secret does not match")]
    WrongSecret,
    #[error("bearer token does not match")]
    WrongToken,
    #[error("signature does not match")]
    BadSignature,
    #[error("timestamp missing, malformed or outside the window")]
    StaleTimestamp,
}

impl VapiAuth {
    /// `VAPI_CREDENTIALS`, then the `VAPI_HMAC_SECRET` and `VAPI_WEBHOOK_SECRET` shorthands.
    pub fn from_config(config: &Config) -> Self {
        let mut credentials = config.vapi_credentials.clone();
        if let Some(secret) = &config.vapi_hmac_secret {
            credentials.push(Credential::Hmac(credentials::Hmac {
                key: credentials::SecretBytes(secret.expose().as_bytes().to_vec()),
                algorithm: HmacAlgorithm::Sha256,
                signature_header: "x-signature".into(),
                timestamp_header: "x-timestamp".into(),
                signature_prefix: Some("sha256=".into()),
                payload_format: "{timestamp}.{body}".into(),
                message_id_header: None,
                base64: false,
            }));
        }
        if let Some(secret) = &config.vapi_webhook_secret {
            credentials.push(Credential::SharedSecret(secret.clone()));
        }
        Self {
            credentials,
            public_base_url: config.public_base_url.clone(),
        }
    }

    /// Accepts the request if any configured plan vouches for it; says which (`bearer#0`).
    pub fn verify(&self, req: &Presented<'_>, now: DateTime<Utc>) -> Result<String, AuthError> {
        let mut outcome = Err(AuthError::Missing);
        for (i, credential) in self.credentials.iter().enumerate() {
            let tried = match credential {
                Credential::SharedSecret(secret) => header(req, "x-vapi-secret")
                    .map(|given| same(given, secret.expose().as_bytes(), AuthError::WrongSecret)),
                Credential::Bearer(b) => header(req, &b.header_name).map(|given| {
                    let token = if b.prefix {
                        strip_bearer(given)
                    } else {
                        Some(given)
                    };
                    match token {
                        Some(t) => same(t, b.token.expose().as_bytes(), AuthError::WrongToken),
                        None => Err(AuthError::WrongToken),
                    }
                }),
                Credential::Hmac(h) => header(req, &h.signature_header)
                    .map(|given| verify_hmac(h, given, req, self.public_base_url.as_deref(), now)),
                Credential::OAuth2(client) => header(req, "authorization")
                    .and_then(strip_bearer)
                    .map(|token| super::oauth::verify(client, token, now)),
            };
            match tried {
                Some(Ok(())) => return Ok(format!("{}#{i}", credential.kind())),
                // A more telling refusal than "missing" wins for the log.
                Some(Err(e)) => outcome = Err(e),
                None => {}
            }
        }
        outcome
    }
}

fn header<'a>(req: &Presented<'a>, name: &str) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

/// `Bearer <token>` (the scheme is case-insensitive, RFC 6750).
pub fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// The one constant-time comparison ([`crate::config::same_secret`]), as a refusal.
fn same(given: &[u8], expected: &[u8], refusal: AuthError) -> Result<(), AuthError> {
    if crate::config::same_secret(given, expected) {
        Ok(())
    } else {
        Err(refusal)
    }
}

fn verify_hmac(
    plan: &credentials::Hmac,
    given: &[u8],
    req: &Presented<'_>,
    public_base_url: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let timestamp = header(req, &plan.timestamp_header);
    if plan.payload_format.contains("{timestamp}") {
        let seconds = timestamp
            .and_then(parse_timestamp)
            .ok_or(AuthError::StaleTimestamp)?;
        if (now.timestamp() - seconds).abs() > TIMESTAMP_TOLERANCE_SECS {
            return Err(AuthError::StaleTimestamp);
        }
    }
    let message_id = plan
        .message_id_header
        .as_deref()
        .and_then(|h| header(req, h))
        .unwrap_or_default();
    let url = format!("{}{}", public_base_url.unwrap_or_default(), req.path);
    let payload = payload(
        &plan.payload_format,
        &[
            ("{timestamp}", timestamp.unwrap_or_default()),
            ("{body}", req.body),
            ("{method}", req.method.as_bytes()),
            ("{url}", url.as_bytes()),
            ("{svix-id}", message_id),
        ],
    );
    let expected = mac(plan, &payload);
    let given = std::str::from_utf8(given).map_err(|_| AuthError::BadSignature)?;
    // Svix-style headers carry several space-separated signatures (`v1,abc v1,def`).
    let matched = given.split_whitespace().any(|candidate| {
        let candidate = plan
            .signature_prefix
            .as_deref()
            .and_then(|p| candidate.strip_prefix(p))
            .unwrap_or(candidate);
        let decoded = if plan.base64 {
            base64::engine::general_purpose::STANDARD
                .decode(candidate)
                .ok()
        } else {
            hex::decode(candidate).ok()
        };
        decoded.is_some_and(|d| bool::from(d.ct_eq(&expected)))
    });
    if matched {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// `format` with each placeholder replaced by its bytes (the body need not be UTF-8).
fn payload(format: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(format.len() + fields.iter().map(|f| f.1.len()).sum::<usize>());
    let mut rest = format;
    'scan: while !rest.is_empty() {
        for (name, value) in fields {
            if let Some(after) = rest.strip_prefix(name) {
                out.extend_from_slice(value);
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        rest = chars.as_str();
    }
    out
}

fn mac(plan: &credentials::Hmac, payload: &[u8]) -> Vec<u8> {
    macro_rules! run {
        ($digest:ty) => {{
            // Any key length is valid for HMAC; an error here is impossible.
            match Hmac::<$digest>::new_from_slice(&plan.key.0) {
                Ok(mut m) => {
                    m.update(payload);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }};
    }
    match plan.algorithm {
        HmacAlgorithm::Sha256 => run!(Sha256),
        HmacAlgorithm::Sha512 => run!(Sha512),
        HmacAlgorithm::Sha1 => run!(sha1::Sha1),
    }
}

/// Unix seconds, or milliseconds when the number is too large to be seconds.
fn parse_timestamp(raw: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(raw).ok()?.trim().parse().ok()?;
    Some(if n > 100_000_000_000 { n / 1000 } else { n })
}

/// Signs a body the way Vapi's default HMAC credential does (for tests, the benchmark and the
/// demo): hex HMAC-SHA256 of `{timestamp}.{body}`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A secret's digest, for comparisons elsewhere (the token endpoint).
pub fn matches(given: &[u8], secret: &Secret) -> bool {
    same(given, secret.expose().as_bytes(), AuthError::WrongSecret).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(json: &str) -> VapiAuth {
        VapiAuth {
            credentials: credentials::parse(json).expect("credentials"),
            public_base_url: Some("https://meter.example.com".into()),
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn check(
        a: &VapiAuth,
        h: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<String, AuthError> {
        a.verify(
            &Presented {
                headers: h,
                body,
                method: "POST",
                path: "/vapi/webhook",
            },
            now,
        )
    }

    fn hmac_with<D: Mac + hmac::digest::KeyInit>(key: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut m = <D as hmac::digest::KeyInit>::new_from_slice(key).expect("key");
        m.update(payload);
        m.finalize().into_bytes().to_vec()
    }

    #[test]
    fn bearer_in_any_header_with_or_without_the_prefix() {
        let a = auth(
            r#"[{"type": "bearer", "token": "t0k"},
                {"type": "bearer", "token": "k3y", "headerName": "X-Api-Key", "bearerPrefixEnabled": false}]"#,
        );
        let now = Utc::now();
        assert_eq!(
            check(
                &a,
                &headers(&[("authorization", "Bearer t0k".into())]),
                b"{}",
                now
            ),
            Ok("bearer#0".into())
        );
        assert!(
            check(
                &a,
                &headers(&[("authorization", "bearer t0k".into())]),
                b"",
                now
            )
            .is_ok()
        );
        assert!(check(&a, &headers(&[("x-api-key", "k3y".into())]), b"", now).is_ok());
        for (name, value) in [
            ("authorization", "Bearer t0k!"),
            ("authorization", "t0k"),
            ("authorization", "Basic dDBrOg=="),
            ("x-api-key", "Bearer k3y"),
            ("x-other", "Bearer t0k"),
        ] {
            assert!(
                check(&a, &headers(&[(name, value.into())]), b"", now).is_err(),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn hmac_every_algorithm_encoding_and_format() {
        let now = Utc::now();
        let ts = now.timestamp().to_string();
        let body = br#"{"message":{"type":"status-update"}}"#;
        // sha512, base64, a prefix, Svix-style id and several signatures.
        let a = auth(
            r#"[{"type": "hmac", "secretKey": "a2V5", "secretIsBase64": true, "algorithm": "sha512",
                 "signatureHeader": "svix-signature", "timestampHeader": "svix-timestamp",
                 "messageIdHeader": "svix-id", "signaturePrefix": "v1,",
                 "payloadFormat": "{svix-id}.{timestamp}.{body}", "signatureEncoding": "base64"}]"#,
        );
        let payload = [b"msg_1.", ts.as_bytes(), b".", &body[..]].concat();
        let sig = base64::engine::general_purpose::STANDARD
            .encode(hmac_with::<Hmac<Sha512>>(b"key", &payload));
        let ok = headers(&[
            ("svix-id", "msg_1".into()),
            ("svix-timestamp", ts.clone()),
            ("svix-signature", format!("v1,bm9wZQ== v1,{sig}")),
        ]);
        assert_eq!(check(&a, &ok, body, now), Ok("hmac#0".into()));
        let other_id = headers(&[
            ("svix-id", "msg_2".into()),
            ("svix-timestamp", ts.clone()),
            ("svix-signature", format!("v1,{sig}")),
        ]);
        assert_eq!(
            check(&a, &other_id, body, now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(check(&a, &ok, b"{}", now), Err(AuthError::BadSignature));

        // sha1, hex, method and url, no timestamp at all.
        let a = auth(
            r#"[{"type": "hmac", "secretKey": "s", "algorithm": "sha1", "includeTimestamp": false,
                 "payloadFormat": "{method} {url}\n{body}"}]"#,
        );
        let payload = [&b"POST https://meter.example.com/vapi/webhook\n"[..], body].concat();
        let sig = hex::encode(hmac_with::<Hmac<sha1::Sha1>>(b"s", &payload));
        assert!(check(&a, &headers(&[("x-signature", sig.clone())]), body, now).is_ok());
        let elsewhere = VapiAuth {
            public_base_url: Some("https://other.example.com".into()),
            ..a.clone()
        };
        assert!(check(&elsewhere, &headers(&[("x-signature", sig)]), body, now).is_err());

        // The default: sha256 hex over {timestamp}.{body}; the window both ways.
        let a = auth(r#"[{"type": "hmac", "secretKey": "mac-key", "algorithm": "sha256"}]"#);
        let t = now.timestamp();
        let signed = |t: i64| {
            headers(&[
                ("x-timestamp", t.to_string()),
                ("x-signature", sign("mac-key", t, body)),
            ])
        };
        assert!(check(&a, &signed(t), body, now).is_ok());
        assert!(check(&a, &signed(t - 299), body, now).is_ok());
        assert_eq!(
            check(&a, &signed(t - 301), body, now),
            Err(AuthError::StaleTimestamp)
        );
        assert_eq!(
            check(&a, &signed(t + 301), body, now),
            Err(AuthError::StaleTimestamp)
        );
        let no_ts = headers(&[("x-signature", sign("mac-key", t, body))]);
        assert_eq!(check(&a, &no_ts, body, now), Err(AuthError::StaleTimestamp));
        let garbage = headers(&[("x-timestamp", t.to_string()), ("x-signature", "zz".into())]);
        assert_eq!(check(&a, &garbage, body, now), Err(AuthError::BadSignature));
    }

    #[test]
    fn any_plan_may_pass_so_secrets_rotate() {
        let a = auth(r#"[{"type": "bearer", "token": "old"}, {"type": "bearer", "token": "new"}]"#);
        let now = Utc::now();
        assert_eq!(
            check(
                &a,
                &headers(&[("authorization", "Bearer new".into())]),
                b"",
                now
            ),
            Ok("bearer#1".into())
        );
        assert_eq!(
            check(&a, &HeaderMap::new(), b"", now),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn the_shorthands_keep_working() {
        let mut config = crate::config::Config::from_vars(
            [
                ("VAPI_WEBHOOK_SECRET", "shh"),
                ("VAPI_HMAC_SECRET", "mac-key"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .expect("config");
        config.public_base_url = None;
        let a = VapiAuth::from_config(&config);
        let now = Utc::now();
        let t = now.timestamp();
        assert!(check(&a, &headers(&[("x-vapi-secret", "shh".into())]), b"", now).is_ok());
        assert_eq!(
            check(&a, &headers(&[("x-vapi-secret", "shh!".into())]), b"", now),
            Err(AuthError::WrongSecret)
        );
        let prefixed = headers(&[
            ("x-timestamp", (t * 1000).to_string()),
            (
                "x-signature",
                format!("sha256={}", sign("mac-key", t * 1000, b"{}")),
            ),
        ]);
        assert!(check(&a, &prefixed, b"{}", now).is_ok());
    }

    #[test]
    fn payload_formats_fill_placeholders_and_keep_other_text() {
        let p = payload(
            "a{body}é{timestamp}{nope}",
            &[("{timestamp}", b"12"), ("{body}", &[0xff, 0x00])],
        );
        assert_eq!(
            p,
            [&b"a"[..], &[0xff, 0x00], "é".as_bytes(), b"12{nope}"].concat()
        );
    }
}
