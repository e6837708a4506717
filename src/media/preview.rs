//! URL previews: OpenGraph data of a page, its image stored as local media.
//!
//! Off unless `media.url_preview_enabled`. Every fetch goes through the federation client's
//! address guard, so a preview cannot reach private or loopback addresses (SSRF); bodies are
//! read only up to `media.url_preview_max_size`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use ruma::api::error::ErrorKind;
use serde_json::{Map, Value, json};

use super::{Media, essence, store_error};
use crate::account::now_ms;
use crate::db::media as db;
use crate::error::{Error, Result};
use crate::federation::client::FederationError;

/// How long a fetched preview is answered from the cache.
const PREVIEW_TTL_MS: i64 = 3_600_000;
/// Longest one page or image fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest URL previewed.
const MAX_URL: usize = 2048;
/// Longest value kept from a page.
const MAX_VALUE: usize = 1000;
/// Most OpenGraph properties kept from a page.
const MAX_PROPERTIES: usize = 50;

impl Media {
    /// The OpenGraph preview of `url`.
    #[tracing::instrument(skip_all, fields(%url))]
    pub async fn preview(&self, url: &str) -> Result<Value> {
        let inner = &self.inner;
        if !inner.config.url_preview_enabled {
            return Err(Error::new(
                ErrorKind::Unrecognized,
                "URL previews are disabled on this server",
            ));
        }
        let parsed = url::Url::parse(url).map_err(|_| Error::invalid_param("Invalid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || url.len() > MAX_URL {
            return Err(Error::invalid_param(
                "Only http and https URLs are previewed",
            ));
        }
        if let Some(cached) = db::url_preview(&inner.db, url, now_ms() - PREVIEW_TTL_MS).await? {
            return Ok(cached);
        }
        let response = inner
            .client
            .get_url(url, FETCH_TIMEOUT)
            .await
            .map_err(preview_error)?;
        let content_type = content_type_of(&response);
        let preview = if content_type.starts_with("image/") {
            Value::Object(self.store_image(response, &content_type).await?)
        } else if content_type == "text/html" || content_type == "application/xhtml+xml" {
            let html = read_capped(response, inner.config.url_preview_max_size).await?;
            let mut og = parse_html(&String::from_utf8_lossy(&html), &parsed);
            self.replace_image(&mut og).await;
            Value::Object(og)
        } else {
            json!({})
        };
        db::store_url_preview(&inner.db, url, &preview, now_ms()).await?;
        Ok(preview)
    }

    /// Store a page's `og:image` here and point the preview at the stored copy, as clients
    /// expect; an image that cannot be fetched is left out.
    async fn replace_image(&self, og: &mut Map<String, Value>) {
        let Some(image_url) = og
            .remove("og:image")
            .and_then(|v| v.as_str().map(str::to_owned))
        else {
            return;
        };
        let fetched = match self.inner.client.get_url(&image_url, FETCH_TIMEOUT).await {
            Ok(response) => {
                let content_type = content_type_of(&response);
                if content_type.starts_with("image/") {
                    self.store_image(response, &content_type).await
                } else {
                    Err(Error::bad_request("og:image is not an image"))
                }
            }
            Err(e) => Err(preview_error(e)),
        };
        match fetched {
            Ok(fields) => og.extend(fields),
            Err(e) => tracing::debug!(error = %e, "preview image not stored"),
        }
    }

    /// Store an image as local media: its preview fields (`og:image` as an mxc URI, type,
    /// size, and dimensions when its header can be read).
    async fn store_image(
        &self,
        response: reqwest::Response,
        content_type: &str,
    ) -> Result<Map<String, Value>> {
        let inner = &self.inner;
        let limit = inner
            .config
            .url_preview_max_size
            .min(inner.config.max_upload_size);
        let stored = inner
            .store
            .write(response.bytes_stream(), limit)
            .await
            .map_err(|e| match store_error(e) {
                Error::Io(e) => Error::Io(e),
                other => Error::Upstream(other.to_string()),
            })?;
        let media_id = super::new_media_id();
        db::insert(
            &inner.db,
            &db::NewMedia {
                server_name: inner.server_name.as_str(),
                media_id: &media_id,
                uploader: None,
                content_type: Some(content_type),
                filename: None,
                size: stored.size as i64,
                sha256: &stored.sha256,
                now: now_ms(),
            },
        )
        .await?;
        let mut fields = Map::new();
        fields.insert("og:image".into(), self.mxc(&media_id).to_string().into());
        fields.insert("og:image:type".into(), content_type.into());
        fields.insert("matrix:image:size".into(), stored.size.into());
        let path = inner.store.path(&stored.sha256);
        let dimensions = tokio::task::spawn_blocking(move || {
            image::ImageReader::open(path)
                .ok()?
                .with_guessed_format()
                .ok()?
                .into_dimensions()
                .ok()
        })
        .await
        .ok()
        .flatten();
        if let Some((w, h)) = dimensions {
            fields.insert("og:image:width".into(), w.into());
            fields.insert("og:image:height".into(), h.into());
        }
        Ok(fields)
    }
}

/// The essence of a response's content type; empty when it has none.
fn content_type_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(essence)
        .unwrap_or_default()
}

/// A refused address is the caller's doing (403); anything else is the site's failure (502).
fn preview_error(e: FederationError) -> Error {
    match e {
        FederationError::ForbiddenUrl(_) => {
            Error::forbidden("This URL points at an address this server may not fetch")
        }
        other => Error::Upstream(other.to_string()),
    }
}

/// At most `limit` bytes of a body: a page's head, where OpenGraph lives, comes first.
async fn read_capped(response: reqwest::Response, limit: u64) -> Result<Bytes> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Upstream(e.to_string()))?;
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(body))
}

/// The OpenGraph properties of a page (`og:*` meta tags), with the `<title>` and the
/// description meta tag standing in for missing `og:title` / `og:description`. A relative
/// `og:image` is resolved against the page's URL.
pub fn parse_html(html: &str, base: &url::Url) -> Map<String, Value> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `html`.
    let lower = html.to_ascii_lowercase();
    let mut og = Map::new();
    let mut description = None;
    let mut from = 0;
    while let Some(at) = lower[from..].find("<meta") {
        let start = from + at + "<meta".len();
        let Some(len) = lower[start..].find('>') else {
            break;
        };
        let attrs = attributes(&html[start..start + len]);
        from = start + len;
        let get = |name: &str| {
            attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(content) = get("content") else {
            continue;
        };
        let key = get("property").or_else(|| get("name")).unwrap_or("");
        let key = key.to_ascii_lowercase();
        if key.starts_with("og:") && og.len() < MAX_PROPERTIES && !og.contains_key(&key) {
            og.insert(key, clip(content).into());
        } else if key == "description" && description.is_none() {
            description = Some(clip(content));
        }
    }
    if !og.contains_key("og:title")
        && let Some(start) = lower.find("<title")
        && let Some(open) = lower[start..].find('>')
        && let Some(len) = lower[start + open + 1..].find("</title")
    {
        let text = &html[start + open + 1..start + open + 1 + len];
        let title = decode_entities(text.trim());
        if !title.is_empty() {
            og.insert("og:title".into(), clip(&title).into());
        }
    }
    if let Some(d) = description {
        og.entry("og:description").or_insert(d.into());
    }
    if let Some(image) = og.get("og:image").and_then(Value::as_str) {
        match base.join(image) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                og.insert("og:image".into(), u.to_string().into());
            }
            _ => {
                og.remove("og:image");
            }
        }
    }
    og
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_VALUE).collect()
}

/// The attributes of a tag (names lowercased, values entity-decoded).
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return out;
        }
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let name = rest[..name_len].to_ascii_lowercase();
        rest = rest[name_len..].trim_start();
        let Some(after_eq) = rest.strip_prefix('=') else {
            out.push((name, String::new()));
            continue;
        };
        rest = after_eq.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let end = rest[1..].find(q).map_or(rest.len(), |e| e + 1);
                let value = &rest[1..end];
                rest = rest.get(end + 1..).unwrap_or("");
                value
            }
            _ => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let value = &rest[..end];
                rest = &rest[end..];
                value
            }
        };
        out.push((name, decode_entities(value)));
    }
}

/// The HTML character references pages use in titles and descriptions.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opengraph_with_fallbacks_and_relative_images() {
        let base = url::Url::parse("https://example.org/a/page.html").unwrap();
        let html = r#"<html><head><TITLE> Tom &amp; Jerry </TITLE>
            <meta charset=utf-8>
            <META property="og:image" content="/img/cat.png" />
            <meta name='description' content='A &quot;cat&quot; &#x263A;'>
            <meta property="og:type" content=website>
            <meta property="og:type" content="ignored duplicate">
            </head><body><meta property="og:title"></body></html>"#;
        let og = parse_html(html, &base);
        assert_eq!(og["og:title"], "Tom & Jerry");
        assert_eq!(og["og:description"], "A \"cat\" \u{263A}");
        assert_eq!(og["og:image"], "https://example.org/img/cat.png");
        assert_eq!(og["og:type"], "website");
        let og = parse_html(
            r#"<meta property="og:image" content="javascript:alert(1)"><meta property="og:title" content="T">"#,
            &base,
        );
        assert!(og.get("og:image").is_none());
        assert_eq!(og["og:title"], "T");
        assert!(parse_html("<meta content=", &base).is_empty());
        assert!(parse_html("<title>unterminated", &base).is_empty());
    }
}
