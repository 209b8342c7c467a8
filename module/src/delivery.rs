//! Delivery to gateway nodes: one Pub/Sub message per interested node, on the
//! node's own channel, carrying bytes encoded once for all of them.
//!
//! On a cluster a node names, in its lease, a sharded channel that hashes to
//! this shard; its messages then go out with `SPUBLISH` semantics and stay
//! on the shard (its replicas included) instead of crossing the whole
//! cluster bus as a classic `PUBLISH` does.

use broker::envelope;
use broker::names;
use broker::protocol::{self, PresenceAction};
use broker::registry::{PresenceChange, PresenceEvent, Registry};
use redis_module::{Context, ContextFlags, RedisString};

use crate::ffi;
use crate::state::Stats;

/// True when this context may send Pub/Sub messages: a master running a
/// client's command or its own timer, not a replica applying the master's
/// stream and not a server loading its AOF (those deliveries already happened).
pub fn allowed(ctx: &Context) -> bool {
    let flags = ctx.get_flags();
    !flags.contains(ContextFlags::REPLICATED) && !flags.contains(ContextFlags::LOADING)
}

/// Publishes `envelope` once on the channel of each of `nodes` (its sharded
/// channel when its lease named one); counts them.
pub fn to_nodes(
    ctx: &Context,
    registry: &Registry,
    stats: &mut Stats,
    nodes: &[String],
    envelope: &[u8],
) {
    if nodes.is_empty() || !allowed(ctx) {
        return;
    }
    // Binary-safe strings: envelopes hold NUL bytes (`create_string` would refuse them).
    let message = RedisString::create_from_slice(ctx.get_raw(), envelope);
    for node in nodes {
        let sent = match registry.node_channel(node) {
            Some(sharded) => {
                let channel = RedisString::create_from_slice(ctx.get_raw(), sharded.as_bytes());
                ffi::publish_shard(ctx, &channel, &message)
            }
            None => {
                let classic = names::node_channel(node);
                let channel = RedisString::create_from_slice(ctx.get_raw(), classic.as_bytes());
                ffi::publish(ctx, &channel, &message)
            }
        };
        if sent {
            stats.deliveries += 1;
        }
    }
}

/// Delivers presence join/leave events to the nodes hosting each room.
pub fn presence(ctx: &Context, registry: &Registry, stats: &mut Stats, events: &[PresenceEvent]) {
    for event in events {
        let action = match event.change {
            PresenceChange::Join => PresenceAction::Join,
            PresenceChange::Leave => PresenceAction::Leave,
        };
        let frame = protocol::encode_presence_frame(&event.room, &event.user, action);
        let envelope = envelope::encode_presence_envelope(&event.room, &event.epoch, &frame);
        to_nodes(ctx, registry, stats, &event.nodes, &envelope);
    }
}
