//! Identifiers that say which machine is which: MAC addresses, DHCPv6 DUIDs, secret references.
//!
//! These are shared by every protocol that has to answer "which node is this?", so they live
//! with the inventory and have no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// An Ethernet MAC address of a NIC (unicast, not all zeros).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("`{0}` is not a MAC address")]
    Malformed(String),
    #[error("{0} is a multicast (group) address, not a NIC's address")]
    Multicast(MacAddr),
    #[error("{0} is all zeros")]
    Zero(MacAddr),
}

impl FromStr for MacAddr {
    type Err = MacError;

    /// Accepts `52:54:00:12:34:56` and `52-54-00-12-34-56`, any case.
    fn from_str(s: &str) -> Result<Self, MacError> {
        let malformed = || MacError::Malformed(s.to_owned());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut out {
            let p = parts.next().ok_or_else(malformed)?;
            if p.len() != 2 {
                return Err(malformed());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| malformed())?;
        }
        if parts.next().is_some() {
            return Err(malformed());
        }
        let mac = MacAddr(out);
        if out == [0; 6] {
            return Err(MacError::Zero(mac));
        }
        if out[0] & 1 == 1 {
            return Err(MacError::Multicast(mac));
        }
        Ok(mac)
    }
}

impl MacAddr {
    /// The modified EUI-64 interface identifier (RFC 4291 appendix A): what SLAAC and EDK2 put
    /// in the link-local source address, from which a server can recover the MAC.
    pub fn eui64_interface_id(self) -> [u8; 8] {
        let m = self.0;
        [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A DHCPv6 DUID (RFC 8415 §11) as raw bytes, with its type checked.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duid(pub Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DuidError {
    #[error("`{0}` is not hex bytes")]
    Malformed(String),
    #[error("a DUID is 3 to 130 bytes long, this one has {0}")]
    Length(usize),
    #[error("DUID type {0} is not one of 1 (LLT), 2 (EN), 3 (LL), 4 (UUID)")]
    UnknownType(u16),
    #[error("a DUID of type {kind} needs at least {min} bytes, this one has {len}")]
    TooShort { kind: &'static str, min: usize, len: usize },
    #[error("a DUID-UUID is exactly 18 bytes, this one has {0}")]
    UuidLength(usize),
}

impl FromStr for Duid {
    type Err = DuidError;

    /// Accepts `00:03:00:01:52:54:00:12:34:56` or the same without separators.
    fn from_str(s: &str) -> Result<Self, DuidError> {
        let hex: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
        if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(DuidError::Malformed(s.to_owned()));
        }
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
        Duid::from_bytes(bytes)
    }
}

impl Duid {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, DuidError> {
        let len = bytes.len();
        if !(3..=130).contains(&len) {
            return Err(DuidError::Length(len));
        }
        let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
        // Minimum lengths: type + hardware type + (time) + at least one link-layer byte.
        let min = match kind {
            1 => ("LLT", 9),
            2 => ("EN", 7),
            3 => ("LL", 5),
            4 if len != 18 => return Err(DuidError::UuidLength(len)),
            4 => ("UUID", 18),
            other => return Err(DuidError::UnknownType(other)),
        };
        if len < min.1 {
            return Err(DuidError::TooShort { kind: min.0, min: min.1, len });
        }
        Ok(Duid(bytes))
    }

    /// The MAC inside a DUID-LLT or DUID-LL with hardware type 1 (Ethernet), if any.
    pub fn mac(&self) -> Option<MacAddr> {
        let b = &self.0;
        let (kind, hw) = (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]));
        let ll = match kind {
            1 => &b[8..],
            3 => &b[4..],
            _ => return None,
        };
        let mac: [u8; 6] = ll.try_into().ok()?;
        (hw == 1).then_some(MacAddr(mac))
    }
}

impl fmt::Display for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Duid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Duid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a secret lives. The inventory holds only this reference; the value is read by the
/// component that needs it, at the moment it needs it, and is never logged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Env(String),
    File(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    /// Deliberately carries no text: the input may be the secret itself.
    #[error("the value is not a reference (`env:NAME` or `file:PATH`)")]
    Inline,
    #[error("`{0}` is not an environment variable name")]
    BadEnvName(String),
    #[error("`file:` needs a path")]
    EmptyPath,
}

impl FromStr for SecretRef {
    type Err = SecretRefError;

    fn from_str(s: &str) -> Result<Self, SecretRefError> {
        if let Some(name) = s.strip_prefix("env:") {
            let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            return if ok {
                Ok(SecretRef::Env(name.to_owned()))
            } else {
                Err(SecretRefError::BadEnvName(name.to_owned()))
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            return if path.is_empty() { Err(SecretRefError::EmptyPath) } else { Ok(SecretRef::File(path.to_owned())) };
        }
        Err(SecretRefError::Inline)
    }
}

/// Reading a secret failed. Names the reference, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {reference}: the environment variable is not set")]
    EnvUnset { reference: String },
    #[error("secret {reference}: cannot read the file")]
    File {
        reference: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {reference} is empty")]
    Empty { reference: String },
}

impl SecretRef {
    /// The secret itself, read now (one trailing newline of a file is not part of it).
    pub fn resolve(&self) -> Result<String, SecretError> {
        let reference = self.to_string();
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvUnset { reference: reference.clone() })?
            }
            SecretRef::File(path) => {
                let mut v = std::fs::read_to_string(path)
                    .map_err(|source| SecretError::File { reference: reference.clone(), source })?;
                if v.ends_with('\n') {
                    v.pop();
                    if v.ends_with('\r') {
                        v.pop();
                    }
                }
                v
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty { reference });
        }
        Ok(value)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_reject() {
        assert_eq!("52:54:00:AB:cd:01".parse::<MacAddr>().map(|m| m.to_string()), Ok("52:54:00:ab:cd:01".into()));
        assert_eq!("52-54-00-ab-cd-01".parse::<MacAddr>().map(|m| m.to_string()), Ok("52:54:00:ab:cd:01".into()));
        for bad in
            ["52:54:00:ab:cd", "52:54:00:ab:cd:01:02", "5254.00ab.cd01", "52:54:00:ab:cd:0g", "525:4:00:ab:cd:01", ""]
        {
            assert!(matches!(bad.parse::<MacAddr>(), Err(MacError::Malformed(_))), "{bad}");
        }
        assert!(matches!("01:00:5e:00:00:01".parse::<MacAddr>(), Err(MacError::Multicast(_))));
        assert!(matches!("00:00:00:00:00:00".parse::<MacAddr>(), Err(MacError::Zero(_))));
    }

    #[test]
    fn eui64_matches_ovmf_link_local() {
        // OVMF on 52:54:00:12:34:56 uses fe80::5054:ff:fe12:3456 (notes/ovmf-ipv6-http-boot.md).
        let mac: MacAddr = "52:54:00:12:34:56".parse().expect("valid");
        assert_eq!(mac.eui64_interface_id(), [0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn duid_types_and_embedded_mac() {
        let llt: Duid = "00:01:00:01:2c:3a:4b:5c:52:54:00:12:34:56".parse().expect("LLT");
        assert_eq!(llt.mac().map(|m| m.to_string()), Some("52:54:00:12:34:56".into()));
        let ll: Duid = "000300015254001234 56".replace(' ', "").parse().expect("LL");
        assert_eq!(ll.mac().map(|m| m.to_string()), Some("52:54:00:12:34:56".into()));
        let en: Duid = "00:02:00:00:01:37:aa:bb".parse().expect("EN");
        assert_eq!(en.mac(), None);
        assert_eq!("00:09:00:01:aa".parse::<Duid>(), Err(DuidError::UnknownType(9)));
        assert_eq!("00:03:00:01".parse::<Duid>(), Err(DuidError::TooShort { kind: "LL", min: 5, len: 4 }));
        assert_eq!("00:04:01".parse::<Duid>(), Err(DuidError::UuidLength(3)));
        assert!(matches!("xyz".parse::<Duid>(), Err(DuidError::Malformed(_))));
    }

    #[test]
    fn secret_refs_never_echo_inline_values() {
        assert_eq!("env:BMC_PW".parse::<SecretRef>(), Ok(SecretRef::Env("BMC_PW".into())));
        assert_eq!("file:/etc/metal6/pw".parse::<SecretRef>(), Ok(SecretRef::File("/etc/metal6/pw".into())));
        let err = "hunter2".parse::<SecretRef>().expect_err("inline");
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!("env:1BAD".parse::<SecretRef>(), Err(SecretRefError::BadEnvName("1BAD".into())));
    }
}
