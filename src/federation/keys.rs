//! Other servers' signing keys: read from storage, fetched from the server itself
//! (`/_matrix/key/v2/server`) or, failing that, from the configured notaries
//! (`/_matrix/key/v2/query`), checked, and stored. Old keys stay: they verify old events.
//! Also this server's answer as a notary.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use hearth_federation::server_keys::{
    KeyDocumentError, RemoteKey, VerifiedKeys, key_set, verify_key_document, verify_notarised_document,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId,
    ServerName, UInt,
    api::federation::discovery::{get_remote_server_keys_batch, get_server_keys},
    serde::Base64,
    signatures::PublicKeySet,
};

use super::Federation;
use crate::storage::{StorageError, StoredServerKey, now_ms};

/// Servers whose keys (or failures) are remembered in memory at most.
const MAX_REMEMBERED: usize = 10_000;

/// A server that did not give us its keys is not asked again for this long.
const REFETCH_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Notes of fetches that failed, so a flood of events signed with unknown keys does not
/// become a flood of requests.
#[derive(Default)]
pub struct KeyCache {
    failed: Mutex<HashMap<String, Instant>>,
    /// Every server's keys as stored, read once (each PDU and request checks signatures).
    known: Mutex<HashMap<String, Vec<RemoteKey>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Federation {
    /// The keys of `server` that may verify a signature made at `at_ms` (0: any time),
    /// fetching them when a wanted key is missing or expired.
    pub async fn key_set(
        &self,
        server: &ServerName,
        wanted: &[String],
        at_ms: u64,
    ) -> Result<PublicKeySet, KeyFetchError> {
        if server == self.server_name() {
            return self.own_key_set().await;
        }
        let mut keys = self.stored_keys(server).await?;
        // One valid signature is enough, so one usable key of those it signed with is too.
        let satisfied = |keys: &[RemoteKey]| {
            let usable = |key: &RemoteKey| key.valid_until_ts >= at_ms;
            if wanted.is_empty() {
                keys.iter().any(usable)
            } else {
                keys.iter().any(|key| wanted.contains(&key.key_id) && usable(key))
            }
        };
        if !satisfied(&keys) && self.may_fetch(server) {
            match self.fetch_keys(server).await {
                Ok(()) => keys = self.stored_keys(server).await?,
                Err(reason) => tracing::info!(%server, %reason, "could not get a server's signing keys"),
            }
            // Not asked again for a while, whether it did not answer or lacked the key.
            if !satisfied(&keys) {
                let mut failed = self.keys.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.retain(|_, at| at.elapsed() < REFETCH_AFTER_FAILURE);
                if failed.len() < MAX_REMEMBERED {
                    failed.insert(server.to_string(), Instant::now());
                }
            }
        }
        Ok(key_set(&keys, at_ms))
    }

    fn may_fetch(&self, server: &ServerName) -> bool {
        let failed = self.keys.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .get(server.as_str())
            .is_none_or(|at| at.elapsed() >= REFETCH_AFTER_FAILURE)
    }

    async fn stored_keys(&self, server: &ServerName) -> Result<Vec<RemoteKey>, StorageError> {
        if let Some(keys) = self
            .keys
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server.as_str())
        {
            return Ok(keys.clone());
        }
        let keys: Vec<RemoteKey> = self
            .base
            .storage
            .server_keys(server.as_str())
            .await?
            .into_iter()
            .map(|key| RemoteKey {
                key_id: key.key_id,
                public_key: key.public_key,
                valid_until_ts: u64::try_from(key.valid_until_ts).unwrap_or(0),
                expired: key.expired != 0,
            })
            .collect();
        // Only servers with keys are remembered (names that lead nowhere cost a query each,
        // not memory), and only so many.
        if !keys.is_empty() {
            let mut known = self.keys.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() >= MAX_REMEMBERED {
                known.clear();
            }
            known.insert(server.to_string(), keys.clone());
        }
        Ok(keys)
    }

    /// Our own keys: the current one, and retired ones for what they signed.
    async fn own_key_set(&self) -> Result<PublicKeySet, KeyFetchError> {
        let mut set = PublicKeySet::new();
        let key = &self.base.signing_key;
        if let Ok(public) = Base64::parse(key.public_key_base64()) {
            set.insert(key.key_id(), public);
        }
        for (key_id, document, _) in self.base.storage.signing_keys().await? {
            let version = key_id.trim_start_matches("ed25519:");
            let retired = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &document)
                .ok()
                .and_then(|bytes| hearth_federation::ServerKey::from_pkcs8(&bytes, version).ok());
            if let Some(retired) = retired
                && let Ok(public) = Base64::parse(retired.public_key_base64())
            {
                set.entry(key_id).or_insert(public);
            }
        }
        Ok(set)
    }

    /// Asks the server, then each notary, until one gives a document that checks out.
    async fn fetch_keys(&self, server: &ServerName) -> Result<(), String> {
        let direct = match self
            .client
            .send_unsigned(server, get_server_keys::v2::Request::new())
            .await
        {
            Ok(response) => document_object(response.server_key.json().get())
                .and_then(|document| verify_key_document(document, server).map_err(|e| e.to_string())),
            Err(error) => Err(error.to_string()),
        };
        let mut reasons = Vec::new();
        match direct {
            Ok(verified) => return self.store(&verified).await.map_err(|e| e.to_string()),
            Err(reason) => reasons.push(format!("{server}: {reason}")),
        }
        for notary in &self.base.config.federation.trusted_key_servers {
            // A notary is never asked about itself (that would loop).
            if notary.server_name == server.as_str() {
                continue;
            }
            match self
                .fetch_from_notary(server, &notary.server_name, &notary.verify_keys)
                .await
            {
                Ok(verified) => return self.store(&verified).await.map_err(|e| e.to_string()),
                Err(reason) => reasons.push(format!("notary {}: {reason}", notary.server_name)),
            }
        }
        Err(reasons.join("; "))
    }

    async fn fetch_from_notary(
        &self,
        server: &ServerName,
        notary: &str,
        pinned: &BTreeMap<String, String>,
    ) -> Result<VerifiedKeys, String> {
        let notary: OwnedServerName = notary.try_into().map_err(|_| "not a server name".to_owned())?;
        let notary_keys: PublicKeySet = if pinned.is_empty() {
            // The notary's own keys, from the notary itself: a notary is never asked about
            // itself, so this cannot loop.
            let mut keys = self.stored_keys(&notary).await.map_err(|e| e.to_string())?;
            if key_set(&keys, now_ms() as u64).is_empty() {
                let document = self
                    .client
                    .send_unsigned(&notary, get_server_keys::v2::Request::new())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|response| document_object(response.server_key.json().get()))
                    .and_then(|document| verify_key_document(document, &notary).map_err(|e| e.to_string()))?;
                self.store(&document).await.map_err(|e| e.to_string())?;
                keys = self.stored_keys(&notary).await.map_err(|e| e.to_string())?;
            }
            key_set(&keys, now_ms() as u64)
        } else {
            pinned
                .iter()
                .filter_map(|(id, key)| Some((id.clone(), Base64::parse(key).ok()?)))
                .collect()
        };
        if notary_keys.is_empty() {
            return Err("no keys of the notary to check its answer with".into());
        }
        let request = get_remote_server_keys_batch::v2::Request::new(BTreeMap::from([(
            server.to_owned(),
            BTreeMap::<OwnedServerSigningKeyId, _>::new(),
        )]));
        let response = self
            .client
            .send_unsigned(&notary, request)
            .await
            .map_err(|e| e.to_string())?;
        let mut last = "the notary had no keys for it".to_owned();
        for raw in response.server_keys {
            let checked = document_object(raw.json().get()).and_then(|document| {
                verify_notarised_document(document, server, &notary, &notary_keys).map_err(|e| e.to_string())
            });
            match checked {
                Ok(verified) => return Ok(verified),
                Err(reason) => last = reason,
            }
        }
        Err(last)
    }

    async fn store(&self, verified: &VerifiedKeys) -> Result<(), StorageError> {
        let keys: Vec<StoredServerKey> = verified
            .keys
            .iter()
            .map(|key| StoredServerKey {
                key_id: key.key_id.clone(),
                public_key: key.public_key.clone(),
                valid_until_ts: i64::try_from(key.valid_until_ts).unwrap_or(i64::MAX),
                expired: i64::from(key.expired),
            })
            .collect();
        let valid_until = verified
            .keys
            .iter()
            .filter(|key| !key.expired)
            .map(|key| key.valid_until_ts)
            .max()
            .unwrap_or(0);
        // Serve it on only with the server's own signatures: a notary's goes with the notary.
        let mut document = verified.document.clone();
        if let Some(CanonicalJsonValue::Object(signatures)) = document.get_mut("signatures") {
            signatures.retain(|entity, _| entity == verified.server_name.as_str());
        }
        let json = CanonicalJsonValue::Object(document).to_string();
        // Read again from storage next time (which keeps the longer validity of each key).
        self.keys
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(verified.server_name.as_str());
        self.base
            .storage
            .store_server_keys(
                verified.server_name.as_str(),
                &keys,
                &json,
                i64::try_from(valid_until).unwrap_or(i64::MAX),
            )
            .await
    }

    /// This server as a notary: the key documents of `server` valid until at least
    /// `minimum_valid_until_ts` (fetched if what we hold is older), each with our signature
    /// added. Our own keys come from [`own_key_document`](super::request) callers; an unknown
    /// server gives nothing.
    pub async fn notarise(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: u64,
    ) -> Result<Option<CanonicalJsonObject>, KeyFetchError> {
        // Asking for keys valid further ahead than a day cannot force a fetch each time.
        let minimum_valid_until_ts = minimum_valid_until_ts.min(now_ms() as u64 + 24 * 3_600_000);
        let stored = self.base.storage.server_key_document(server.as_str()).await?;
        let fresh = stored
            .as_ref()
            .is_some_and(|(_, valid_until)| u64::try_from(*valid_until).unwrap_or(0) >= minimum_valid_until_ts);
        let stored = if !fresh && self.may_fetch(server) {
            if let Err(reason) = self.fetch_keys(server).await {
                tracing::info!(%server, %reason, "notary: could not fetch a server's keys");
                let mut failed = self.keys.failed.lock().unwrap_or_else(|p| p.into_inner());
                if failed.len() < MAX_REMEMBERED {
                    failed.insert(server.to_string(), Instant::now());
                }
            }
            self.base.storage.server_key_document(server.as_str()).await?
        } else {
            stored
        };
        let Some((json, _)) = stored else { return Ok(None) };
        let Ok(mut document) = document_object(&json) else {
            return Ok(None);
        };
        if self
            .base
            .signing_key
            .sign_json(self.server_name(), &mut document)
            .is_err()
        {
            return Ok(None);
        }
        Ok(Some(document))
    }
}

/// A JSON text as a canonical JSON object.
fn document_object(json: &str) -> Result<CanonicalJsonObject, String> {
    serde_json::from_str::<CanonicalJsonObject>(json)
        .map_err(|e| KeyDocumentError::Malformed(e.to_string()).to_string())
}

/// Milliseconds as ruma's timestamp.
pub fn millis(ms: u64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::try_from(ms).unwrap_or(UInt::MAX))
}
