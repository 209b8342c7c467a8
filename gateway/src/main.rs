//! `broker-gateway`: the WebSocket gateway node.
//!
//! Until the gateway issue lands this is a stub that only prints its version,
//! so `make run` has something to start.

fn main() {
    println!(
        "broker-gateway {} (stub: the WebSocket gateway is not built yet)",
        env!("CARGO_PKG_VERSION")
    );
}
