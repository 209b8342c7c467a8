//! The node's cap on WebSocket connections (`limits.max_conns`, or what
//! the open-file limit allows: [`crate::fd_limit`]). A connection takes its
//! place before the upgrade, authenticated or not, and keeps it until its
//! socket is closed; an upgrade that finds every place taken is answered
//! HTTP 503 (`broker_connections_refused_total{reason="max_conns"}`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Places of WebSocket connections on this node: how many are held, and
/// the most there may be.
#[derive(Debug)]
pub struct Capacity {
    held: AtomicU32,
    max: u32,
}

/// One connection's place in [`Capacity`]; dropping it (the upgrade
/// failed, or the connection's socket is closed) frees the place.
#[derive(Debug)]
pub struct ConnPlace {
    capacity: Arc<Capacity>,
}

impl Capacity {
    /// Room for `max` connections (at least 1).
    pub fn new(max: u32) -> Capacity {
        Capacity {
            held: AtomicU32::new(0),
            max: max.max(1),
        }
    }

    /// A place for one more connection, unless all [`Capacity::max`] are
    /// held.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnPlace> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .ok()?;
        Some(ConnPlace {
            capacity: self.clone(),
        })
    }

    /// Places held now.
    pub fn held(&self) -> u32 {
        self.held.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> u32 {
        self.max
    }
}

impl Drop for ConnPlace {
    fn drop(&mut self) {
        self.capacity.held.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_freed_on_drop() {
        let capacity = Arc::new(Capacity::new(3));
        let held: Vec<ConnPlace> = (0..3)
            .map(|_| capacity.try_acquire().expect("a place"))
            .collect();
        assert_eq!(capacity.held(), 3);
        assert!(capacity.try_acquire().is_none(), "full");
        assert_eq!(capacity.held(), 3, "a refusal takes nothing");
        drop(held);
        assert_eq!(capacity.held(), 0);
        let again = capacity.try_acquire().expect("a freed place");
        assert_eq!(capacity.held(), 1);
        drop(again);
    }

    #[test]
    fn concurrent_takers_never_pass_the_cap() {
        let capacity = Arc::new(Capacity::new(50));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let capacity = capacity.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for _ in 0..1000 {
                        if let Some(place) = capacity.try_acquire() {
                            assert!(capacity.held() <= 50);
                            mine.push(place);
                        }
                        if mine.len() > 3 {
                            mine.remove(0);
                        }
                    }
                    mine.len()
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert_eq!(capacity.held(), 0, "every place came back");
    }

    #[test]
    fn at_least_one_place() {
        assert_eq!(Capacity::new(0).max(), 1);
    }
}
