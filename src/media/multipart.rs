//! `multipart/mixed` bodies of the federation media endpoints, read and written as streams.
//!
//! The answer to `/_matrix/federation/v1/media/download` is two parts: JSON metadata, then
//! either the file (with its `Content-Type` and `Content-Disposition`) or a `Location` header
//! naming where to fetch it. Files can be large, so neither side holds a whole body: the
//! reader yields the file part chunk by chunk and the writer frames a streamed file.
//!
//! Reading is lenient where servers differ: a first delimiter without the CRLF before it,
//! bare LF line ends, and a body that ends after the last delimiter without the closing `--`.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Largest header block of one part.
const MAX_PART_HEADERS: usize = 16 * 1024;
/// Longest rest of a delimiter line (transport padding), line end included.
const MAX_DELIMITER_LINE: usize = 256;
/// Most headers in one part.
const MAX_HEADER_COUNT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("not a multipart/mixed body with a boundary")]
    NotMultipart,
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    #[error("reading the body failed: {0}")]
    Source(String),
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub fn boundary(content_type: &str) -> Result<String, MultipartError> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return Err(MultipartError::NotMultipart);
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or(MultipartError::NotMultipart)
}

/// Headers of one part, names lowercased.
#[derive(Debug, Default, Clone)]
pub struct PartHeaders(Vec<(String, String)>);

impl PartHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside the preamble or a part's body, looking for the next delimiter.
    Body,
    /// Just past a delimiter.
    Delimiter,
    Done,
}

/// Reads the parts of a `multipart/mixed` body from a byte stream.
pub struct MultipartReader<S> {
    source: S,
    buf: BytesMut,
    /// `\r\n--boundary`: what ends every body (and, with the CRLF we start the buffer with,
    /// the preamble too).
    delimiter: Vec<u8>,
    state: State,
    source_done: bool,
    /// How much of the start of `buf` is known to hold no delimiter: a body arriving in
    /// small pieces is searched once, not again with every piece.
    searched: usize,
}

impl<S, E> MultipartReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(source: S, boundary: &str) -> Self {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        // A first delimiter at the very start has no CRLF before it; give it one.
        buf.extend_from_slice(b"\r\n");
        MultipartReader {
            source,
            buf,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            state: State::Body,
            source_done: false,
            searched: 0,
        }
    }

    /// Read more of the source into the buffer; false at its end.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.source_done {
            return Ok(false);
        }
        match self.source.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(MultipartError::Source(e.to_string())),
            None => {
                self.source_done = true;
                Ok(false)
            }
        }
    }

    /// The next piece of the current part's body; `None` once the part has ended.
    pub async fn body_chunk(&mut self) -> Result<Option<Bytes>, MultipartError> {
        loop {
            if self.state != State::Body {
                return Ok(None);
            }
            if let Some(at) = find(&self.buf[self.searched..], &self.delimiter) {
                let chunk = self.buf.split_to(self.searched + at).freeze();
                self.buf.advance(self.delimiter.len());
                self.searched = 0;
                self.state = State::Delimiter;
                if chunk.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(chunk));
            }
            // Everything but a possible partial delimiter at the end is body.
            let keep = self.delimiter.len() - 1;
            if self.buf.len() > keep + 8 * 1024 {
                let chunk = self.buf.split_to(self.buf.len() - keep).freeze();
                self.searched = 0;
                return Ok(Some(chunk));
            }
            self.searched = self.buf.len().saturating_sub(keep);
            if !self.fill().await? {
                return Err(MultipartError::Malformed("body ends inside a part"));
            }
        }
    }

    /// Move to the next part and read its headers; `None` after the last part.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, MultipartError> {
        while self.body_chunk().await?.is_some() {}
        if self.state == State::Done {
            return Ok(None);
        }
        // The rest of the delimiter line: `--` closes the body, otherwise padding then EOL.
        let eol = loop {
            if self.buf.starts_with(b"--") {
                self.state = State::Done;
                return Ok(None);
            }
            // Each bound is checked on what was found as well as on what is still awaited:
            // whether a body passes must not depend on how the network cut it into pieces.
            let line = self.buf.iter().position(|&b| b == b'\n');
            if line.unwrap_or(self.buf.len()) >= MAX_DELIMITER_LINE {
                return Err(MultipartError::Malformed("delimiter line too long"));
            }
            if let Some(eol) = line {
                break eol;
            }
            if !self.fill().await? {
                // Some servers end the body right after the last delimiter.
                self.state = State::Done;
                return Ok(None);
            }
        };
        self.buf.advance(eol + 1);
        let headers = self.read_headers().await?;
        self.state = State::Body;
        Ok(Some(headers))
    }

    async fn read_headers(&mut self) -> Result<PartHeaders, MultipartError> {
        loop {
            if self.buf.starts_with(b"\r\n") || self.buf.starts_with(b"\n") {
                let skip = if self.buf[0] == b'\r' { 2 } else { 1 };
                self.buf.advance(skip);
                return Ok(PartHeaders::default());
            }
            let mut raw = [httparse::EMPTY_HEADER; MAX_HEADER_COUNT];
            match httparse::parse_headers(&self.buf, &mut raw) {
                Ok(httparse::Status::Complete((used, _))) if used > MAX_PART_HEADERS => {
                    return Err(MultipartError::Malformed("part headers too large"));
                }
                Ok(httparse::Status::Complete((used, parsed))) => {
                    let headers = parsed
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).trim().to_owned(),
                            )
                        })
                        .collect();
                    self.buf.advance(used);
                    return Ok(PartHeaders(headers));
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(MultipartError::Malformed("invalid part headers")),
            }
            if self.buf.len() > MAX_PART_HEADERS {
                return Err(MultipartError::Malformed("part headers too large"));
            }
            if !self.fill().await? {
                return Err(MultipartError::Malformed("body ends inside part headers"));
            }
        }
    }

    /// The current part's whole body, refused past `limit` bytes (for small parts: JSON).
    pub async fn body_to_vec(&mut self, limit: usize) -> Result<Vec<u8>, MultipartError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.body_chunk().await? {
            if out.len() + chunk.len() > limit {
                return Err(MultipartError::Malformed("part too large"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The current part's body as a stream.
    pub fn body_stream(&mut self) -> impl Stream<Item = Result<Bytes, MultipartError>> + Send + '_
    where
        S: Send,
    {
        futures::stream::try_unfold(self, |reader| async move {
            Ok(reader.body_chunk().await?.map(|chunk| (chunk, reader)))
        })
    }
}

/// The start of a federation media answer: its first part, JSON metadata (an object, up to
/// `max_metadata` bytes, otherwise unused), then the headers of the second part, whose body
/// (the file) the reader is left at.
pub async fn read_head<S, E>(
    reader: &mut MultipartReader<S>,
    max_metadata: usize,
) -> Result<PartHeaders, MultipartError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    reader
        .next_part()
        .await?
        .ok_or(MultipartError::Malformed("no metadata part"))?;
    let metadata = reader.body_to_vec(max_metadata).await?;
    if !serde_json::from_slice::<serde_json::Value>(&metadata).is_ok_and(|v| v.is_object()) {
        return Err(MultipartError::Malformed("metadata is not a JSON object"));
    }
    reader
        .next_part()
        .await?
        .ok_or(MultipartError::Malformed("no content part"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Frames one file as the two-part body of a federation media answer.
pub struct MultipartWriter {
    boundary: String,
}

impl Default for MultipartWriter {
    fn default() -> Self {
        use rand::Rng;
        let boundary = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        MultipartWriter { boundary }
    }
}

impl MultipartWriter {
    /// The body's `Content-Type`.
    pub fn content_type(&self) -> String {
        format!("multipart/mixed; boundary={}", self.boundary)
    }

    /// Everything before the file's bytes: the metadata part and the file part's headers.
    pub fn head(&self, content_type: &str, content_disposition: &str) -> Bytes {
        let b = &self.boundary;
        Bytes::from(format!(
            "--{b}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{b}\r\n\
             Content-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n"
        ))
    }

    /// Everything after the file's bytes.
    pub fn tail(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split `body` into chunks of `size` bytes, as a network would.
    fn stream(body: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let chunks: Vec<_> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks)
    }

    async fn parse(body: &[u8], boundary: &str, size: usize) -> Vec<(PartHeaders, Vec<u8>)> {
        let mut reader = MultipartReader::new(stream(body, size), boundary);
        let mut parts = Vec::new();
        while let Some(headers) = reader.next_part().await.unwrap() {
            let body = reader.body_to_vec(1 << 20).await.unwrap();
            parts.push((headers, body));
        }
        parts
    }

    #[tokio::test]
    async fn written_bodies_read_back_at_any_chunking() {
        let w = MultipartWriter::default();
        let file: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = w.head("image/png", "inline; filename=\"a.png\"").to_vec();
        body.extend_from_slice(&file);
        body.extend_from_slice(&w.tail());
        let boundary = boundary(&w.content_type()).unwrap();
        for size in [1, 7, 100, 4096, 1 << 20] {
            let parts = parse(&body, &boundary, size).await;
            assert_eq!(parts.len(), 2, "chunk size {size}");
            assert_eq!(parts[0].0.get("content-type"), Some("application/json"));
            assert_eq!(parts[0].1, b"{}");
            assert_eq!(parts[1].0.get("Content-Type"), Some("image/png"));
            assert_eq!(
                parts[1].0.get("content-disposition"),
                Some("inline; filename=\"a.png\"")
            );
            assert_eq!(parts[1].1, file, "chunk size {size}");
        }
    }

    #[tokio::test]
    async fn lenient_forms_other_servers_send() {
        // Preamble CRLF, a Location part, no closing `--`, as ruma-based servers write it.
        let body = b"\r\n--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\n\
                     Location: https://cdn.example/f\r\n\r\n\r\n--xyz";
        let parts = parse(body, "xyz", 5).await;
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0.get("location"), Some("https://cdn.example/f"));
        assert!(parts[1].1.is_empty());
        // A part without headers, and bare LF line ends inside headers.
        let body = b"--b\r\n\r\n{}\r\n--b\r\nContent-Type: text/plain\n\nhi\r\n--b--";
        let parts = parse(body.as_slice(), "b", 3).await;
        assert_eq!(parts[0].1, b"{}");
        assert_eq!(parts[1].1, b"hi");
    }

    #[tokio::test]
    async fn truncated_or_bad_bodies_are_errors() {
        let mut reader = MultipartReader::new(stream(b"--b\r\n\r\n{}\r\n--b\r\n\r\nfile", 4), "b");
        reader.next_part().await.unwrap();
        reader.next_part().await.unwrap();
        assert!(reader.body_to_vec(100).await.is_err());
        let mut reader = MultipartReader::new(stream(b"--b\r\n\r\n0123456789\r\n--b--", 4), "b");
        reader.next_part().await.unwrap();
        assert!(reader.body_to_vec(5).await.is_err());
        assert!(boundary("application/json").is_err());
        assert!(boundary("multipart/mixed").is_err());
        assert_eq!(
            boundary("Multipart/Mixed; charset=x; boundary=\"ab c\"").unwrap(),
            "ab c"
        );
    }
}
