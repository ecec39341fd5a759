//! Secrets we hand out once (API tokens, sign-in links, session ids) and keep only as SHA-256.

use sha2::{Digest, Sha256};

/// What is stored of a token, link or session id: its SHA-256.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// 256 random bits from the operating system, hex (a session id or a sign-in token).
pub fn new_secret() -> Result<String, sqlx::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| sqlx::Error::Protocol(format!("no randomness: {e}")))?;
    Ok(hex::encode(bytes))
}
