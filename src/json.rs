//! Checks and readings of JSON text that every layer shares: the limits every JSON body
//! meets before it is parsed or stored (HTTP or WebSocket), and a field of a stored event's
//! content.

use serde_json::Value;

/// Why a JSON body is refused before it is parsed (the API answers 400 `M_BAD_JSON`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonRefusal {
    TooDeep,
    Nul,
}

impl std::fmt::Display for JsonRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooDeep => write!(f, "JSON may nest at most {MAX_JSON_DEPTH} levels deep"),
            Self::Nul => write!(f, "NUL characters are not allowed in JSON strings"),
        }
    }
}

/// A string field of a stored PDU's content.
pub fn content_field(pdu_json: &str, field: &str) -> Option<String> {
    let pdu: Value = serde_json::from_str(pdu_json).ok()?;
    pdu.get("content")?.get(field)?.as_str().map(str::to_owned)
}

/// Whether a JSON body holds a NUL character in any string (key or value). Checked only when
/// the raw text contains the escape at all, so ordinary bodies cost one scan.
pub fn json_has_nul(body: &[u8]) -> bool {
    fn walk(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(walk),
            serde_json::Value::Object(map) => map.iter().any(|(key, value)| key.contains('\0') || walk(value)),
            _ => false,
        }
    }
    let escaped = body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000"));
    escaped && serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|value| walk(&value))
}

/// Deepest nesting of arrays and objects a JSON body may have: below serde_json's own limit
/// (128), so whatever is accepted and stored can always be read back.
pub const MAX_JSON_DEPTH: usize = 100;

/// Whether a JSON text nests arrays and objects deeper than [`MAX_JSON_DEPTH`] (one linear
/// scan; brackets inside strings do not count).
pub fn json_too_deep(body: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The checks every JSON body gets before it is parsed or stored: no NUL in any string, no
/// nesting past [`MAX_JSON_DEPTH`].
pub fn check_json_body(body: &[u8]) -> Result<(), JsonRefusal> {
    if json_too_deep(body) {
        return Err(JsonRefusal::TooDeep);
    }
    if json_has_nul(body) {
        return Err(JsonRefusal::Nul);
    }
    Ok(())
}
