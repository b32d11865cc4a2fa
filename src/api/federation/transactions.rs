//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs from another
//! server. One transaction per origin is processed at a time (as Synapse does); a transaction
//! seen before is answered as it was the first time.

use std::{collections::HashMap, sync::Arc};

use ruma::api::federation::transactions::send_transaction_message;
use tokio::sync::Mutex;

use crate::{
    api::{federation::federation, ruma::Ruma, state::AppState},
    error::{ApiError, ApiResult},
    federation::transactions::{MAX_EDUS, MAX_PDUS},
};

pub async fn send_transaction(
    state: AppState,
    request: Ruma<send_transaction_message::v1::Request>,
) -> ApiResult<send_transaction_message::v1::Response> {
    let origin = request.origin()?.to_owned();
    let federation = federation(&state)?;
    let body = &request.body;
    if body.origin != origin {
        return Err(ApiError::forbidden(
            "The transaction's origin is not the server that signed it",
        ));
    }
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(ApiError::bad_json(format!(
            "A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    let lock = origin_lock(origin.as_str());
    let _serialised = lock.lock().await;
    let txn_id = body.transaction_id.as_str();
    if let Some(previous) = state.storage.inbound_transaction(origin.as_str(), txn_id).await? {
        let pdus = serde_json::from_str(&previous).map_err(|_| ApiError::internal())?;
        return Ok(send_transaction_message::v1::Response::new(pdus));
    }
    let results = federation.receive_pdus(&origin, &body.pdus).await;
    federation.receive_edus(&origin, &body.edus).await;
    let answer = serde_json::to_string(&results).map_err(|_| ApiError::internal())?;
    state
        .storage
        .record_inbound_transaction(origin.as_str(), txn_id, &answer)
        .await?;
    Ok(send_transaction_message::v1::Response::new(results))
}

/// One lock per origin, so a server's transactions are processed one after another.
fn origin_lock(origin: &str) -> Arc<Mutex<()>> {
    static LOCKS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    // Drop locks nobody holds, so the map stays as small as the set of busy origins.
    if locks.len() > 1024 {
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    }
    locks.entry(origin.to_owned()).or_default().clone()
}
