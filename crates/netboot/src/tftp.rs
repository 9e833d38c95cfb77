//! TFTP for PXEv6 firmware: read-only, IPv6, from the artifact root, with blksize, tsize,
//! timeout (RFC 2347-2349) and windowsize (RFC 7440).
//!
//! Built on `async-tftp` (0.4): it handles IPv6 and every option above, including windowed
//! transfers, and takes a handler for opening files — which is where our rules live: the same
//! path checks as HTTP (no `..` in any spelling, nothing outside the canonical root, no
//! symlinks out), read-only (write requests are refused), and each fetch recorded in the
//! node's timeline. Its cost: it runs its own small `async-io` reactor beside tokio; the
//! service is cancelled by dropping its future.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use metal6_inventory::Inventory;
use metal6_inventory::identity::{Clues, Identifier};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::EventStore;
use crate::http::files;

pub struct TftpHandler {
    /// Canonical artifact root.
    pub root: PathBuf,
    pub inv: Arc<Inventory>,
    pub id: Identifier,
    pub events: Arc<EventStore>,
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
        let source = match client.ip() {
            IpAddr::V6(a) => a,
            IpAddr::V4(a) => a.to_ipv6_mapped(),
        };
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
    type Reader = blocking::Unblock<std::fs::File>;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        match self.open(client, path) {
            Ok((file, len)) => {
                debug!(%client, path = %path.display(), len, "tftp read");
                Ok((blocking::Unblock::new(file), Some(len)))
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
        .build()
        .await?;
    info!(%addr, "TFTP listening");
    tokio::select! {
        () = cancel.cancelled() => Ok(()),
        r = server.serve() => r,
    }
}
