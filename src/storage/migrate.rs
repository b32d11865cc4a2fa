//! Schema migrations: plain SQL files, one list per backend, applied in order at start-up.
//!
//! Each applied file is recorded in `schema_migrations`; running again applies nothing. A
//! database that records a version newer than this binary knows is refused: an older Hearth
//! must not write to a schema it does not understand.

use super::{Backend, Storage, StorageError, now_ms};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// Add a migration by adding both files and one entry here; never edit an applied one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts",
        sqlite: include_str!("../../migrations/sqlite/0001_accounts.sql"),
        postgres: include_str!("../../migrations/postgres/0001_accounts.sql"),
    },
    Migration {
        version: 2,
        name: "rooms",
        sqlite: include_str!("../../migrations/sqlite/0002_rooms.sql"),
        postgres: include_str!("../../migrations/postgres/0002_rooms.sql"),
    },
    Migration {
        version: 3,
        name: "sync",
        sqlite: include_str!("../../migrations/sqlite/0003_sync.sql"),
        postgres: include_str!("../../migrations/postgres/0003_sync.sql"),
    },
    Migration {
        version: 4,
        name: "e2ee",
        sqlite: include_str!("../../migrations/sqlite/0004_e2ee.sql"),
        postgres: include_str!("../../migrations/postgres/0004_e2ee.sql"),
    },
    Migration {
        version: 5,
        name: "media",
        sqlite: include_str!("../../migrations/sqlite/0005_media.sql"),
        postgres: include_str!("../../migrations/postgres/0005_media.sql"),
    },
    Migration {
        version: 6,
        name: "push",
        sqlite: include_str!("../../migrations/sqlite/0006_push.sql"),
        postgres: include_str!("../../migrations/postgres/0006_push.sql"),
    },
    Migration {
        version: 7,
        name: "user_reports",
        sqlite: include_str!("../../migrations/sqlite/0007_user_reports.sql"),
        postgres: include_str!("../../migrations/postgres/0007_user_reports.sql"),
    },
    Migration {
        version: 8,
        name: "forgotten_rooms",
        sqlite: include_str!("../../migrations/sqlite/0008_forgotten_rooms.sql"),
        postgres: include_str!("../../migrations/postgres/0008_forgotten_rooms.sql"),
    },
    Migration {
        version: 9,
        name: "uia_session_data",
        sqlite: include_str!("../../migrations/sqlite/0009_uia_session_data.sql"),
        postgres: include_str!("../../migrations/postgres/0009_uia_session_data.sql"),
    },
    Migration {
        version: 10,
        name: "erased_users",
        sqlite: include_str!("../../migrations/sqlite/0010_erased_users.sql"),
        postgres: include_str!("../../migrations/postgres/0010_erased_users.sql"),
    },
    Migration {
        version: 11,
        name: "federation",
        sqlite: include_str!("../../migrations/sqlite/0011_federation.sql"),
        postgres: include_str!("../../migrations/postgres/0011_federation.sql"),
    },
    Migration {
        version: 12,
        name: "backfill",
        sqlite: include_str!("../../migrations/sqlite/0012_backfill.sql"),
        postgres: include_str!("../../migrations/postgres/0012_backfill.sql"),
    },
    Migration {
        version: 13,
        name: "unread_counts",
        sqlite: include_str!("../../migrations/sqlite/0013_unread_counts.sql"),
        postgres: include_str!("../../migrations/postgres/0013_unread_counts.sql"),
    },
    Migration {
        version: 14,
        name: "federation_edus",
        sqlite: include_str!("../../migrations/sqlite/0014_federation_edus.sql"),
        postgres: include_str!("../../migrations/postgres/0014_federation_edus.sql"),
    },
    Migration {
        version: 15,
        name: "appservices",
        sqlite: include_str!("../../migrations/sqlite/0015_appservices.sql"),
        postgres: include_str!("../../migrations/postgres/0015_appservices.sql"),
    },
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database schema is at version {found}, newer than this Hearth understands \
         (up to {known}); it was written by a newer Hearth. Run that version, or restore a backup"
    )]
    NewerSchema { found: i64, known: i64 },
}

pub(super) async fn run(storage: &Storage) -> Result<(), StorageError> {
    let mut tx = storage.begin_write().await?;
    if storage.backend == Backend::Postgres {
        // Several workers may start at once: one migrates, the others wait and then see it done.
        sqlx::query("SELECT pg_advisory_xact_lock(72737465)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             applied_ts BIGINT NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await?;
    let current = current.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(MigrationError::NewerSchema {
            found: current,
            known: SCHEMA_VERSION,
        }
        .into());
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let sql = match storage.backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
    }
    tx.commit().await?;
    Ok(())
}
