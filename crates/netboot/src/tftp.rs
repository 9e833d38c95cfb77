//! TFTP for PXEv6 firmware: read-only, IPv6, from the artifact root, with blksize, tsize,
//! timeout (RFC 2347-2349) and windowsize (RFC 7440).
//!
//! Built on `async-tftp` (0.4): it handles IPv6 and every option above, including windowed
//! transfers, and takes a handler for opening files — which is where our rules live: the same
//! path checks as HTTP (no `..` in any spelling, nothing outside the canonical root, no
//! symlinks out), read-only (write requests are refused), and each fetch recorded in the
//! node's timeline. Its cost: it runs its own small `async-io` reactor beside tokio; the
//! service is cancelled by dropping its future.
//!
//! Bounded: at most [`MAX_TRANSFERS`] transfers at once and [`MAX_PER_SOURCE`] per client
//! address (each holds a socket and a file); a client that stops acknowledging is dropped
//! after [`RETRY_TIMEOUT`] × ([`MAX_RETRIES`] + 1) = 18 s, whatever timeout it asked for (the
//! library's defaults, 100 retries and the client's timeout of up to 255 s, held an
//! unacknowledged transfer for hours). A refused request gets a TFTP error, is logged and
//! counted.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use metal6_inventory::Inventory;
use metal6_inventory::identity::{Clues, Identifier};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::EventStore;
use crate::http::files;
use crate::stats::{Stats, bump};

/// Transfers at once (each a socket, a file and a blocking-pool reader).
pub const MAX_TRANSFERS: usize = 256;
/// Transfers at once from one client address: firmware fetches one file at a time.
pub const MAX_PER_SOURCE: usize = 4;
/// Retransmission timeout; the client's own `timeout` option is not honoured.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(3);
pub const MAX_RETRIES: u32 = 5;

pub struct TftpHandler {
    /// Canonical artifact root.
    pub root: PathBuf,
    pub inv: Arc<Inventory>,
    pub id: Identifier,
    pub events: Arc<EventStore>,
    pub stats: Arc<Stats>,
    /// Transfers in flight, in total and per client address.
    pub active: Arc<crate::limits::PerSource>,
}

/// The file being sent, with the slot it holds.
#[allow(missing_debug_implementations)] // blocking::Unblock has no Debug
pub struct Reader {
    file: blocking::Unblock<std::fs::File>,
    _slot: crate::limits::Slot,
}

impl futures_lite::AsyncRead for Reader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

fn source_of(client: &SocketAddr) -> Ipv6Addr {
    match client.ip() {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

impl std::fmt::Debug for TftpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpHandler").field("root", &self.root).finish_non_exhaustive()
    }
}

impl TftpHandler {
    fn open(&self, client: &SocketAddr, path: &Path) -> Result<(std::fs::File, u64), packet::Error> {
        let requested = path.to_str().ok_or(packet::Error::FileNotFound)?;
        let rel = files::relative_path(requested).map_err(|_| packet::Error::FileNotFound)?;
        let canonical = std::fs::canonicalize(self.root.join(&rel)).map_err(|_| packet::Error::FileNotFound)?;
        files::check_inside(&self.root, &canonical).map_err(|_| packet::Error::FileNotFound)?;
        let file = std::fs::File::open(&canonical).map_err(|_| packet::Error::FileNotFound)?;
        let meta = file.metadata().map_err(|_| packet::Error::FileNotFound)?;
        if !meta.is_file() {
            return Err(packet::Error::FileNotFound);
        }
        let source = source_of(client);
        if let Some((idx, _)) = self.id.identify(&Clues { source: Some(source), ..Clues::default() }) {
            let node = &self.inv.nodes[idx].name;
            self.events.record(
                "tftp",
                &serde_json::json!({"node": node, "kind": "boot-fetch", "path": requested, "bytes": meta.len()}),
            );
        }
        Ok((file, meta.len()))
    }
}

impl Handler for TftpHandler {
    type Reader = Reader;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let slot = match self.active.claim(source_of(client)) {
            Ok(slot) => slot,
            Err(refused) => {
                let reason = match refused {
                    crate::limits::Refused::Total => "tftp-busy",
                    crate::limits::Refused::PerSource => "tftp-per-source",
                };
                // Counted; at debug level, or a flood of requests would flood the log too.
                debug!(%client, path = %path.display(), reason, "tftp read refused: too many transfers");
                self.stats.update(|s| bump(&mut s.refused, reason));
                return Err(packet::Error::Msg("server busy, try again".into()));
            }
        };
        match self.open(client, path) {
            Ok((file, len)) => {
                debug!(%client, path = %path.display(), len, "tftp read");
                Ok((Reader { file: blocking::Unblock::new(file), _slot: slot }, Some(len)))
            }
            Err(e) => {
                debug!(%client, path = %path.display(), "tftp read refused");
                Err(e)
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        warn!(%client, path = %path.display(), "tftp write refused: the server is read-only");
        Err(packet::Error::PermissionDenied)
    }
}

pub async fn run(addr: SocketAddr, handler: TftpHandler, cancel: CancellationToken) -> Result<(), async_tftp::Error> {
    // Windows up to 64 blocks; blocks up to 1428 bytes keep a 1500-byte MTU unfragmented.
    let server = TftpServerBuilder::with_handler(handler)
        .bind(addr)
        .block_size_limit(1428)
        .window_size_limit(64)
        .timeout(RETRY_TIMEOUT)
        .ignore_client_timeout()
        .max_send_retries(MAX_RETRIES)
        .build()
        .await?;
    info!(%addr, "TFTP listening");
    tokio::select! {
        () = cancel.cancelled() => Ok(()),
        r = server.serve() => r,
    }
}
