//! Password hashing with argon2id. Hashing is CPU-heavy, so it runs on the blocking pool and
//! never stalls the async workers.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::{Error, Result};

/// Longest password accepted; argon2 takes any length, but unbounded input is a DoS lever.
pub const MAX_PASSWORD_LEN: usize = 512;

pub async fn hash(password: String) -> Result<String> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(Error::new(
            ruma::api::error::ErrorKind::WeakPassword,
            format!("Password is longer than {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("password hashing task failed: {e}")))?
}

/// Whether `password` matches the stored PHC string. A malformed stored hash never matches.
pub async fn verify(password: String, stored: String) -> Result<bool> {
    if password.len() > MAX_PASSWORD_LEN {
        return Ok(false);
    }
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(|e| Error::internal(format!("password verification task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse".to_owned()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".to_owned(), h.clone()).await.unwrap());
        assert!(!verify("wrong".to_owned(), h).await.unwrap());
        assert!(
            !verify("x".to_owned(), "not a hash".to_owned())
                .await
                .unwrap()
        );
    }
}
