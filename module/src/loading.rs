//! The end of loading (an RDB, an AOF and its replayed tail, a replica's
//! full sync, `DEBUG RELOAD`): the moment the after-load reconciliation
//! starts ([`broker::registry::Registry::after_load`]). Not earlier: while
//! an AOF tail replays, old `NODE.LEASE … DEADLINE` and the opens and joins
//! of connections that closed since are applied again, and would undo it.

use redis_module::server_events::LoadingSubevent;
use redis_module::Context;
use redis_module_macros::loading_event_handler;

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
        if nodes > 0 {
            ctx.log_notice(&format!(
                "broker: loaded {nodes} node(s); each registers its connections again at its next lease"
            ));
        }
    });
}
