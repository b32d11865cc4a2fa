//! Keys: what `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/device_signing/upload`
//! and `/keys/signatures/upload` check and do.
//!
//! Every key is stored as the client sent it, and every signature the server accepts is one
//! it verified against a key it holds: a client can trust what `/keys/query` returns only as
//! far as the signatures in it, but the server still refuses garbage.

use std::collections::{BTreeMap, HashSet};

use base64::{
    Engine,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use ruma::{
    SigningKeyAlgorithm, UserId,
    canonical_json::try_from_json_map,
    signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::{Map, Value, json};

use crate::{
    accounts::sessions::Sender,
    base::Base,
    error::{ApiError, ApiResult},
    storage::{CrossSigningKeyRow, KeyUpload, NewSignature, SignatureRow, UploadedKey},
};

/// Unpadded base64 as Matrix writes it; padded input is accepted too.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The three cross-signing key types, as named in `usage` and in the upload body.
pub const CROSS_SIGNING_TYPES: [&str; 3] = ["master", "self_signing", "user_signing"];

/// True when `object` carries a valid ed25519 signature by `signer`'s key `key_id` (such as
/// `ed25519:DEVICEID`) whose public half is `public_key` (unpadded base64).
pub fn verify_signature(object: &Map<String, Value>, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
    else {
        return false;
    };
    signature_matches(object, signature, public_key)
}

/// True when `signature` (base64) signs `object`'s canonical form with `public_key`.
fn signature_matches(object: &Map<String, Value>, signature: &str, public_key: &str) -> bool {
    let (Ok(signature), Ok(public_key)) = (BASE64.decode(signature), BASE64.decode(public_key)) else {
        return false;
    };
    let Ok(canonical) = try_from_json_map(object.clone()) else {
        return false;
    };
    let Ok(text) = to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &public_key, &signature, text.as_bytes()).is_ok()
}

fn as_object(value: &Value, what: &str) -> ApiResult<Map<String, Value>> {
    value
        .as_object()
        .cloned()
        .ok_or_else(|| ApiError::bad_json(format!("{what} must be a JSON object")))
}

/// The device's ed25519 key from its device keys JSON.
fn device_ed25519(keys: &Map<String, Value>, device_id: &str) -> Option<String> {
    keys.get("keys")?
        .get(format!("ed25519:{device_id}"))?
        .as_str()
        .map(str::to_owned)
}

/// Checks uploaded device keys: well-formed, for the uploading user and device, and signed by
/// the device's own ed25519 key.
fn check_device_keys(raw: &str, sender: &Sender) -> ApiResult<Map<String, Value>> {
    let value: Value = serde_json::from_str(raw).map_err(|_| ApiError::bad_json("device_keys is not JSON"))?;
    serde_json::from_value::<ruma::encryption::DeviceKeys>(value.clone())
        .map_err(|e| ApiError::bad_json(format!("Invalid device_keys: {e}")))?;
    let keys = as_object(&value, "device_keys")?;
    if keys.get("user_id").and_then(Value::as_str) != Some(sender.user_id.as_str())
        || keys.get("device_id").and_then(Value::as_str) != Some(sender.device_id.as_str())
    {
        return Err(ApiError::invalid_param(
            "device_keys must name the user and device of the access token",
        ));
    }
    let ed25519 = device_ed25519(&keys, sender.device_id.as_str())
        .ok_or_else(|| ApiError::invalid_param("device_keys must hold the device's ed25519 key"))?;
    let key_id = format!("ed25519:{}", sender.device_id);
    if !verify_signature(&keys, sender.user_id.as_str(), &key_id, &ed25519) {
        return Err(ApiError::invalid_param(
            "device_keys must be signed by the device's ed25519 key",
        ));
    }
    Ok(keys)
}

/// Checks one-time or fallback keys and turns them into rows. Signed keys must carry a valid
/// signature by the device's ed25519 key, when that key is known.
fn check_one_time_keys<'a>(
    keys: impl Iterator<
        Item = (
            &'a ruma::OwnedOneTimeKeyId,
            &'a ruma::serde::Raw<ruma::encryption::OneTimeKey>,
        ),
    >,
    sender: &Sender,
    device_key: Option<&str>,
    what: &str,
) -> ApiResult<Vec<UploadedKey>> {
    let mut out = Vec::new();
    for (id, raw) in keys {
        raw.deserialize()
            .map_err(|e| ApiError::bad_json(format!("Invalid {what} {id}: {e}")))?;
        let value: Value = serde_json::from_str(raw.json().get()).map_err(|_| ApiError::bad_json("Invalid key"))?;
        if let (Value::Object(object), Some(device_key)) = (&value, device_key) {
            let key_id = format!("ed25519:{}", sender.device_id);
            if !verify_signature(object, sender.user_id.as_str(), &key_id, device_key) {
                return Err(ApiError::invalid_param(format!(
                    "{what} {id} is not signed by the device's ed25519 key"
                )));
            }
        }
        out.push(UploadedKey {
            algorithm: id.algorithm().to_string(),
            key_id: id.key_name().to_string(),
            json: value.to_string(),
        });
    }
    Ok(out)
}

/// An upload of keys, checked and ready to store.
pub struct CheckedUpload {
    device_keys: Option<String>,
    one_time: Vec<UploadedKey>,
    fallback: Vec<UploadedKey>,
}

/// Checks a `/keys/upload` body for `sender`'s device (nothing is stored).
pub async fn check_upload(
    state: &Base,
    sender: &Sender,
    device_keys: Option<&ruma::serde::Raw<ruma::encryption::DeviceKeys>>,
    one_time_keys: &BTreeMap<ruma::OwnedOneTimeKeyId, ruma::serde::Raw<ruma::encryption::OneTimeKey>>,
    fallback_keys: &BTreeMap<ruma::OwnedOneTimeKeyId, ruma::serde::Raw<ruma::encryption::OneTimeKey>>,
) -> ApiResult<CheckedUpload> {
    let (user_id, device_id) = (sender.user_id.as_str(), sender.device_id.as_str());
    let device_keys = device_keys
        .map(|raw| check_device_keys(raw.json().get(), sender))
        .transpose()?;
    let device_key = match &device_keys {
        Some(keys) => device_ed25519(keys, device_id),
        None => state
            .storage
            .device_keys(user_id)
            .await?
            .into_iter()
            .find(|row| row.device_id == device_id)
            .and_then(|row| serde_json::from_str::<Map<String, Value>>(&row.key_json).ok())
            .and_then(|keys| device_ed25519(&keys, device_id)),
    };
    let one_time = check_one_time_keys(one_time_keys.iter(), sender, device_key.as_deref(), "one-time key")?;
    let fallback = check_one_time_keys(fallback_keys.iter(), sender, device_key.as_deref(), "fallback key")?;
    let mut seen = HashSet::new();
    if fallback.iter().any(|key| !seen.insert(key.algorithm.as_str())) {
        return Err(ApiError::invalid_param("At most one fallback key per algorithm"));
    }
    Ok(CheckedUpload {
        device_keys: device_keys.map(|keys| Value::Object(keys).to_string()),
        one_time,
        fallback,
    })
}

/// Stores a checked upload in one transaction and announces changed device keys. Returns the
/// device's one-time key counts.
pub async fn store_upload(state: &Base, sender: &Sender, upload: &CheckedUpload) -> ApiResult<BTreeMap<String, i64>> {
    let storage = &state.storage;
    let (user_id, device_id) = (sender.user_id.as_str(), sender.device_id.as_str());
    match storage
        .upload_keys(
            user_id,
            device_id,
            upload.device_keys.as_deref(),
            &upload.one_time,
            &upload.fallback,
        )
        .await?
    {
        KeyUpload::Conflict(key) => {
            return Err(ApiError::invalid_param(format!(
                "One-time key {key} already exists with different content"
            )));
        }
        KeyUpload::Stored { device_list_change } => {
            if let Some(position) = device_list_change {
                super::device_lists_changed(state, &sender.user_id, position).await?;
            }
        }
    }
    let mut counts: BTreeMap<String, i64> = storage
        .one_time_key_counts(user_id, device_id)
        .await?
        .into_iter()
        .collect();
    counts.entry("signed_curve25519".to_owned()).or_insert(0);
    Ok(counts)
}

/// Adds the stored signatures a viewer may see to a key's JSON: those by the key's owner and
/// those by the viewer (a user-signing signature is private to its signer).
pub(crate) fn merge_signatures(
    key: &mut Value,
    target_key_id: &str,
    signatures: &[SignatureRow],
    owner: &str,
    viewer: &str,
) {
    let Some(object) = key.as_object_mut() else {
        return;
    };
    let all = object.entry("signatures").or_insert_with(|| json!({}));
    let Some(all) = all.as_object_mut() else {
        return;
    };
    for row in signatures.iter().filter(|row| row.target_key_id == target_key_id) {
        if row.signer_user_id != owner && row.signer_user_id != viewer {
            continue;
        }
        if let Some(by_signer) = all
            .entry(row.signer_user_id.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            by_signer.insert(row.signer_key_id.clone(), Value::String(row.signature.clone()));
        }
    }
}

/// `/keys/query` for local users (other servers' users are skipped: federation answers for
/// them). `viewer`: the local user asking (who also sees their own user-signing key and
/// their signatures on others' keys); `None` for another server asking.
pub async fn query(
    state: &Base,
    viewer: Option<&UserId>,
    requested: &BTreeMap<ruma::OwnedUserId, Vec<ruma::OwnedDeviceId>>,
) -> ApiResult<Value> {
    let viewer = viewer.map_or("", |viewer| viewer.as_str());
    let storage = &state.storage;
    let mut device_keys = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    for (user_id, wanted) in requested {
        if user_id.server_name() != state.config.server_name {
            continue;
        }
        let owner = user_id.as_str();
        let signatures = storage.signatures_on(owner).await?;
        let mut devices = Map::new();
        for row in storage.device_keys(owner).await? {
            if !wanted.is_empty() && !wanted.iter().any(|d| d.as_str() == row.device_id) {
                continue;
            }
            let Ok(mut key) = serde_json::from_str::<Value>(&row.key_json) else {
                continue;
            };
            merge_signatures(&mut key, &row.device_id, &signatures, owner, viewer);
            // The spec's `device_display_name` is a string: omitted, never null, when unnamed.
            if let (Some(object), Some(name)) = (key.as_object_mut(), row.display_name) {
                object.insert("unsigned".into(), json!({ "device_display_name": name }));
            }
            devices.insert(row.device_id, key);
        }
        device_keys.insert(owner.to_owned(), Value::Object(devices));
        for row in storage.cross_signing_keys(owner).await? {
            let Ok(mut key) = serde_json::from_str::<Value>(&row.key_json) else {
                continue;
            };
            merge_signatures(&mut key, &row.public_key, &signatures, owner, viewer);
            let target = match row.key_type.as_str() {
                "master" => &mut master_keys,
                "self_signing" => &mut self_signing_keys,
                "user_signing" if owner == viewer => &mut user_signing_keys,
                _ => continue,
            };
            target.insert(owner.to_owned(), key);
        }
    }
    Ok(json!({
        "device_keys": device_keys,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
        "failures": {},
    }))
}

/// `/keys/claim` for local users: one key per device asked for, each one-time key to one
/// claimer only (other servers' users are skipped: federation claims theirs).
pub async fn claim(
    state: &Base,
    requested: &BTreeMap<ruma::OwnedUserId, BTreeMap<ruma::OwnedDeviceId, ruma::OneTimeKeyAlgorithm>>,
) -> ApiResult<Value> {
    let mut claimed = Map::new();
    for (user_id, devices) in requested {
        if user_id.server_name() != state.config.server_name {
            continue;
        }
        let mut by_device = Map::new();
        for (device_id, algorithm) in devices {
            let algorithm = algorithm.to_string();
            if let Some((key_id, json)) = state
                .storage
                .claim_key(user_id.as_str(), device_id.as_str(), &algorithm)
                .await?
            {
                let key: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
                by_device.insert(device_id.to_string(), json!({ format!("{algorithm}:{key_id}"): key }));
            }
        }
        if !by_device.is_empty() {
            claimed.insert(user_id.to_string(), Value::Object(by_device));
        }
    }
    Ok(json!({ "one_time_keys": claimed, "failures": {} }))
}

/// A cross-signing key checked for upload: its type, public key and JSON.
pub struct CheckedCrossSigningKey {
    pub key_type: &'static str,
    pub public_key: String,
    pub json: String,
}

/// The single ed25519 public key a cross-signing key holds.
pub(crate) fn cross_signing_public_key(key: &Map<String, Value>) -> Option<String> {
    let keys = key.get("keys")?.as_object()?;
    let mut ed25519 = keys.iter().filter(|(id, _)| id.starts_with("ed25519:"));
    let (id, value) = ed25519.next()?;
    let public = value.as_str()?;
    (ed25519.next().is_none() && keys.len() == 1 && id == &format!("ed25519:{public}")).then(|| public.to_owned())
}

/// Checks uploaded cross-signing keys: well-formed, the user's own, of the usage they are
/// uploaded as, and (self- and user-signing keys) signed by the master key, new or stored.
pub fn check_cross_signing_keys(
    sender: &Sender,
    uploaded: [(&'static str, Option<&str>); 3],
    stored: &[CrossSigningKeyRow],
) -> ApiResult<Vec<CheckedCrossSigningKey>> {
    let user_id = sender.user_id.as_str();
    let mut checked = Vec::new();
    let mut master: Option<String> = stored
        .iter()
        .find(|row| row.key_type == "master")
        .map(|row| row.public_key.clone());
    for (key_type, raw) in uploaded {
        let Some(raw) = raw else { continue };
        let value: Value = serde_json::from_str(raw).map_err(|_| ApiError::bad_json("Invalid key JSON"))?;
        serde_json::from_value::<ruma::encryption::CrossSigningKey>(value.clone())
            .map_err(|e| ApiError::bad_json(format!("Invalid {key_type} key: {e}")))?;
        let key = as_object(&value, key_type)?;
        if key.get("user_id").and_then(Value::as_str) != Some(user_id) {
            return Err(ApiError::invalid_param(format!(
                "The {key_type} key must be for {user_id}"
            )));
        }
        let usage_ok = key
            .get("usage")
            .and_then(Value::as_array)
            .is_some_and(|usage| usage.iter().any(|u| u.as_str() == Some(key_type)));
        if !usage_ok {
            return Err(ApiError::invalid_param(format!(
                "The {key_type} key must have usage {key_type}"
            )));
        }
        let public_key = cross_signing_public_key(&key)
            .ok_or_else(|| ApiError::invalid_param(format!("The {key_type} key must hold exactly one ed25519 key")))?;
        if key_type == "master" {
            master = Some(public_key.clone());
        } else {
            let Some(master) = &master else {
                return Err(ApiError::missing_param(
                    "Upload a master key before (or with) the self-signing and user-signing keys",
                ));
            };
            if !verify_signature(&key, user_id, &format!("ed25519:{master}"), master) {
                return Err(ApiError::invalid_param(format!(
                    "The {key_type} key must be signed by the master key"
                )));
            }
        }
        checked.push(CheckedCrossSigningKey {
            key_type,
            public_key,
            json: Value::Object(key).to_string(),
        });
    }
    Ok(checked)
}

/// `/keys/signatures/upload`: verifies each signature against the key it claims to be made
/// with and stores the good ones. Returns the failures map.
pub async fn upload_signatures(state: &Base, sender: &Sender, body: &Value) -> ApiResult<Value> {
    let storage = &state.storage;
    let signer = sender.user_id.as_str();
    let body = body
        .as_object()
        .ok_or_else(|| ApiError::bad_json("The body must be a JSON object"))?;
    let own_cross_signing = storage.cross_signing_keys(signer).await?;
    let own_key = |key_type: &str| {
        own_cross_signing
            .iter()
            .find(|row| row.key_type == key_type)
            .map(|row| row.public_key.clone())
    };
    let mut failures = Map::new();
    let mut accepted: Vec<NewSignature> = Vec::new();
    for (target_user, keys) in body {
        let Some(keys) = keys.as_object() else {
            return Err(ApiError::bad_json("Each user's entry must be a JSON object"));
        };
        if UserId::parse(target_user.as_str()).is_err() {
            return Err(ApiError::invalid_param(format!("Invalid user ID {target_user}")));
        }
        let target_devices = storage.device_keys(target_user).await?;
        let target_cross_signing = storage.cross_signing_keys(target_user).await?;
        let mut user_failures = Map::new();
        for (key_id, signed) in keys {
            let Some(signed) = signed.as_object() else {
                return Err(ApiError::bad_json("Each signed key must be a JSON object"));
            };
            // What is signed (as stored), and which of the signer's keys must have signed it.
            let target: Option<(String, Option<(String, String)>)> = if target_user == signer {
                if let Some(device) = target_devices.iter().find(|d| &d.device_id == key_id) {
                    // One of the user's devices, signed with their self-signing key.
                    Some((
                        device.key_json.clone(),
                        own_key("self_signing").map(|k| (format!("ed25519:{k}"), k)),
                    ))
                } else if let Some(master) = target_cross_signing
                    .iter()
                    .find(|k| &k.public_key == key_id && k.key_type == "master")
                {
                    // The master key, signed by one of the user's devices.
                    let device_key = signed
                        .get("signatures")
                        .and_then(|s| s.get(signer))
                        .and_then(Value::as_object)
                        .and_then(|by_key| {
                            by_key.keys().find_map(|id| {
                                let device_id = id.strip_prefix("ed25519:")?;
                                let device = target_devices.iter().find(|d| d.device_id == device_id)?;
                                let keys: Map<String, Value> = serde_json::from_str(&device.key_json).ok()?;
                                Some((id.clone(), device_ed25519(&keys, device_id)?))
                            })
                        });
                    Some((master.key_json.clone(), device_key))
                } else {
                    None
                }
            } else {
                // Another user's master key, signed with the signer's user-signing key.
                target_cross_signing
                    .iter()
                    .find(|k| &k.public_key == key_id && k.key_type == "master")
                    .map(|master| {
                        (
                            master.key_json.clone(),
                            own_key("user_signing").map(|k| (format!("ed25519:{k}"), k)),
                        )
                    })
            };
            let failure = |errcode: &str, error: &str| json!({ "errcode": errcode, "error": error });
            let Some((stored_json, signing_key)) = target else {
                user_failures.insert(key_id.clone(), failure("M_NOT_FOUND", "No such key"));
                continue;
            };
            let Some((signing_key_id, signing_public)) = signing_key else {
                user_failures.insert(
                    key_id.clone(),
                    failure("M_INVALID_SIGNATURE", "No key to verify the signature with"),
                );
                continue;
            };
            let signature = signed
                .get("signatures")
                .and_then(|s| s.get(signer))
                .and_then(|s| s.get(&signing_key_id))
                .and_then(Value::as_str);
            let stored: Map<String, Value> = serde_json::from_str(&stored_json).unwrap_or_default();
            match signature {
                Some(signature) if signature_matches(&stored, signature, &signing_public) => {
                    accepted.push(NewSignature {
                        target_user_id: target_user.clone(),
                        target_key_id: key_id.clone(),
                        signer_user_id: signer.to_owned(),
                        signer_key_id: signing_key_id,
                        signature: signature.to_owned(),
                    });
                }
                _ => {
                    user_failures.insert(key_id.clone(), failure("M_INVALID_SIGNATURE", "Invalid signature"));
                }
            }
        }
        if !user_failures.is_empty() {
            failures.insert(target_user.clone(), Value::Object(user_failures));
        }
    }
    let targets: Vec<String> = accepted.iter().map(|s| s.target_user_id.clone()).collect();
    if let Some(position) = storage.add_signatures(&accepted).await? {
        for target in targets.iter().collect::<HashSet<_>>() {
            if let Ok(target) = UserId::parse(target.as_str()) {
                super::device_lists_changed(state, &target, position).await?;
            }
        }
    }
    Ok(json!({ "failures": failures }))
}

/// Stores checked cross-signing keys (consuming the UIA session that allowed it, if any) and
/// announces the change.
pub async fn store_cross_signing_keys(
    state: &Base,
    user_id: &UserId,
    keys: &[CheckedCrossSigningKey],
    uia_session: Option<&str>,
) -> ApiResult<()> {
    let mut tx = state.storage.begin_write().await?;
    match uia_session {
        Some(session) => {
            crate::accounts::uia::consume_uia(&mut tx, session).await?;
        }
        None => {
            // Allowed without auth because the user had no master key: make sure that still
            // holds now that the write lock is ours.
            let stored = crate::storage::Storage::has_master_key(&mut tx, user_id.as_str()).await?;
            if stored {
                return Err(ApiError::forbidden(
                    "Cross-signing keys were uploaded meanwhile; retry to authenticate",
                ));
            }
        }
    }
    for key in keys {
        crate::storage::Storage::put_cross_signing_key(
            &mut tx,
            user_id.as_str(),
            key.key_type,
            &key.public_key,
            &key.json,
        )
        .await?;
    }
    let position = crate::storage::Storage::record_device_list_change(&mut tx, user_id.as_str()).await?;
    tx.commit().await?;
    super::device_lists_changed(state, user_id, position).await
}
