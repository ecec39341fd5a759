//! Secrets that never reach a log line, and the operators' tokens.

use std::fmt;

use super::{ConfigError, bad};

/// A value that must never reach a log line or an error body.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used (a header, a MAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Secret {
    /// Whether `given` is this secret, in constant time whatever the lengths (digests compared).
    pub fn matches(&self, given: &[u8]) -> bool {
        same_secret(given, self.0.as_bytes())
    }
}

/// The one constant-time comparison of a presented secret with the expected one: both are
/// hashed first, so neither the content nor the length leaks through timing.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(expected));
    a.ct_eq(&b).into()
}

/// A named ops credential: the audit trail names `name` for whatever the token does.
#[derive(Clone, Debug)]
pub struct OpsToken {
    pub name: String,
    pub token: Secret,
}

impl OpsToken {
    /// What binds an ops page session to this token: HMAC-SHA256 keyed by the token over the
    /// session id. Stored with the session and recomputed on each request, so a session outlives
    /// neither its operator's place in the config nor the token; neither can be read back from it.
    pub fn session_mac(&self, session_id: &str) -> Vec<u8> {
        use hmac::Mac;
        // HMAC takes a key of any length; the error arm cannot happen.
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(self.token.expose().as_bytes()) {
            Ok(mut mac) => {
                mac.update(b"agent-meter ops session\0");
                mac.update(session_id.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Whether `mac` binds session `session_id` to this token (constant time).
    pub fn opened_session(&self, session_id: &str, mac: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.session_mac(session_id);
        !expected.is_empty() && bool::from(expected.ct_eq(mac))
    }
}

/// `OPS_TOKENS=name:token,...` and the unnamed `OPS_TOKEN` (operator `ops`). Names are short
/// and printable; a malformed entry is refused without echoing the token.
pub(super) fn ops_tokens(
    named: Option<&str>,
    unnamed: Option<Secret>,
) -> Result<Vec<OpsToken>, ConfigError> {
    let mut tokens = Vec::new();
    for (i, entry) in named
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .enumerate()
    {
        if entry.is_empty() {
            continue;
        }
        let (name, token) = entry
            .split_once(':')
            .map(|(n, t)| (n.trim(), t.trim()))
            .unwrap_or(("", ""));
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
        if !name_ok || token.is_empty() {
            return Err(bad(
                "OPS_TOKENS",
                format!(
                    "entry {} is not name:token (names: letters, digits, . _ @ -)",
                    i + 1
                ),
            ));
        }
        if tokens.iter().any(|t: &OpsToken| t.name == name) {
            return Err(bad(
                "OPS_TOKENS",
                format!("operator {name:?} is named twice"),
            ));
        }
        tokens.push(OpsToken {
            name: name.to_string(),
            token: Secret::new(token),
        });
    }
    if let Some(token) = unnamed {
        if tokens.iter().any(|t| t.name == "ops") {
            return Err(bad(
                "OPS_TOKEN",
                "its operator \"ops\" is also named in OPS_TOKENS",
            ));
        }
        tokens.push(OpsToken {
            name: "ops".into(),
            token,
        });
    }
    // One token, two operators: the audit would name whichever is listed first.
    for (i, a) in tokens.iter().enumerate() {
        if let Some(b) = tokens[i + 1..].iter().find(|b| b.token == a.token) {
            return Err(bad(
                "OPS_TOKENS",
                format!("operators {} and {} share a token", a.name, b.name),
            ));
        }
    }
    Ok(tokens)
}

/// Shortest ops token accepted with `APP_ENV=production` (characters): a token is all that
/// guards `/ops`, so it must not be guessable.
pub const MIN_PRODUCTION_OPS_TOKEN: usize = 24;

/// With `APP_ENV=production`, every ops token must be at least [`MIN_PRODUCTION_OPS_TOKEN`]
/// characters; the error names the operator, never the token.
pub(super) fn strong_ops_tokens(tokens: &[OpsToken], production: bool) -> Result<(), ConfigError> {
    if !production {
        return Ok(());
    }
    match tokens
        .iter()
        .find(|t| t.token.expose().chars().count() < MIN_PRODUCTION_OPS_TOKEN)
    {
        Some(weak) => Err(bad(
            if weak.name == "ops" {
                "OPS_TOKEN"
            } else {
                "OPS_TOKENS"
            },
            format!(
                "the token of operator {} is shorter than {MIN_PRODUCTION_OPS_TOKEN} characters \
                 (APP_ENV=production)",
                weak.name
            ),
        )),
        None => Ok(()),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
