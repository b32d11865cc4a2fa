//! The storage API against the backend `HEARTH_TEST_DATABASE` names (SQLite or PostgreSQL).

use crate::common;

use hearth::storage::{Backend, EventWrites, NewEvent, SCHEMA_VERSION, Storage};

async fn fresh() -> (Storage, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_database_url(dir.path()).await;
    let storage = Storage::connect(&url, 4).await.expect("connect and migrate");
    (storage, url, dir)
}

/// An ordinary account, `@a:x`.
fn plain_user() -> hearth::storage::NewUser<'static> {
    hearth::storage::NewUser {
        user_id: "@a:x",
        password_hash: None,
        is_admin: false,
        is_guest: false,
        user_type: None,
    }
}

async fn insert_plain_user(storage: &Storage) {
    let mut tx = storage.begin_write().await.unwrap();
    assert!(Storage::insert_user(&mut tx, &plain_user()).await.unwrap());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_requested_backend_is_the_one_tested() {
    let (storage, _, _dir) = fresh().await;
    let expected = match common::backend().as_str() {
        "postgres" => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    assert_eq!(storage.backend(), expected);
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let (storage, url, _dir) = fresh().await;
    let mut tx = storage.begin_write().await.unwrap();
    let user = plain_user();
    assert!(Storage::insert_user(&mut tx, &user).await.unwrap());
    tx.commit().await.unwrap();
    storage.close().await;
    // Connecting again applies nothing and keeps the data.
    let again = Storage::connect(&url, 4).await.unwrap();
    assert!(again.user("@a:x").await.unwrap().is_some());
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let (storage, url, _dir) = fresh().await;
    let mut tx = storage.begin_write().await.unwrap();
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, 'future', 0)")
        .bind(SCHEMA_VERSION + 1)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    storage.close().await;
    let error = Storage::connect(&url, 4).await.err().expect("refused").to_string();
    assert!(error.contains("newer"), "{error}");
}

#[tokio::test]
async fn users_are_unique() {
    let (storage, _, _dir) = fresh().await;
    let user = hearth::storage::NewUser {
        user_id: "@a:x",
        password_hash: Some("h"),
        is_admin: true,
        is_guest: false,
        user_type: None,
    };
    let mut tx = storage.begin_write().await.unwrap();
    assert!(Storage::insert_user(&mut tx, &user).await.unwrap());
    assert!(!Storage::insert_user(&mut tx, &user).await.unwrap());
    tx.commit().await.unwrap();
    let stored = storage.user("@a:x").await.unwrap().unwrap();
    assert!(stored.is_admin() && !stored.is_guest() && !stored.is_deactivated());
    assert_eq!(stored.password_hash.as_deref(), Some("h"));
    assert_eq!(storage.count_users().await.unwrap(), 1);
}

#[tokio::test]
async fn deleting_a_device_deletes_its_tokens() {
    let (storage, _, _dir) = fresh().await;
    let user = plain_user();
    let mut tx = storage.begin_write().await.unwrap();
    Storage::insert_user(&mut tx, &user).await.unwrap();
    for device in ["D1", "D2"] {
        Storage::upsert_device(&mut tx, "@a:x", device, Some("name"), None)
            .await
            .unwrap();
        Storage::insert_refresh_token(&mut tx, &format!("r{device}"), "@a:x", device, None)
            .await
            .unwrap();
        Storage::insert_access_token(
            &mut tx,
            &format!("a{device}"),
            "@a:x",
            device,
            None,
            Some(&format!("r{device}")),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(storage.access_token("aD1").await.unwrap().unwrap().device_id, "D1");

    let mut tx = storage.begin_write().await.unwrap();
    Storage::delete_device(&mut tx, "@a:x", "D1").await.unwrap();
    tx.commit().await.unwrap();
    assert!(storage.access_token("aD1").await.unwrap().is_none());
    assert!(storage.access_token("aD2").await.unwrap().is_some());
    assert_eq!(storage.devices("@a:x").await.unwrap().len(), 1);

    // Revoking a superseded refresh token takes its access token with it.
    let mut tx = storage.begin_write().await.unwrap();
    assert!(Storage::refresh_token(&mut tx, "rD2").await.unwrap().is_some());
    Storage::revoke_superseded_refresh_token(&mut tx, "rD2").await.unwrap();
    assert!(Storage::refresh_token(&mut tx, "rD2").await.unwrap().is_none());
    tx.commit().await.unwrap();
    assert!(storage.access_token("aD2").await.unwrap().is_none());
}

#[tokio::test]
async fn account_data_gets_increasing_stream_positions() {
    let (storage, _, _dir) = fresh().await;
    insert_plain_user(&storage).await;
    let first = storage.set_account_data("@a:x", "", "t1", "{}").await.unwrap();
    let second = storage.set_account_data("@a:x", "", "t2", "{\"a\":1}").await.unwrap();
    let third = storage.set_account_data("@a:x", "", "t1", "{\"b\":2}").await.unwrap();
    assert!(first < second && second < third);
    let changed = storage.account_data_since("@a:x", first).await.unwrap();
    let types: Vec<&str> = changed.iter().map(|e| e.data_type.as_str()).collect();
    assert_eq!(types, ["t2", "t1"]);
    assert_eq!(
        storage.account_data("@a:x", "", "t1").await.unwrap().as_deref(),
        Some("{\"b\":2}")
    );
}

#[tokio::test]
async fn registration_token_uses_cannot_be_oversubscribed() {
    let (storage, _, _dir) = fresh().await;
    assert!(storage.insert_registration_token("t", Some(1), None).await.unwrap());
    for session in ["s1", "s2"] {
        storage.create_uia_session(session, "register", None).await.unwrap();
    }
    assert!(storage.reserve_registration_token("t", "s1").await.unwrap());
    assert!(
        !storage.reserve_registration_token("t", "s2").await.unwrap(),
        "the only use is pending"
    );
    // An expired session gives its use back.
    assert_eq!(
        storage
            .expire_uia_sessions(hearth::storage::now_ms() + 1)
            .await
            .unwrap(),
        2
    );
    let token = storage.registration_token("t").await.unwrap().unwrap();
    assert_eq!((token.pending, token.completed), (0, 0));
}

#[tokio::test]
async fn concurrent_writers_do_not_fail() {
    let (storage, _, _dir) = fresh().await;
    insert_plain_user(&storage).await;
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let storage = storage.clone();
            tokio::spawn(async move { storage.set_account_data("@a:x", "", &format!("t{i}"), "{}").await })
        })
        .collect();
    let mut positions = Vec::new();
    for writer in writers {
        positions.push(writer.await.unwrap().expect("no write fails under contention"));
    }
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 20, "every write got its own stream position");
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_the_old_one_as_expired() {
    let (storage, _, _dir) = fresh().await;
    let first = hearth::signing::load_or_create_signing_key(&storage).await.unwrap();
    let again = hearth::signing::load_or_create_signing_key(&storage).await.unwrap();
    assert_eq!(first.key_id(), again.key_id(), "never regenerated by accident");
    let (retired, new) = hearth::signing::rotate_signing_key(&storage).await.unwrap();
    assert_eq!(retired, first.key_id());
    assert_ne!(new, retired);
    let keys = storage.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().any(|(id, _, expired)| id == &retired && expired.is_some()));
    assert!(keys.iter().any(|(id, _, expired)| id == &new && expired.is_none()));
    assert_eq!(
        hearth::signing::load_or_create_signing_key(&storage)
            .await
            .unwrap()
            .key_id(),
        new
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_at_once() {
    // A port nothing listens on: the error says the connection was refused, not that a pool
    // timed out.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = Storage::connect(&format!("postgres://postgres@127.0.0.1:{port}/none"), 2)
        .await
        .err()
        .expect("nothing listens there");
    let text = error.to_string().to_lowercase();
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("timed out"), "{text}");
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test config for a server on `database_url`, waiting `wait_secs` for it at start.
fn waiting_config(database_url: String, wait_secs: u64, dir: &std::path::Path) -> hearth::config::Config {
    let mut config = common::test_config();
    config.data_dir = dir.to_owned();
    config.database.url = Some(database_url);
    config.database.connect_wait_secs = wait_secs;
    config
}

#[tokio::test]
async fn a_database_that_stays_down_fails_the_start_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/none", free_port());
    let started = std::time::Instant::now();
    let error = hearth::server::Server::bind(waiting_config(url, 3, dir.path()))
        .await
        .err()
        .expect("nothing listens there");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(2500),
        "it tried again"
    );
    let text = format!("{error:#}").to_lowercase();
    assert!(text.contains("refused"), "{text}");
}

#[tokio::test]
async fn a_database_that_comes_up_during_the_wait_is_used() {
    // PostgreSQL only: the database appears (a forwarder to it opens on the port) while
    // Hearth is waiting for it.
    if common::backend() != "postgres" {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let real = url::Url::parse(&common::fresh_database_url(dir.path()).await).unwrap();
    let target = format!("{}:{}", real.host_str().unwrap(), real.port().unwrap_or(5432));
    let port = free_port();
    let mut waiting = real.clone();
    waiting.set_port(Some(port)).unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let started = std::time::Instant::now();
    let server = hearth::server::Server::bind(waiting_config(waiting.to_string(), 30, dir.path()))
        .await
        .expect("the database came up in time");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(server.state().storage.backend(), Backend::Postgres);
}

/// A state event of room `!r:x` as storage sees it, written with `writes`.
fn state_event(id: &str, event_type: &str, prev: &[&str], before: Option<i64>, writes: EventWrites) -> NewEvent {
    NewEvent {
        event_id: id.to_owned(),
        room_id: "!r:x".to_owned(),
        depth: prev.len() as i64 + 1,
        event_type: event_type.to_owned(),
        state_key: Some(String::new()),
        sender: "@a:x".to_owned(),
        origin_server_ts: 1,
        json: format!(r#"{{"type":"{event_type}","content":{{}}}}"#),
        prev_events: prev.iter().map(|p| (*p).to_owned()).collect(),
        state_before: before,
        membership: None,
        transaction: None,
        relation: None,
        history_visibility: "shared".to_owned(),
        redacts: None,
        writes,
        rejected_reason: None,
        resolved_state: None,
    }
}

#[tokio::test]
async fn events_change_only_what_their_kind_allows() {
    let (storage, _, _dir) = fresh().await;
    let mut tx = storage.begin_write().await.unwrap();
    assert!(Storage::insert_room(&mut tx, "!r:x", "12", "@a:x").await.unwrap());
    let create = Storage::persist_event(
        &mut tx,
        &state_event("$create", "m.room.create", &[], None, EventWrites::ALL),
    )
    .await
    .unwrap();
    // Kept in the DAG and its state, but not at the head nor in current state (a soft-failed
    // event).
    let aside = EventWrites {
        edges: true,
        state_group: true,
        extremity: false,
        current_state: false,
        timeline: false,
        backfilled: false,
    };
    let kept = Storage::persist_event(
        &mut tx,
        &state_event("$topic", "m.room.topic", &["$create"], Some(create.state_group), aside),
    )
    .await
    .unwrap();
    // Rejected: stored, nothing else.
    let nothing = EventWrites {
        edges: false,
        state_group: false,
        extremity: false,
        current_state: false,
        timeline: true,
        backfilled: false,
    };
    let mut rejected = state_event("$name", "m.room.name", &["$create"], Some(create.state_group), nothing);
    rejected.rejected_reason = Some("auth".to_owned());
    let refused = Storage::persist_event(&mut tx, &rejected).await.unwrap();
    tx.commit().await.unwrap();

    assert_ne!(
        kept.state_group, create.state_group,
        "a state group after the kept event"
    );
    assert_eq!(
        refused.state_group, create.state_group,
        "a rejected event changes no state"
    );
    let heads: Vec<String> = storage
        .forward_extremities("!r:x")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(heads, ["$create"]);
    for state_type in ["m.room.topic", "m.room.name"] {
        assert!(
            storage
                .current_state_event("!r:x", state_type, "")
                .await
                .unwrap()
                .is_none(),
            "{state_type} must not be current state"
        );
    }
    assert!(storage.event("$topic").await.unwrap().is_some());
    assert!(
        kept.position < 0,
        "an event outside the timeline takes a negative position"
    );
    assert!(refused.position > 0);
    let timeline = storage.room_events("!r:x", 0, false, 10).await.unwrap();
    assert!(
        timeline.iter().all(|row| row.event_id != "$topic"),
        "no timeline reads an event outside it"
    );
    assert!(
        storage.event("$name").await.unwrap().is_none(),
        "rejected events are never served"
    );
}
