//! Delivery to gateway nodes: one Pub/Sub message per interested node, on the
//! node's own channel, carrying bytes encoded once for all of them.
//!
//! On a cluster a node names, in its lease, a sharded channel that hashes to
//! this shard; its messages then go out with `SPUBLISH` semantics and stay
//! on the shard (its replicas included) instead of crossing the whole
//! cluster bus as a classic `PUBLISH` does.

use std::cell::RefCell;
use std::collections::HashMap;

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
        let sharded = registry.node_channel(node);
        let sent = with_channel(node, sharded, |channel| match sharded {
            Some(_) => ffi::publish_shard(ctx, channel, &message),
            None => ffi::publish(ctx, channel, &message),
        });
        if sent {
            stats.deliveries += 1;
        }
    }
}

/// A node's channel as a Redis string, kept between publishes (a publish
/// to a room on 4 nodes would otherwise build and free 4 channel strings).
struct Channel {
    /// The sharded channel it was made for (`None`: the classic one).
    sharded: Option<String>,
    channel: RedisString,
}

/// More nodes than this and the cache starts again (nodes come and go with
/// their leases; a cache of dead ones must not grow without bound).
const MAX_CACHED_CHANNELS: usize = 1024;

thread_local! {
    /// Node → its channel. Redis runs commands and timers on its main
    /// thread only, so this is one cache.
    static CHANNELS: RefCell<HashMap<String, Channel>> = RefCell::new(HashMap::new());
}

/// Runs `f` with `node`'s channel: `sharded` when its lease named one,
/// else its classic channel ([`names::node_channel`]).
fn with_channel<R>(node: &str, sharded: Option<&str>, f: impl FnOnce(&RedisString) -> R) -> R {
    CHANNELS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(c) = cache.get(node).filter(|c| c.sharded.as_deref() == sharded) {
            return f(&c.channel);
        }
        let name = sharded.map_or_else(|| names::node_channel(node), str::to_string);
        // No context: the string outlives the command (the cache frees it).
        let channel = RedisString::create_from_slice(std::ptr::null_mut(), name.as_bytes());
        let out = f(&channel);
        if cache.len() >= MAX_CACHED_CHANNELS {
            cache.clear();
        }
        let sharded = sharded.map(str::to_string);
        cache.insert(node.to_string(), Channel { sharded, channel });
        out
    })
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
