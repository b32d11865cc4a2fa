//! Other servers' users' devices and keys: the device lists this server keeps for users who
//! share a room with one of ours (kept current by `m.device_list_update`, fetched whole
//! through `/user/devices` when a gap is seen), and `/keys/query` and `/keys/claim` for
//! remote users, batched per server.

use std::{collections::BTreeMap, time::Duration};

use futures_util::future::join_all;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId,
    api::federation::{
        device::get_devices,
        keys::{claim_keys, get_keys},
    },
};
use serde_json::{Map, Value, json};

use super::Federation;
use crate::{
    e2ee::keys::cross_signing_public_key,
    error::ApiResult,
    storage::{RemoteCrossSigningKey, RemoteDevice, StorageError},
};

/// The answer for remote users, merged into `/keys/query`'s.
#[derive(Default)]
pub struct RemoteKeys {
    pub device_keys: Map<String, Value>,
    pub master_keys: Map<String, Value>,
    pub self_signing_keys: Map<String, Value>,
    pub failures: Map<String, Value>,
}

/// A device's keys as another server sent them, if they are for that user and device.
fn checked_device_keys(user_id: &UserId, device_id: &str, keys: &str) -> Option<Value> {
    let value: Value = serde_json::from_str(keys).ok()?;
    let object = value.as_object()?;
    (object.get("user_id")?.as_str()? == user_id.as_str() && object.get("device_id")?.as_str()? == device_id)
        .then_some(value)
}

/// A cross-signing key another server sent, if it is the user's and of that usage.
pub(crate) fn checked_cross_signing_key(
    user_id: &UserId,
    usage: &'static str,
    key: &str,
) -> Option<RemoteCrossSigningKey> {
    let value: Value = serde_json::from_str(key).ok()?;
    let object = value.as_object()?;
    if object.get("user_id")?.as_str()? != user_id.as_str()
        || !object
            .get("usage")?
            .as_array()?
            .iter()
            .any(|u| u.as_str() == Some(usage))
    {
        return None;
    }
    Some(RemoteCrossSigningKey {
        key_type: usage,
        public_key: cross_signing_public_key(object)?,
        key_json: key.to_owned(),
    })
}

impl Federation {
    /// Whether a user of another server shares a joined room with one of ours (then their
    /// server sends us their device list changes, and the list is worth keeping).
    pub async fn shares_room_with_us(&self, user_id: &UserId) -> Result<bool, StorageError> {
        let ours = self.server_name().as_str();
        for room_id in self
            .base
            .storage
            .rooms_with_membership(user_id.as_str(), "join")
            .await?
        {
            if self
                .base
                .storage
                .servers_in_room(&room_id)
                .await?
                .iter()
                .any(|s| s == ours)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Fetches a remote user's whole device list (`/user/devices`) and keeps it; local
    /// clients sharing a room with them are told it changed.
    pub async fn resync_device_list(&self, user_id: &UserId) -> anyhow::Result<()> {
        let request = get_devices::v1::Request::new(user_id.to_owned());
        let response = self.client.send(user_id.server_name(), request).await?;
        anyhow::ensure!(response.user_id == user_id, "the server answered for another user");
        let devices: Vec<RemoteDevice> = response
            .devices
            .iter()
            .filter_map(|device| {
                let key_json = checked_device_keys(user_id, device.device_id.as_str(), device.keys.json().get())?;
                Some(RemoteDevice {
                    device_id: device.device_id.to_string(),
                    display_name: device.device_display_name.clone(),
                    key_json: key_json.to_string(),
                })
            })
            .collect();
        let cross_signing: Vec<RemoteCrossSigningKey> = [
            ("master", &response.master_key),
            ("self_signing", &response.self_signing_key),
        ]
        .into_iter()
        .filter_map(|(usage, key)| checked_cross_signing_key(user_id, usage, key.as_ref()?.json().get()))
        .collect();
        let stream_id = i64::try_from(u64::from(response.stream_id)).unwrap_or(i64::MAX);
        let position = self
            .base
            .storage
            .replace_remote_device_list(user_id.as_str(), stream_id, &devices, &cross_signing)
            .await?;
        crate::e2ee::device_lists_changed(&self.base, user_id, position)
            .await
            .map_err(|error| anyhow::anyhow!("{error:?}"))
    }

    /// `/keys/query` for users of other servers: from the lists kept when fresh, else from
    /// their servers (one request per server, all at once, each bounded by `timeout`); a
    /// server that does not answer is listed in `failures`.
    pub async fn query_remote_keys(
        &self,
        viewer: &UserId,
        requested: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
        timeout: Duration,
    ) -> ApiResult<RemoteKeys> {
        let mut answer = RemoteKeys::default();
        let mut by_server: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> = BTreeMap::new();
        let mut kept: Vec<(&OwnedUserId, &Vec<OwnedDeviceId>)> = Vec::new();
        for (user_id, devices) in requested {
            if self.is_blocked(user_id.server_name()) {
                continue;
            }
            let fresh = matches!(
                self.base.storage.remote_device_list(user_id.as_str()).await?,
                Some((_, false))
            );
            if fresh && self.shares_room_with_us(user_id).await? {
                kept.push((user_id, devices));
            } else {
                by_server
                    .entry(user_id.server_name().to_owned())
                    .or_default()
                    .insert(user_id.clone(), devices.clone());
            }
        }
        let queries = by_server.into_iter().map(|(server, users)| async move {
            let result = tokio::time::timeout(timeout, self.query_server_keys(&server, &users)).await;
            (server, users, result)
        });
        for (server, users, result) in join_all(queries).await {
            match result {
                Ok(Ok(())) => kept.extend(requested.iter().filter(|(user, _)| users.contains_key(*user))),
                Ok(Err(error)) => {
                    tracing::info!(%server, %error, "could not query another server's keys");
                    answer.failures.insert(
                        server.to_string(),
                        json!({ "status": 503, "message": "The server could not be reached" }),
                    );
                }
                Err(_) => {
                    answer
                        .failures
                        .insert(server.to_string(), json!({ "status": 504, "message": "Timed out" }));
                }
            }
        }
        for (user_id, wanted) in kept {
            self.kept_keys(viewer, user_id, wanted, &mut answer).await?;
        }
        Ok(answer)
    }

    /// Asks one server for its users' keys and keeps the answer: a user who shares a room
    /// with us has their whole list fetched (and followed from then on); the others'
    /// keys are asked for with `/user/keys/query` and kept only for this answer.
    async fn query_server_keys(
        &self,
        server: &OwnedServerName,
        users: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> anyhow::Result<()> {
        let mut others = BTreeMap::new();
        for (user_id, devices) in users {
            if self.shares_room_with_us(user_id).await? {
                self.resync_device_list(user_id).await?;
            } else {
                others.insert(user_id.clone(), devices.clone());
            }
        }
        if others.is_empty() {
            return Ok(());
        }
        let response = self
            .client
            .send(server, get_keys::v1::Request::new(others.clone()))
            .await?;
        for user_id in others.keys() {
            let devices: Vec<RemoteDevice> = response
                .device_keys
                .get(user_id)
                .into_iter()
                .flatten()
                .filter_map(|(device_id, keys)| {
                    let key_json = checked_device_keys(user_id, device_id.as_str(), keys.json().get())?;
                    let display_name = key_json
                        .pointer("/unsigned/device_display_name")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    Some(RemoteDevice {
                        device_id: device_id.to_string(),
                        display_name,
                        key_json: key_json.to_string(),
                    })
                })
                .collect();
            let cross_signing: Vec<RemoteCrossSigningKey> = [
                ("master", response.master_keys.get(user_id)),
                ("self_signing", response.self_signing_keys.get(user_id)),
            ]
            .into_iter()
            .filter_map(|(usage, key)| checked_cross_signing_key(user_id, usage, key?.json().get()))
            .collect();
            // Kept as a stale list: served for this answer, asked for again next time.
            self.base
                .storage
                .replace_remote_device_list(user_id.as_str(), 0, &devices, &cross_signing)
                .await?;
            self.base
                .storage
                .mark_remote_device_list_stale(user_id.as_str())
                .await?;
        }
        Ok(())
    }

    /// Adds what is kept of a remote user's keys to the answer, with the viewer's own
    /// signatures on them (a verification they made).
    async fn kept_keys(
        &self,
        viewer: &UserId,
        user_id: &UserId,
        wanted: &[OwnedDeviceId],
        answer: &mut RemoteKeys,
    ) -> ApiResult<()> {
        let storage = &self.base.storage;
        let owner = user_id.as_str();
        let signatures = storage.signatures_on(owner).await?;
        let merge = |key: &mut Value, target: &str| {
            crate::e2ee::keys::merge_signatures(key, target, &signatures, owner, viewer.as_str());
        };
        let mut devices = Map::new();
        for row in storage.remote_device_keys(user_id.as_str()).await? {
            if !wanted.is_empty() && !wanted.iter().any(|d| d.as_str() == row.device_id) {
                continue;
            }
            let Ok(mut key) = serde_json::from_str::<Value>(&row.key_json) else {
                continue;
            };
            merge(&mut key, &row.device_id);
            if let (Some(object), Some(name)) = (key.as_object_mut(), row.display_name) {
                object.insert("unsigned".into(), json!({ "device_display_name": name }));
            }
            devices.insert(row.device_id, key);
        }
        answer.device_keys.insert(user_id.to_string(), Value::Object(devices));
        for row in storage.cross_signing_keys(user_id.as_str()).await? {
            let Ok(mut key) = serde_json::from_str::<Value>(&row.key_json) else {
                continue;
            };
            merge(&mut key, &row.public_key);
            match row.key_type.as_str() {
                "master" => answer.master_keys.insert(user_id.to_string(), key),
                "self_signing" => answer.self_signing_keys.insert(user_id.to_string(), key),
                _ => continue,
            };
        }
        Ok(())
    }

    /// `/keys/claim` for devices of other servers' users: one request per server, all at
    /// once, each bounded by `timeout`.
    pub async fn claim_remote_keys(
        &self,
        requested: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
        timeout: Duration,
    ) -> (Map<String, Value>, Map<String, Value>) {
        let mut by_server: BTreeMap<OwnedServerName, claim_keys::v1::OneTimeKeyClaims> = BTreeMap::new();
        for (user_id, devices) in requested {
            if !self.is_blocked(user_id.server_name()) {
                by_server
                    .entry(user_id.server_name().to_owned())
                    .or_default()
                    .insert(user_id.clone(), devices.clone());
            }
        }
        let claims = by_server.into_iter().map(|(server, claims)| async move {
            let request = claim_keys::v1::Request::new(claims.clone());
            let result = tokio::time::timeout(timeout, self.client.send(&server, request)).await;
            (server, claims, result)
        });
        let (mut claimed, mut failures) = (Map::new(), Map::new());
        for (server, claims, result) in join_all(claims).await {
            match result {
                Ok(Ok(response)) => {
                    for (user_id, devices) in response.one_time_keys {
                        let Some(asked) = claims.get(&user_id) else {
                            continue;
                        };
                        let mut by_device = Map::new();
                        for (device_id, keys) in devices {
                            if !asked.contains_key(&device_id) {
                                continue;
                            }
                            let keys: Map<String, Value> = keys
                                .into_iter()
                                .filter_map(|(id, key)| Some((id.to_string(), serde_json::to_value(key).ok()?)))
                                .collect();
                            by_device.insert(device_id.to_string(), Value::Object(keys));
                        }
                        claimed.insert(user_id.to_string(), Value::Object(by_device));
                    }
                }
                Ok(Err(error)) => {
                    tracing::info!(%server, %error, "could not claim another server's keys");
                    failures.insert(
                        server.to_string(),
                        json!({ "status": 503, "message": "The server could not be reached" }),
                    );
                }
                Err(_) => {
                    failures.insert(server.to_string(), json!({ "status": 504, "message": "Timed out" }));
                }
            }
        }
        (claimed, failures)
    }
}
