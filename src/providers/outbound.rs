//! Outbound webhooks to the agencies' own systems, per the Standard Webhooks specification:
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under the secret's decoded bytes, one per active secret). Sent with
//! the public-only client ([`super::image::PublicOnly`]): `https` to public addresses only (unless
//! `OUTBOUND_ALLOW_PRIVATE`), no redirects, a 15 s budget, 4 KiB of any answer read.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{ProviderError, classify_status, image::PublicOnly, read_at_most};

pub const PROVIDER: &str = "webhook";

/// An attempt's whole budget.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Largest event body sent.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// How much of an endpoint's answer is read (for the delivery log).
const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// A new endpoint secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!("whsec_{}", STANDARD.encode(bytes)))
}

/// The `webhook-signature` header: `v1,<base64>` per secret, space-separated.
pub fn signature(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let mut out = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .map_err(|_| "an endpoint secret is not whsec_ + base64".to_string())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        out.push(format!(
            "v1,{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ));
    }
    Ok(out.join(" "))
}

/// Fits an event (`{type, timestamp, data}`) into `limit` bytes of JSON: while it is larger, the
/// largest field of `data` is left out and its name added to `data.omitted`, so the receiver
/// knows what to fetch from the API instead. The type, the timestamp and the small fields (the
/// ids) stay. An event that fits is returned as it came.
pub fn fit(mut event: serde_json::Value, limit: usize) -> serde_json::Value {
    use serde_json::Value;
    let size = |v: &Value| serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
    while size(&event) > limit {
        let Some(data) = event.get_mut("data") else {
            return event;
        };
        if !data.is_object() {
            *data = serde_json::json!({ "omitted": ["data"] });
            continue;
        }
        let Some(fields) = data.as_object_mut() else {
            return event;
        };
        let largest = fields
            .iter()
            .filter(|(k, _)| k.as_str() != "omitted")
            .max_by_key(|(_, v)| size(v))
            .map(|(k, _)| k.clone());
        let Some(largest) = largest else {
            return event; // only `omitted` is left: as small as it gets
        };
        fields.remove(&largest);
        match fields.get_mut("omitted").and_then(Value::as_array_mut) {
            Some(omitted) => omitted.push(Value::String(largest)),
            None => {
                fields.insert("omitted".into(), serde_json::json!([largest]));
            }
        }
    }
    event
}

/// What an endpoint answered: its status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered(pub u16);

pub struct OutboundClient {
    client: PublicOnly,
}

impl OutboundClient {
    pub fn new(allow_private: bool) -> Self {
        Self {
            client: PublicOnly::new(TIMEOUT, allow_private),
        }
    }

    /// Checks an endpoint URL: `https` and a public host (`http` and private hosts too when
    /// private addresses are allowed).
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        let schemes: &[&str] = if self.client.allow_private {
            &["https", "http"]
        } else {
            &["https"]
        };
        self.client.check(url, schemes)
    }

    /// POSTs one signed event. A 2xx is `Ok`; anything else is classified (429 and 5xx
    /// transient, with `Retry-After`; every failure is retried by the delivery schedule anyway).
    pub async fn post(
        &self,
        url: &str,
        id: &str,
        timestamp: i64,
        signature: &str,
        body: Vec<u8>,
    ) -> Result<Answered, ProviderError> {
        let url = self
            .check_url(url)
            .map_err(|e| ProviderError::permanent(PROVIDER, e))?;
        let request = self
            .client
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let response = self.client.send(PROVIDER, request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        // The answer is read (a little of it) so the connection can be reused; it is not kept.
        let answer = read_at_most(PROVIDER, response, MAX_ANSWER_BYTES)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        if status.is_success() {
            Ok(Answered(status.as_u16()))
        } else {
            Err(classify_status(
                PROVIDER,
                status,
                &headers,
                &String::from_utf8_lossy(&answer),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published() {
        // Standard Webhooks' own test vector (spec and libraries).
        let sig = signature(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .expect("sign");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_AAAA"],
            "m",
            1,
            b"",
        )
        .expect("sign");
        assert_eq!(two.split(' ').count(), 2);
        assert!(signature(&["whsec_not base64!"], "m", 1, b"").is_err());
        let secret = new_secret().expect("secret");
        assert!(secret.starts_with("whsec_"));
        assert_eq!(
            STANDARD
                .decode(&secret["whsec_".len()..])
                .expect("b64")
                .len(),
            32
        );
    }

    #[test]
    fn an_event_over_the_limit_leaves_out_its_largest_fields_and_names_them() {
        let big = "x".repeat(MAX_BODY_BYTES);
        let event = serde_json::json!({
            "type": "call.ended",
            "timestamp": "2026-12-04T00:00:00.000Z",
            "data": {"call_id": "c1", "summary": big, "structured_data": {"notes": big},
                     "ended_reason": "customer-ended-call"},
        });
        let fitted = fit(event.clone(), MAX_BODY_BYTES);
        let body = serde_json::to_vec(&fitted).expect("json");
        assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
        assert_eq!(fitted["type"], "call.ended");
        assert_eq!(fitted["data"]["call_id"], "c1");
        assert_eq!(fitted["data"]["ended_reason"], "customer-ended-call");
        let mut omitted: Vec<&str> = fitted["data"]["omitted"]
            .as_array()
            .expect("omitted")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        omitted.sort_unstable();
        assert_eq!(omitted, ["structured_data", "summary"]);

        // Small events are untouched; an event of nothing but one huge scalar still fits.
        let small = serde_json::json!({"type": "lead.created", "data": {"lead_id": "l"}});
        assert_eq!(fit(small.clone(), MAX_BODY_BYTES), small);
        let odd = serde_json::json!({"type": "x", "data": big});
        let fitted = fit(odd, 1024);
        assert_eq!(fitted["data"]["omitted"], serde_json::json!(["data"]));
    }

    #[test]
    fn endpoint_urls_are_https_to_public_hosts() {
        let strict = OutboundClient::new(false);
        assert!(
            strict
                .check_url("https://hooks.example.com/agent-meter")
                .is_ok()
        );
        for bad in [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://10.0.0.8/x",
            "https://169.254.169.254/latest",
            "ftp://example.com/x",
            "not a url",
        ] {
            assert!(strict.check_url(bad).is_err(), "{bad}");
        }
        let loose = OutboundClient::new(true);
        assert!(loose.check_url("http://127.0.0.1:9/x").is_ok());
    }
}
