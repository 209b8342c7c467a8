//! Connections with a module call in flight ([`Busy`]): the reconciliation
//! leaves them alone, since Redis may or may not have run that call yet.
//! A guard marks one call, from before it is sent until its answer (or,
//! for an admission, until the connection is in the hub).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Connection ids with calls in flight, counted.
#[derive(Debug, Default)]
pub struct Busy(Mutex<HashMap<Arc<str>, u32>>);

impl Busy {
    /// Marks one call of `conn` in flight until the guard is dropped.
    pub fn hold(self: &Arc<Busy>, conn: &Arc<str>) -> BusyGuard {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(conn.clone()).or_insert(0) += 1;
        BusyGuard {
            busy: self.clone(),
            conn: conn.clone(),
        }
    }

    /// The connections with calls in flight now.
    pub fn snapshot(&self) -> HashSet<Arc<str>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.keys().cloned().collect()
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
        let mut map = self.busy.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.conn) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.conn);
            }
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
}
