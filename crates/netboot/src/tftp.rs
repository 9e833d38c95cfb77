//! TFTP for PXEv6 firmware: read-only, IPv6, from the artifact root, with blksize, tsize and
//! windowsize (RFC 2347, 2348, 2349, 7440; the protocol itself is `metal6-tftp`, without I/O).
//!
//! The listener (a tokio task on the server port) parses each request, admits it
//! ([`MAX_TRANSFERS`] in all, [`MAX_PER_SOURCE`] per client address) and hands it to a thread
//! of its own with a blocking socket connected to the client — the model of tftpd-hpa (a
//! process per transfer) and atftpd (a thread per transfer). In lock-step, where firmware
//! without windowsize spends its whole transfer, an ACK then wakes exactly the thread that
//! sends the next block: no reactor, executor or timer in between.
//!
//! Our rules sit where the file is opened: the same path checks as HTTP (no `..` in any
//! spelling, nothing outside the canonical root, no symlinks out), read-only (write requests
//! are refused), octet mode only (netascii would rewrite line ends of a binary; firmware
//! never asks for it), and each fetch recorded in the node's timeline. A client that stops
//! acknowledging is dropped after [`RETRY_TIMEOUT`] × ([`MAX_RETRIES`] + 1) = 18 s, whatever
//! timeout it asked for (the option is declined). A retransmitted request of a transfer in
//! progress is ignored (that transfer answers it). Malformed datagrams are dropped and counted
//! (`dropped.tftp-malformed`), never answered; refusals get a TFTP error and are counted.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metal6_inventory::Inventory;
use metal6_inventory::identity::{Clues, Identifier};
use metal6_tftp::{ErrorCode, Limits, Mode, Reply, Request, Sender, Step};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::EventStore;
use crate::http::files;
use crate::stats::{Stats, bump};

/// Transfers at once (each a thread, a socket and a file).
pub const MAX_TRANSFERS: usize = 256;
/// Transfers at once from one client address: firmware fetches one file at a time.
pub const MAX_PER_SOURCE: usize = 4;
/// Retransmission timeout; the client's own `timeout` option is declined.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(3);
pub const MAX_RETRIES: u32 = 5;
/// Blocks up to 1428 bytes keep a DATA packet in a 1500-byte MTU unfragmented; windows up to
/// 64 blocks (91 KiB in flight) fit the default socket buffers.
pub const LIMITS: Limits = Limits { max_blksize: 1428, max_windowsize: 64 };

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

impl std::fmt::Debug for TftpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpHandler").field("root", &self.root).finish_non_exhaustive()
    }
}

fn source_of(client: &SocketAddr) -> Ipv6Addr {
    match client.ip() {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

impl TftpHandler {
    /// The file a request names, under our rules; records the fetch in the node's timeline.
    fn open(&self, client: &SocketAddr, requested: &str) -> Result<(std::fs::File, u64), ErrorCode> {
        let rel = files::relative_path(requested).map_err(|_| ErrorCode::FileNotFound)?;
        let canonical = std::fs::canonicalize(self.root.join(&rel)).map_err(|_| ErrorCode::FileNotFound)?;
        files::check_inside(&self.root, &canonical).map_err(|_| ErrorCode::FileNotFound)?;
        let file = std::fs::File::open(&canonical).map_err(|_| ErrorCode::FileNotFound)?;
        let meta = file.metadata().map_err(|_| ErrorCode::FileNotFound)?;
        if !meta.is_file() {
            return Err(ErrorCode::FileNotFound);
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

    fn refuse(&self, reason: &str) {
        self.stats.update(|s| bump(&mut s.refused, reason));
    }
}

/// Peers with a transfer in progress: a request retransmitted while its transfer runs is
/// ignored. Entries are removed when the transfer's thread ends.
#[derive(Debug, Default)]
struct InFlight(Mutex<HashSet<SocketAddr>>);

struct InFlightGuard(Arc<InFlight>, SocketAddr);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.1);
    }
}

/// Serves TFTP on `addr` until `cancel`. Transfer threads notice `cancel` within one
/// retransmission timeout.
pub async fn run(addr: SocketAddr, handler: TftpHandler, cancel: CancellationToken) -> io::Result<()> {
    let socket = tokio::net::UdpSocket::bind(addr).await?;
    info!(%addr, "TFTP listening");
    let handler = Arc::new(handler);
    let in_flight = Arc::new(InFlight::default());
    // A request is at most a few hundred bytes; anything filling the buffer is not one.
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, peer) = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "tftp receive failed");
                    continue;
                }
            },
        };
        let request = match metal6_tftp::parse_request(&buf[..len]).ok().filter(|_| len < buf.len()) {
            Some(r) => r,
            None => {
                handler.stats.update(|s| bump(&mut s.dropped, "tftp-malformed"));
                continue;
            }
        };
        admit(&handler, &in_flight, addr.ip(), peer, request, &cancel);
    }
}

/// Admits a request and starts its transfer thread, or refuses it with a TFTP error.
fn admit(
    h: &Arc<TftpHandler>,
    in_flight: &Arc<InFlight>,
    local: IpAddr,
    peer: SocketAddr,
    req: Request,
    cancel: &CancellationToken,
) {
    if req.write {
        debug!(%peer, path = %req.filename, "tftp write refused: the server is read-only");
        h.refuse("tftp-write");
        return error_from_new_port(local, peer, ErrorCode::AccessViolation, "the server is read-only");
    }
    if req.mode != Mode::Octet {
        debug!(%peer, path = %req.filename, mode = ?req.mode, "tftp read refused: not octet mode");
        h.refuse("tftp-mode");
        return error_from_new_port(local, peer, ErrorCode::NotDefined, "octet (binary) mode only");
    }
    if !in_flight.0.lock().unwrap_or_else(PoisonError::into_inner).insert(peer) {
        return;
    }
    let guard = InFlightGuard(in_flight.clone(), peer);
    let slot = match h.active.claim(source_of(&peer)) {
        Ok(slot) => slot,
        Err(refused) => {
            let reason = match refused {
                crate::limits::Refused::Total => "tftp-busy",
                crate::limits::Refused::PerSource => "tftp-per-source",
            };
            // Counted; at debug level, or a flood of requests would flood the log too.
            debug!(%peer, path = %req.filename, reason, "tftp read refused: too many transfers");
            h.refuse(reason);
            drop(guard);
            return error_from_new_port(local, peer, ErrorCode::NotDefined, "server busy, try again");
        }
    };
    let (h2, cancel) = (h.clone(), cancel.clone());
    let spawned = std::thread::Builder::new().name("tftp".into()).stack_size(256 << 10).spawn(move || {
        let _held = (slot, guard);
        if let Err(e) = transfer(&h2, local, peer, &req, &cancel) {
            debug!(%peer, path = %req.filename, error = %e, "tftp transfer ended");
        }
    });
    if let Err(e) = spawned {
        warn!(%peer, error = %e, "tftp: no thread for a transfer");
        h.refuse("tftp-busy");
    }
}

/// Refusals of a request come from a port of their own, like any reply (RFC 1350's TID).
fn error_from_new_port(local: IpAddr, peer: SocketAddr, code: ErrorCode, msg: &str) {
    if let Ok(s) = UdpSocket::bind((local, 0)) {
        let _ = s.send_to(&metal6_tftp::error_packet(code, msg), peer);
    }
}

/// Why a transfer ended early.
#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error("refused: {0:?}")]
    Refused(ErrorCode),
    #[error("no ACK after {} retransmissions", MAX_RETRIES)]
    GaveUp,
    #[error("the client sent error {code}: {message}")]
    Client { code: u16, message: String },
    #[error("the server is stopping")]
    Cancelled,
    #[error("the file changed while it was sent")]
    FileChanged,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One read transfer, on its own socket connected to the client: the kernel drops datagrams
/// from any other address or port (RFC 1350's transfer IDs).
fn transfer(
    h: &TftpHandler,
    local: IpAddr,
    peer: SocketAddr,
    req: &Request,
    cancel: &CancellationToken,
) -> Result<(), TransferError> {
    let sock = UdpSocket::bind((local, 0))?;
    sock.connect(peer)?;
    let (file, len) = match h.open(&peer, &req.filename) {
        Ok(f) => f,
        Err(code) => {
            debug!(%peer, path = %req.filename, "tftp read refused");
            let _ = sock.send(&metal6_tftp::error_packet(code, "file not found"));
            return Err(TransferError::Refused(code));
        }
    };
    debug!(%peer, path = %req.filename, len, "tftp read");
    let neg = metal6_tftp::negotiate(&req.options, LIMITS, len);
    let mut sender = Sender::new(&neg, len, MAX_RETRIES);
    sock.set_read_timeout(Some(RETRY_TIMEOUT))?;
    let mut packet = vec![0u8; 4 + usize::from(neg.blksize)];
    let mut reply = [0u8; 1024];
    // The block whose DATA packet is in `packet` already, with its length: the one after the
    // window just sent is read while the client's ACK is on its way, so an ACK is answered
    // with a send alone (lock-step spends its whole transfer in that round trip).
    let mut ready: Option<(u64, usize)> = None;
    let mut step = sender.start();
    loop {
        match step {
            Step::Done => return Ok(()),
            Step::GiveUp => return Err(TransferError::GaveUp),
            Step::Send(blocks) => {
                let next = blocks.end;
                for block in blocks {
                    if block == 0 {
                        sock.send(neg.oack.as_deref().unwrap_or_default())?;
                        continue;
                    }
                    let n = match ready.take() {
                        Some((b, n)) if b == block => n,
                        _ => fill(&file, &sender, block, &mut packet)?,
                    };
                    sock.send(&packet[..4 + n])?;
                }
                if next > 0 && next <= sender.blocks() {
                    ready = Some((next, fill(&file, &sender, next, &mut packet)?));
                }
            }
            Step::Wait => {}
        }
        if cancel.is_cancelled() {
            return Err(TransferError::Cancelled);
        }
        step = match sock.recv(&mut reply) {
            Ok(n) => match metal6_tftp::parse_reply(&reply[..n]) {
                Reply::Ack(block) => sender.on_ack(block),
                Reply::Error { code, message } => return Err(TransferError::Client { code, message }),
                Reply::Other => Step::Wait,
            },
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => sender.on_timeout(),
            // ICMP port unreachable on the connected socket: the client is gone.
            Err(e) => return Err(e.into()),
        };
    }
}

/// Puts DATA block `block` into `packet` (header and data); returns the data length.
fn fill(file: &std::fs::File, sender: &Sender, block: u64, packet: &mut [u8]) -> Result<usize, TransferError> {
    let blksize = packet.len() - 4;
    let n = read_block(file, sender.block_range(block), &mut packet[4..])?;
    // Only the last block is short: anything else means the file changed size.
    if (n < blksize) != (block == sender.blocks()) {
        return Err(TransferError::FileChanged);
    }
    packet[..4].copy_from_slice(&metal6_tftp::data_header(Sender::wire_number(block)));
    Ok(n)
}

/// Reads up to `buf.len()` bytes of `range` (the block) from the file.
fn read_block(file: &std::fs::File, range: std::ops::Range<u64>, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], range.start + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
