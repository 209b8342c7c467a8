//! The webhook loop's own Redis connections: `XREADGROUP ... BLOCK` holds
//! a connection while it waits, so the loop never borrows the store's
//! shared one. On one Redis: a multiplexed connection per stream, made
//! again after a connection error. On a cluster: one cluster connection
//! per topology round, shared by the round's readers; each reader sends
//! its commands to the master of its stream's slot (one reader per
//! master, so a blocked read delays no other reader).

use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, RedisResult, Value};

/// Connecting to one Redis server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may take beyond its `BLOCK` time.
pub const RESPONSE_MARGIN: Duration = Duration::from_secs(2);

/// A connection to the master holding one stream.
pub enum Link {
    /// One Redis.
    Single {
        /// Where to connect (boxed: the cluster variant is small).
        client: Box<redis::Client>,
        /// The connection, once made (dropped after a connection error).
        conn: Option<redis::aio::MultiplexedConnection>,
        /// The longest `BLOCK` plus [`RESPONSE_MARGIN`].
        response_timeout: Duration,
    },
    /// A cluster: commands routed to the master of `slot`.
    Cluster {
        /// The round's cluster connection.
        conn: ClusterConnection,
        /// The stream key's slot.
        slot: u16,
    },
}

impl Link {
    /// Runs `cmd`; a server error reply comes back as `Err` with its code.
    pub async fn query(&mut self, cmd: Cmd) -> RedisResult<Value> {
        let result = match self {
            Link::Single {
                client,
                conn,
                response_timeout,
            } => {
                if conn.is_none() {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(*response_timeout));
                    *conn = Some(
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?,
                    );
                }
                let Some(c) = conn.as_mut() else {
                    unreachable!("connected above")
                };
                let result = cmd.query_async::<Value>(c).await;
                if let Err(err) = &result {
                    if err.code().is_none() {
                        // Not an answer from Redis: connect again next time.
                        *conn = None;
                    }
                }
                result
            }
            Link::Cluster { conn, slot } => {
                let route =
                    SingleNodeRoutingInfo::SpecificNode(Route::new(*slot, SlotAddr::Master));
                conn.route_command(cmd, RoutingInfo::SingleNode(route))
                    .await
            }
        };
        match result? {
            Value::ServerError(err) => Err(err.into()),
            v => Ok(v),
        }
    }
}
