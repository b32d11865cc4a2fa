//! URL previews: fetch the page (size- and time-limited, through the SSRF-guarded client), read
//! its Open Graph tags and title, fetch `og:image` into the media repository so clients can show
//! and thumbnail it, and cache the result.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use reqwest::{Url, header::CONTENT_TYPE};
use ruma::api::error::ErrorKind;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Media, internal, probe_within};
use crate::{
    error::{ApiError, ApiResult},
    outbound::{AddressPolicy, refusal},
    storage::{NewMedia, Storage, now_ms},
};

/// Most Open Graph properties kept from one page.
const MAX_PROPERTIES: usize = 50;
/// Longest value kept of one property.
const MAX_VALUE_CHARS: usize = 2_000;
/// Longest URL previewed (it is the cache's key; PostgreSQL indexes keys of at most ~2.7 KB).
const MAX_URL_BYTES: usize = 2_000;

impl Media {
    /// The preview of `url` (the Open Graph object the spec describes).
    pub async fn preview(&self, storage: &Storage, origin: &str, url: &str) -> ApiResult<Value> {
        let Some(client) = &self.previews else {
            return Err(ApiError::forbidden("URL previews are disabled on this server"));
        };
        if url.len() > MAX_URL_BYTES {
            return Err(ApiError::invalid_param(format!(
                "URLs longer than {MAX_URL_BYTES} bytes are not previewed"
            )));
        }
        let mut url = Url::parse(url).map_err(|error| ApiError::invalid_param(format!("Invalid URL: {error}")))?;
        url.set_fragment(None);
        if let Some(cached) = storage.url_preview(url.as_str()).await? {
            return serde_json::from_str(&cached).map_err(internal);
        }
        let (content_type, body, final_url) = self.fetch(client, &url).await?;
        let mut og = Map::new();
        if content_type.starts_with("image/") {
            if let Some(image) = self.keep_image(storage, origin, &content_type, body).await? {
                og.extend(image);
            }
        } else if content_type.starts_with("text/html") || content_type.starts_with("application/xhtml") {
            // Up to `max_bytes` of markup: parsed on the blocking pool, off the request workers.
            let properties = tokio::task::spawn_blocking(move || parse_html(&String::from_utf8_lossy(&body)))
                .await
                .map_err(internal)?;
            let image_url = properties
                .get("og:image")
                // Relative to where the page was found, after any redirects.
                .and_then(|image| final_url.join(image).ok())
                .filter(|image| matches!(image.scheme(), "http" | "https"));
            for (key, value) in properties {
                if key != "og:image" && !key.starts_with("og:image:") {
                    og.insert(key, Value::String(value));
                }
            }
            if let Some(image_url) = image_url {
                // A page whose image cannot be fetched still has a preview.
                match self.fetch(client, &image_url).await {
                    Ok((image_type, image, _)) if image_type.starts_with("image/") => {
                        if let Some(image) = self.keep_image(storage, origin, &image_type, image).await? {
                            og.extend(image);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(?error, "og:image not fetched"),
                }
            }
        }
        let preview = Value::Object(og);
        let expires = now_ms() + (self.config.url_preview.cache_secs * 1000) as i64;
        storage
            .store_url_preview(url.as_str(), &preview.to_string(), expires)
            .await?;
        Ok(preview)
    }

    fn address_policy(&self) -> AddressPolicy {
        AddressPolicy {
            denylist: self.config.url_preview.ip_range_denylist.clone(),
            allowlist: self.config.url_preview.ip_range_allowlist.clone(),
        }
    }

    /// GETs `url`, reading at most `max_bytes`; returns the content type (lowercase), the body
    /// and the URL it came from (after redirects). Every URL fetched is checked against the
    /// address policy first: the page's, and the `og:image` the page names (a literal address
    /// never reaches the guarded resolver).
    async fn fetch(&self, client: &reqwest::Client, url: &Url) -> ApiResult<(String, Bytes, Url)> {
        self.address_policy()
            .check_url(url)
            .map_err(|refused| ApiError::forbidden(refused.0))?;
        let limit = self.config.url_preview.max_bytes;
        let failed = |error: reqwest::Error| match refusal(&error) {
            Some(refused) => ApiError::forbidden(refused.0.clone()),
            None => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("Could not fetch the URL: {}", error.without_url()),
            ),
        };
        let response = client
            .get(url.clone())
            .header("accept", "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("The URL answered HTTP {}", response.status().as_u16()),
            ));
        }
        if response.content_length().is_some_and(|length| length > limit) {
            return Err(content_too_large(limit));
        }
        let final_url = response.url().clone();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(content_too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((content_type, Bytes::from(body), final_url))
    }

    /// Stores a fetched image as local media; its preview fields, or `None` if it is not an
    /// image we can read.
    async fn keep_image(
        &self,
        storage: &Storage,
        origin: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> ApiResult<Option<Map<String, Value>>> {
        let probed = {
            let bytes = bytes.clone();
            let max_pixels = self.config.max_image_pixels;
            self.decode(move || probe_within(&bytes, max_pixels)).await
        };
        let Ok((width, height)) = probed else {
            return Ok(None);
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len() as i64;
        let _blobs = self.blobs.read().await;
        self.store.put_bytes(&sha256, bytes).await.map_err(internal)?;
        let media_id = Self::new_media_id();
        let content_type = content_type.split(';').next().unwrap_or(content_type).trim();
        storage
            .insert_media(&NewMedia {
                origin,
                media_id: &media_id,
                uploader: None,
                content_type: Some(content_type),
                filename: None,
                size,
                sha256: &sha256,
            })
            .await?;
        let fields = json!({
            "og:image": format!("mxc://{origin}/{media_id}"),
            "og:image:type": content_type,
            "og:image:width": width,
            "og:image:height": height,
            "matrix:image:size": size,
        });
        Ok(fields.as_object().cloned())
    }
}

fn content_too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::TooLarge,
        format!("The content is larger than the preview limit of {limit} bytes"),
    )
}

/// The Open Graph properties of a page (`og:*` from `<meta property>` or `<meta name>`), with
/// `og:title` falling back to `<title>` and `og:description` to `<meta name="description">`.
pub fn parse_html(html: &str) -> BTreeMap<String, String> {
    let mut og = BTreeMap::new();
    let mut title = None;
    let mut description = None;
    let lower = html.to_ascii_lowercase();
    let mut at = 0;
    while let Some(offset) = lower[at..].find('<') {
        let start = at + offset;
        let rest = &lower[start + 1..];
        if rest.starts_with("!--") {
            at = lower[start..].find("-->").map_or(lower.len(), |end| start + end + 3);
            continue;
        }
        let name_end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let Some(tag_end) = tag_end(&lower, start) else { break };
        let attributes = &html[start + 1 + name_end..tag_end];
        at = tag_end + 1;
        match name {
            "meta" => {
                let attributes = parse_attributes(attributes);
                let key = attributes
                    .get("property")
                    .or_else(|| attributes.get("name"))
                    .map(|key| key.to_ascii_lowercase());
                if let (Some(key), Some(content)) = (key, attributes.get("content")) {
                    let content = truncate(content.trim());
                    if key.starts_with("og:") && og.len() < MAX_PROPERTIES {
                        og.entry(key).or_insert(content);
                    } else if key == "description" {
                        description.get_or_insert(content);
                    }
                }
            }
            "title" if title.is_none() => {
                let end = lower[at..].find("</title").map_or(lower.len(), |end| at + end);
                let text = decode_entities(html[at..end].trim());
                if !text.is_empty() {
                    title = Some(truncate(&text));
                }
                at = end;
            }
            // Their contents are not markup.
            "script" | "style" => {
                let closing = format!("</{name}");
                at = lower[at..].find(&closing).map_or(lower.len(), |end| at + end);
            }
            _ => {}
        }
    }
    if let Some(title) = title {
        og.entry("og:title".to_owned()).or_insert(title);
    }
    if let Some(description) = description {
        og.entry("og:description".to_owned()).or_insert(description);
    }
    og
}

/// Where the tag opened at `start` closes: the first `>` outside a quoted attribute value.
fn tag_end(html: &str, start: usize) -> Option<usize> {
    let mut quote = None;
    for (index, byte) in html.bytes().enumerate().skip(start + 1) {
        match (quote, byte) {
            (None, b'"' | b'\'') => quote = Some(byte),
            (Some(open), _) if byte == open => quote = None,
            (None, b'>') => return Some(index),
            _ => {}
        }
    }
    None
}

/// `name="value"`, `name='value'`, `name=value` and bare `name`, names lowercased, values
/// entity-decoded.
fn parse_attributes(text: &str) -> BTreeMap<String, String> {
    let mut attributes = BTreeMap::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' && bytes[i] != b'/' {
            i += 1;
        }
        let name = text[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                let start = i + 1;
                let end = text[start..]
                    .find(char::from(quote))
                    .map_or(text.len(), |end| start + end);
                value = decode_entities(&text[start..end]);
                i = end + 1;
            } else {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = decode_entities(&text[start..i]);
            }
        }
        if !name.is_empty() {
            attributes.entry(name).or_insert(value);
        }
        if i == name_start {
            i += 1;
        }
    }
    attributes
}

/// The named entities pages use in titles, and numeric ones.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_VALUE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_graph_tags_and_the_title_are_read() {
        let html = r#"<!doctype html><html><head>
            <!-- <meta property="og:title" content="commented out"> -->
            <title>Fallback &amp; title</title>
            <meta property="og:title" content="The &quot;real&quot; title">
            <meta name='og:site_name' content='Example'>
            <meta property=og:type content=article />
            <meta name="description" content="A page about things">
            <script>var s = "<meta property='og:url' content='x'>";</script>
            <meta property="og:image" content="/img/cat.png">
            </head><body>Hello</body></html>"#;
        let og = parse_html(html);
        assert_eq!(og["og:title"], "The \"real\" title");
        assert_eq!(og["og:site_name"], "Example");
        assert_eq!(og["og:type"], "article");
        assert_eq!(og["og:description"], "A page about things");
        assert_eq!(og["og:image"], "/img/cat.png");
        assert!(!og.contains_key("og:url"));
    }

    #[test]
    fn the_title_fills_in_and_garbage_does_not_panic() {
        let og = parse_html("<html><title>Only a title &#x263a; &#9731;</title>");
        assert_eq!(og["og:title"], "Only a title ☺ ☃");
        for garbage in [
            "<",
            "<meta",
            "<meta content=\"unterminated",
            "<title>",
            "&",
            "<<>>",
            "<meta =x>",
        ] {
            parse_html(garbage);
        }
    }
}
