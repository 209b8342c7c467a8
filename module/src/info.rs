//! The `INFO broker` section.

use redis_module::{InfoContext, RedisResult};
use redis_module_macros::info_command_handler;

use crate::state;

/// Fills the `broker` section (the deprecated field API is the one that
/// names the section after the module itself, so `INFO broker` finds it).
#[info_command_handler]
fn broker_info(ctx: &InfoContext, for_crash_report: bool) -> RedisResult<()> {
    // A panic must not unwind into Redis: the section is then left out.
    crate::guard::quietly(|| fill(ctx, for_crash_report)).unwrap_or(Ok(()))
}

#[allow(deprecated)]
fn fill(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    let Some((stats, nodes, users, conns, rooms)) = state::try_with(|s| {
        let (users, conns) = s.registry.online();
        (
            s.stats,
            s.registry.node_count(),
            users,
            conns,
            s.registry.rooms_held(),
        )
    }) else {
        return Ok(());
    };
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    ctx.add_info_section(None);
    ctx.add_info_field_str("version", env!("CARGO_PKG_VERSION"));
    ctx.add_info_field_long_long("api", i64::from(broker::MODULE_API));
    ctx.add_info_field_long_long("nodes", as_i64(nodes));
    ctx.add_info_field_long_long("connections", as_i64(conns));
    ctx.add_info_field_long_long("users", as_i64(users));
    ctx.add_info_field_long_long("rooms", as_i64(rooms));
    ctx.add_info_field_long_long("publishes", as_i64(stats.publishes));
    ctx.add_info_field_long_long("deliveries", as_i64(stats.deliveries));
    ctx.add_info_field_long_long("throttled", as_i64(stats.throttled));
    ctx.add_info_field_long_long("leases_expired", as_i64(stats.leases_expired));
    ctx.add_info_field_long_long(
        "events_maxlen",
        as_i64(crate::events::MAXLEN.load(std::sync::atomic::Ordering::Relaxed)),
    );
    ctx.add_info_field_long_long("events_written", as_i64(stats.events_written));
    ctx.add_info_field_long_long("events_failed", as_i64(stats.events_failed));
    Ok(())
}
