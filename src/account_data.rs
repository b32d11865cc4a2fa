//! Account data: per-user (and per-user-per-room) JSON documents clients keep on the server,
//! numbered on the account data stream. Push rules and the ignore list live here too, so a
//! write also refreshes the caches that read them.

use ruma::UserId;

use crate::{
    base::{Base, Change},
    storage::StorageError,
    streams::Stream,
};

/// Stores account data (`room_id` `""` for global) and wakes the user's clients.
pub async fn set_account_data(
    state: &Base,
    user_id: &UserId,
    room_id: &str,
    data_type: &str,
    content: &str,
) -> Result<(), StorageError> {
    // Its own task: a client hanging up mid-write must not leave the data written but the
    // caches (the ignore list) stale and the user's other clients not woken.
    let (state, user_id) = (state.clone(), user_id.to_owned());
    let (room_id, data_type, content) = (room_id.to_owned(), data_type.to_owned(), content.to_owned());
    tokio::spawn(async move {
        let position = state
            .storage
            .set_account_data(user_id.as_str(), &room_id, &data_type, &content)
            .await?;
        state
            .caches
            .account_data_changed(user_id.as_str(), &room_id, &data_type);
        state.publish(Change::AccountData {
            user_id: user_id.as_str(),
            room_id: &room_id,
            data_type: &data_type,
        });
        state
            .notifier
            .advance(Stream::AccountData, position, [user_id.as_str()]);
        Ok(())
    })
    .await
    .map_err(|_| StorageError::Invariant("the account data writer failed"))?
}
