//! The module's one piece of global state: the [`Registry`] and the counters
//! shown by `INFO broker`.
//!
//! Redis runs commands, timers and persistence callbacks on its main thread,
//! one at a time, so the mutex is never contended; it is there so the state
//! is a safe `static` rather than `static mut`. A poisoned lock (which would
//! need a panic, and the command entry points catch those) is recovered, not
//! propagated: the data itself is always left consistent between calls.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use broker::registry::Registry;

/// Counters for `INFO broker`; they restart at zero with the server.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Messages published (master and replica alike).
    pub publishes: u64,
    /// Pub/Sub messages sent to gateway nodes (messages and presence).
    pub deliveries: u64,
    /// Limited `THROTTLE` calls and rate-limited publishes.
    pub throttled: u64,
    /// Node leases that ran out and were cleaned up by the timer.
    pub leases_expired: u64,
    /// Entries appended to the lifecycle stream.
    pub events_written: u64,
    /// Lifecycle events that could not be appended (an `XADD` error, or
    /// no slot of this master to name a stream in).
    pub events_failed: u64,
}

/// Everything the module keeps.
#[derive(Debug, Default)]
pub struct State {
    /// Nodes, connections, presence, rooms, history.
    pub registry: Registry,
    /// Counters.
    pub stats: Stats,
    /// Seed of the epoch generator (mixed with the time at load).
    epoch_counter: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Runs `f` with the module state.
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard: MutexGuard<'_, Option<State>> = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(State::default))
}

/// Runs `f` with the module state unless it is locked. For Redis's crash
/// report, which may run while a command holds the lock.
pub fn try_with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    match STATE.try_lock() {
        Ok(mut guard) => Some(f(guard.get_or_insert_with(State::default))),
        Err(std::sync::TryLockError::Poisoned(p)) => {
            Some(f(p.into_inner().get_or_insert_with(State::default)))
        }
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Nanoseconds since the Unix epoch (GCRA arithmetic).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl State {
    /// A fresh, unpredictable-enough room epoch: 16 hex digits mixing the
    /// clock and a counter (splitmix64). Epochs only have to differ between
    /// incarnations of a room; they are not secrets.
    pub fn new_epoch(&mut self) -> String {
        self.epoch_counter = self.epoch_counter.wrapping_add(1);
        let mut z =
            (now_ns() as u64).wrapping_add(self.epoch_counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        format!("{z:016x}")
    }
}
