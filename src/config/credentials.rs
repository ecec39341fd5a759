//! Vapi's server credentials, configured by pasting the same `authenticationPlan` objects the
//! customer gave Vapi (`CreateWebhookCredentialDTO.authenticationPlan` in Vapi's OpenAPI):
//! `VAPI_CREDENTIALS` (a JSON array) or `VAPI_CREDENTIALS_FILE` (a file holding it). The legacy
//! `VAPI_WEBHOOK_SECRET` (`X-Vapi-Secret`) and `VAPI_HMAC_SECRET` (HMAC-SHA256 over
//! `{timestamp}.{body}`) remain as shorthands. Secrets are held as [`Secret`]s: never printed.

use serde::Deserialize;

use crate::config::Secret;

/// One way a webhook request may prove it comes from Vapi.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The legacy `X-Vapi-Secret` header.
    SharedSecret(Secret),
    Bearer(Bearer),
    Hmac(Hmac),
    OAuth2(OAuth2),
}

impl Credential {
    /// Its kind, for logs (which plan matched; never a secret).
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::SharedSecret(_) => "x-vapi-secret",
            Credential::Bearer(_) => "bearer",
            Credential::Hmac(_) => "hmac",
            Credential::OAuth2(_) => "oauth2",
        }
    }
}

/// `BearerAuthenticationPlan`: Vapi sends `token` in `headerName`, after `Bearer ` unless
/// `bearerPrefixEnabled` is false.
#[derive(Debug, Clone)]
pub struct Bearer {
    pub token: Secret,
    pub header_name: String,
    pub prefix: bool,
}

/// `HMACAuthenticationPlan`, every field.
#[derive(Debug, Clone)]
pub struct Hmac {
    /// The key bytes (base64-decoded when `secretIsBase64`).
    pub key: SecretBytes,
    pub algorithm: HmacAlgorithm,
    pub signature_header: String,
    pub timestamp_header: String,
    pub signature_prefix: Option<String>,
    /// `{timestamp}`, `{body}`, `{method}`, `{url}` and `{svix-id}` are filled in.
    pub payload_format: String,
    pub message_id_header: Option<String>,
    pub base64: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha256,
    Sha512,
    Sha1,
}

/// `OAuth2AuthenticationPlan`: Vapi asks our token endpoint (`url`, i.e. `POST /oauth/token`)
/// for a token with these client credentials, then sends it as a Bearer token.
#[derive(Debug, Clone)]
pub struct OAuth2 {
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
}

/// Key bytes that must never be printed.
#[derive(Clone)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The JSON Vapi's dashboard and API take (camelCase), as pasted.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Plan {
    Bearer {
        token: String,
        #[serde(rename = "headerName")]
        header_name: Option<String>,
        #[serde(rename = "bearerPrefixEnabled")]
        bearer_prefix_enabled: Option<bool>,
    },
    Hmac {
        #[serde(rename = "secretKey")]
        secret_key: String,
        algorithm: HmacAlgorithm,
        #[serde(rename = "signatureHeader")]
        signature_header: Option<String>,
        #[serde(rename = "timestampHeader")]
        timestamp_header: Option<String>,
        #[serde(rename = "signaturePrefix")]
        signature_prefix: Option<String>,
        #[serde(rename = "includeTimestamp")]
        include_timestamp: Option<bool>,
        #[serde(rename = "payloadFormat")]
        payload_format: Option<String>,
        #[serde(rename = "messageIdHeader")]
        message_id_header: Option<String>,
        #[serde(rename = "signatureEncoding")]
        signature_encoding: Option<String>,
        #[serde(rename = "secretIsBase64")]
        secret_is_base64: Option<bool>,
    },
    Oauth2 {
        #[allow(
            dead_code,
            reason = "Vapi's field: where Vapi asks for tokens (our /oauth/token)"
        )]
        url: String,
        #[serde(rename = "clientId")]
        client_id: String,
        #[serde(rename = "clientSecret")]
        client_secret: String,
        scope: Option<String>,
    },
}

/// Reads a JSON array of Vapi `authenticationPlan` objects (or one object). Errors say which
/// entry and what is wrong, never a secret's value.
pub fn parse(json: &str) -> Result<Vec<Credential>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {}", json_error_kind(&e)))?;
    let entries = match value {
        serde_json::Value::Array(a) => a,
        one @ serde_json::Value::Object(_) => vec![one],
        _ => return Err("expected a JSON array of Vapi authenticationPlan objects".into()),
    };
    if entries.is_empty() {
        return Err("the array is empty".into());
    }
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let plan: Plan = serde_json::from_value(entry)
                .map_err(|e| format!("entry {i}: {}", redact(&e.to_string())))?;
            credential(plan).map_err(|e| format!("entry {i}: {e}"))
        })
        .collect()
}

/// serde quotes offending values in backticks (`invalid type: integer `123``): a secret of the
/// wrong type would be printed. Names of fields and variants are kept; values are not.
fn redact(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        return message.to_string();
    }
    message
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { "`…`" } else { part })
        .collect()
}

/// What kind of JSON error, without the text around it (which could be a secret).
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

fn credential(plan: Plan) -> Result<Credential, String> {
    Ok(match plan {
        Plan::Bearer {
            token,
            header_name,
            bearer_prefix_enabled,
        } => {
            if token.is_empty() {
                return Err("bearer token is empty".into());
            }
            Credential::Bearer(Bearer {
                token: Secret::new(token),
                header_name: header(header_name, "authorization")?,
                prefix: bearer_prefix_enabled.unwrap_or(true),
            })
        }
        Plan::Hmac {
            secret_key,
            algorithm,
            signature_header,
            timestamp_header,
            signature_prefix,
            include_timestamp,
            payload_format,
            message_id_header,
            signature_encoding,
            secret_is_base64,
        } => {
            use base64::Engine as _;
            let key = if secret_is_base64.unwrap_or(false) {
                base64::engine::general_purpose::STANDARD
                    .decode(secret_key.trim())
                    .map_err(|_| "secretKey is not base64 (secretIsBase64 is true)".to_string())?
            } else {
                secret_key.into_bytes()
            };
            if key.is_empty() {
                return Err("hmac secretKey is empty".into());
            }
            let base64 = match signature_encoding.as_deref().unwrap_or("hex") {
                "hex" => false,
                "base64" => true,
                other => return Err(format!("signatureEncoding {other:?} is not hex or base64")),
            };
            let payload_format = payload_format.unwrap_or_else(|| {
                if include_timestamp.unwrap_or(true) {
                    "{timestamp}.{body}".into()
                } else {
                    "{body}".into()
                }
            });
            if !payload_format.contains("{body}") {
                return Err("payloadFormat must contain {body}".into());
            }
            if payload_format.contains("{svix-id}") && message_id_header.is_none() {
                return Err("payloadFormat uses {svix-id} but messageIdHeader is not set".into());
            }
            Credential::Hmac(Hmac {
                key: SecretBytes(key),
                algorithm,
                signature_header: header(signature_header, "x-signature")?,
                timestamp_header: header(timestamp_header, "x-timestamp")?,
                signature_prefix: signature_prefix.filter(|p| !p.is_empty()),
                payload_format,
                message_id_header: message_id_header.map(|h| header(Some(h), "")).transpose()?,
                base64,
            })
        }
        Plan::Oauth2 {
            url: _,
            client_id,
            client_secret,
            scope,
        } => {
            if client_id.is_empty() || client_secret.is_empty() {
                return Err("oauth2 clientId and clientSecret must not be empty".into());
            }
            Credential::OAuth2(OAuth2 {
                client_id,
                client_secret: Secret::new(client_secret),
                scope: scope.filter(|s| !s.trim().is_empty()),
            })
        }
    })
}

/// A header name, lower-cased (HTTP header names are case-insensitive).
fn header(name: Option<String>, default: &str) -> Result<String, String> {
    let name = name
        .unwrap_or_else(|| default.to_string())
        .to_ascii_lowercase();
    axum::http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| name.clone())
        .map_err(|_| format!("{name:?} is not a header name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_reads_as_vapi_writes_it() {
        let creds = parse(
            r#"[
            {"type": "bearer", "token": "tok"},
            {"type": "bearer", "token": "tok2", "headerName": "X-Api-Key", "bearerPrefixEnabled": false},
            {"type": "hmac", "secretKey": "a2V5", "algorithm": "sha512", "signatureHeader": "Svix-Signature",
             "timestampHeader": "svix-timestamp", "messageIdHeader": "svix-id", "signaturePrefix": "v1,",
             "payloadFormat": "{svix-id}.{timestamp}.{body}", "signatureEncoding": "base64",
             "secretIsBase64": true},
            {"type": "oauth2", "url": "https://x/oauth/token", "clientId": "vapi", "clientSecret": "s", "scope": "webhook"}
        ]"#,
        )
        .expect("valid");
        assert_eq!(creds.len(), 4);
        let Credential::Bearer(b) = &creds[1] else {
            panic!("bearer")
        };
        assert_eq!((b.header_name.as_str(), b.prefix), ("x-api-key", false));
        let Credential::Hmac(h) = &creds[2] else {
            panic!("hmac")
        };
        assert_eq!(h.key.0, b"key");
        assert_eq!(h.signature_header, "svix-signature");
        assert!(h.base64);
        let Credential::Bearer(b) = &creds[0] else {
            panic!("bearer")
        };
        assert_eq!((b.header_name.as_str(), b.prefix), ("authorization", true));
    }

    #[test]
    fn mistakes_are_named_without_the_secret() {
        for (json, expect) in [
            ("", "not JSON"),
            ("[]", "empty"),
            ("7", "JSON array"),
            (r#"[{"type": "basic", "token": "hunter2"}]"#, "entry 0"),
            (
                r#"[{"type": "hmac", "secretKey": "hunter2", "algorithm": "md5"}]"#,
                "entry 0",
            ),
            (
                r#"[{"type": "hmac", "secretKey": "hunter2", "algorithm": "sha1", "signatureEncoding": "rot13"}]"#,
                "signatureEncoding",
            ),
            (
                r#"[{"type": "hmac", "secretKey": "hunter2", "algorithm": "sha1", "payloadFormat": "{timestamp}"}]"#,
                "{body}",
            ),
            (
                r#"[{"type": "bearer", "token": "hunter2", "headerName": "bad header"}]"#,
                "header name",
            ),
            (
                r#"[{"type": "bearer", "token": "hunter2", "extra": 1}]"#,
                "entry 0",
            ),
            (
                r#"[{"type": "oauth2", "url": "u", "clientId": "", "clientSecret": "hunter2"}]"#,
                "clientId",
            ),
            (r#"[{"type": "bearer", "token": 4242}]"#, "entry 0"),
        ] {
            let e = parse(json).expect_err(json);
            assert!(e.contains(expect), "{json}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("4242"), "{e}");
        }
    }
}
