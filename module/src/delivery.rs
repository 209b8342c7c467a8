//! Delivery to gateway nodes: one Pub/Sub message per interested node, on the
//! node's own channel, carrying bytes encoded once for all of them.

use broker::names;
use broker::registry::{PresenceChange, PresenceEvent};
use broker::wire::{self, PresenceAction};
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

/// Publishes `envelope` once on the channel of each of `nodes`; counts them.
pub fn to_nodes(ctx: &Context, stats: &mut Stats, nodes: &[String], envelope: &[u8]) {
    if nodes.is_empty() || !allowed(ctx) {
        return;
    }
    // Binary-safe strings: envelopes hold NUL bytes (`create_string` would refuse them).
    let message = RedisString::create_from_slice(ctx.get_raw(), envelope);
    for node in nodes {
        let channel =
            RedisString::create_from_slice(ctx.get_raw(), names::node_channel(node).as_bytes());
        if ffi::publish(ctx, &channel, &message) {
            stats.deliveries += 1;
        }
    }
}

/// Delivers presence join/leave events to the nodes hosting each room.
pub fn presence(ctx: &Context, stats: &mut Stats, events: &[PresenceEvent]) {
    for event in events {
        let action = match event.change {
            PresenceChange::Join => PresenceAction::Join,
            PresenceChange::Leave => PresenceAction::Leave,
        };
        let frame = wire::encode_presence_frame(&event.room, &event.user, action);
        let envelope = wire::encode_presence_envelope(&event.room, &event.epoch, &frame);
        to_nodes(ctx, stats, &event.nodes, &envelope);
    }
}
