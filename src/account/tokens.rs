//! Random secrets: access tokens, device IDs, session IDs. Tokens are stored only as hashes.

use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};

/// A new access token: 256 random bits, URL-safe base64, with a prefix that makes leaked
/// tokens easy to recognise in logs and secret scanners.
pub fn new_access_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    format!(
        "trl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the database keeps of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A device ID as Synapse makes them: ten upper-case letters.
pub fn new_device_id() -> String {
    crate::random::string(10, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
}

/// An opaque random ID (UIAA sessions, nonces).
pub fn new_session_id() -> String {
    crate::random::string(
        24,
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let a = new_access_token();
        let b = new_access_token();
        assert_ne!(a, b);
        assert!(a.len() >= 4 + 43);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(new_device_id().len(), 10);
    }
}
