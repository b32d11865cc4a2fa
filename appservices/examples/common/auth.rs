//! Checking the token a request carries: the homeserver's `hs_token` on the appservice API
//! (an extractor, so no handler can forget it), and any shared secret the same way.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::{HeaderMap, header::AUTHORIZATION, request::Parts};

use super::{appservice_api::ApiState, error::MatrixError};

/// Proof that the request came from our homeserver: it carried the registration's
/// `hs_token`. Take it as a handler argument before any body extractor.
pub struct FromHomeserver;

impl FromRequestParts<Arc<ApiState>> for FromHomeserver {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<ApiState>) -> Result<Self, MatrixError> {
        // Before Matrix 1.4 the token came as `?access_token=`; a homeserver may send both,
        // and then both must match (spec: "Application services should ensure both match").
        let header = bearer_token(&parts.headers);
        let query = legacy_query_token(parts.uri.query());
        if header.is_none() && query.is_none() {
            return Err(MatrixError::missing_token());
        }
        let all_match = [header, query.as_deref()]
            .into_iter()
            .flatten()
            .all(|token| tokens_match(token, &api.hs_token));
        if all_match {
            Ok(Self)
        } else {
            Err(MatrixError::forbidden("The hs_token is not this appservice's"))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn legacy_query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
}

/// Compares in time that depends only on the lengths, so a caller cannot find the token a
/// byte at a time by measuring how long a wrong guess takes.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_takes_the_token_after_the_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer abc".parse().expect("a valid header value"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, "Basic abc".parse().expect("a valid header value"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("secret", "secret"));
        assert!(!tokens_match("secreT", "secret"));
        assert!(!tokens_match("secret1", "secret"));
        assert!(!tokens_match("", "secret"));
    }

    #[test]
    fn legacy_query_token_is_read_from_the_query_string() {
        assert_eq!(
            legacy_query_token(Some("a=1&access_token=x%2By")).as_deref(),
            Some("x+y")
        );
        assert_eq!(legacy_query_token(Some("a=1")), None);
        assert_eq!(legacy_query_token(None), None);
    }
}
