//! The database: one storage API over SQLite (embedded, the default) and PostgreSQL.
//!
//! Queries are written once, in SQL both backends accept (`$1` placeholders, `ON CONFLICT`,
//! `RETURNING`), and run through sqlx's `Any` driver. Only the DDL differs per backend, in
//! `migrations/sqlite` and `migrations/postgres`. This module and its children are the only
//! place in Hearth with SQL.

mod account_data;
mod appservices;
mod devices;
mod directory;
mod e2ee;
mod edus;
mod federation;
mod key_backup;
mod media;
mod migrate;
mod partial_state;
mod positions;
mod profiles;
mod push;
mod registration;
mod rooms;
mod state;
mod sync;
mod tokens;
mod uia;
mod users;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{
    Any, AnyPool, Transaction,
    any::{AnyPoolOptions, install_default_drivers},
};

pub use self::{
    account_data::AccountDataEntry,
    appservices::{AppservicePositions, InboxMessage, PendingAppserviceTxn},
    devices::Device,
    e2ee::{
        CrossSigningKeyRow, DeviceKeyState, DeviceKeysRow, KeyUpload, NewSignature, OutgoingToDevice, SignatureRow,
        ToDeviceRow, ToDeviceSent, UploadedKey,
    },
    edus::{DeviceListChange, QueuedEdu, RemoteCrossSigningKey, RemoteDevice, StoredEdu},
    federation::{JoinedRoom, StoredServerKey},
    key_backup::{BackupKeyRow, BackupVersion},
    media::{Completion, MediaRow, NewMedia, Reservation, ThumbnailRow},
    migrate::{MigrationError, SCHEMA_VERSION},
    partial_state::PartialStateRoom,
    push::{NewPushAction, PushActionRow, PusherRow, UnreadCount},
    registration::RegistrationToken,
    rooms::{EventRow, EventWrites, NewEvent, Persisted, RelationRow, StateMap},
    sync::{MembershipRow, NewReceipt, PresenceRow, ReceiptRow, RoomActivity, RoomSummary},
    tokens::{AccessTokenInfo, RefreshTokenInfo},
    uia::UiaSession,
    users::{NewUser, User},
};

/// Which database engine a [`Storage`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The handle to the database, cheap to clone (it is a pool).
#[derive(Clone)]
pub struct Storage {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
    /// SQLite's busy handler (1 ms, 2 ms, 5 ms … 100 ms between tries), where a steady stream
    /// of other writers can starve it for a long time. Write transactions of this process
    /// queue here instead, in order, and take the lock when it is theirs.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction (see [`Storage::begin_write`]): the connection it runs on, through
/// `&mut *tx`, until [`commit`](Self::commit); dropped uncommitted, it rolls back.
pub struct Tx {
    tx: Transaction<'static, Any>,
    // Declared after the transaction: released once it has ended.
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Storage {
    /// Connects, applies pending migrations and returns the handle.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StorageError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StorageError::UnsupportedUrl);
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            // An in-process connection does not go stale: no ping (a round trip to its worker
            // thread) before every query.
            options = options.test_before_acquire(false);
            // WAL lets readers run beside the one writer; the busy timeout makes a second
            // writer wait for the lock instead of failing; NORMAL sync is durable in WAL mode
            // except across a power cut, the trade Synapse and every SQLite server makes.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            });
        }
        if backend == Backend::Postgres {
            // One plain connection first: an unreachable server or a refused login says so at
            // once, instead of a pool timing out 30 seconds later with no cause.
            use sqlx::Connection;
            sqlx::AnyConnection::connect(url).await?.close().await?;
        }
        let pool = options.connect(url).await?;
        let storage = Self {
            pool,
            backend,
            write_gate: Arc::default(),
        };
        migrate::run(&storage).await?;
        Ok(storage)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that will write.
    ///
    /// On SQLite this is `BEGIN IMMEDIATE`: it takes the write lock up front, so a transaction
    /// that reads and then writes never fails with SQLITE_BUSY because another writer
    /// committed in between (a deferred transaction cannot upgrade a stale read snapshot).
    pub async fn begin_write(&self) -> Result<Tx, StorageError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let gate = self.write_gate.clone().lock_owned().await;
                Tx {
                    tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
                    _gate: Some(gate),
                }
            }
            Backend::Postgres => Tx {
                tx: self.pool.begin().await?,
                _gate: None,
            },
        })
    }

    /// Runs one write statement outside a transaction; on SQLite it queues at the write gate
    /// like a write transaction.
    pub(crate) async fn write<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        let _gate = match self.backend {
            Backend::Sqlite => Some(self.write_gate.lock().await),
            Backend::Postgres => None,
        };
        query.execute(&self.pool).await
    }

    /// True when the database answers a trivial query (for `/health`).
    pub async fn is_healthy(&self) -> bool {
        self.write(sqlx::query("SELECT 1")).await.is_ok()
    }

    /// Connections open and idle, for `/metrics`.
    pub fn pool_usage(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Waits for checked-out connections to return, then closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database URL must start with sqlite:// or postgres://")]
    UnsupportedUrl,
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("storage invariant broken: {0}")]
    Invariant(&'static str),
}

impl StorageError {
    /// Whether a storage failure is the database being out of reach rather than a bug: lost or
    /// refused connections, a pool that timed out, PostgreSQL's connection and shutdown errors
    /// (classes 08 and 57P, too many connections), SQLite busy or locked past its timeout.
    pub fn is_unavailable(&self) -> bool {
        let Self::Sqlx(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => {
                true
            }
            sqlx::Error::Database(database) => database.code().is_some_and(|code| {
                code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "5" || code == "6"
            }),
            _ => false,
        }
    }
}
