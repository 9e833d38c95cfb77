//! Per-source admission: how many of something (connections, transfers) one address may hold
//! at once, and how many all together. A slot is a guard; dropping it gives the place back,
//! however the work it guarded ended. Shared by HTTP and TFTP.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerSource,
}

#[derive(Debug)]
pub struct PerSource {
    per_source: usize,
    total: usize,
    held: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl PerSource {
    pub fn new(per_source: usize, total: usize) -> Arc<Self> {
        Arc::new(PerSource { per_source, total, held: Mutex::default() })
    }

    /// A place for `src`, held until the returned slot drops.
    pub fn claim(self: &Arc<Self>, src: Ipv6Addr) -> Result<Slot, Refused> {
        let mut m = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if m.values().sum::<usize>() >= self.total {
            return Err(Refused::Total);
        }
        let n = m.entry(src).or_default();
        if *n >= self.per_source {
            return Err(Refused::PerSource);
        }
        *n += 1;
        Ok(Slot { owner: self.clone(), src })
    }
}

#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerSource>,
    src: Ipv6Addr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.owner.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.src) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_come_back_when_slots_drop() {
        let l = PerSource::new(2, 3);
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().expect("a"), "fd00::2".parse().expect("b"));
        let a1 = l.claim(a).expect("1");
        let _a2 = l.claim(a).expect("2");
        assert_eq!(l.claim(a).err(), Some(Refused::PerSource));
        let _b1 = l.claim(b).expect("b");
        assert_eq!(l.claim(b).err(), Some(Refused::Total));
        drop(a1);
        assert!(l.claim(b).is_ok());
    }
}
