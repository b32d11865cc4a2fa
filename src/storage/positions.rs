//! Stream positions: the one place writers get a position on a server-wide stream, and readers
//! learn where each stream stands.
//!
//! Today each stream is one counter row (`stream_positions`), taken inside the writer's
//! transaction and locked until it commits, so positions become visible in order: no reader
//! sees N+1 before N. With several workers this is the seam to replace: each writer would get
//! its own positions and readers would read up to the lowest position still being written.
//! Nothing outside this file names the table.

use super::{Storage, StorageError, Tx};

impl Storage {
    /// Reserves `count` positions (one block) on `stream` inside the writer's transaction and
    /// returns the last; the block is `last - count + 1 ..= last`.
    pub(super) async fn reserve_stream_positions(tx: &mut Tx, stream: &str, count: i64) -> Result<i64, StorageError> {
        Ok(sqlx::query_scalar(
            "UPDATE stream_positions SET position = position + $2 WHERE stream = $1 RETURNING position",
        )
        .bind(stream)
        .bind(count)
        .fetch_one(&mut **tx)
        .await?)
    }

    /// The next position on `stream`, inside the writer's transaction.
    pub(super) async fn next_stream_position(tx: &mut Tx, stream: &str) -> Result<i64, StorageError> {
        Self::reserve_stream_positions(tx, stream, 1).await
    }

    /// The last position of every stream kept in the database, by name.
    pub async fn stream_positions(&self) -> Result<Vec<(String, i64)>, StorageError> {
        Ok(sqlx::query_as("SELECT stream, position FROM stream_positions")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The highest event position handed out so far.
    pub async fn current_event_position(&self) -> Result<i64, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM stream_positions WHERE stream = 'events'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
