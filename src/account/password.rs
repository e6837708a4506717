//! Password hashing with argon2id. Hashing is CPU-heavy, so it runs on the blocking pool and
//! never stalls the async workers.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Longest password accepted; argon2 takes any length, but unbounded input is a DoS lever.
pub const MAX_PASSWORD_LEN: usize = 512;

/// Hashes and checks passwords, at most one per CPU at a time. Each argon2 run works in a
/// 19 MiB buffer on its own blocking-pool thread: without a bound, a burst of logins or
/// registrations costs 19 MiB and a thread per request in flight, and finishes no sooner
/// than it does queued here.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Default for Hasher {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Hasher {
            permits: Arc::new(Semaphore::new(cpus)),
        }
    }
}

impl Hasher {
    pub async fn hash(&self, password: String) -> Result<String> {
        if password.len() > MAX_PASSWORD_LEN {
            return Err(Error::new(
                ruma::api::error::ErrorKind::WeakPassword,
                format!("Password is longer than {MAX_PASSWORD_LEN} bytes"),
            ));
        }
        self.run(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
        })
        .await?
    }

    /// Whether `password` matches the stored PHC string. A malformed stored hash never matches.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool> {
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(false);
        }
        self.run(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::internal(format!("password hashing closed: {e}")))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(format!("password hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = Hasher::default();
        let h = hasher.hash("correct horse".to_owned()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("correct horse".to_owned(), h.clone())
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong".to_owned(), h).await.unwrap());
        assert!(
            !hasher
                .verify("x".to_owned(), "not a hash".to_owned())
                .await
                .unwrap()
        );
    }

    /// No more hashes run at once than there are permits; the others wait their turn and
    /// all complete.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_hashes_are_bounded() {
        let hasher = Hasher {
            permits: Arc::new(Semaphore::new(1)),
        };
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    hasher
                        .run(move || {
                            use std::sync::atomic::Ordering::SeqCst;
                            let now = running.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            running.fetch_sub(1, SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
