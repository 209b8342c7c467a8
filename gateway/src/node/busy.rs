//! Connections with a module call in flight ([`Busy`]): the reconciliation
//! leaves them alone, since Redis may or may not have run that call yet.
//! A guard marks one call, from before it is sent until its answer (or,
//! for an admission, until the connection is in the hub).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Connection ids with calls in flight, counted; and, while the
/// reconciliation reads Redis's view ([`Busy::watch`]), the ones whose
/// call ended meanwhile: that view may predate their call, the node's
/// view does not.
#[derive(Debug, Default)]
pub struct Busy {
    calls: Mutex<HashMap<Arc<str>, u32>>,
    ended: Mutex<Option<HashSet<Arc<str>>>>,
}

impl Busy {
    /// Marks one call of `conn` in flight until the guard is dropped.
    pub fn hold(self: &Arc<Busy>, conn: &Arc<str>) -> BusyGuard {
        let mut map = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(conn.clone()).or_insert(0) += 1;
        BusyGuard {
            busy: self.clone(),
            conn: conn.clone(),
        }
    }

    /// The connections with calls in flight now.
    pub fn snapshot(&self) -> HashSet<Arc<str>> {
        let map = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        map.keys().cloned().collect()
    }

    /// Starts noting the connections whose calls end, until [`Busy::since_watch`].
    pub fn watch(&self) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashSet::new());
    }

    /// The connections with calls in flight now or ended since
    /// [`Busy::watch`]; stops noting.
    pub fn since_watch(&self) -> HashSet<Arc<str>> {
        let ended = self
            .ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let mut all = self.snapshot();
        all.extend(ended);
        all
    }
}

/// One call in flight (see [`Busy::hold`]).
#[derive(Debug)]
pub struct BusyGuard {
    busy: Arc<Busy>,
    conn: Arc<str>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        {
            let mut map = self.busy.calls.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&self.conn) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.conn);
                }
            }
        }
        let mut ended = self.busy.ended.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ended) = ended.as_mut() {
            ended.insert(self.conn.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_calls_per_connection() {
        let busy = Arc::new(Busy::default());
        let a: Arc<str> = Arc::from("n1.a");
        let first = busy.hold(&a);
        let second = busy.hold(&a);
        drop(first);
        assert!(busy.snapshot().contains(&a));
        drop(second);
        assert!(busy.snapshot().is_empty());
    }

    #[test]
    fn a_call_that_ended_while_watching_counts_as_busy_once() {
        let busy = Arc::new(Busy::default());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("n1.a"), Arc::from("n1.b"));
        let before = busy.hold(&a);
        drop(before);
        busy.watch();
        let during = busy.hold(&b);
        drop(during);
        let still = busy.hold(&a);
        let seen = busy.since_watch();
        assert_eq!(
            seen.len(),
            2,
            "b ended while watching, a is in flight: {seen:?}"
        );
        drop(still);
        assert!(busy.since_watch().is_empty(), "watching stopped");
    }
}
