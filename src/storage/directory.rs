//! `room_aliases`, `room_directory` and `event_reports`.

use super::{Storage, StorageError, Tx, now_ms};

impl Storage {
    /// Creates an alias; false if it is taken.
    pub async fn insert_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool, StorageError> {
        let mut tx = self.begin_write().await?;
        let inserted = Self::insert_alias_in(&mut tx, alias, room_id, creator).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// [`insert_alias`](Self::insert_alias) within a transaction (a room's creation).
    pub async fn insert_alias_in(tx: &mut Tx, alias: &str, room_id: &str, creator: &str) -> Result<bool, StorageError> {
        let inserted = sqlx::query(
            "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// The room an alias points at, and who created the alias.
    pub async fn alias(&self, alias: &str) -> Result<Option<(String, String)>, StorageError> {
        Ok(
            sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE room_alias = $1")
                .bind(alias)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<bool, StorageError> {
        let deleted = self
            .write(sqlx::query("DELETE FROM room_aliases WHERE room_alias = $1").bind(alias))
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    pub async fn aliases_of_room(&self, room_id: &str) -> Result<Vec<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT room_alias FROM room_aliases WHERE room_id = $1 ORDER BY room_alias")
                .bind(room_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn set_published(&self, room_id: &str, published: bool) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        Self::set_published_in(&mut tx, room_id, published).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`set_published`](Self::set_published) within a transaction (a room's creation).
    pub async fn set_published_in(tx: &mut Tx, room_id: &str, published: bool) -> Result<(), StorageError> {
        if published {
            sqlx::query(
                "INSERT INTO room_directory (room_id, published_ts) VALUES ($1, $2) ON CONFLICT (room_id) DO NOTHING",
            )
            .bind(room_id)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM room_directory WHERE room_id = $1")
                .bind(room_id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn is_published(&self, room_id: &str) -> Result<bool, StorageError> {
        let found: Option<String> = sqlx::query_scalar("SELECT room_id FROM room_directory WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Every published room with its joined member count, most members first.
    pub async fn published_rooms(&self) -> Result<Vec<(String, i64)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT d.room_id, COUNT(c.state_key) AS members
             FROM room_directory d
             LEFT JOIN current_state_events c
               ON c.room_id = d.room_id AND c.event_type = 'm.room.member' AND c.membership = 'join'
             GROUP BY d.room_id
             ORDER BY members DESC, d.room_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn insert_report(
        &self,
        room_id: &str,
        event_id: Option<&str>,
        reporter: &str,
        reason: Option<&str>,
        score: Option<i64>,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        let id = Self::next_stream_position(&mut tx, "reports").await?;
        sqlx::query(
            "INSERT INTO event_reports (id, room_id, event_id, reporter, reason, score, received_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(room_id)
        .bind(event_id)
        .bind(reporter)
        .bind(reason)
        .bind(score)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_user_report(
        &self,
        target_user_id: &str,
        reporter: &str,
        reason: &str,
    ) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        let id = Self::next_stream_position(&mut tx, "reports").await?;
        sqlx::query(
            "INSERT INTO user_reports (id, target_user_id, reporter, reason, received_ts)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(target_user_id)
        .bind(reporter)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Storage {
    /// Users joined to one of `public_rooms`, and other users joined to a room that `user_id`
    /// is joined to (as Synapse's directory: the searcher is not found through their own
    /// private rooms). Deactivated users are left out.
    pub async fn visible_users(&self, user_id: &str, public_rooms: &[String]) -> Result<Vec<String>, StorageError> {
        let mut sql = String::from(
            "SELECT DISTINCT m.state_key FROM current_state_events m
             WHERE m.event_type = 'm.room.member' AND m.membership = 'join'
               AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = m.state_key AND u.deactivated <> 0)
               AND (
                 (m.state_key <> $1 AND m.room_id IN (SELECT room_id FROM current_state_events
                               WHERE event_type = 'm.room.member' AND state_key = $1 AND membership = 'join'))",
        );
        if !public_rooms.is_empty() {
            let placeholders: Vec<String> = (2..=public_rooms.len() + 1).map(|i| format!("${i}")).collect();
            sql.push_str(&format!(" OR m.room_id IN ({})", placeholders.join(", ")));
        }
        sql.push_str(") ORDER BY m.state_key");
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(user_id);
        for room in public_rooms {
            query = query.bind(room);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The room's current `m.room.name` and `m.room.canonical_alias` events, unredacted:
    /// (type, PDU JSON). One query: the sync summary asks for every room it sends.
    pub async fn name_and_alias_events(&self, room_id: &str) -> Result<Vec<(String, String)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT c.event_type, e.json FROM current_state_events c JOIN events e ON e.event_id = c.event_id
             WHERE c.room_id = $1 AND c.state_key = ''
               AND c.event_type IN ('m.room.name', 'm.room.canonical_alias') AND e.redacted_by IS NULL",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every room's current state event of one type (empty state key): (room ID, PDU JSON).
    pub async fn state_of_all_rooms(&self, event_type: &str) -> Result<Vec<(String, String)>, StorageError> {
        Ok(sqlx::query_as(
            "SELECT c.room_id, e.json FROM current_state_events c JOIN events e ON e.event_id = c.event_id
             WHERE c.event_type = $1 AND c.state_key = ''",
        )
        .bind(event_type)
        .fetch_all(&self.pool)
        .await?)
    }
}
