//! `GET /openid/userinfo`: who an OpenID token (from `/user/{userId}/openid/request_token`)
//! stands for, asked by a third party such as an integration manager. No signature: the
//! token is the credential.

use ruma::{OwnedUserId, api::federation::openid::get_openid_userinfo};

use crate::{
    accounts::tokens::hash_token,
    api::{ruma::Ruma, state::AppState},
    error::{ApiError, ApiResult},
};

pub async fn userinfo(
    state: AppState,
    request: Ruma<get_openid_userinfo::v1::Request>,
) -> ApiResult<get_openid_userinfo::v1::Response> {
    let unknown = || ApiError::unknown_token(false);
    let user = state
        .storage
        .openid_token_user(&hash_token(&request.body.access_token))
        .await?
        .ok_or_else(unknown)?;
    let user = OwnedUserId::try_from(user).map_err(|_| ApiError::internal())?;
    Ok(get_openid_userinfo::v1::Response::new(user))
}
