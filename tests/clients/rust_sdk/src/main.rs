//! Drives Hearth the way Element X does, through matrix-rust-sdk's own logic: the client finds
//! simplified sliding sync from `/versions`, runs `SyncService` (room list plus encryption
//! sync), keeps its room list with `RoomListService` and sends through `Timeline`.
//!
//! Two users, Alice and Bob, each a real client with its own crypto store:
//! - Bob invites Alice to an encrypted DM; the invite appears in Alice's room list as an
//!   invite, she accepts it, and encrypted messages go both ways;
//! - Bob sends an encrypted image; Alice downloads and decrypts it through the authenticated
//!   media endpoints, which the SDK picks from the versions `/versions` lists;
//! - a second invite is declined in the SDK (which also forgets the room), a third on another
//!   client: each leaves the list, and the third reaches the SDK as a left room, not a joined one;
//! - Alice knocks on a room and the SDK files it as knocked;
//! - Alice leaves the DM, and it leaves her room list.
//!
//! Usage: `hearth-rust-sdk-client path/to/hearth` (starts it on a free loopback port with a
//! fresh data directory; `HEARTH_DATABASE_URL` passes through), or with
//! `HEARTH_TEST_BASE_URL=http://127.0.0.1:PORT` against a running server.

use std::{
    future::Future,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use eyeball_im::VectorDiff;
use futures_util::StreamExt;
use imbl::Vector;
use matrix_sdk::{
    Client, Room, RoomState,
    media::{MediaFormat, MediaRequestParameters},
    ruma::{
        OwnedRoomId, OwnedUserId, RoomId,
        api::{
            MatrixVersion,
            client::{
                account::register::v3 as register,
                room::{Visibility, create_room::v3 as create_room},
                uiaa,
            },
        },
        events::{
            AnyInitialStateEvent, EmptyStateKey, InitialStateEvent,
            room::{
                encryption::RoomEncryptionEventContent,
                join_rules::{JoinRule, RoomJoinRulesEventContent},
                message::{MessageType, RoomMessageEventContent},
            },
        },
        serde::Raw,
    },
    sliding_sync::Version as SlidingSyncVersion,
    sliding_sync::VersionBuilder,
};
use matrix_sdk_ui::{
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::SyncService,
    timeline::{AttachmentConfig, AttachmentSource, RoomExt, Timeline},
};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

fn say(line: &str) {
    println!("{line}");
}

fn check(condition: bool, what: &str) -> Result<()> {
    ensure!(condition, "{what}");
    say(&format!("ok - {what}"));
    Ok(())
}

/// Polls `probe` every 100 ms until it yields something, for at most [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await? {
            say(&format!("ok - {what}"));
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {} s", WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A hearth process of our own, or the server `HEARTH_TEST_BASE_URL` names.
struct Server {
    base: String,
    process: Option<(Child, tempfile::TempDir)>,
}

impl Server {
    async fn start() -> Result<Self> {
        if let Ok(base) = std::env::var("HEARTH_TEST_BASE_URL") {
            return Ok(Self {
                base: base.trim_end_matches('/').to_owned(),
                process: None,
            });
        }
        let binary = std::env::args()
            .nth(1)
            .context("usage: hearth-rust-sdk-client path/to/hearth (or set HEARTH_TEST_BASE_URL)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = tempfile::tempdir()?;
        let child = Command::new(binary)
            .arg("serve")
            .env("HEARTH_LISTEN", format!("127.0.0.1:{port}"))
            .env("HEARTH_DATA_DIR", data.path())
            .env(
                "HEARTH_LOG",
                std::env::var("HEARTH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()
            .context("starting hearth")?;
        let server = Self {
            base: format!("http://127.0.0.1:{port}"),
            process: Some((child, data)),
        };
        let health = format!("{}/health", server.base);
        wait_for("hearth becomes healthy", || async {
            Ok(reqwest::get(&health)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        })
        .await?;
        Ok(server)
    }

    /// SIGTERM, then the exit code must be 0 (a clean shutdown).
    fn stop(mut self) -> Result<()> {
        if let Some((mut child, _data)) = self.process.take() {
            // SAFETY: kill(2) on the pid of a child we own and have not yet waited for.
            let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            ensure!(sent == 0, "could not signal hearth");
            let status = child.wait()?;
            check(
                status.success(),
                &format!("hearth exited cleanly on SIGTERM ({status})"),
            )?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((child, _)) = self.process.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One Element X-like client: a registered account, its own stores, `SyncService` running,
/// and Alice's view of the room list (the non-left rooms, as Element X's "All" shows).
struct User {
    client: Client,
    sync: SyncService,
    room_list: watch::Receiver<Vec<(OwnedRoomId, RoomState)>>,
    _store: tempfile::TempDir,
}

impl User {
    async fn register(base: &str, name: &str) -> Result<Self> {
        let store = tempfile::tempdir()?;
        // As Element X does: sliding sync only if `/versions` says the server speaks it.
        let client = Client::builder()
            .homeserver_url(base)
            .sqlite_store(store.path(), None)
            .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
            .build()
            .await
            .with_context(|| format!("{name}: building the client (is simplified sliding sync advertised?)"))?;
        check(
            matches!(client.sliding_sync_version(), SlidingSyncVersion::Native),
            &format!("{name}: the SDK picks native simplified sliding sync from /versions"),
        )?;

        let mut request = register::Request::new();
        request.username = Some(name.to_owned());
        request.password = Some(format!("{name}-password-123"));
        request.initial_device_display_name = Some(format!("{name}'s Element X"));
        request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
        // The SDK keeps the session the registration returns (the client is then logged in).
        match client.matrix_auth().register(request.clone()).await {
            Ok(_) => {}
            // A server may want the dummy stage inside a session it hands out first.
            Err(error) => {
                let info = error.as_uiaa_response().context("registration failed")?.clone();
                let mut dummy = uiaa::Dummy::new();
                dummy.session = info.session;
                request.auth = Some(uiaa::AuthData::Dummy(dummy));
                client.matrix_auth().register(request).await?;
            }
        }
        ensure!(client.user_id().is_some(), "{name}: registered but not logged in");

        let sync = SyncService::builder(client.clone()).build().await?;
        sync.start().await;
        let room_list = watch_room_list(&sync).await?;
        Ok(Self {
            client,
            sync,
            room_list,
            _store: store,
        })
    }

    fn user_id(&self) -> OwnedUserId {
        self.client
            .user_id()
            .expect("a registered client has a user ID")
            .to_owned()
    }

    /// The room as the client knows it, once it does.
    async fn room(&self, room_id: &RoomId) -> Result<Room> {
        wait_for(&format!("{} knows {room_id}", self.user_id()), || async {
            Ok(self.client.get_room(room_id))
        })
        .await
    }

    /// Waits until the room list shows `room_id` in `state` (`None`: not in the list).
    async fn in_room_list(&self, room_id: &RoomId, state: Option<RoomState>, what: &str) -> Result<()> {
        let mut list = self.room_list.clone();
        let shown =
            |list: &Vec<(OwnedRoomId, RoomState)>| list.iter().find(|(id, _)| id == room_id).map(|(_, s)| *s) == state;
        tokio::time::timeout(WAIT, list.wait_for(shown))
            .await
            .with_context(|| {
                let now: Vec<_> = self.room_list.borrow().clone();
                format!("{what}: room list is {now:?}")
            })?
            .context("room list watcher ended")?;
        say(&format!("ok - {what}"));
        Ok(())
    }
}

/// Follows the room list as Element X's home screen does (the `all_rooms` list, filtered to
/// rooms not left) and publishes each room with its state after every update.
async fn watch_room_list(sync: &SyncService) -> Result<watch::Receiver<Vec<(OwnedRoomId, RoomState)>>> {
    let service = sync.room_list_service();
    let (publish, receiver) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let Ok(all_rooms) = service.all_rooms().await else {
            return;
        };
        let (updates, controller) = all_rooms.entries_with_dynamic_adapters(200);
        controller.set_filter(Box::new(new_filter_non_left()));
        let mut updates = std::pin::pin!(updates);
        let mut rooms: Vector<RoomListItem> = Vector::new();
        while let Some(diffs) = updates.next().await {
            for diff in diffs {
                VectorDiff::apply(diff, &mut rooms);
            }
            let snapshot = rooms
                .iter()
                .map(|room| (room.room_id().to_owned(), room.state()))
                .collect();
            if publish.send(snapshot).is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

/// Waits until `timeline` holds a message with `body` from someone else, and returns whether
/// it arrived encrypted (and was decrypted).
async fn receive_message(timeline: &Timeline, body: &str, who: &str) -> Result<bool> {
    let found = wait_for(&format!("{who} reads \"{body}\""), || async {
        Ok(timeline.items().await.iter().find_map(|item| {
            let event = item.as_event()?;
            let message = event.content().as_message()?;
            (message.body() == body && !event.is_own()).then(|| event.encryption_info().is_some())
        }))
    })
    .await;
    if found.is_err() {
        // What the timeline holds instead (undecryptable events show here).
        for item in timeline.items().await.iter() {
            if let Some(event) = item.as_event() {
                say(&format!("# {who}'s timeline: {} {:?}", event.sender(), event.content()));
            }
        }
    }
    found
}

async fn create_room(
    creator: &User,
    invite: Vec<OwnedUserId>,
    initial_state: Vec<Raw<AnyInitialStateEvent>>,
    is_direct: bool,
) -> Result<OwnedRoomId> {
    let mut request = create_room::Request::new();
    request.invite = invite;
    request.is_direct = is_direct;
    request.initial_state = initial_state;
    request.visibility = Visibility::Private;
    Ok(creator.client.create_room(request).await?.room_id().to_owned())
}

fn encrypted() -> Raw<AnyInitialStateEvent> {
    InitialStateEvent::new(EmptyStateKey, RoomEncryptionEventContent::with_recommended_defaults()).to_raw_any()
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_SDK_LOG").unwrap_or_else(|_| "error".into()))
        .init();
    let server = Server::start().await?;
    let base = server.base.clone();
    let alice = User::register(&base, "alice").await?;
    let bob = User::register(&base, "bob").await?;

    // Authenticated media is what the SDK picks once /versions lists v1.11.
    let versions = alice.client.supported_versions().await?;
    check(
        versions.versions.contains(&MatrixVersion::V1_11),
        "/versions lists v1.11, so the SDK uses authenticated media",
    )?;

    // 1. An invite to an encrypted DM shows in Alice's room list as an invite.
    let dm = create_room(&bob, vec![alice.user_id()], vec![encrypted()], true).await?;
    alice
        .in_room_list(&dm, Some(RoomState::Invited), "Alice's room list shows Bob's invite")
        .await?;
    let invited = alice.room(&dm).await?;
    // Element X's invite screen: who invited whom, from the invite's stripped state.
    let invite = wait_for("Alice's client reads the invite's details", || async {
        Ok(invited.invite_details().await.ok())
    })
    .await?;
    check(
        invite.inviter_id == bob.user_id(),
        "the invite names Bob as the inviter",
    )?;

    // 2. Alice accepts; the room becomes joined in her list.
    invited.join().await?;
    alice
        .in_room_list(&dm, Some(RoomState::Joined), "after accepting, the DM is a joined room")
        .await?;
    let alice_room = alice.room(&dm).await?;
    wait_for("Alice's client sees the DM as encrypted", || async {
        Ok(alice_room.latest_encryption_state().await?.is_encrypted().then_some(()))
    })
    .await?;

    // 3. Encrypted messages both ways, through the Timeline as Element X sends them.
    let alice_timeline = alice_room.timeline().await?;
    let bob_room = bob.room(&dm).await?;
    let bob_timeline = bob_room.timeline().await?;
    wait_for("Bob sees Alice joined", || async {
        Ok(bob_room
            .get_member_no_sync(&alice.user_id())
            .await?
            .filter(|m| *m.membership() == matrix_sdk::ruma::events::room::member::MembershipState::Join))
    })
    .await?;
    // Each client must know the other's device before it can share a room key with it. The
    // keys are uploaded by each client's first encryption sync; whoever looked too early
    // learns of them from `device_lists.changed`, which the server must send.
    for (who, other) in [(&alice, &bob), (&bob, &alice)] {
        let (user, device) = (
            other.user_id(),
            other.client.device_id().context("a device")?.to_owned(),
        );
        wait_for(&format!("{} has {user}'s device keys", who.user_id()), || async {
            Ok(who.client.encryption().get_device(&user, &device).await?.map(|_| ()))
        })
        .await?;
    }
    alice_timeline
        .send(RoomMessageEventContent::text_plain("Hi Bob, from Element X").into())
        .await?;
    check(
        receive_message(&bob_timeline, "Hi Bob, from Element X", "Bob").await?,
        "Alice's message reached Bob encrypted and was decrypted",
    )?;
    bob_timeline
        .send(RoomMessageEventContent::text_plain("Hi Alice").into())
        .await?;
    check(
        receive_message(&alice_timeline, "Hi Alice", "Alice").await?,
        "Bob's reply reached Alice encrypted and was decrypted",
    )?;

    // 4. An encrypted image: uploaded by Bob's send queue, fetched and decrypted by Alice's
    // client from the URL it builds (authenticated media).
    let image: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    bob_timeline
        .send_attachment(
            AttachmentSource::Data {
                bytes: image.clone(),
                filename: "photo.png".into(),
            },
            "image/png".parse()?,
            AttachmentConfig::default(),
        )
        .await?;
    let source = wait_for("Alice receives Bob's image", || async {
        Ok(alice_timeline.items().await.iter().find_map(|item| {
            let event = item.as_event()?;
            match event.content().as_message()?.msgtype() {
                MessageType::Image(content) => Some(content.source.clone()),
                _ => None,
            }
        }))
    })
    .await?;
    check(
        matches!(source, matrix_sdk::ruma::events::room::MediaSource::Encrypted(_)),
        "the image was sent as an encrypted attachment",
    )?;
    let request = MediaRequestParameters {
        source,
        format: MediaFormat::File,
    };
    let downloaded = alice.client.media().get_media_content(&request, false).await?;
    check(
        downloaded == image,
        "Alice downloads and decrypts the image byte for byte",
    )?;

    // 5. A rejected invite leaves the list, and the SDK knows the room as left.
    let rejected = create_room(&bob, vec![alice.user_id()], vec![], false).await?;
    alice
        .in_room_list(&rejected, Some(RoomState::Invited), "a second invite shows")
        .await?;
    alice.room(&rejected).await?.leave().await?;
    alice
        .in_room_list(&rejected, None, "the rejected invite leaves the room list")
        .await?;
    // Declined elsewhere (another of Alice's clients): this client learns it only from sync,
    // and must file the room as left, not as a joined room without state.
    let elsewhere = create_room(&bob, vec![alice.user_id()], vec![], false).await?;
    alice
        .in_room_list(&elsewhere, Some(RoomState::Invited), "a third invite shows")
        .await?;
    let token = alice.client.access_token().context("alice has a token")?;
    let leave = reqwest::Client::new()
        .post(format!("{base}/_matrix/client/v3/rooms/{elsewhere}/leave"))
        .bearer_auth(token)
        .body("{}")
        .send()
        .await?;
    ensure!(leave.status().is_success(), "declining elsewhere: {}", leave.status());
    wait_for("an invite declined elsewhere becomes a left room", || async {
        Ok(alice
            .client
            .get_room(&elsewhere)
            .filter(|room| room.state() == RoomState::Left)
            .map(|_| ()))
    })
    .await?;
    alice.in_room_list(&elsewhere, None, "and leaves the room list").await?;

    // 6. A knock shows as knocked.
    let knock_rule =
        InitialStateEvent::new(EmptyStateKey, RoomJoinRulesEventContent::new(JoinRule::Knock)).to_raw_any();
    let knockable = create_room(&bob, vec![], vec![knock_rule], false).await?;
    alice
        .client
        .knock(knockable.clone().into(), Some("let me in".into()), vec![])
        .await?;
    alice
        .in_room_list(
            &knockable,
            Some(RoomState::Knocked),
            "the knocked room shows as knocked",
        )
        .await?;

    // The SDK set both states itself when Alice acted; what the server sends next must agree
    // (a room without stripped state or own membership would be filed as joined).
    bob_timeline
        .send(RoomMessageEventContent::text_plain("still there?").into())
        .await?;
    receive_message(&alice_timeline, "still there?", "Alice").await?;
    let state_of = |room_id: &RoomId| alice.client.get_room(room_id).map(|room| room.state());
    let (rejected_state, knock_state) = (state_of(&rejected), state_of(&knockable));
    // Declining an invite also makes the SDK forget the room, so it may be gone altogether.
    check(
        matches!(rejected_state, None | Some(RoomState::Left)),
        &format!("after further syncs the rejected invite is still left or forgotten ({rejected_state:?})"),
    )?;
    check(
        knock_state == Some(RoomState::Knocked),
        &format!("and the knock still knocked ({knock_state:?})"),
    )?;
    alice
        .in_room_list(&rejected, None, "the rejected invite stays out of the room list")
        .await?;

    // 7. Leaving the DM removes it from the list, for good.
    alice_room.leave().await?;
    alice
        .in_room_list(&dm, None, "the DM leaves the room list once Alice leaves")
        .await?;
    let later = create_room(&bob, vec![alice.user_id()], vec![], false).await?;
    alice
        .in_room_list(
            &later,
            Some(RoomState::Invited),
            "a later invite shows (a sync after the leave)",
        )
        .await?;
    check(
        state_of(&dm) == Some(RoomState::Left),
        "the SDK still knows Alice left the DM",
    )?;
    alice
        .in_room_list(&dm, None, "and the DM stays out of the room list")
        .await?;

    alice.sync.stop().await;
    bob.sync.stop().await;
    server.stop()?;
    say("all rust-sdk checks passed");
    Ok(())
}
