//! The end of loading (an RDB, an AOF and its replayed tail, a replica's
//! full sync, `DEBUG RELOAD`): the moment the after-load reconciliation
//! starts ([`broker::registry::Registry::after_load`]). Not earlier: while
//! an AOF tail replays, old `NODE.LEASE … DEADLINE` and the opens and joins
//! of connections that closed since are applied again, and would undo it.

use redis_module::server_events::{FlushSubevent, LoadingSubevent};
use redis_module::Context;
use redis_module_macros::{flush_event_handler, loading_event_handler};

use crate::{guard, state};

#[loading_event_handler]
fn loading_event(ctx: &Context, event: LoadingSubevent) {
    if event != LoadingSubevent::Ended {
        return;
    }
    guard::callback(ctx, "loading ended", || {
        let now = state::now_ms();
        let nodes = state::with(|s| {
            s.registry.after_load(now);
            s.registry.node_count()
        });
        // A file saved before keys brought the whole registry in its aux
        // data: its names get their keys now.
        crate::keys::create_missing(ctx);
        if nodes > 0 {
            ctx.log_notice(&format!(
                "broker: loaded {nodes} node(s); each registers its connections again at its next lease"
            ));
        }
    });
}

/// After `FLUSHALL`/`FLUSHDB`: the state of names whose keys went goes too
/// ([`crate::keys::after_flush`]; the broker's keys are in database 0).
#[flush_event_handler]
fn flush_event(ctx: &Context, event: FlushSubevent) {
    if event != FlushSubevent::Ended {
        return;
    }
    guard::callback(ctx, "flush ended", || {
        crate::ffi::select_db(ctx, 0);
        crate::keys::after_flush(ctx);
    });
}
