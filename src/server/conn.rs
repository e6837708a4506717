//! What one connection may take of the server, below HTTP: how long it may sit idle, how
//! many one address may hold, and a Matrix error body on the answers hyper writes by itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::StatusCode;
use ruma::api::error::ErrorKind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When a connection last moved a byte and how many of its requests are being answered.
/// A connection with nothing in flight and no byte either way for the idle timeout is
/// closed: for HTTP/1 hyper's own header timeout does as much between requests, but an
/// HTTP/2 connection (whose client may open streams at any time) would otherwise be held
/// for good, as would one that never sends a byte (hyper's protocol detection waits for the
/// first without a timeout).
pub(super) struct Activity {
    born: Instant,
    /// Milliseconds after `born` of the last byte read or written, or request finished.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

/// One request being answered; finished when dropped (answered, or abandoned by the client).
pub(super) struct InFlight(Arc<Activity>);

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Ends once the connection has been idle for `idle`; never while a request is in
    /// flight (a long-polling `/sync` moves no byte for its whole wait).
    pub(super) async fn idle(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet = self.born.elapsed().saturating_sub(last);
            if quiet >= idle && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(idle.saturating_sub(quiet).max(Duration::from_millis(100))).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream: notes its activity, and puts a Matrix error body on the answers
/// hyper writes by itself to a request it cannot parse (400, 414 URI too long, 431 headers
/// too large), which otherwise carry no body at all. hyper closes the connection after
/// such an answer, so the rewritten answer says `connection: close` and nothing written
/// after it is sent.
pub(super) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    rewrite: Rewrite,
}

enum Rewrite {
    /// Writes pass through.
    Off,
    /// Writing `bytes` in place of a write of `claimed` bytes.
    Replacing {
        bytes: Vec<u8>,
        written: usize,
        claimed: usize,
    },
    /// The replacement is out; later writes are dropped.
    Done,
}

impl<T> Watched<T> {
    pub(super) fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        Watched {
            inner,
            activity,
            rewrite: Rewrite::Off,
        }
    }
}

/// The status of a response head that hyper wrote for a request it could not parse: one of
/// its automatic statuses with an empty body. Every answer of ours with these statuses
/// carries a Matrix error body, so never has `content-length: 0`.
fn automatic_error(head: &[u8]) -> Option<StatusCode> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => StatusCode::BAD_REQUEST,
        b"414 " => StatusCode::URI_TOO_LONG,
        b"431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    // The head up to the blank line, with its last header's line end.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 2;
    let lower = head[..end].to_ascii_lowercase();
    let empty = b"\r\ncontent-length: 0\r\n";
    lower
        .windows(empty.len())
        .any(|w| w == empty)
        .then_some(status)
}

/// The answer written instead: the same status, with a Matrix error.
fn matrix_answer(status: StatusCode) -> Vec<u8> {
    let (kind, message) = match status {
        StatusCode::URI_TOO_LONG => (ErrorKind::TooLarge, "The request URI is too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            (ErrorKind::TooLarge, "The request's headers are too large")
        }
        _ => (ErrorKind::Unknown, "The request is not well-formed HTTP"),
    };
    let body =
        serde_json::json!({"errcode": kind.errcode().to_string(), "error": message}).to_string();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    /// The write of `first` (whose whole write is `total` bytes), rewritten when it is an
    /// automatic error answer; `None` when it passes through.
    fn poll_rewritten(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        total: usize,
    ) -> Option<Poll<std::io::Result<usize>>> {
        if let Rewrite::Off = self.rewrite {
            let status = automatic_error(first)?;
            tracing::info!(status = status.as_u16(), "request refused before parsing");
            self.rewrite = Rewrite::Replacing {
                bytes: matrix_answer(status),
                written: 0,
                claimed: total,
            };
        }
        Some(match &mut self.rewrite {
            Rewrite::Off => return None,
            Rewrite::Done => Poll::Ready(Ok(total)),
            Rewrite::Replacing {
                bytes,
                written,
                claimed,
            } => {
                while *written < bytes.len() {
                    match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                        Poll::Ready(Ok(0)) => {
                            return Some(Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())));
                        }
                        Poll::Ready(Ok(n)) => *written += n,
                        Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                        Poll::Pending => return Some(Poll::Pending),
                    }
                }
                let claimed = *claimed;
                self.rewrite = Rewrite::Done;
                Poll::Ready(Ok(claimed))
            }
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.touch();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(p) = self.poll_rewritten(cx, data, data.len()) {
            return p;
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, data))?;
        self.activity.touch();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let total = bufs.iter().map(|b| b.len()).sum();
        if let Some(p) = self.poll_rewritten(cx, first, total) {
            return p;
        }
        let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.activity.touch();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Open connections per client address, for the per-address cap.
#[derive(Default)]
pub(super) struct OpenConnections(parking_lot::Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted when dropped.
pub(super) struct Counted {
    open: Arc<OpenConnections>,
    ip: IpAddr,
}

impl OpenConnections {
    /// Count a new connection from `ip`, unless `cap` are already open (0: no cap).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Counted> {
        let mut open = self.0.lock();
        let n = open.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(Counted {
            open: self.clone(),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.open.0.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_bodiless_answers_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
                          date: Mon, 07 Dec 2026 00:00:00 GMT\r\n\r\n";
        assert_eq!(
            automatic_error(hyper_431),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                     content-length: 41\r\n\r\n";
        assert_eq!(automatic_error(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_error(ok), None);
        let answer = String::from_utf8(matrix_answer(StatusCode::URI_TOO_LONG)).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{answer}"
        );
        assert!(answer.contains(r#""errcode":"M_TOO_LARGE""#), "{answer}");
    }
}
