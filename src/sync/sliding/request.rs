//! What a sliding sync request asks for: lists, subscriptions, extensions, and the required
//! state of room configs (both the pair form Element X sends and MSC4186's object form).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// Entries one `required_state` may hold.
const MAX_REQUIRED_STATE: usize = 256;
/// Timeline events per room at most, whatever the client asks.
const MAX_TIMELINE_LIMIT: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SlidingRequest {
    pub conn_id: Option<String>,
    pub pos: Option<String>,
    pub timeout: Option<u64>,
    pub set_presence: Option<String>,
    pub lists: BTreeMap<String, ListConfig>,
    pub room_subscriptions: BTreeMap<String, RoomConfig>,
    pub extensions: Extensions,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    pub timeline_limit: Option<u64>,
    pub required_state: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListConfig {
    pub range: Option<(u64, u64)>,
    /// Older clients send several ranges; the first counts.
    pub ranges: Option<Vec<(u64, u64)>>,
    pub timeline_limit: Option<u64>,
    pub required_state: Option<Value>,
    pub filters: ListFilters,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListFilters {
    pub is_dm: Option<bool>,
    pub spaces: Option<Vec<String>>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    pub is_invited: Option<bool>,
    pub room_types: Option<Vec<Option<String>>>,
    pub not_room_types: Option<Vec<Option<String>>>,
    pub tags: Option<Vec<String>>,
    pub not_tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Extensions {
    pub to_device: Option<ExtensionConfig>,
    pub e2ee: Option<ExtensionConfig>,
    pub account_data: Option<ExtensionConfig>,
    pub receipts: Option<ExtensionConfig>,
    pub typing: Option<ExtensionConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExtensionConfig {
    pub enabled: Option<bool>,
    pub lists: Option<Vec<String>>,
    pub rooms: Option<Vec<String>>,
    /// `to_device`: the `next_batch` the client last received (it has everything up to it).
    pub since: Option<String>,
    /// `to_device`: most messages in one response.
    pub limit: Option<u64>,
}

impl ExtensionConfig {
    pub(super) fn on(config: Option<&Self>) -> bool {
        config.is_some_and(|c| c.enabled.unwrap_or(false))
    }
}

/// Which state a room config asks for: `include` entries (type, state key; `None` for any),
/// minus `exclude`, plus lazily loaded members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct RequiredState {
    include: Vec<(Option<String>, Option<String>)>,
    exclude: Vec<(Option<String>, Option<String>)>,
    lazy_members: bool,
}

impl RequiredState {
    /// Reads either form: the list of `[type, state_key]` pairs Element X sends (with `*`,
    /// `$LAZY` and `$ME`), or MSC4186's `{include, exclude, lazy_members}`.
    pub(super) fn parse(value: Option<&Value>, me: &str) -> ApiResult<Self> {
        let invalid = || ApiError::invalid_param("Invalid required_state");
        let mut required = Self::default();
        let me_or = |key: &str| if key == "$ME" { me.to_owned() } else { key.to_owned() };
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Array(pairs)) => {
                for pair in pairs {
                    let pair = pair.as_array().filter(|p| p.len() == 2).ok_or_else(invalid)?;
                    let kind = pair[0].as_str().ok_or_else(invalid)?;
                    let key = pair[1].as_str().ok_or_else(invalid)?;
                    if key == "$LAZY" {
                        required.lazy_members = kind == "m.room.member" || required.lazy_members;
                        continue;
                    }
                    let kind = (kind != "*").then(|| kind.to_owned());
                    let key = (key != "*").then(|| me_or(key));
                    required.include.push((kind, key));
                }
            }
            Some(Value::Object(object)) => {
                let elements = |name: &str| -> ApiResult<Vec<(Option<String>, Option<String>)>> {
                    let Some(list) = object.get(name) else {
                        return Ok(Vec::new());
                    };
                    list.as_array()
                        .ok_or_else(invalid)?
                        .iter()
                        .map(|element| {
                            let element = element.as_object().ok_or_else(invalid)?;
                            let field = |f: &str| -> ApiResult<Option<String>> {
                                match element.get(f) {
                                    None => Ok(None),
                                    Some(Value::String(s)) => Ok(Some(me_or(s))),
                                    Some(_) => Err(invalid()),
                                }
                            };
                            Ok((field("type")?, field("state_key")?))
                        })
                        .collect()
                };
                required.include = elements("include")?;
                required.exclude = elements("exclude")?;
                required.lazy_members = match object.get("lazy_members") {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(invalid()),
                };
            }
            Some(_) => return Err(invalid()),
        }
        required.check_size()
    }

    /// Refuses configs too large to be honest (each entry is checked against every state
    /// event of every room).
    fn check_size(self) -> ApiResult<Self> {
        if self.include.len() + self.exclude.len() > MAX_REQUIRED_STATE {
            return Err(ApiError::invalid_param(format!(
                "required_state may hold at most {MAX_REQUIRED_STATE} entries"
            )));
        }
        Ok(self)
    }

    pub(super) fn matches(&self, kind: &str, key: &str) -> bool {
        let hit = |(t, k): &(Option<String>, Option<String>)| {
            t.as_deref().is_none_or(|t| t == kind) && k.as_deref().is_none_or(|k| k == key)
        };
        self.include.iter().any(hit) && !self.exclude.iter().any(hit)
    }
}

/// The room config a room gets from every rule it matches: the largest timeline, the union of
/// the required state.
#[derive(Debug, Clone, Default)]
pub(super) struct Combined {
    pub(super) timeline_limit: usize,
    pub(super) required: Vec<RequiredState>,
    pub(super) lists: Vec<String>,
}

impl Combined {
    pub(super) fn add(&mut self, timeline_limit: Option<u64>, required: RequiredState) {
        let limit = usize::try_from(timeline_limit.unwrap_or(0))
            .unwrap_or(MAX_TIMELINE_LIMIT)
            .min(MAX_TIMELINE_LIMIT);
        self.timeline_limit = self.timeline_limit.max(limit);
        if !self.required.contains(&required) {
            self.required.push(required);
        }
    }

    pub(super) fn wants(&self, kind: &str, key: &str) -> bool {
        self.required.iter().any(|r| r.matches(kind, key))
    }

    pub(super) fn lazy_members(&self) -> bool {
        self.required.iter().any(|r| r.lazy_members)
    }
}
