//! `metal6.*` parameters from the kernel command line. None is required: DHCPv6 option 60
//! tells the installer which node it is and where its server is. They exist to pin a NIC or
//! a server when debugging, and for DHCP-less boot.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pub node: Option<String>,
    pub server: Option<String>,
    pub interface: Option<String>,
    /// The router to reach the server through, when the node is not on the server's link
    /// (a relayed segment): its address on the node's segment.
    pub gateway: Option<std::net::Ipv6Addr>,
    /// Do not reboot at the end (debugging).
    pub no_reboot: bool,
}

/// Parses `key=value` words (and `metal6.noreboot`) from a kernel command line or an
/// option 60 parameter list.
pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Params {
    let mut p = Params::default();
    for w in words {
        let (k, v) = w.split_once('=').unwrap_or((w, ""));
        match k {
            "metal6.node" if !v.is_empty() => p.node = Some(v.to_owned()),
            "metal6.server" if !v.is_empty() => p.server = Some(v.to_owned()),
            "metal6.interface" if !v.is_empty() => p.interface = Some(v.to_owned()),
            "metal6.gateway" => p.gateway = v.parse().ok(),
            "metal6.noreboot" => p.no_reboot = true,
            _ => {}
        }
    }
    p
}

impl Params {
    /// `other` fills what `self` does not say (the command line wins over DHCPv6).
    pub fn or(self, other: Params) -> Params {
        Params {
            node: self.node.or(other.node),
            server: self.server.or(other.server),
            interface: self.interface.or(other.interface),
            gateway: self.gateway.or(other.gateway),
            no_reboot: self.no_reboot || other.no_reboot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_metal6_words_and_ignores_the_rest() {
        let p = parse(
            "console=ttyS0 metal6.node=w-1 metal6.server=http://[fd00::1]:8080/ quiet metal6.noreboot metal6.node"
                .split(' '),
        );
        assert_eq!(p.node.as_deref(), Some("w-1"));
        assert_eq!(p.server.as_deref(), Some("http://[fd00::1]:8080/"));
        assert_eq!(parse(["metal6.gateway=fd00:6d:2::1"]).gateway, Some("fd00:6d:2::1".parse().expect("addr")));
        assert_eq!(parse(["metal6.gateway=nonsense"]).gateway, None);
        assert!(p.no_reboot);
        assert_eq!(p.interface, None);
        let merged = parse(["metal6.node=a"]).or(parse(["metal6.node=b", "metal6.server=s"]));
        assert_eq!((merged.node.as_deref(), merged.server.as_deref()), (Some("a"), Some("s")));
    }
}
