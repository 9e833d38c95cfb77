//! DHCPv6 messages on the wire (RFC 8415 §8-9, §21), decoded strictly.
//!
//! Every length is checked against what is there and what the option type allows; anything
//! that does not add up is a [`DecodeError`], never a partial message and never a panic. Options
//! are kept in the order they arrived and encoded in the order they are given, because order
//! matters to real firmware (EDK2 reads option 59 as a C string: it must be last or followed by
//! another option).
//!
//! Why not dhcproto: its option decoder stops silently at the first malformed option (a
//! truncated packet decodes as a shorter, "valid" one, so malformed input cannot be counted),
//! and it decodes option 9 (Relay Message) always as a nested relay message, which loses the
//! client message inside every Relay-Forward. Both were checked against dhcproto 0.15 and are
//! kept as tests (`tests/dhcproto_crosscheck.rs`); dhcproto stays as an independent decoder of
//! what we encode.

use std::net::Ipv6Addr;

use thiserror::Error;

/// RFC 8415 §7.6: relays give up beyond 8 hops (HOP_COUNT_LIMIT is 8 by default, 32 at most).
pub const MAX_RELAY_DEPTH: usize = 32;

/// How deep options may nest inside one message. The deepest legitimate chain is
/// IA_NA/IA_TA/IA_PD → IAADDR/IAPREFIX → STATUS_CODE (three levels); anything deeper is an
/// attack on the decoder's stack (a 64 KB datagram of nested IA_TAs once overflowed a tokio
/// worker's stack and aborted the whole server). Counted per message: a Relay Message option
/// starts a new message, whose depth [`MAX_RELAY_DEPTH`] bounds.
pub const MAX_OPTION_NESTING: usize = 4;

/// DHCPv6 message types (RFC 8415 §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MsgType {
    Solicit,
    Advertise,
    Request,
    Confirm,
    Renew,
    Rebind,
    Reply,
    Release,
    Decline,
    Reconfigure,
    InformationRequest,
    RelayForw,
    RelayRepl,
    Other(u8),
}

impl From<u8> for MsgType {
    fn from(v: u8) -> Self {
        use MsgType::*;
        match v {
            1 => Solicit,
            2 => Advertise,
            3 => Request,
            4 => Confirm,
            5 => Renew,
            6 => Rebind,
            7 => Reply,
            8 => Release,
            9 => Decline,
            10 => Reconfigure,
            11 => InformationRequest,
            12 => RelayForw,
            13 => RelayRepl,
            other => Other(other),
        }
    }
}

impl From<MsgType> for u8 {
    fn from(t: MsgType) -> u8 {
        use MsgType::*;
        match t {
            Solicit => 1,
            Advertise => 2,
            Request => 3,
            Confirm => 4,
            Renew => 5,
            Rebind => 6,
            Reply => 7,
            Release => 8,
            Decline => 9,
            Reconfigure => 10,
            InformationRequest => 11,
            RelayForw => 12,
            RelayRepl => 13,
            Other(v) => v,
        }
    }
}

/// Option codes we read or write.
pub mod code {
    pub const CLIENTID: u16 = 1;
    pub const SERVERID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IA_TA: u16 = 4;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const RELAY_MSG: u16 = 9;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const USER_CLASS: u16 = 15;
    pub const VENDOR_CLASS: u16 = 16;
    pub const INTERFACE_ID: u16 = 18;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
    pub const IA_PD: u16 = 25;
    pub const NTP_SERVER: u16 = 56;
    pub const BOOTFILE_URL: u16 = 59;
    pub const BOOTFILE_PARAM: u16 = 60;
    pub const CLIENT_ARCH: u16 = 61;
    pub const CLIENT_NII: u16 = 62;
    pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
}

/// RFC 8415 §21.13 status codes.
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const UNSPEC_FAIL: u16 = 1;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
    pub const NOT_ON_LINK: u16 = 4;
    pub const USE_MULTICAST: u16 = 5;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Client(ClientMsg),
    Relay(RelayMsg),
}

/// Client/server message (RFC 8415 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMsg {
    pub msg_type: MsgType,
    pub xid: [u8; 3],
    pub opts: Vec<Opt>,
}

/// Relay agent/server message (RFC 8415 §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMsg {
    pub msg_type: MsgType,
    pub hop_count: u8,
    pub link_addr: Ipv6Addr,
    pub peer_addr: Ipv6Addr,
    pub opts: Vec<Opt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub opts: Vec<Opt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAddr {
    pub addr: Ipv6Addr,
    pub preferred: u32,
    pub valid: u32,
    pub opts: Vec<Opt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    ClientId(Vec<u8>),
    ServerId(Vec<u8>),
    IaNa(IaNa),
    /// IA_TA / IA_PD: kept whole; we do not serve temporary addresses or prefixes.
    IaTa(u32, Vec<Opt>),
    IaAddr(IaAddr),
    Oro(Vec<u16>),
    Preference(u8),
    ElapsedTime(u16),
    RelayMsg(Box<Message>),
    StatusCode(u16, String),
    RapidCommit,
    UserClass(Vec<Vec<u8>>),
    VendorClass {
        enterprise: u32,
        data: Vec<Vec<u8>>,
    },
    InterfaceId(Vec<u8>),
    DnsServers(Vec<Ipv6Addr>),
    /// Already in DNS wire format (RFC 1035 §3.1), see [`encode_domain_list`].
    DomainList(Vec<u8>),
    /// NTP server addresses (RFC 5908 suboption 1).
    NtpServers(Vec<Ipv6Addr>),
    BootfileUrl(String),
    BootfileParam(Vec<Vec<u8>>),
    ClientArch(Vec<u16>),
    ClientNii {
        kind: u8,
        major: u8,
        minor: u8,
    },
    /// RFC 6939: hardware type and link-layer address of the client, added by the first relay.
    ClientLinkLayer {
        htype: u16,
        addr: Vec<u8>,
    },
    Other(u16, Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("message shorter than its header ({0} bytes)")]
    ShortHeader(usize),
    #[error("option {code} claims {claimed} bytes but {left} remain")]
    Truncated { code: u16, claimed: usize, left: usize },
    #[error("option header cut short ({0} bytes left)")]
    ShortOptionHeader(usize),
    #[error("option {code} has invalid length {len}")]
    BadLength { code: u16, len: usize },
    #[error("option {code} has a malformed value")]
    BadValue { code: u16 },
    #[error("relay messages nested more than {MAX_RELAY_DEPTH} deep")]
    TooDeep,
    #[error("option {code} nests options more than {MAX_OPTION_NESTING} deep")]
    NestedTooDeep { code: u16 },
}

/// Decodes one DHCPv6 message (client/server or relay) from a UDP payload.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    decode_at(buf, 0)
}

fn decode_at(buf: &[u8], depth: usize) -> Result<Message, DecodeError> {
    if depth > MAX_RELAY_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let Some(&t) = buf.first() else { return Err(DecodeError::ShortHeader(0)) };
    let msg_type = MsgType::from(t);
    if matches!(msg_type, MsgType::RelayForw | MsgType::RelayRepl) {
        if buf.len() < 34 {
            return Err(DecodeError::ShortHeader(buf.len()));
        }
        let link: [u8; 16] = buf[2..18].try_into().map_err(|_| DecodeError::ShortHeader(buf.len()))?;
        let peer: [u8; 16] = buf[18..34].try_into().map_err(|_| DecodeError::ShortHeader(buf.len()))?;
        return Ok(Message::Relay(RelayMsg {
            msg_type,
            hop_count: buf[1],
            link_addr: link.into(),
            peer_addr: peer.into(),
            opts: decode_opts(&buf[34..], depth, 0)?,
        }));
    }
    if buf.len() < 4 {
        return Err(DecodeError::ShortHeader(buf.len()));
    }
    Ok(Message::Client(ClientMsg { msg_type, xid: [buf[1], buf[2], buf[3]], opts: decode_opts(&buf[4..], depth, 0)? }))
}

/// `depth` counts relay layers, `nest` the encapsulation level inside the current message.
fn decode_opts(mut buf: &[u8], depth: usize, nest: usize) -> Result<Vec<Opt>, DecodeError> {
    let mut opts = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err(DecodeError::ShortOptionHeader(buf.len()));
        }
        let code = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let rest = &buf[4..];
        if rest.len() < len {
            return Err(DecodeError::Truncated { code, claimed: len, left: rest.len() });
        }
        opts.push(decode_opt(code, &rest[..len], depth, nest)?);
        buf = &rest[len..];
    }
    Ok(opts)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

fn decode_opt(code: u16, v: &[u8], depth: usize, nest: usize) -> Result<Opt, DecodeError> {
    let bad_len = || DecodeError::BadLength { code, len: v.len() };
    let need = |ok: bool| if ok { Ok(()) } else { Err(bad_len()) };
    // The options inside an encapsulating option, one level deeper.
    let inner = |b: &[u8]| {
        if nest + 1 >= MAX_OPTION_NESTING {
            return Err(DecodeError::NestedTooDeep { code });
        }
        decode_opts(b, depth, nest + 1)
    };
    use code::*;
    Ok(match code {
        // RFC 8415 §11.1: a DUID is at most 128 octets plus its 2-octet type.
        CLIENTID | SERVERID => {
            need((3..=130).contains(&v.len()))?;
            if code == CLIENTID { Opt::ClientId(v.to_vec()) } else { Opt::ServerId(v.to_vec()) }
        }
        IA_NA => {
            need(v.len() >= 12)?;
            Opt::IaNa(IaNa { iaid: be32(v), t1: be32(&v[4..]), t2: be32(&v[8..]), opts: inner(&v[12..])? })
        }
        IA_TA => {
            need(v.len() >= 4)?;
            Opt::IaTa(be32(v), inner(&v[4..])?)
        }
        IAADDR => {
            need(v.len() >= 24)?;
            Opt::IaAddr(IaAddr {
                addr: addr(v),
                preferred: be32(&v[16..]),
                valid: be32(&v[20..]),
                opts: inner(&v[24..])?,
            })
        }
        ORO => {
            need(v.len().is_multiple_of(2))?;
            Opt::Oro(v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
        }
        PREFERENCE => {
            need(v.len() == 1)?;
            Opt::Preference(v[0])
        }
        ELAPSED_TIME => {
            need(v.len() == 2)?;
            Opt::ElapsedTime(u16::from_be_bytes([v[0], v[1]]))
        }
        RELAY_MSG => Opt::RelayMsg(Box::new(decode_at(v, depth + 1)?)),
        STATUS_CODE => {
            need(v.len() >= 2)?;
            let text = std::str::from_utf8(&v[2..]).map_err(|_| DecodeError::BadValue { code })?;
            Opt::StatusCode(u16::from_be_bytes([v[0], v[1]]), text.to_owned())
        }
        RAPID_COMMIT => {
            need(v.is_empty())?;
            Opt::RapidCommit
        }
        USER_CLASS => Opt::UserClass(counted_list(code, v)?),
        VENDOR_CLASS => {
            need(v.len() >= 4)?;
            Opt::VendorClass { enterprise: be32(v), data: counted_list(code, &v[4..])? }
        }
        INTERFACE_ID => Opt::InterfaceId(v.to_vec()),
        DNS_SERVERS => {
            need(v.len().is_multiple_of(16))?;
            Opt::DnsServers(v.chunks_exact(16).map(addr).collect())
        }
        DOMAIN_LIST => Opt::DomainList(v.to_vec()),
        NTP_SERVER => Opt::NtpServers(ntp_addrs(v)?),
        BOOTFILE_URL => Opt::BootfileUrl(String::from_utf8(v.to_vec()).map_err(|_| DecodeError::BadValue { code })?),
        BOOTFILE_PARAM => Opt::BootfileParam(counted_list(code, v)?),
        CLIENT_ARCH => {
            need(!v.is_empty() && v.len().is_multiple_of(2))?;
            Opt::ClientArch(v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
        }
        CLIENT_NII => {
            need(v.len() == 3)?;
            Opt::ClientNii { kind: v[0], major: v[1], minor: v[2] }
        }
        CLIENT_LINKLAYER_ADDR => {
            need(v.len() >= 3)?;
            Opt::ClientLinkLayer { htype: u16::from_be_bytes([v[0], v[1]]), addr: v[2..].to_vec() }
        }
        other => Opt::Other(other, v.to_vec()),
    })
}

/// A list of 2-byte-length-prefixed items (user class, vendor class data, bootfile params).
fn counted_list(code: u16, mut v: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut items = Vec::new();
    while !v.is_empty() {
        if v.len() < 2 {
            return Err(DecodeError::BadValue { code });
        }
        let n = usize::from(u16::from_be_bytes([v[0], v[1]]));
        let item = v.get(2..2 + n).ok_or(DecodeError::BadValue { code })?;
        items.push(item.to_vec());
        v = &v[2 + n..];
    }
    Ok(items)
}

/// RFC 5908: suboptions; we keep server addresses (suboption 1) and skip the others.
fn ntp_addrs(mut v: &[u8]) -> Result<Vec<Ipv6Addr>, DecodeError> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let bad = DecodeError::BadValue { code: code::NTP_SERVER };
        if v.len() < 4 {
            return Err(bad);
        }
        let (sub, n) = (u16::from_be_bytes([v[0], v[1]]), usize::from(u16::from_be_bytes([v[2], v[3]])));
        let body = v.get(4..4 + n).ok_or(bad.clone())?;
        if sub == 1 {
            if n != 16 {
                return Err(bad);
            }
            out.push(addr(body));
        }
        v = &v[4 + n..];
    }
    Ok(out)
}

// --- encoding ------------------------------------------------------------------------------

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Message::Client(m) => {
                out.push(m.msg_type.into());
                out.extend_from_slice(&m.xid);
                encode_opts(&m.opts, out);
            }
            Message::Relay(r) => {
                out.push(r.msg_type.into());
                out.push(r.hop_count);
                out.extend_from_slice(&r.link_addr.octets());
                out.extend_from_slice(&r.peer_addr.octets());
                encode_opts(&r.opts, out);
            }
        }
    }
}

fn encode_opts(opts: &[Opt], out: &mut Vec<u8>) {
    for o in opts {
        encode_opt(o, out);
    }
}

/// Writes `code`, a length placeholder, the body, then patches the length. Bodies are far
/// below 64 KiB (a DHCPv6 message fits a UDP datagram); a longer one is clamped rather than
/// wrapping, and the peer will reject it.
fn with_len(code: u16, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(&code.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    body(out);
    let len = u16::try_from(out.len() - at - 2).unwrap_or(u16::MAX);
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

fn put_counted(items: &[Vec<u8>], out: &mut Vec<u8>) {
    for i in items {
        out.extend_from_slice(&u16::try_from(i.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(i);
    }
}

fn encode_opt(o: &Opt, out: &mut Vec<u8>) {
    use code::*;
    match o {
        Opt::ClientId(d) => with_len(CLIENTID, out, |b| b.extend_from_slice(d)),
        Opt::ServerId(d) => with_len(SERVERID, out, |b| b.extend_from_slice(d)),
        Opt::IaNa(ia) => with_len(IA_NA, out, |b| {
            b.extend_from_slice(&ia.iaid.to_be_bytes());
            b.extend_from_slice(&ia.t1.to_be_bytes());
            b.extend_from_slice(&ia.t2.to_be_bytes());
            encode_opts(&ia.opts, b);
        }),
        Opt::IaTa(iaid, opts) => with_len(IA_TA, out, |b| {
            b.extend_from_slice(&iaid.to_be_bytes());
            encode_opts(opts, b);
        }),
        Opt::IaAddr(a) => with_len(IAADDR, out, |b| {
            b.extend_from_slice(&a.addr.octets());
            b.extend_from_slice(&a.preferred.to_be_bytes());
            b.extend_from_slice(&a.valid.to_be_bytes());
            encode_opts(&a.opts, b);
        }),
        Opt::Oro(codes) => with_len(ORO, out, |b| codes.iter().for_each(|c| b.extend_from_slice(&c.to_be_bytes()))),
        Opt::Preference(p) => with_len(PREFERENCE, out, |b| b.push(*p)),
        Opt::ElapsedTime(t) => with_len(ELAPSED_TIME, out, |b| b.extend_from_slice(&t.to_be_bytes())),
        Opt::RelayMsg(m) => with_len(RELAY_MSG, out, |b| m.encode_into(b)),
        Opt::StatusCode(c, text) => with_len(STATUS_CODE, out, |b| {
            b.extend_from_slice(&c.to_be_bytes());
            b.extend_from_slice(text.as_bytes());
        }),
        Opt::RapidCommit => with_len(RAPID_COMMIT, out, |_| {}),
        Opt::UserClass(items) => with_len(USER_CLASS, out, |b| put_counted(items, b)),
        Opt::VendorClass { enterprise, data } => with_len(VENDOR_CLASS, out, |b| {
            b.extend_from_slice(&enterprise.to_be_bytes());
            put_counted(data, b);
        }),
        Opt::InterfaceId(d) => with_len(INTERFACE_ID, out, |b| b.extend_from_slice(d)),
        Opt::DnsServers(a) => with_len(DNS_SERVERS, out, |b| a.iter().for_each(|x| b.extend_from_slice(&x.octets()))),
        Opt::DomainList(d) => with_len(DOMAIN_LIST, out, |b| b.extend_from_slice(d)),
        Opt::NtpServers(a) => with_len(NTP_SERVER, out, |b| {
            for x in a {
                b.extend_from_slice(&[0, 1, 0, 16]);
                b.extend_from_slice(&x.octets());
            }
        }),
        Opt::BootfileUrl(u) => with_len(BOOTFILE_URL, out, |b| b.extend_from_slice(u.as_bytes())),
        Opt::BootfileParam(p) => with_len(BOOTFILE_PARAM, out, |b| put_counted(p, b)),
        Opt::ClientArch(a) => {
            with_len(CLIENT_ARCH, out, |b| a.iter().for_each(|x| b.extend_from_slice(&x.to_be_bytes())))
        }
        Opt::ClientNii { kind, major, minor } => {
            with_len(CLIENT_NII, out, |b| b.extend_from_slice(&[*kind, *major, *minor]))
        }
        Opt::ClientLinkLayer { htype, addr } => with_len(CLIENT_LINKLAYER_ADDR, out, |b| {
            b.extend_from_slice(&htype.to_be_bytes());
            b.extend_from_slice(addr);
        }),
        Opt::Other(c, d) => with_len(*c, out, |b| b.extend_from_slice(d)),
    }
}

/// Encodes domain names for option 24 (RFC 1035 §3.1, uncompressed). Names are validated by
/// the inventory (DNS labels), so each label is at most 63 bytes.
pub fn encode_domain_list(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).unwrap_or(63).min(63));
            out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
        }
        out.push(0);
    }
    out
}

// --- accessors -----------------------------------------------------------------------------

impl ClientMsg {
    pub fn client_id(&self) -> Option<&[u8]> {
        self.opts.iter().find_map(|o| if let Opt::ClientId(d) = o { Some(d.as_slice()) } else { None })
    }
    pub fn server_id(&self) -> Option<&[u8]> {
        self.opts.iter().find_map(|o| if let Opt::ServerId(d) = o { Some(d.as_slice()) } else { None })
    }
    pub fn ia_nas(&self) -> impl Iterator<Item = &IaNa> {
        self.opts.iter().filter_map(|o| if let Opt::IaNa(ia) = o { Some(ia) } else { None })
    }
    pub fn has(&self, code: u16) -> bool {
        self.opts.iter().any(|o| o.code() == code)
    }
    pub fn oro(&self) -> &[u16] {
        self.opts.iter().find_map(|o| if let Opt::Oro(c) = o { Some(c.as_slice()) } else { None }).unwrap_or(&[])
    }
    pub fn arch(&self) -> Option<u16> {
        self.opts.iter().find_map(|o| if let Opt::ClientArch(a) = o { a.first().copied() } else { None })
    }
    pub fn vendor_class(&self) -> Option<(u32, &[Vec<u8>])> {
        self.opts.iter().find_map(|o| {
            if let Opt::VendorClass { enterprise, data } = o { Some((*enterprise, data.as_slice())) } else { None }
        })
    }
    pub fn user_classes(&self) -> &[Vec<u8>] {
        self.opts.iter().find_map(|o| if let Opt::UserClass(d) = o { Some(d.as_slice()) } else { None }).unwrap_or(&[])
    }
}

impl Opt {
    pub fn code(&self) -> u16 {
        use code::*;
        match self {
            Opt::ClientId(_) => CLIENTID,
            Opt::ServerId(_) => SERVERID,
            Opt::IaNa(_) => IA_NA,
            Opt::IaTa(..) => IA_TA,
            Opt::IaAddr(_) => IAADDR,
            Opt::Oro(_) => ORO,
            Opt::Preference(_) => PREFERENCE,
            Opt::ElapsedTime(_) => ELAPSED_TIME,
            Opt::RelayMsg(_) => RELAY_MSG,
            Opt::StatusCode(..) => STATUS_CODE,
            Opt::RapidCommit => RAPID_COMMIT,
            Opt::UserClass(_) => USER_CLASS,
            Opt::VendorClass { .. } => VENDOR_CLASS,
            Opt::InterfaceId(_) => INTERFACE_ID,
            Opt::DnsServers(_) => DNS_SERVERS,
            Opt::DomainList(_) => DOMAIN_LIST,
            Opt::NtpServers(_) => NTP_SERVER,
            Opt::BootfileUrl(_) => BOOTFILE_URL,
            Opt::BootfileParam(_) => BOOTFILE_PARAM,
            Opt::ClientArch(_) => CLIENT_ARCH,
            Opt::ClientNii { .. } => CLIENT_NII,
            Opt::ClientLinkLayer { .. } => CLIENT_LINKLAYER_ADDR,
            Opt::Other(c, _) => *c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OVMF HttpBootDxe's Solicit, from shared/recipes/ovmf-ipv6/packets.txt.
    pub(crate) const OVMF_SOLICIT: &str = "0150e6fb\
        0001000e0001000131dcd9d8525400123456\
        000800020000\
        0003000c22db6e71ffffffffffffffff\
        00060008003b003c00170010\
        003e0003010300\
        003d00020010\
        0010002700000157002148545450436c69656e743a417263683a30303031363a554e44493a303033303030";

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn decodes_ovmf_solicit_and_reencodes_it_byte_for_byte() {
        let bytes = hex(OVMF_SOLICIT);
        let Message::Client(m) = decode(&bytes).expect("valid") else { panic!("client message") };
        assert_eq!(m.msg_type, MsgType::Solicit);
        assert_eq!(m.xid, [0x50, 0xe6, 0xfb]);
        assert_eq!(m.oro(), &[59, 60, 23, 16]);
        assert_eq!(m.arch(), Some(16));
        let (ent, data) = m.vendor_class().expect("vendor class");
        assert_eq!(ent, 343);
        assert!(data[0].starts_with(b"HTTPClient"));
        assert_eq!(m.ia_nas().next().map(|ia| ia.iaid), Some(0x22db6e71));
        assert_eq!(Message::Client(m).encode(), bytes);
    }

    #[test]
    fn relay_forward_carries_the_client_message() {
        let inner = hex(OVMF_SOLICIT);
        let mut p = vec![12u8, 0];
        p.extend_from_slice(&"2001:db8:102::1".parse::<Ipv6Addr>().expect("addr").octets());
        p.extend_from_slice(&"fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().expect("addr").octets());
        p.extend_from_slice(&[0, 79, 0, 8, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        p.extend_from_slice(&[0, 9, 0, u8::try_from(inner.len()).expect("fits")]);
        p.extend_from_slice(&inner);
        let Message::Relay(r) = decode(&p).expect("valid relay") else { panic!("relay") };
        assert_eq!(r.link_addr, "2001:db8:102::1".parse::<Ipv6Addr>().expect("addr"));
        assert!(r.opts.iter().any(
            |o| matches!(o, Opt::ClientLinkLayer { htype: 1, addr } if addr == &[0x52, 0x54, 0, 0x12, 0x34, 0x56])
        ));
        assert!(r.opts.iter().any(
            |o| matches!(o, Opt::RelayMsg(m) if matches!(**m, Message::Client(ref c) if c.msg_type == MsgType::Solicit))
        ));
        assert_eq!(Message::Relay(r).encode(), p);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_shorter_message() {
        let good = hex(OVMF_SOLICIT);
        for cut in 1..good.len() {
            // Every truncation inside an option is an error; cutting exactly between options
            // yields a valid shorter message, which is fine.
            let _ = decode(&good[..cut]);
        }
        assert!(matches!(decode(&[1, 2, 3, 4, 0, 1, 0, 10, 0, 3]), Err(DecodeError::Truncated { code: 1, .. })));
        assert!(matches!(decode(&[7, 1, 2, 3, 0, 13, 0, 1, 0]), Err(DecodeError::BadLength { code: 13, len: 1 })));
        assert!(matches!(decode(&[1, 2, 3, 4, 0, 7, 0, 2, 1, 1]), Err(DecodeError::BadLength { code: 7, len: 2 })));
        assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::ShortHeader(3))));
        assert!(matches!(decode(&[12, 0, 1]), Err(DecodeError::ShortHeader(3))));
        assert!(matches!(decode(&[1, 2, 3, 4, 0, 1, 0]), Err(DecodeError::ShortOptionHeader(3))));
    }

    #[test]
    fn relay_nesting_is_bounded() {
        let mut m = hex(OVMF_SOLICIT);
        for _ in 0..40 {
            let mut r = vec![12u8, 0];
            r.extend_from_slice(&[0; 32]);
            r.extend_from_slice(&[0, 9]);
            r.extend_from_slice(&u16::try_from(m.len()).unwrap_or(u16::MAX).to_be_bytes());
            r.extend_from_slice(&m);
            m = r;
            if m.len() > 60_000 {
                break;
            }
        }
        assert_eq!(decode(&m), Err(DecodeError::TooDeep));
    }

    /// A Solicit whose one IA_TA holds an IA_TA holding an IA_TA… as deep as a 64 KB datagram
    /// allows (~8,000 levels). Before options counted their nesting this recursed once per
    /// level and overflowed a tokio worker's stack, aborting the server. Decoded here on a
    /// thread with a small stack, so a regression fails the test instead of passing by luck.
    #[test]
    fn option_nesting_is_bounded_even_in_a_64k_datagram() {
        let mut ia: Vec<u8> = Vec::new();
        while ia.len() + 8 <= 65_000 {
            let mut outer = vec![0, 4];
            outer.extend_from_slice(&u16::try_from(ia.len() + 4).expect("fits").to_be_bytes());
            outer.extend_from_slice(&[0, 0, 0, 1]);
            outer.extend_from_slice(&ia);
            ia = outer;
        }
        let mut msg = vec![1, 0, 0, 1, 0, 1, 0, 10, 0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
        msg.extend_from_slice(&ia);
        let result = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || decode(&msg))
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(result, Err(DecodeError::NestedTooDeep { code: code::IA_TA }));
        // The deepest legitimate chain still decodes: IA_NA → IAADDR → STATUS_CODE.
        let status = [0u8, 13, 0, 4, 0, 0, b'o', b'k'];
        let mut iaaddr = vec![0u8, 5, 0, 24 + 8];
        iaaddr.extend_from_slice(&[0; 24]);
        iaaddr.extend_from_slice(&status);
        let mut iana = vec![0u8, 3, 0, u8::try_from(12 + iaaddr.len()).expect("fits")];
        iana.extend_from_slice(&[0; 12]);
        iana.extend_from_slice(&iaaddr);
        let mut ok = vec![7, 0, 0, 1];
        ok.extend_from_slice(&iana);
        let Ok(Message::Client(m)) = decode(&ok) else { panic!("IA_NA with IAADDR and status decodes") };
        assert_eq!(Message::Client(m).encode(), ok);
    }

    #[test]
    fn domain_list_wire_format() {
        assert_eq!(encode_domain_list(&["lab.metal6.test"]), b"\x03lab\x06metal6\x04test\x00".to_vec());
    }
}
