//! Connections that upgraded without a token and have not sent their
//! `auth` frame yet, counted per client address on this node
//! (`limits.max_preauth_per_ip`). They hold a socket and a task but are in
//! no module count (the module registers a connection only once its token
//! is verified), so without this one address could hold thousands of them
//! for 5 s each, over and over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Per-address counts of unauthenticated connections; an address leaves
/// the map when its count is back to 0.
#[derive(Debug, Default)]
pub struct Preauth {
    by_ip: Mutex<HashMap<String, u32>>,
}

/// One unauthenticated connection's place in [`Preauth`]; dropping it (the
/// `auth` frame came, or the connection ended) frees the place.
#[derive(Debug)]
pub struct PreauthSlot {
    preauth: Arc<Preauth>,
    ip: String,
}

impl Preauth {
    /// A place for one more unauthenticated connection from `ip`, unless it
    /// holds `max` already.
    pub fn try_acquire(self: &Arc<Self>, ip: &str, max: u32) -> Option<PreauthSlot> {
        let mut by_ip = self
            .by_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = by_ip.entry(ip.to_string()).or_insert(0);
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(PreauthSlot {
            preauth: self.clone(),
            ip: ip.to_string(),
        })
    }

    /// Unauthenticated connections from `ip` now.
    pub fn held(&self, ip: &str) -> u32 {
        let by_ip = self
            .by_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        by_ip.get(ip).copied().unwrap_or(0)
    }
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        let mut by_ip = self
            .preauth
            .by_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = by_ip.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_address_and_freed_on_drop() {
        let preauth = Arc::new(Preauth::default());
        let a: Vec<PreauthSlot> = (0..3)
            .map(|_| preauth.try_acquire("10.0.0.1", 3).expect("a place"))
            .collect();
        assert!(preauth.try_acquire("10.0.0.1", 3).is_none(), "full");
        let other = preauth.try_acquire("10.0.0.2", 3).expect("another address");
        drop(a);
        assert_eq!(preauth.held("10.0.0.1"), 0);
        assert!(
            preauth.by_ip.lock().unwrap().len() == 1,
            "freed addresses leave the map"
        );
        drop(other);
        assert!(preauth.by_ip.lock().unwrap().is_empty());
    }
}
