//! Push rules, read-only for now: `GET /pushrules/` answers with the rules in effect, which
//! are the spec's predefined rules for the user until rule editing and evaluation land (the
//! push notifications issue). Clients such as matrix-js-sdk read them before their first
//! sync. The editing endpoints stay unrecognized (`M_UNRECOGNIZED`) until then.

use ruma::{api::client::push::get_pushrules_all, push::Ruleset};

use super::ruma::Ruma;
use crate::{error::ApiResult, state::AppState};

/// `GET /_matrix/client/v3/pushrules/`
pub async fn all(
    _state: AppState,
    request: Ruma<get_pushrules_all::v3::Request>,
) -> ApiResult<get_pushrules_all::v3::Response> {
    let sender = request.sender()?;
    Ok(get_pushrules_all::v3::Response::new(Ruleset::server_default(
        &sender.user_id,
    )))
}
