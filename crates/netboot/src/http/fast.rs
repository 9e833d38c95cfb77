//! The artifact fast path: `GET|HEAD` of a file, answered on the connection itself with the
//! body sent by `sendfile(2)`, page cache → socket, without passing through user space.
//!
//! Why not hyper for this: hyper owns the socket for the whole connection and writes bodies
//! from user-space buffers, so every byte of a 1 GiB image was copied twice (page cache → our
//! buffer → socket) and `make bench-http` measured 0.65× nginx (which uses sendfile). Hyper
//! has no way to hand the socket to the caller for one response and take it back.
//!
//! So each connection starts here. Request heads are parsed with `httparse` (hyper's own
//! parser). As long as the requests are artifact fetches without a body, this module answers
//! them: the decision (path safety, validators, ranges, events) is `resolve_file`, shared with
//! the hyper path. The first request that is anything else (the events API, documents,
//! metrics, a request with a body, absolute-form targets) hands the connection, with the
//! bytes already read, to hyper for the rest of its life.
//!
//! Sending blocks a worker only if the file is not in the page cache (`sendfile` then reads
//! from disk): artifacts are few and hot, like nginx without `aio threads`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use super::{FileReply, HttpState};

/// A request head larger than this is refused (431), as hyper's default read buffer does.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Waiting for a request head (also the keep-alive idle limit), as on the hyper path.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that takes nothing from its socket for this long is dropped.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// After shutdown is asked for, a transfer in flight gets this long to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// What the next bytes on the connection are.
///
/// `pub` (in this private module), like [`Head`] and [`classify`], only so `files::fuzzing` can
/// re-export them to the fuzz target `http_head`.
#[derive(Debug)]
pub enum Next {
    /// An artifact request, `len` bytes of head.
    Artifact { req: Head, len: usize },
    /// Anything else: hyper takes over with everything read so far.
    Hyper,
    /// The peer closed or went idle between requests.
    Closed,
    /// A malformed or oversized head: answer with this status and close.
    Bad(StatusCode),
}

/// An artifact request's head, as the fast path answers it.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The request target without its query: what `files::relative_path` is given.
    pub path: String,
    pub headers: HeaderMap,
    pub keep_alive: bool,
    /// An HTTP/1.0 client keeps the connection only when the response says so.
    pub http10: bool,
}

/// Serves one accepted connection until it closes.
pub(super) async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: &Arc<HttpState>,
    cancel: &CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            n = tokio::time::timeout(HEAD_TIMEOUT, next_request(&mut stream, &mut buf)) => n.unwrap_or(Next::Closed),
        };
        match next {
            Next::Closed => return,
            Next::Hyper => break,
            Next::Bad(status) => {
                state.counters.requests.fetch_add(1, Ordering::Relaxed);
                state.counters.count_status(status);
                let _ = write_small(&mut stream, status, &HeaderMap::new(), b"bad request\n", false, Conn::Close).await;
                return;
            }
            Next::Artifact { req, len } => {
                buf.advance(len);
                state.counters.requests.fetch_add(1, Ordering::Relaxed);
                let span = tracing::debug_span!("http", method = %req.method, path = %req.path, %peer, fast = true);
                let sent = tokio::select! {
                    r = answer(&mut stream, state, peer, &req).instrument(span) => r,
                    () = async { cancel.cancelled().await; tokio::time::sleep(DRAIN).await } => return,
                };
                match sent {
                    Ok(()) if req.keep_alive && !cancel.is_cancelled() => {}
                    Ok(()) => return,
                    Err(e) => {
                        debug!(error = %e, "connection ended");
                        return;
                    }
                }
            }
        }
    }
    super::serve_hyper(Prefixed::new(buf, stream, STALL_TIMEOUT), peer, state, cancel, false).await;
}

/// Reads until `buf` holds a whole request head, then classifies it.
async fn next_request(stream: &mut TcpStream, buf: &mut BytesMut) -> Next {
    loop {
        if !buf.is_empty() {
            match classify(buf) {
                Ok(Some(next)) => return next,
                Ok(None) if buf.len() >= MAX_HEAD => return Next::Bad(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
                Ok(None) => {}
                Err(status) => return Next::Bad(status),
            }
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Next::Closed,
            Ok(_) => {}
        }
    }
}

/// Classifies the request head at the start of `buf` (bytes read from the peer, possibly more
/// than one request). `Ok(None)`: the head is not complete yet. Pure, so it is fuzzed
/// (`fuzz/fuzz_targets/http_head.rs`, through `files::fuzzing`).
pub fn classify(buf: &[u8]) -> Result<Option<Next>, StatusCode> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let method = match method {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return Ok(Some(Next::Hyper)),
    };
    // Origin-form only; the query is not part of a file's name.
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !super::is_artifact_path(path) {
        return Ok(Some(Next::Hyper));
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
        else {
            return Err(StatusCode::BAD_REQUEST);
        };
        headers.append(name, value);
    }
    // A request with a body (or an expectation) is hyper's to frame.
    // (Two Content-Length headers, even if the first says 0, are hyper's to judge.)
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.contains_key(header::EXPECT)
        || headers.get_all(header::CONTENT_LENGTH).iter().count() > 1
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Ok(Some(Next::Hyper));
    }
    let connection = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let has = |token: &str| connection.split(',').any(|t| t.trim().eq_ignore_ascii_case(token));
    let keep_alive = if version == 1 { !has("close") } else { has("keep-alive") };
    let http10 = version == 0;
    Ok(Some(Next::Artifact { req: Head { method, path: path.to_owned(), headers, keep_alive, http10 }, len }))
}

async fn answer(stream: &mut TcpStream, state: &HttpState, peer: SocketAddr, req: &Head) -> io::Result<()> {
    let head_only = req.method == Method::HEAD;
    match super::resolve_file(state, &req.method, &req.headers, peer, &req.path).await {
        FileReply::Done(resp) => {
            state.counters.count_status(resp.status());
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            write_small(stream, parts.status, &parts.headers, &body, head_only, req.conn()).await
        }
        FileReply::Body { head, file, start, count } => {
            state.counters.count_status(head.status());
            let mut out = status_line_and_headers(head.status(), head.headers(), req.conn());
            out.extend_from_slice(b"\r\n");
            write_timed(stream, &out).await?;
            send_range(stream, &file, start, count, &state.counters.bytes_sendfile).await
        }
    }
}

/// A response whose body is in memory (errors, 304, HEAD).
async fn write_small(
    stream: &mut TcpStream,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    head_only: bool,
    conn: Conn,
) -> io::Result<()> {
    let mut out = status_line_and_headers(status, headers, conn);
    // A HEAD answer carries the file's length already; 304 has no body (RFC 9110 §15.4.5).
    if !headers.contains_key(header::CONTENT_LENGTH) && status != StatusCode::NOT_MODIFIED {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && status != StatusCode::NOT_MODIFIED {
        out.extend_from_slice(body);
    }
    write_timed(stream, &out).await
}

/// A client that reads nothing for [`STALL_TIMEOUT`] loses its connection (and its permit).
async fn write_timed(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(STALL_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

fn status_line_and_headers(status: StatusCode, headers: &HeaderMap, conn: Conn) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("")).as_bytes(),
    );
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes());
    match conn {
        Conn::Close => out.extend_from_slice(b"connection: close\r\n"),
        Conn::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Conn::KeepAlive => {}
    }
    out
}

/// What the response says about the connection.
#[derive(Debug, Clone, Copy)]
enum Conn {
    KeepAlive,
    /// HTTP/1.0 keep-alive must be announced.
    KeepAlive10,
    Close,
}

impl Head {
    fn conn(&self) -> Conn {
        match (self.keep_alive, self.http10) {
            (false, _) => Conn::Close,
            (true, true) => Conn::KeepAlive10,
            (true, false) => Conn::KeepAlive,
        }
    }
}

/// `count` bytes of `file` from `start`, by sendfile on the non-blocking socket.
async fn send_range(
    stream: &TcpStream,
    file: &std::fs::File,
    start: u64,
    count: u64,
    sent_bytes: &AtomicU64,
) -> io::Result<()> {
    let end = start.saturating_add(count);
    let mut offset = i64::try_from(start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        let left = end.saturating_sub(offset.unsigned_abs());
        if left == 0 {
            return Ok(());
        }
        // Linux sends at most 0x7ffff000 bytes per call.
        let want = usize::try_from(left.min(0x7fff_f000)).unwrap_or(0x7fff_f000);
        tokio::time::timeout(STALL_TIMEOUT, stream.writable())
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream.as_fd(), file.as_fd(), Some(&mut offset), want)
                .map_err(io::Error::from)
        });
        match sent {
            // The file shrank under us: the promised length cannot be kept, so the connection
            // must end (the client sees a short body, not a wrong one).
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// The connection handed to hyper: first the bytes the fast path already read, then the socket.
/// Writes that make no progress for `stall` fail with `TimedOut` (hyper has read timeouts but
/// none for writing): a client that stops reading an API answer or a rendered document loses
/// its connection and its permit, as on the fast path.
pub(super) struct Prefixed {
    prefix: BytesMut,
    inner: TcpStream,
    stall: Duration,
    /// Armed while a write waits; dropped when one makes progress.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Prefixed {
    pub(super) fn new(prefix: BytesMut, inner: TcpStream, stall: Duration) -> Prefixed {
        Prefixed { prefix, inner, stall, deadline: None }
    }

    /// Passes a write's result through, arming the stall deadline while it is pending.
    fn stalled<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                let stall = self.stall;
                let d = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match d.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.deadline = None;
                        Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.deadline = None;
                ready
            }
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stalled(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stalled(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.stalled(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that stops reading: hyper's side of the connection gets `TimedOut` once writes
    /// have made no progress for the stall time, and a reading peer never does.
    #[tokio::test]
    async fn writes_to_a_peer_that_stopped_reading_time_out() {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut io = Prefixed::new(BytesMut::new(), server, Duration::from_millis(300));
        let chunk = vec![0u8; 1 << 16];
        let started = std::time::Instant::now();
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(10), io.write_all(&chunk)).await {
                Ok(Ok(())) => assert!(started.elapsed() < Duration::from_secs(10), "never stalled"),
                Ok(Err(e)) => break e,
                Err(_) => panic!("a write waited 10 s without timing out"),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(client);
    }

    fn kind(raw: &str) -> &'static str {
        match classify(raw.as_bytes()) {
            Ok(None) => "partial",
            Ok(Some(Next::Artifact { req, .. })) if req.keep_alive => "artifact",
            Ok(Some(Next::Artifact { .. })) => "artifact-close",
            Ok(Some(Next::Hyper)) => "hyper",
            Ok(Some(Next::Closed)) => "closed",
            Ok(Some(Next::Bad(_))) | Err(_) => "bad",
        }
    }

    #[test]
    fn requests_are_routed_by_their_head() {
        for (raw, want) in [
            ("GET /boot/x.efi HTTP/1.1\r\nHost: a\r\n\r\n", "artifact"),
            ("HEAD /images/d.raw?x=1 HTTP/1.1\r\n\r\n", "artifact"),
            ("GET /boot/x.efi HTTP/1.1\r\nConnection: Close\r\n\r\n", "artifact-close"),
            ("GET /boot/x.efi HTTP/1.0\r\n\r\n", "artifact-close"),
            ("GET /boot/x.efi HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "artifact"),
            ("GET /boot/x.efi HTTP/1.1\r\nHost: a\r\n", "partial"),
            ("GET /v1/nodes HTTP/1.1\r\n\r\n", "hyper"),
            ("GET /v1 HTTP/1.1\r\n\r\n", "hyper"),
            ("GET /metrics HTTP/1.1\r\n\r\n", "hyper"),
            ("POST /v1/nodes/a/events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", "hyper"),
            ("GET /boot/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "hyper"),
            ("GET /boot/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "hyper"),
            ("GET http://h/boot/x HTTP/1.1\r\n\r\n", "hyper"),
            ("GET /boot/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "artifact"),
            ("GET /boot/x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello", "hyper"),
            ("GARBAGE\r\n\r\n", "bad"),
            ("GET /x HTTP/1.1\r\nBad Header\r\n\r\n", "bad"),
        ] {
            assert_eq!(kind(raw), want, "{raw:?}");
        }
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(kind(&format!("GET /x HTTP/1.1\r\n{many}\r\n")), "bad");
    }
}
