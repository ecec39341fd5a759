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
