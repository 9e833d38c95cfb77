//! TFTP for a read-only boot server, without I/O: the packet codec (RFC 1350), option
//! negotiation (blksize RFC 2348, tsize and timeout RFC 2349, windowsize RFC 7440) and the
//! sender's state machine — which blocks to send, what an ACK or a timeout means. The server
//! (`metal6-netboot`'s `tftp`) owns sockets, files and threads and asks this crate what to do.
//!
//! Why not a library: metal6 served TFTP with `async-tftp` 0.4 until its lock-step transfers
//! measured at about half of tftpd-hpa's rate (`make bench-tftp`). Every block crossed three
//! schedulers — async-io's reactor thread, the library's own executor and tokio — and re-armed
//! a timer; it also served `netascii` requests as octet bytes without saying so. What a boot
//! server needs is small and fully specified, so it lives here, tested without sockets.
//!
//! Block numbers are 16 bits on the wire and roll over to 0 after 65535 (what tftpd-hpa, iPXE
//! and EDK2 do for files over 32 MiB at 512-byte blocks); the state machine counts blocks as
//! `u64` and maps an ACK back to the one block of the window it can name, so a stale ACK from
//! 65,536 blocks ago is never mistaken for a new one.

use std::ops::Range;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// Block size without options (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;

/// TFTP error codes (RFC 1350 section 5, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTid = 5,
    OptionRefused = 8,
}

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    Mail,
}

/// The options a client asked for, each as it asked (unusable values already dropped: an
/// option whose value is not a number in its RFC's range is ignored, as RFC 2347 allows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    pub blksize: Option<u16>,
    pub tsize: bool,
    pub timeout: Option<u8>,
    pub windowsize: Option<u16>,
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub write: bool,
    pub filename: String,
    pub mode: Mode,
    pub options: RequestOptions,
}

/// Why a datagram to the server port is not a request we can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("shorter than an opcode")]
    Short,
    #[error("opcode {0} is not a read or write request")]
    NotARequest(u16),
    #[error("the {0} is not NUL-terminated")]
    Unterminated(&'static str),
    #[error("the filename is not UTF-8")]
    FilenameNotUtf8,
    #[error("the filename is empty")]
    EmptyFilename,
    #[error("unknown transfer mode")]
    UnknownMode,
}

/// A NUL-terminated string and what follows it.
fn nul_str<'a>(input: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), RequestError> {
    let end = input.iter().position(|b| *b == 0).ok_or(RequestError::Unterminated(what))?;
    Ok((&input[..end], &input[end + 1..]))
}

fn number<T: std::str::FromStr>(value: &[u8]) -> Option<T> {
    // Digits only: `str::parse` would take a leading '+'.
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Parses an RRQ or WRQ. Options are matched case-insensitively; unknown options, values out
/// of range and repeats of an option already seen are ignored (the first one counts).
pub fn parse_request(p: &[u8]) -> Result<Request, RequestError> {
    let [a, b, rest @ ..] = p else { return Err(RequestError::Short) };
    let opcode = u16::from_be_bytes([*a, *b]);
    if opcode != RRQ && opcode != WRQ {
        return Err(RequestError::NotARequest(opcode));
    }
    let (name, rest) = nul_str(rest, "filename")?;
    let filename = std::str::from_utf8(name).map_err(|_| RequestError::FilenameNotUtf8)?;
    if filename.is_empty() {
        return Err(RequestError::EmptyFilename);
    }
    let (mode, mut rest) = nul_str(rest, "mode")?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case(b"mail") {
        Mode::Mail
    } else {
        return Err(RequestError::UnknownMode);
    };
    let mut options = RequestOptions::default();
    // Some clients pad a request with NULs after the last option.
    while !rest.is_empty() && rest.iter().any(|b| *b != 0) {
        let (name, r) = nul_str(rest, "option name")?;
        let (value, r) = nul_str(r, "option value")?;
        rest = r;
        if name.eq_ignore_ascii_case(b"blksize") {
            let v = number::<u32>(value).filter(|v| (8..=65464).contains(v)).and_then(|v| u16::try_from(v).ok());
            options.blksize = options.blksize.or(v);
        } else if name.eq_ignore_ascii_case(b"tsize") {
            options.tsize |= number::<u64>(value).is_some();
        } else if name.eq_ignore_ascii_case(b"timeout") {
            let v = number::<u32>(value).filter(|v| (1..=255).contains(v)).and_then(|v| u8::try_from(v).ok());
            options.timeout = options.timeout.or(v);
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            let v = number::<u32>(value).filter(|v| (1..=65535).contains(v)).and_then(|v| u16::try_from(v).ok());
            options.windowsize = options.windowsize.or(v);
        }
    }
    Ok(Request { write: opcode == WRQ, filename: filename.to_owned(), mode, options })
}

/// What a client sent on a transfer's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(u16),
    Error {
        code: u16,
        message: String,
    },
    /// Anything else (a stray DATA, garbage): ignored by the sender.
    Other,
}

pub fn parse_reply(p: &[u8]) -> Reply {
    match p {
        [0, 4, a, b] => Reply::Ack(u16::from_be_bytes([*a, *b])),
        [0, 5, a, b, msg @ ..] => {
            let msg = msg.split(|c| *c == 0).next().unwrap_or_default();
            Reply::Error { code: u16::from_be_bytes([*a, *b]), message: String::from_utf8_lossy(msg).into_owned() }
        }
        _ => Reply::Other,
    }
}

pub fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + message.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&(code as u16).to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.push(0);
    p
}

pub fn ack_packet(block: u16) -> [u8; 4] {
    let [a, b] = block.to_be_bytes();
    [0, 4, a, b]
}

/// The 4-byte header of DATA block `block` (its number on the wire).
pub fn data_header(block: u16) -> [u8; 4] {
    let [a, b] = block.to_be_bytes();
    [0, 3, a, b]
}

/// The server's limits for negotiation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest block: 1428 keeps a DATA packet in a 1500-byte IPv6 MTU unfragmented.
    pub max_blksize: u16,
    pub max_windowsize: u16,
}

/// What the server and the client agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// The OACK to send first, when the client asked for any option we acknowledge.
    pub oack: Option<Vec<u8>>,
}

/// Options for a read of a `file_len`-byte file. The client's `timeout` is declined (left out
/// of the OACK, as RFC 2347 allows): the server keeps its own retransmission bound.
pub fn negotiate(options: &RequestOptions, limits: Limits, file_len: u64) -> Negotiated {
    let mut oack = Vec::new();
    let mut put = |name: &str, value: String| {
        oack.extend_from_slice(name.as_bytes());
        oack.push(0);
        oack.extend_from_slice(value.as_bytes());
        oack.push(0);
    };
    let blksize = options.blksize.map_or(DEFAULT_BLKSIZE, |b| b.min(limits.max_blksize));
    if options.blksize.is_some() {
        put("blksize", blksize.to_string());
    }
    if options.tsize {
        put("tsize", file_len.to_string());
    }
    let windowsize = options.windowsize.map_or(1, |w| w.clamp(1, limits.max_windowsize.max(1)));
    if options.windowsize.is_some() {
        put("windowsize", windowsize.to_string());
    }
    let oack = (!oack.is_empty()).then(|| {
        let mut p = OACK.to_be_bytes().to_vec();
        p.extend_from_slice(&oack);
        p
    });
    Negotiated { blksize, windowsize, oack }
}

/// What the server does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these blocks, in order (block 0 is the OACK).
    Send(Range<u64>),
    /// Keep waiting (a duplicate or stale ACK: answering it would start the Sorcerer's
    /// Apprentice, RFC 1123 4.2.3.1).
    Wait,
    /// The client acknowledged the last block.
    Done,
    /// No answer after the last retransmission.
    GiveUp,
}

/// The sending side of one read transfer. Blocks are numbered from 1 as `u64`; block 0 is the
/// OACK when there is one. The last block is the first one shorter than the block size (empty
/// when the file length is a multiple of it), so a file of `len` bytes has `len / blksize + 1`.
#[derive(Debug, Clone)]
pub struct Sender {
    blksize: u64,
    windowsize: u64,
    last: u64,
    /// First block not acknowledged yet.
    base: u64,
    /// End of what was last sent.
    sent_end: u64,
    retries: u32,
    max_retries: u32,
}

impl Sender {
    pub fn new(n: &Negotiated, file_len: u64, max_retries: u32) -> Sender {
        let blksize = u64::from(n.blksize.max(1));
        let base = if n.oack.is_some() { 0 } else { 1 };
        Sender {
            blksize,
            windowsize: u64::from(n.windowsize.max(1)),
            last: file_len / blksize + 1,
            base,
            sent_end: base,
            retries: 0,
            max_retries,
        }
    }

    /// The first window to send.
    pub fn start(&mut self) -> Step {
        Step::Send(self.window())
    }

    /// Blocks in the file (the last one may be empty).
    pub fn blocks(&self) -> u64 {
        self.last
    }

    /// Byte range of block `block` (1-based) in the file.
    pub fn block_range(&self, block: u64) -> Range<u64> {
        let start = (block - 1) * self.blksize;
        start..start + self.blksize
    }

    /// Block `block`'s number on the wire.
    pub fn wire_number(block: u64) -> u16 {
        (block & 0xffff) as u16
    }

    fn window(&mut self) -> Range<u64> {
        // The OACK goes alone: data starts only once the client accepted the options.
        let end = if self.base == 0 { 1 } else { (self.base + self.windowsize).min(self.last + 1) };
        self.sent_end = end;
        self.base..end
    }

    /// An ACK arrived. It names the last block the client holds in order; within the window
    /// just sent that is one block at most, found by its 16-bit number.
    pub fn on_ack(&mut self, number: u16) -> Step {
        if self.base == 0 {
            // Waiting for the client to accept the OACK: ACK 0.
            return if number == 0 { self.advance(0) } else { Step::Wait };
        }
        let before = self.base - 1;
        // Distance from the block before the window, on the wire's 16-bit circle.
        let d = u64::from(number.wrapping_sub(Self::wire_number(before)));
        if d > self.sent_end - self.base {
            return Step::Wait;
        }
        if d == 0 {
            // The block before this window again: the client lost the window's first block
            // (windowed) — or it is a duplicate (lock-step), which must not be answered.
            if self.windowsize > 1 {
                return Step::Send(self.window());
            }
            return Step::Wait;
        }
        self.advance(before + d)
    }

    fn advance(&mut self, acked: u64) -> Step {
        self.retries = 0;
        if acked >= self.last {
            return Step::Done;
        }
        self.base = acked + 1;
        Step::Send(self.window())
    }

    /// No ACK within the retransmission timeout: resend what is unacknowledged, up to
    /// `max_retries` times in a row.
    pub fn on_timeout(&mut self) -> Step {
        if self.retries >= self.max_retries {
            return Step::GiveUp;
        }
        self.retries += 1;
        Step::Send(self.window())
    }
}

#[cfg(test)]
mod tests;
