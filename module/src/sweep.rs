//! The module's timer: expires node leases, ends lingering presences whose
//! grace ran out, drops idle rooms, and gives back the memory of maps that
//! a crowd left.
//!
//! Runs every `SWEEP_MS` on every server, but acts only on a master: a
//! replica learns the results from the master's replication stream
//! (`BROKER.NODE.RELEASE`, `BROKER.APPLY.LEAVE`, `BROKER.APPLY.DROP`), so it
//! never decides with its own clock. While clients are paused (`CLIENT
//! PAUSE`, `FAILOVER`) it changes nothing: Redis 7.0 aborts when a timer
//! propagates a write then, and the lease renewals the pause held back
//! must run first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis_module::{Context, ContextFlags};

use broker::command::{ApplyDrop, ApplyLeave, NodeRelease};

use crate::commands::nodes::release_node;
use crate::commands::{publish, rooms};
use crate::{guard, state};

/// Period of the timer, from the `SWEEP_MS` module argument.
pub static SWEEP_MS: AtomicU64 = AtomicU64::new(250);

/// Idle rooms dropped per tick at most, so one tick stays short.
const MAX_DROPS_PER_TICK: usize = 1000;

/// Until when clients are (or may be) paused, ms since the Unix epoch.
/// Redis 7.0 aborts when a timer propagates writes during a pause, and the
/// renewals the pause held back come only after it: the sweep changes
/// nothing until [`AFTER_PAUSE_MS`] past it.
static PAUSED_UNTIL_MS: AtomicU64 = AtomicU64::new(0);
/// How long after a pause the sweep still waits (held-back renewals run).
const AFTER_PAUSE_MS: u64 = 1000;
/// A `FAILOVER` without `TIMEOUT` pauses writes until it is done: assume
/// this long.
const FAILOVER_PAUSE_MS: u64 = 10_000;

/// Notes a client command seen by the module's command filter
/// (lower-cased words): `client pause <ms>`, `client unpause`, `failover`.
pub fn note_command(args: &[String]) {
    let word = |i: usize| args.get(i).map(String::as_str);
    let now = state::now_ms();
    let until = match (word(0), word(1)) {
        (Some("client"), Some("pause")) => {
            let ms = word(2).and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
            now.saturating_add(ms)
        }
        (Some("client"), Some("unpause")) => now,
        (Some("failover"), _) => {
            let timeout = args
                .iter()
                .position(|w| w == "timeout")
                .and_then(|i| word(i + 1))
                .and_then(|w| w.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .unwrap_or(FAILOVER_PAUSE_MS);
            now.saturating_add(timeout)
        }
        _ => return,
    };
    if word(1) == Some("unpause") {
        PAUSED_UNTIL_MS.store(until, Ordering::Relaxed);
    } else {
        PAUSED_UNTIL_MS.fetch_max(until, Ordering::Relaxed);
    }
}

/// True while clients may be paused (and shortly after).
fn paused(now_ms: u64) -> bool {
    now_ms
        < PAUSED_UNTIL_MS
            .load(Ordering::Relaxed)
            .saturating_add(AFTER_PAUSE_MS)
}

/// Arms the timer (called once at load, then by each tick).
pub fn start(ctx: &Context) {
    let period = Duration::from_millis(SWEEP_MS.load(Ordering::Relaxed).max(10));
    ctx.create_timer(period, tick, ());
}

fn tick(ctx: &Context, _: ()) {
    guard::callback(ctx, "the sweep timer", || {
        let flags = ctx.get_flags();
        if flags.contains(ContextFlags::MASTER)
            && !flags.contains(ContextFlags::LOADING)
            && !paused(state::now_ms())
        {
            expire_leases(ctx);
            end_lingering(ctx);
            drop_idle_rooms(ctx);
            // What the expired leases recorded; only here: a timer must
            // not propagate writes while clients are paused.
            guard::after_changes(ctx);
        }
        // Memory only, not state: on replicas too.
        state::with(|s| s.registry.compact());
    });
    // Armed again whatever happened, or leases would never expire again.
    start(ctx);
}

fn expire_leases(ctx: &Context) {
    let now = state::now_ms();
    let expired = state::with(|s| s.registry.expired_nodes(now));
    for node in expired {
        let release = NodeRelease::new(&node).reason(broker::lifecycle::reason::NODE_LOST);
        release_node(ctx, &release, now);
        state::with(|s| s.stats.leases_expired += 1);
        ctx.log_notice(&format!(
            "broker: lease of node {node} ran out; its connections were removed"
        ));
    }
}

fn end_lingering(ctx: &Context) {
    let now = state::now_ms();
    let expired = state::with(|s| s.registry.expired_lingering(now, MAX_DROPS_PER_TICK));
    for (room, user) in expired {
        rooms::end_lingering(ctx, &ApplyLeave { room, user });
    }
}

fn drop_idle_rooms(ctx: &Context) {
    let now = state::now_ms();
    let idle = state::with(|s| s.registry.idle_rooms(now, MAX_DROPS_PER_TICK));
    for room in idle {
        publish::drop_room(ctx, &ApplyDrop { room });
    }
}
