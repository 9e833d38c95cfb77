//! The HTTP service: boot artifacts for firmware and installers, the node events API and
//! Prometheus metrics, on the boot server's address.
//!
//! - `GET|HEAD /<path>`: a file under the artifact root (`--artifacts`), streamed in 192 KiB
//!   chunks (memory stays flat whatever the file size), with Range (single range), ETag,
//!   Last-Modified, If-None-Match / If-Modified-Since (304) and If-Range. Traversal in any
//!   spelling and symlinks out of the root are a 404.
//! - `GET /v1/nodes`: every inventory node with its phase; `GET /v1/nodes/NAME/timeline`.
//! - `POST /v1/nodes/NAME/events`: a JSON object from the node itself — accepted only from the
//!   node's inventory address or with its token (`?token=`); anyone else gets 403.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /`, `/v1/fleet`, `/v1/events/stream`, …: the read-only fleet dashboard (`dashboard`).
//!
//! Which node asks is answered by the inventory's identifier (the source address DHCPv6 gave
//! it); a node's boot-file fetch becomes a `boot-fetch` event in its timeline.

pub mod dashboard;
mod fast;
mod ffdhe;
pub mod files;
pub mod tls;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metal6_inventory::Inventory;
use metal6_inventory::identity::{Clues, Identifier};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::events::EventStore;
use crate::stats::Stats;
use files::{RangeReq, Refusal};

type Body = BoxBody<Bytes, std::io::Error>;

/// At most this many connections are served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4096;
/// Connections at once from one address: a node fetches a few files in parallel at most, so
/// one host cannot take every slot (and every descriptor) from the others.
pub const MAX_PER_SOURCE: usize = 64;
/// Reading a request body (events, at most 64 KiB) takes at most this long.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
// One read buffer per stream: 100 concurrent 256 KiB streams measured 79 MB peak RSS, over
// the 64 MiB budget; `make bench-http` measures this size against nginx.
const CHUNK: usize = 192 * 1024;
const MAX_EVENT_BODY: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct HttpCounters {
    pub requests: AtomicU64,
    /// File body bytes promised in responses, on either path.
    pub bytes_sent: AtomicU64,
    /// File body bytes actually sent by the sendfile fast path.
    pub bytes_sendfile: AtomicU64,
    pub status_2xx: AtomicU64,
    pub status_3xx: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
}

impl HttpCounters {
    fn count_status(&self, status: StatusCode) {
        let counter = match status.as_u16() {
            200..=299 => &self.status_2xx,
            300..=399 => &self.status_3xx,
            400..=499 => &self.status_4xx,
            _ => &self.status_5xx,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct HttpState {
    pub inv: Arc<Inventory>,
    pub id: Identifier,
    /// Canonical artifact root; `None` serves no files.
    pub artifacts: Option<PathBuf>,
    /// `metal6 cluster render` output; `None` serves no cluster files.
    pub cluster_dir: Option<PathBuf>,
    pub events: Arc<EventStore>,
    pub stats: Arc<Stats>,
    pub counters: HttpCounters,
    /// Per-node tokens, one per install (`tokens`).
    pub tokens: crate::tokens::NodeTokens,
    /// Stale tokens already reported (node, install), bounded.
    pub conflicts: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
    /// The fleet dashboard's sources and access (`dashboard`).
    pub dashboard: dashboard::Dashboard,
}

impl HttpState {
    /// True the first time this node's stale install is seen (the set is cleared at 4,096).
    fn conflicts_seen(&self, node: &str, install: u64) -> bool {
        let mut seen = self.conflicts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= 4096 {
            seen.clear();
        }
        seen.insert((node.to_owned(), install))
    }
}

pub async fn run(listener: TcpListener, state: Arc<HttpState>, cancel: CancellationToken) {
    let (st, cn) = (state.clone(), cancel.clone());
    accept_loop(listener, &state, &cancel, "http-per-source", move |stream, peer| {
        let (state, cancel) = (st.clone(), cn.clone());
        async move { fast::serve_connection(stream, peer, &state, &cancel).await }
    })
    .await;
}

/// Accepts connections until cancelled and serves each in a task of its own: at most
/// [`MAX_CONNECTIONS`] at once (more wait in the listen backlog) and [`MAX_PER_SOURCE`] from
/// one address (more are closed at once and counted under `refused.<refused>`). Shared by
/// HTTP and HTTPS.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    state: &Arc<HttpState>,
    cancel: &CancellationToken,
    refused: &'static str,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // The total is the semaphore's; only the per-source count is this limiter's.
    let per_source = crate::limits::PerSource::new(MAX_PER_SOURCE, usize::MAX);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                // Out of file descriptors (EMFILE) repeats at once: pause instead of spinning.
                Err(e) => { warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(100)).await; continue; }
            },
        };
        let Ok(source) = per_source.claim(source_ip(peer)) else {
            // Closed at once (the client sees a reset or EOF); counted, logged at debug since a
            // flood would otherwise flood the log too.
            debug!(%peer, "connection refused: too many from this address");
            state.stats.update(|s| crate::stats::bump(&mut s.refused, refused));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = serve(stream, peer);
        conns.spawn(async move {
            let _permit = permit;
            let _source = source;
            conn.await;
        });
        // Reap finished connections so the set stays small; a panicked one is logged by the
        // panic hook and counted, and takes nothing else down.
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// Serves the rest of a connection with hyper (everything but artifact fetches, see `fast`).
async fn serve_hyper<I>(io: I, peer: SocketAddr, state: &Arc<HttpState>, cancel: &CancellationToken, tls: bool)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req, peer, tls).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { debug!(%peer, error = %e, "connection ended") },
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

fn source_ip(peer: SocketAddr) -> Ipv6Addr {
    match peer.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(a, |v4| v4.to_ipv6_mapped()),
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}

async fn handle(state: &HttpState, req: Request<Incoming>, peer: SocketAddr, tls: bool) -> Response<Body> {
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    let span = tracing::debug_span!("http", method = %req.method(), path = %path, peer = %peer);
    let resp = route(state, req, peer, &path, tls).instrument(span).await;
    state.counters.count_status(resp.status());
    resp
}

async fn route(state: &HttpState, req: Request<Incoming>, peer: SocketAddr, path: &str, tls: bool) -> Response<Body> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // A node whose profile says `https` gets its documents (they carry its token) and reports
    // its events over HTTPS only: plain HTTP would hand them to whoever is on the path.
    if let ["v1", "nodes", name, what, ..] = segs.as_slice()
        && *what != "timeline"
        && !tls
        && let Some(node) = state.inv.node(name).filter(|n| state.inv.profile_of(n).https)
    {
        let base = state.inv.server_base(node);
        return text(
            StatusCode::FORBIDDEN,
            format!("{name} is an HTTPS node (its profile says https): use {base}\n"),
            "text/plain",
        );
    }
    if req.method() == Method::GET && dashboard::is_dashboard(&segs) {
        return dashboard::handle(state, &req, &segs);
    }
    match (req.method(), segs.as_slice()) {
        (&Method::GET, ["metrics"]) => text(StatusCode::OK, crate::metrics::render(state), "text/plain; version=0.0.4"),
        (&Method::GET, ["v1", "nodes"]) => json(StatusCode::OK, &nodes(state)),
        (&Method::GET, ["v1", "nodes", name, "timeline"]) => match state.inv.node(name) {
            Some(_) => {
                let since = req
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since_ms=")))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                json(StatusCode::OK, &state.events.timeline_since(name, since))
            }
            None => not_found(),
        },
        (&Method::POST, ["v1", "nodes", name, "events"]) => post_event(state, req, peer, name).await,
        (&Method::GET, ["v1", "nodes", name, doc @ ("ipxe" | "plan.json" | "network")]) => {
            node_document(state, &req, peer, name, doc).await
        }
        (&Method::GET, ["v1", "nodes", name, "cluster", file]) => cluster_file(state, &req, peer, name, file).await,
        (&Method::GET | &Method::HEAD, ["v1", ..]) => not_found(),
        (&Method::GET | &Method::HEAD, _) if is_artifact_path(path) => serve_file(state, &req, peer, path).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into(), "text/plain"),
    }
}

pub(super) fn nodes(state: &HttpState) -> Vec<serde_json::Value> {
    state
        .inv
        .nodes
        .iter()
        .map(|n| {
            let p = state.events.phase(&n.name);
            serde_json::json!({
                "name": n.name,
                "address": n.address,
                "mac": n.boot_mac(),
                "phase": p.as_ref().map_or("waiting", |p| p.phase.as_str()),
                "since_ms": p.as_ref().map(|p| p.since_ms),
                "last_event_ms": p.as_ref().map(|p| p.last_event_ms),
                "events": p.as_ref().map_or(0, |p| p.events),
            })
        })
        .collect()
}

/// How a request proved it comes from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// From the node's inventory address (what a spoofer on the segment can also have).
    Address,
    /// With the token of the node's current install.
    Token,
    /// With the pre-rotation token of a node that has had no plan since (see `tokens`).
    Legacy,
    Denied,
}

/// Only the node itself may report its events or fetch its documents: from its inventory
/// address, or with its current token. A token of an earlier install is refused whatever the
/// address, and recorded: someone fetched a plan for this node since this host did, so two
/// hosts claim one identity.
fn authorized<B>(state: &HttpState, req: &Request<B>, peer: SocketAddr, name: &str) -> Auth {
    let Some(node) = state.inv.node(name) else { return Auth::Denied };
    let token = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if let Some(t) = token {
        match state.tokens.check(name, t) {
            crate::tokens::Check::Current => return Auth::Token,
            crate::tokens::Check::Legacy => return Auth::Legacy,
            crate::tokens::Check::Stale { presented, current } => {
                state.stats.update(|s| s.identity_conflicts += 1);
                // Counted every time; said (log and timeline) once per stale token, or whoever
                // holds one could flood both.
                if !state.conflicts_seen(name, presented) {
                    return Auth::Denied;
                }
                warn!(
                    node = name, %peer, presented, current = current.install, issued_to = %current.issued_to,
                    "a token of an earlier install: another host fetched this node's plan since; two hosts claim it"
                );
                state.events.record(
                    "http",
                    &serde_json::json!({
                        "node": name, "kind": "identity-conflict", "from": source_ip(peer),
                        "presented_install": presented, "current_install": current.install,
                        "current_issued_to": current.issued_to, "current_issued_ms": current.issued_ms,
                    }),
                );
                return Auth::Denied;
            }
            crate::tokens::Check::Invalid => return Auth::Denied,
        }
    }
    if source_ip(peer) == node.address { Auth::Address } else { Auth::Denied }
}

/// Per-node documents carry the node's token and its identity: only that node gets them.
async fn node_document(
    state: &HttpState,
    req: &Request<Incoming>,
    peer: SocketAddr,
    name: &str,
    doc: &str,
) -> Response<Body> {
    let Some(node) = state.inv.node(name) else { return not_found() };
    if authorized(state, req, peer, name) == Auth::Denied {
        return text(StatusCode::FORBIDDEN, "documents of a node are served only to that node\n".into(), "text/plain");
    }
    // The plan starts an install: it carries a fresh token, and the previous one stops
    // working (see `tokens`). The other documents carry no secret.
    let token = if doc == "plan.json" {
        // The issue syncs a file: not on an async worker's time.
        let issued = tokio::task::block_in_place(|| state.tokens.issue(name, source_ip(peer), crate::events::now_ms()));
        match issued {
            Ok((issued, token)) => {
                info!(node = name, install = issued.install, to = %issued.issued_to, "plan issued: a new install and token");
                state.events.record(
                    "http",
                    &serde_json::json!({"node": name, "kind": "token-issued", "install": issued.install, "to": issued.issued_to}),
                );
                token
            }
            Err(crate::tokens::IssueError::TooSoon) => {
                let mut r = text(StatusCode::TOO_MANY_REQUESTS, "one plan a second per node\n".into(), "text/plain");
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            Err(e) => {
                warn!(error = %crate::error_chain(&e), node = name, "cannot record the new install's token; plan withheld");
                return internal();
            }
        }
    } else {
        String::new()
    };
    let image = &state.inv.profile_of(node).image;
    let sha = image_sha256(state, image).await;
    let cx = metal6_render::Context { token: &token, image_sha256: sha.as_deref() };
    let (rendered, ctype) = match doc {
        "ipxe" => (metal6_render::ipxe_script(&state.inv, node), "text/plain; charset=utf-8"),
        "plan.json" => (metal6_render::installer_plan(&state.inv, node, &cx), "application/json"),
        _ => (metal6_render::network_unit(&state.inv, node), "text/plain; charset=utf-8"),
    };
    match rendered {
        Ok(body) => {
            state.events.record("http", &serde_json::json!({"node": name, "kind": "document", "document": doc}));
            text(StatusCode::OK, body, ctype)
        }
        Err(e) => {
            warn!(error = %e, "render failed");
            internal()
        }
    }
}

/// A node's cluster-stage file from `--cluster-dir`, only to that node: the kubeadm files hold
/// the join token. The names are a fixed list (no paths from the request reach the disk).
async fn cluster_file(
    state: &HttpState,
    req: &Request<Incoming>,
    peer: SocketAddr,
    name: &str,
    file: &str,
) -> Response<Body> {
    let (Some(dir), Some(_)) = (&state.cluster_dir, state.inv.node(name)) else { return not_found() };
    // They hold the join token (and a control plane's, the certificate key): the address
    // alone, which a spoofer can take, is not enough; the current install's token is needed.
    if authorized(state, req, peer, name) != Auth::Token {
        return text(
            StatusCode::FORBIDDEN,
            "cluster files of a node are served only to that node, with its token\n".into(),
            "text/plain",
        );
    }
    let path = match file {
        "kubeadm-init.yaml" | "kubeadm-join.yaml" | "10-metal6-pods.conflist" | "pod-routes.conf" => {
            dir.join("nodes").join(name).join(file)
        }
        "containerd.toml" => dir.join("containerd/config.toml"),
        // The workload the first control plane applies (no secrets, the same for every node).
        "multus-thick.yaml" => dir.join("multus/multus-thick.yaml"),
        "nads.yaml" => dir.join("emulation/nads.yaml"),
        _ => return not_found(),
    };
    match tokio::fs::read_to_string(&path).await {
        Ok(body) => {
            state.events.record("http", &serde_json::json!({"node": name, "kind": "cluster-fetch", "file": file}));
            text(StatusCode::OK, body, "text/plain; charset=utf-8")
        }
        Err(_) => not_found(),
    }
}

/// The image digest the image builder wrote next to the image (`images/NAME/disk.raw.sha256`).
async fn image_sha256(state: &HttpState, image: &str) -> Option<String> {
    let root = state.artifacts.as_ref()?;
    let text = tokio::fs::read_to_string(root.join("images").join(image).join("disk.raw.sha256")).await.ok()?;
    text.split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// How long a node's report waits for the shared state's commit before it is told to retry.
const SHARED_EVENT_TIMEOUT: Duration = Duration::from_secs(5);

async fn post_event(state: &HttpState, req: Request<Incoming>, peer: SocketAddr, name: &str) -> Response<Body> {
    if state.inv.node(name).is_none() {
        return not_found();
    }
    if authorized(state, &req, peer, name) == Auth::Denied {
        return text(StatusCode::FORBIDDEN, "only the node itself may post its events\n".into(), "text/plain");
    }
    // A body trickled a byte at a time must not hold a connection slot for ever.
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_EVENT_BODY).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "event too large or truncated\n".into(), "text/plain");
        }
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the event body took too long\n".into(), "text/plain"),
    };
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return text(StatusCode::BAD_REQUEST, "expected a JSON object\n".into(), "text/plain");
    };
    // A NUL in a string is valid JSON but no PostgreSQL `jsonb` takes it (a shared state).
    if body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return text(StatusCode::BAD_REQUEST, "NUL characters are not accepted in events\n".into(), "text/plain");
    }
    if !fields.get("kind").or_else(|| fields.get("phase")).is_some_and(serde_json::Value::is_string) {
        return text(StatusCode::BAD_REQUEST, "an event needs a string `kind` or `phase`\n".into(), "text/plain");
    }
    fields.insert("node".into(), name.into());
    fields.entry("kind").or_insert_with(|| "phase".into());
    // The node's own id for the report (the installer makes one per event and keeps it across
    // retries): anything else is dropped rather than trusted as a key.
    let id_ok = |v: &serde_json::Value| {
        v.as_str().is_some_and(|s| {
            (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    if !fields.get("id").is_none_or(id_ok) {
        fields.remove("id");
    }
    // On a shared state, 202 means committed there too: a node told otherwise retries.
    if let Some(committed) = state.events.record_durable("node", fields) {
        let ok = matches!(tokio::time::timeout(SHARED_EVENT_TIMEOUT, committed).await, Ok(Ok(true)));
        if !ok {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the shared state did not take the event; retry\n".into(),
                "text/plain",
            );
        }
    }
    text(StatusCode::ACCEPTED, "recorded\n".into(), "text/plain")
}

/// What an artifact request gets: a complete (small) response, or headers plus a byte range of
/// an open file. Both connection paths (hyper's and the sendfile fast path) send it, so the
/// rules (paths, validators, ranges, events) are decided once.
pub(crate) enum FileReply {
    Done(Response<Body>),
    Body { head: Response<()>, file: std::fs::File, start: u64, count: u64 },
}

/// Whether `GET|HEAD path` names an artifact (and not the API or metrics).
pub(crate) fn is_artifact_path(path: &str) -> bool {
    // `/` is the dashboard.
    path.starts_with('/') && path != "/" && path != "/metrics" && path != "/v1" && !path.starts_with("/v1/")
}

pub(crate) async fn resolve_file(
    state: &HttpState,
    method: &Method,
    h: &header::HeaderMap,
    peer: SocketAddr,
    path: &str,
) -> FileReply {
    use FileReply::Done;
    let Some(root) = &state.artifacts else { return Done(not_found()) };
    let rel = match files::relative_path(path) {
        Ok(r) => r,
        Err(_) => return Done(refuse(path, Refusal::Traversal)),
    };
    let full = root.join(&rel);
    // Canonicalize after joining: symlinks (and anything else) pointing out of the root fail.
    let canonical = match tokio::fs::canonicalize(&full).await {
        Ok(c) => c,
        Err(_) => return Done(not_found()),
    };
    if let Err(r) = files::check_inside(root, &canonical) {
        return Done(refuse(path, r));
    }
    let Ok(file) = tokio::fs::File::open(&canonical).await else { return Done(not_found()) };
    let Ok(meta) = file.metadata().await else { return Done(not_found()) };
    if !meta.is_file() {
        return Done(not_found());
    }
    let len = meta.len();
    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
    let etag = files::etag(len, modified);
    let get = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, files::content_type(&rel));
    if files::not_modified(get(header::IF_NONE_MATCH), get(header::IF_MODIFIED_SINCE), &etag, modified) {
        return Done(builder.status(StatusCode::NOT_MODIFIED).body(empty()).unwrap_or_else(|_| internal()));
    }
    let range = if files::if_range_allows(get(header::IF_RANGE), &etag, modified) {
        files::parse_range(get(header::RANGE), len)
    } else {
        RangeReq::Full
    };
    let (status, start, count) = match range {
        RangeReq::Full => (StatusCode::OK, 0, len),
        RangeReq::Part(a, b) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        RangeReq::Unsatisfiable => {
            return Done(
                builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(empty())
                    .unwrap_or_else(|_| internal()),
            );
        }
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, count);
    let head = method == Method::HEAD;
    record_boot_fetch(state, peer, path, head, status, count);
    if head {
        return Done(builder.body(empty()).unwrap_or_else(|_| internal()));
    }
    state.counters.bytes_sent.fetch_add(count, Ordering::Relaxed);
    match builder.body(()) {
        Ok(head) => FileReply::Body { head, file: file.into_std().await, start, count },
        Err(_) => Done(internal()),
    }
}

/// The hyper path: the file range as a body stream of `CHUNK`-sized reads.
async fn serve_file(state: &HttpState, req: &Request<Incoming>, peer: SocketAddr, path: &str) -> Response<Body> {
    let (head, file, start, count) = match resolve_file(state, req.method(), req.headers(), peer, path).await {
        FileReply::Done(r) => return r,
        FileReply::Body { head, file, start, count } => (head, file, start, count),
    };
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return internal();
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), CHUNK).map_ok(Frame::data);
    let (parts, ()) = head.into_parts();
    Response::from_parts(parts, BodyExt::boxed(StreamBody::new(stream)))
}

/// A node fetching a file is a step of its boot: record it in its timeline.
fn record_boot_fetch(state: &HttpState, peer: SocketAddr, path: &str, head: bool, status: StatusCode, bytes: u64) {
    let Some((idx, _)) = state.id.identify(&Clues { source: Some(source_ip(peer)), ..Clues::default() }) else {
        return;
    };
    if head {
        return;
    }
    let node = &state.inv.nodes[idx].name;
    state.events.record("http", &serde_json::json!({"node": node, "kind": "boot-fetch", "path": path, "status": status.as_u16(), "bytes": bytes}));
}

fn refuse(path: &str, why: Refusal) -> Response<Body> {
    debug!(path, ?why, "refused");
    not_found()
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never: Infallible| match never {}).boxed()
}

fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    match serde_json::to_string_pretty(v) {
        Ok(mut s) => {
            s.push('\n');
            text(status, s, "application/json")
        }
        Err(_) => internal(),
    }
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain")
}

fn internal() -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into(), "text/plain")
}
