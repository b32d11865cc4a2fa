//! Password hashing with argon2id. Hashing is deliberately slow (tens of milliseconds of CPU)
//! and takes 19 MiB of memory per hash, so it runs on the blocking pool, never on the async
//! workers, and at most one hash per core at a time: a burst of logins or registrations
//! queues instead of spawning dozens of threads that each keep 19 MiB.

use std::sync::LazyLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// Longest password accepted (as Synapse): argon2 would take any length, but there is no
/// reason to hash megabytes sent by a client.
pub const MAX_PASSWORD_BYTES: usize = 512;

/// A hash to verify against when the user does not exist, so that a failed login takes as
/// long for an unknown user as for a wrong password.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$R7cF4JgAVXbV4ZHlXAjm4tcQmh30ypbyM0SEDmd1HFI";

/// Hashes running at once: one per core.
static HASHING: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

pub async fn hash_password(password: &str) -> ApiResult<String> {
    let password = password.to_owned();
    let _permit = HASHING.acquire().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|error| {
        tracing::error!(%error, "password hashing failed");
        ApiError::internal()
    })
}

/// True if `password` matches `hash`. With no hash (unknown user, or an account without a
/// password) the check still costs one verification, and fails.
pub async fn verify_password(hash: Option<String>, password: &str) -> bool {
    let password = password.to_owned();
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DECOY_HASH.to_owned());
    let Ok(_permit) = HASHING.acquire().await else {
        return false;
    };
    let matches = tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false);
    known && matches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_own_password() {
        let hash = hash_password("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(Some(hash.clone()), "correct horse").await);
        assert!(!verify_password(Some(hash), "battery staple").await);
        assert!(!verify_password(None, "anything").await);
    }
}
