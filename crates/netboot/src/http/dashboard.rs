//! The read-only fleet dashboard `metal6 serve` shows at `/`: static files built into the
//! binary (no build step, no CDN, no front-end library), the fleet as JSON, and every node
//! event as it happens (server-sent events).
//!
//! - `GET /`, `GET /v1/ui/{dashboard.js,dashboard.css}`: the page.
//! - `GET /v1/fleet`: every inventory node with its labels, phase and times, and — when
//!   `serve --apply-state DIR` names the state dir of a `metal6 apply` — the orchestrator's
//!   state, wait reason, attempt and SLA for it (from `DIR/board.json`, which apply rewrites
//!   when it changes and at least every 5 s while it runs).
//! - `GET /v1/events/stream`: `text/event-stream`, one `data:` line per new node event; a
//!   subscriber that falls [`crate::events::FEED_CAPACITY`] events behind gets `event: resync`
//!   and reloads the fleet; a comment every 15 s keeps proxies from closing it.
//! - `GET /v1/emulation.svg`: the constellation picture a running `metal6 emulate run --draw`
//!   keeps current (`serve --emulation-svg FILE`).
//!
//! Nothing here is a secret: node tokens, join tokens and BMC credentials are in no event, no
//! page and no answer (the events API never held them). Optional Basic auth
//! (`--dashboard-user`, `--dashboard-password` by reference) guards these routes — the page,
//! apply's wait reasons, the stream and the picture. It does not hide the fleet's events:
//! serve's node API (`/v1/nodes`, timelines) stays open to whoever reaches serve, because
//! nodes and `apply` read it.
//!
//! Bounded: at most [`MAX_STREAMS`] event streams at once (more get 503), each holding one
//! connection slot.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{Body, HttpState, json, not_found, text};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");
/// `board.json` larger than this is not read (apply writes a few hundred bytes per node).
const MAX_BOARD_BYTES: u64 = 32 << 20;
/// The constellation picture larger than this is not served.
const MAX_SVG_BYTES: u64 = 64 << 20;
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Event streams at once: each holds a connection slot for as long as a page is open.
pub const MAX_STREAMS: usize = 256;

/// What the dashboard shows beyond the server's own events, and who may see it.
#[derive(Clone, Default)]
pub struct Dashboard {
    /// A `metal6 apply --state-dir`: its `board.json` carries each node's wait reason.
    pub apply_state: Option<PathBuf>,
    /// The SVG a running emulation keeps current.
    pub emulation_svg: Option<PathBuf>,
    /// Basic auth (user, password — resolved from its reference at start).
    pub auth: Option<(String, String)>,
    /// Event streams open now.
    pub streams: std::sync::Arc<AtomicUsize>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("apply_state", &self.apply_state)
            .field("emulation_svg", &self.emulation_svg)
            .field("auth", &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")))
            .finish_non_exhaustive()
    }
}

/// One open event stream; the count goes down when the stream is dropped.
struct StreamSlot(std::sync::Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Is this path one of the dashboard's?
pub fn is_dashboard(segs: &[&str]) -> bool {
    matches!(segs, [""] | ["v1", "ui", _] | ["v1", "fleet"] | ["v1", "events", "stream"] | ["v1", "emulation.svg"])
}

pub fn handle<B>(state: &HttpState, req: &Request<B>, segs: &[&str]) -> Response<Body> {
    if let Some((user, password)) = &state.dashboard.auth
        && !authorized(req, user, password)
    {
        let mut r = text(StatusCode::UNAUTHORIZED, "the dashboard needs a user and password\n".into(), "text/plain");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"metal6\""));
        return r;
    }
    let mut r = match segs {
        [""] => text(StatusCode::OK, INDEX.into(), "text/html; charset=utf-8"),
        ["v1", "ui", "dashboard.js"] => text(StatusCode::OK, SCRIPT.into(), "text/javascript; charset=utf-8"),
        ["v1", "ui", "dashboard.css"] => text(StatusCode::OK, STYLE.into(), "text/css; charset=utf-8"),
        ["v1", "fleet"] => json(StatusCode::OK, &fleet(state)),
        ["v1", "events", "stream"] => stream(state),
        ["v1", "emulation.svg"] => emulation(state),
        _ => not_found(),
    };
    // The page runs only its own script and style, and is framed by nobody.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Constant time in the length of what was sent.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized<B>(req: &Request<B>, user: &str, password: &str) -> bool {
    use base64::Engine;
    let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let Some((scheme, b64)) = v.trim().split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else { return false };
    let want = format!("{user}:{password}");
    same(&raw, want.as_bytes())
}

/// The orchestrator's rows by node, from `board.json`.
fn board(state: &HttpState) -> (Option<u64>, serde_json::Map<String, Value>) {
    let Some(dir) = &state.dashboard.apply_state else { return (None, serde_json::Map::new()) };
    let path = dir.join("board.json");
    // One open, read through a limit: the file is replaced (renamed over) while we read.
    let mut bytes = vec![];
    let read = std::fs::File::open(&path).and_then(|f| f.take(MAX_BOARD_BYTES + 1).read_to_end(&mut bytes));
    let doc: Option<Value> =
        read.ok().filter(|n| (*n as u64) <= MAX_BOARD_BYTES).and_then(|_| serde_json::from_slice(&bytes).ok());
    let Some(doc) = doc else { return (None, serde_json::Map::new()) };
    let mut rows = serde_json::Map::new();
    for r in doc["rows"].as_array().into_iter().flatten() {
        if let Some(n) = r["node"].as_str() {
            rows.insert(n.to_owned(), r.clone());
        }
    }
    (doc["written_ms"].as_u64().filter(|_| doc["running"] != false), rows)
}

fn fleet(state: &HttpState) -> Value {
    let (written, mut rows) = board(state);
    // `/v1/nodes`'s entries, with what the dashboard adds to each.
    let nodes: Vec<Value> = super::nodes(state)
        .into_iter()
        .zip(&state.inv.nodes)
        .map(|(mut v, n)| {
            v["segment"] = state.inv.site.segments[n.segment].name.clone().into();
            v["profile"] = n.profile.clone().into();
            v["labels"] = json!(n.labels);
            v["apply"] = rows.remove(&n.name).unwrap_or(Value::Null);
            v
        })
        .collect();
    json!({
        "now_ms": crate::events::now_ms(),
        "site": state.inv.site.name,
        "apply_board_ms": written,
        "emulation": state.dashboard.emulation_svg.is_some(),
        "nodes": nodes,
    })
}

fn stream(state: &HttpState) -> Response<Body> {
    let count = &state.dashboard.streams;
    if count.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        count.fetch_sub(1, Ordering::SeqCst);
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many event streams open\n".into(), "text/plain");
    }
    let slot = StreamSlot(count.clone());
    let rx = state.events.subscribe();
    let hello = Bytes::from_static(b"retry: 2000\n: metal6 node events\n\n");
    let s = futures_util::stream::unfold((rx, Some(hello), slot), |(mut rx, first, slot)| async move {
        if let Some(b) = first {
            return Some((Ok::<_, std::io::Error>(Frame::data(b)), (rx, None, slot)));
        }
        let chunk = match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
            Err(_) => Bytes::from_static(b": keepalive\n\n"),
            Ok(Ok(line)) => Bytes::from(format!("data: {line}\n\n")),
            Ok(Err(RecvError::Lagged(n))) => Bytes::from(format!("event: resync\ndata: {{\"missed\":{n}}}\n\n")),
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((Ok(Frame::data(chunk)), (rx, None, slot)))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(s)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r
}

fn emulation(state: &HttpState) -> Response<Body> {
    let Some(path) = &state.dashboard.emulation_svg else { return not_found() };
    // One open, read through a limit: the picture is replaced (renamed over) as links switch.
    let mut svg = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_SVG_BYTES + 1).read_to_string(&mut svg));
    match read {
        Ok(n) if (n as u64) <= MAX_SVG_BYTES => text(StatusCode::OK, svg, "image/svg+xml"),
        _ => not_found(),
    }
}
