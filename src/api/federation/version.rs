//! `GET /_matrix/federation/v1/version`: which server software this is.

use ruma::api::federation::discovery::get_server_version;

use crate::{
    api::{federation::federation, ruma::Ruma, state::AppState},
    error::ApiResult,
};

pub async fn server_version(
    state: AppState,
    _request: Ruma<get_server_version::v1::Request>,
) -> ApiResult<get_server_version::v1::Response> {
    federation(&state)?;
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Hearth".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}
