//! `BROKER.RPC.REPLY` and `BROKER.RPC.ERROR`: a backend's answer to a
//! client's `rpc`, delivered to the node of the connection.
//!
//! The key is the connection id, so on a cluster the answer runs on some
//! master; every master holds every node's lease, and the connection id
//! names its node ([`broker::names::conn_node`]), so no lookup is needed:
//! one envelope goes to that node's channel (its sharded channel on this
//! master when its lease named one). The client-bound frame is encoded
//! here, once. Nothing changes state: nothing is replicated, and a replica
//! or an AOF replay delivers nothing ([`delivery::allowed`]).

use broker::command::{RpcError, RpcReply};
use broker::{envelope, names, payload, protocol};
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use super::parse;
use crate::{delivery, error, guard, reply, state};

/// `BROKER.RPC.REPLY conn id payload [FORMAT f]`: the client gets
/// `ack {id, data: {data}}`. Replies 1 when the connection's node holds a
/// lease here (the answer was sent), 0 when not (dropped).
pub fn rpc_reply(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_reply)
}

fn run_reply(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: RpcReply = parse(argv)?;
    let data = payload::encode_payload(cmd.format, &cmd.payload)?;
    let frame = protocol::encode_ack_raw(cmd.id, &protocol::ack_rpc(&data));
    Ok(reply::int(deliver(ctx, &cmd.conn, cmd.id, &frame)))
}

/// `BROKER.RPC.ERROR conn id code message`: the client gets
/// `err {id, code: "rpc_error", msg, rpc_code}`. Replies as
/// [`rpc_reply`].
pub fn rpc_error(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_error)
}

fn run_error(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: RpcError = parse(argv)?;
    let frame = protocol::encode_rpc_err(cmd.id, &cmd.code, &cmd.message);
    Ok(reply::int(deliver(ctx, &cmd.conn, cmd.id, &frame)))
}

/// Sends `frame` for `conn`'s request `id` to the connection's node; 1
/// when that node holds a lease on this Redis, else 0.
fn deliver(ctx: &Context, conn: &str, id: i64, frame: &[u8]) -> u64 {
    let Some(node) = names::conn_node(conn) else {
        return 0;
    };
    state::with(|s| {
        if !s.registry.has_lease(node) {
            return 0;
        }
        let envelope = envelope::encode_rpc_reply_envelope(conn, id, frame);
        delivery::to_nodes(
            ctx,
            &s.registry,
            &mut s.stats,
            &[node.to_string()],
            &envelope,
        );
        1
    })
}
