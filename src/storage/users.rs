//! `users`: one row per account, local or guest.

use sqlx::FromRow;

use super::{Storage, StorageError, Tx, now_ms};

#[derive(Debug, Clone, FromRow)]
pub struct User {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: i64,
    pub is_guest: i64,
    pub deactivated: i64,
    pub user_type: Option<String>,
    pub created_ts: i64,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.is_admin != 0
    }
    pub fn is_guest(&self) -> bool {
        self.is_guest != 0
    }
    pub fn is_deactivated(&self) -> bool {
        self.deactivated != 0
    }
}

/// What a new account starts with.
pub struct NewUser<'a> {
    pub user_id: &'a str,
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub is_guest: bool,
    pub user_type: Option<&'a str>,
}

impl Storage {
    pub async fn user(&self, user_id: &str) -> Result<Option<User>, StorageError> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Inserts the user; false if the ID is taken (by any account, deactivated or not).
    pub async fn insert_user(tx: &mut Tx, user: &NewUser<'_>) -> Result<bool, StorageError> {
        let inserted = sqlx::query(
            "INSERT INTO users (user_id, password_hash, is_admin, is_guest, user_type, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.user_id)
        .bind(user.password_hash)
        .bind(i64::from(user.is_admin))
        .bind(i64::from(user.is_guest))
        .bind(user.user_type)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    pub async fn set_password_hash(tx: &mut Tx, user_id: &str, hash: &str) -> Result<(), StorageError> {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Marks the account deactivated: it can never log in again. The password hash is kept so
    /// that only someone who knows the password learns that the account is deactivated.
    pub async fn deactivate_user(tx: &mut Tx, user_id: &str) -> Result<(), StorageError> {
        sqlx::query("UPDATE users SET deactivated = 1 WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// How many accounts exist: generated numeric localparts start counting from here.
    pub async fn count_users(&self) -> Result<i64, StorageError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The room's joined members who are guests of this server.
    pub async fn joined_guests(&self, room_id: &str) -> Result<Vec<String>, StorageError> {
        Ok(sqlx::query_scalar(
            "SELECT c.state_key FROM current_state_events c JOIN users u ON u.user_id = c.state_key
             WHERE c.room_id = $1 AND c.event_type = 'm.room.member' AND c.membership = 'join'
               AND u.is_guest <> 0",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
