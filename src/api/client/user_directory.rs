//! `POST /_matrix/client/v3/user_directory/search`: users who share a room with the searcher,
//! and users in public (publicly joinable or world-readable) rooms, matched on user ID or
//! display name, as Synapse's directory with `search_all_users: false`.

use ruma::{
    OwnedUserId,
    api::client::user_directory::search_users::{self, v3::User},
};
use serde_json::Value;

use crate::api::ruma::Ruma;
use crate::{api::state::AppState, error::ApiResult, rooms::access::content_field};

const MAX_RESULTS: u64 = 100;

pub async fn search(
    state: AppState,
    request: Ruma<search_users::v3::Request>,
) -> ApiResult<search_users::v3::Response> {
    let sender = request.sender()?;
    let term = request.body.search_term.to_lowercase();
    let limit = u64::from(request.body.limit).clamp(1, MAX_RESULTS) as usize;
    // Public as Synapse's directory counts it: anyone may join, or anyone may read.
    let mut public_rooms: std::collections::BTreeSet<String> = state
        .storage
        .state_of_all_rooms("m.room.join_rules")
        .await?
        .into_iter()
        .filter(|(_, json)| content_field(json, "join_rule").as_deref() == Some("public"))
        .map(|(room, _)| room)
        .collect();
    for (room, json) in state.storage.state_of_all_rooms("m.room.history_visibility").await? {
        if content_field(&json, "history_visibility").as_deref() == Some("world_readable") {
            public_rooms.insert(room);
        }
    }
    let public_rooms: Vec<String> = public_rooms.into_iter().collect();
    let mut results = Vec::new();
    let mut limited = false;
    for user in state
        .storage
        .visible_users(sender.user_id.as_str(), &public_rooms)
        .await?
    {
        let Ok(user_id) = OwnedUserId::try_from(user) else {
            continue;
        };
        let profile = state.storage.profile(user_id.as_str()).await?;
        let display_name = profile.get("displayname").and_then(Value::as_str).map(str::to_owned);
        let matches = user_id.as_str().to_lowercase().contains(&term)
            || display_name
                .as_ref()
                .is_some_and(|name| name.to_lowercase().contains(&term));
        if !matches {
            continue;
        }
        if results.len() == limit {
            limited = true;
            break;
        }
        let mut entry = User::new(user_id);
        entry.display_name = display_name;
        entry.avatar_url = profile.get("avatar_url").and_then(Value::as_str).map(Into::into);
        results.push(entry);
    }
    Ok(search_users::v3::Response::new(results, limited))
}
