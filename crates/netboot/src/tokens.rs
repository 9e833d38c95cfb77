//! Per-node tokens, one per install.
//!
//! A node's token proves that a request comes from the host that received this install's
//! plan (`plan.json`): it is `INSTALL.H(key, node, install)`, where `install` counts the plans
//! issued to the node. The number in front lets the server tell a stale token (a real one of an
//! earlier install: someone took a plan since) from a forged one with one hash, however many
//! installs ago it was issued. Every `plan.json` fetch starts a new install, so the token rotates with each
//! install and a token seen by anyone before stops working at the next one.
//!
//! What it buys against a stranger on the segment who spoofs a node's address (see
//! docs/security.md): the stranger can fetch a plan, but that rotates the token, so the real
//! node's next authenticated request carries a stale token. A stale token is refused and
//! recorded as an `identity-conflict` event (with where the current install went), so two
//! claimants of one identity are detected whichever came first. Every issue is a
//! `token-issued` event in the node's timeline too.
//!
//! The installs issued so far are kept in `STATE_DIR/node-tokens.json` (written to a
//! temporary file, synced, renamed), so tokens survive a restart. Install 0 is the token of
//! nodes installed before tokens rotated (`H(key, node)`), so those nodes keep reporting.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the store knows of one node's current install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub install: u64,
    pub issued_ms: u64,
    pub issued_to: Ipv6Addr,
}

/// How a presented token compares with the node's current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Current,
    /// The pre-rotation token (`H(key, node)`) of a node that has had no plan since tokens
    /// rotate. It was on iPXE command lines and consoles, so it is good for reports and
    /// documents but never for cluster files.
    Legacy,
    /// The token of an earlier install of this node: someone else fetched a plan since.
    Stale {
        presented: u64,
        current: Issued,
    },
    Invalid,
}

/// Plans (and so installs) per node at most one a second: a flood of `plan.json` fetches
/// from a node's address must not turn into a flood of file syncs and `token-issued` events.
pub const MIN_ISSUE_INTERVAL_MS: u64 = 1000;

#[derive(Debug)]
pub struct NodeTokens {
    key: Vec<u8>,
    path: PathBuf,
    issued: Mutex<BTreeMap<String, Issued>>,
}

impl NodeTokens {
    /// Loads `dir/node-tokens.json`; a missing file is an empty store, an unreadable one an
    /// error (silently starting over would revive every old token).
    pub fn open(dir: &Path, key: Vec<u8>) -> std::io::Result<NodeTokens> {
        let path = dir.join("node-tokens.json");
        let issued = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(NodeTokens { key, path, issued: Mutex::new(issued) })
    }

    fn token_of(&self, node: &str, install: u64) -> String {
        let mut h = Sha256::new();
        h.update(&self.key);
        h.update(b"\0node\0");
        h.update(node.as_bytes());
        if install > 0 {
            h.update(b"\0install\0");
            h.update(install.to_be_bytes());
        }
        let mac: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
        // Install 0 keeps the form tokens had before they rotated.
        if install == 0 { mac } else { format!("{install}.{mac}") }
    }

    /// The node's current install (0 before any plan was issued).
    pub fn current(&self, node: &str) -> Option<Issued> {
        self.lock().get(node).cloned()
    }

    /// Starts a new install for `node`: the next install number, made durable before the
    /// token is returned (a crash never hands out a token the store does not know).
    /// Blocks on a file sync: call it off the async workers (`block_in_place`).
    pub fn issue(&self, node: &str, to: Ipv6Addr, now_ms: u64) -> Result<(Issued, String), IssueError> {
        let mut map = self.lock();
        if let Some(last) = map.get(node)
            && now_ms.saturating_sub(last.issued_ms) < MIN_ISSUE_INTERVAL_MS
        {
            return Err(IssueError::TooSoon);
        }
        let install = map.get(node).map_or(Some(1), |i| i.install.checked_add(1)).ok_or(IssueError::Exhausted)?;
        let issued = Issued { install, issued_ms: now_ms, issued_to: to };
        let previous = map.insert(node.to_owned(), issued.clone());
        match write_atomically(&self.path, &map) {
            Ok(()) => Ok((issued, self.token_of(node, install))),
            // Before the rename the file still says the old install: so must memory.
            Err(WriteError::BeforeRename(e)) => {
                match previous {
                    Some(p) => map.insert(node.to_owned(), p),
                    None => map.remove(node),
                };
                Err(IssueError::Io(e))
            }
            // The rename is the commit point: the file says the new install, keep it.
            Err(WriteError::AfterRename(e)) => {
                tracing::warn!(error = %e, "node-tokens.json renamed but its directory not synced");
                Ok((issued, self.token_of(node, install)))
            }
        }
    }

    pub fn check(&self, node: &str, token: &str) -> Check {
        let presented = match token.split_once('.') {
            Some((n, _)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => return Check::Invalid,
            },
            None => 0,
        };
        if !constant_time_eq(token.as_bytes(), self.token_of(node, presented).as_bytes()) {
            return Check::Invalid;
        }
        let current = self.current(node);
        let now = current.as_ref().map_or(0, |i| i.install);
        match current {
            None if presented == 0 => Check::Legacy,
            _ if presented == now => Check::Current,
            Some(current) if presented < now => Check::Stale { presented, current },
            // A real token of an install the store does not know (node-tokens.json lost or
            // restored from an old backup): not to be trusted.
            _ => Check::Invalid,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Issued>> {
        self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

enum WriteError {
    BeforeRename(std::io::Error),
    AfterRename(std::io::Error),
}

fn write_atomically(path: &Path, map: &BTreeMap<String, Issued>) -> Result<(), WriteError> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let before = |e| WriteError::BeforeRename(e);
    {
        let mut f = std::fs::File::create(&tmp).map_err(before)?;
        let text = serde_json::to_vec_pretty(map).map_err(|e| before(std::io::Error::other(e)))?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(before)?;
    }
    std::fs::rename(&tmp, path).map_err(before)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(WriteError::AfterRename)?;
    }
    Ok(())
}

/// Why no plan (and no token) was issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("a plan was issued to this node less than a second ago")]
    TooSoon,
    #[error("the node's install counter is exhausted")]
    Exhausted,
    #[error("cannot record the new install")]
    Io(#[source] std::io::Error),
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rotate_per_install_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = vec![7u8; 32];
        let t = NodeTokens::open(dir.path(), key.clone()).expect("open");
        let legacy = t.token_of("n1", 0);
        assert_eq!(t.check("n1", &legacy), Check::Legacy, "nodes installed before rotation keep reporting");
        let a: Ipv6Addr = "fd00::100".parse().expect("addr");
        let (i1, t1) = t.issue("n1", a, 1_000).expect("issue");
        assert_eq!(i1.install, 1);
        assert_ne!(t1, legacy);
        assert!(matches!(t.issue("n1", a, 1_500), Err(IssueError::TooSoon)), "one plan a second");
        let (_, t2) = t.issue("n1", a, 2_000).expect("issue");
        assert_eq!(t.check("n1", &t2), Check::Current);
        assert!(matches!(t.check("n1", &t1), Check::Stale { presented: 1, .. }));
        assert!(matches!(t.check("n1", &legacy), Check::Stale { presented: 0, .. }));
        assert_eq!(t.check("n1", "0123456789abcdef0123456789abcdef"), Check::Invalid);
        assert_eq!(
            t.check("n1", &format!("1.{}", &t1[2..])),
            Check::Stale { presented: 1, current: t.current("n1").expect("issued") }
        );
        assert_eq!(t.check("n1", &t1.replace("1.", "3.")), Check::Invalid, "a future install is forged");
        assert_eq!(t.check("n1", "0.abc"), Check::Invalid);
        assert_eq!(t.check("n1", "x.abc"), Check::Invalid);
        assert_eq!(t.check("n2", &t2), Check::Invalid, "a token is its node's only");
        let again = NodeTokens::open(dir.path(), key).expect("reopen");
        assert_eq!(again.check("n1", &t2), Check::Current);
        assert_eq!(again.current("n1").map(|i| i.install), Some(2));
    }
}
