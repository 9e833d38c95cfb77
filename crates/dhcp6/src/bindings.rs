//! The binding table: which (DUID, IAID) holds which address until when.
//!
//! Bindings are kept per (DUID, IAID) — one OVMF boot runs two DHCPv6 clients with the same
//! DUID and different IAIDs, and both must be answered — while the *address* of an inventory
//! node is fixed by the inventory, so every binding of one host carries the same address.
//! Pool addresses (unknown clients, when a dynamic pool is configured) are unique per binding.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BindingKey {
    pub duid: Vec<u8>,
    pub iaid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub key: BindingKey,
    pub addr: Ipv6Addr,
    /// Inventory node name; `None` for a pool lease.
    pub node: Option<String>,
    /// Unix seconds after which the binding is gone (valid lifetime end).
    pub expires: u64,
}

/// A change the server must make durable before it sends the reply that announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Upsert(Binding),
    Remove(BindingKey),
}

#[derive(Debug, Default, Clone)]
pub struct Bindings {
    by_key: HashMap<BindingKey, Binding>,
    /// The keys each inventory node holds, so the engine can cap them without a scan.
    by_node: HashMap<String, BTreeSet<BindingKey>>,
    /// Pool addresses in use, to keep pool leases unique.
    pool_addrs: HashMap<Ipv6Addr, BindingKey>,
    pool_cursor: u128,
    /// When `prune_expired_now_and_then` last scanned the table (Unix seconds).
    last_prune: u64,
}

impl Bindings {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
    pub fn get(&self, key: &BindingKey) -> Option<&Binding> {
        self.by_key.get(key)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.by_key.values()
    }

    /// Pool bindings held (unexpired or not yet pruned).
    pub fn pool_len(&self) -> usize {
        self.pool_addrs.len()
    }

    /// The bindings an inventory node holds.
    pub fn of_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Binding> + 'a {
        self.by_node.get(node).into_iter().flatten().filter_map(|k| self.by_key.get(k))
    }

    /// Forgets every binding that expired at or before `now`, as replay does at start-up
    /// (expiry needs no journal record: a replayed expired binding is dropped too). Returns
    /// how many went.
    pub fn prune_expired(&mut self, now: u64) -> usize {
        let gone: Vec<BindingKey> = self.by_key.values().filter(|b| b.expires <= now).map(|b| b.key.clone()).collect();
        for k in &gone {
            self.apply(&Change::Remove(k.clone()));
        }
        gone.len()
    }

    /// [`Bindings::prune_expired`], at most once per second: callers on the packet path (a
    /// full pool) must not rescan the whole table for every message of a flood.
    pub fn prune_expired_now_and_then(&mut self, now: u64) -> usize {
        if now <= self.last_prune {
            return 0;
        }
        self.last_prune = now;
        self.prune_expired(now)
    }

    /// Applies a change (also used to replay the persisted log at start-up).
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Upsert(b) => {
                if let Some(old) = self.by_key.insert(b.key.clone(), b.clone()) {
                    self.forget(&old, Some(b));
                }
                match &b.node {
                    None => {
                        self.pool_addrs.insert(b.addr, b.key.clone());
                    }
                    Some(n) => {
                        self.by_node.entry(n.clone()).or_default().insert(b.key.clone());
                    }
                }
            }
            Change::Remove(k) => {
                if let Some(old) = self.by_key.remove(k) {
                    self.forget(&old, None);
                }
            }
        }
    }

    /// Drops the index entries `old` held that its replacement `new` (same key; `None` on
    /// removal) does not take over.
    fn forget(&mut self, old: &Binding, new: Option<&Binding>) {
        if old.node.is_none() && self.pool_addrs.get(&old.addr) == Some(&old.key) {
            self.pool_addrs.remove(&old.addr);
        }
        if let Some(n) = &old.node
            && new.is_none_or(|b| b.node.as_ref() != Some(n))
            && let Some(keys) = self.by_node.get_mut(n)
        {
            keys.remove(&old.key);
            if keys.is_empty() {
                self.by_node.remove(n);
            }
        }
    }

    /// A free pool address for `key`: its current one if it has one, else the next address
    /// from the cursor that is not held by an unexpired binding and not `reserved`.
    pub fn pool_address(
        &mut self,
        key: &BindingKey,
        start: Ipv6Addr,
        end: Ipv6Addr,
        now: u64,
        reserved: &dyn Fn(Ipv6Addr) -> bool,
    ) -> Option<Ipv6Addr> {
        if let Some(b) = self.by_key.get(key).filter(|b| b.node.is_none()) {
            return Some(b.addr);
        }
        let (lo, hi) = (u128::from(start), u128::from(end));
        let size = hi.checked_sub(lo)?.checked_add(1)?;
        for step in 0..size {
            let a = Ipv6Addr::from(lo + (self.pool_cursor + step) % size);
            if reserved(a) {
                continue;
            }
            let free = match self.pool_addrs.get(&a) {
                None => true,
                Some(holder) => self.by_key.get(holder).is_none_or(|b| b.expires <= now),
            };
            if free {
                if let Some(stale) = self.pool_addrs.get(&a).cloned() {
                    self.apply(&Change::Remove(stale));
                }
                self.pool_cursor = (self.pool_cursor + step + 1) % size;
                return Some(a);
            }
        }
        None
    }
}
