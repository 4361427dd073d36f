//! Counts per client address, for the caps on what one address may hold at once: HTTP
//! connections (`server`) and Engine.IO sessions (`engineio::engine`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// How many of something each client address holds. A std lock: map updates only. Addresses
/// holding nothing are forgotten, so the map is as large as the addresses holding something.
#[derive(Debug, Default)]
pub struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Counts one more for `addr`, unless it holds `max` already (then false).
    pub fn acquire(&self, addr: IpAddr, max: usize) -> bool {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.get(&addr).copied().unwrap_or(0);
        if count >= max {
            return false;
        }
        held.insert(addr, count + 1);
        true
    }

    /// Gives back one that `acquire` counted for `addr`.
    pub fn release(&self, addr: IpAddr) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&addr) {
            *count -= 1;
            if *count == 0 {
                held.remove(&addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_cap_and_forgets_idle_addresses() {
        let table = PerAddress::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(table.acquire(a, 2) && table.acquire(a, 2));
        assert!(!table.acquire(a, 2));
        assert!(table.acquire(b, 2));
        table.release(a);
        assert!(table.acquire(a, 2));
        for addr in [a, a, b] {
            table.release(addr);
        }
        assert!(table.0.lock().unwrap().is_empty());
        assert!(!table.acquire(a, 0));
        assert!(table.0.lock().unwrap().is_empty());
    }
}
