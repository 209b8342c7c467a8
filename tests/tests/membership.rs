//! Memberships the backend decides (contract section 7, docs/BACKENDS.md):
//! `BROKER.USER.JOIN` / `USER.LEAVE` and their HTTP routes reach every live
//! connection of the user on every node, which gets `joined` / `left`, the
//! room's messages from then on, presence events for the other members and
//! lifecycle entries — on one Redis and across a cluster's shards.

use std::time::Duration;

use broker::protocol::ServerFrame;
use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{msg_fields, Client, Gateway, Options};
use broker_tests::{eventually, RedisServer};
use redis::Value;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

/// The next `joined` frame: `(room, seq, epoch)`.
async fn joined(client: &mut Client) -> (String, u64, String) {
    match client
        .recv_matching(WAIT, "joined", |f| matches!(f, ServerFrame::Joined { .. }))
        .await
    {
        ServerFrame::Joined { room, seq, epoch } => (room, seq, epoch),
        _ => unreachable!(),
    }
}

/// The next `left` frame's room.
async fn left(client: &mut Client) -> String {
    match client
        .recv_matching(WAIT, "left", |f| matches!(f, ServerFrame::Left { .. }))
        .await
    {
        ServerFrame::Left { room } => room,
        _ => unreachable!(),
    }
}

/// The next `msg` of `room`: `(ev, seq)`.
async fn message(client: &mut Client, room: &str) -> (String, u64) {
    let frame = client
        .recv_matching(
            WAIT,
            "msg",
            |f| matches!(f, ServerFrame::Msg { room: r, .. } if r == room),
        )
        .await;
    let (_, ev, _, seq, _, _) = msg_fields(&frame);
    (ev.to_string(), seq)
}

/// Runs `BROKER.USER.JOIN`/`LEAVE` on `redis`; the connections told.
fn tell(redis: &RedisServer, command: &str, user: &str, room: &str) -> i64 {
    redis::cmd(command)
        .arg(user)
        .arg(room)
        .query(&mut redis.client())
        .expect(command)
}

#[tokio::test]
async fn the_backend_joins_and_leaves_every_connection_of_a_user_on_every_node() {
    let redis = RedisServer::start();
    let a = Gateway::start(&redis, Options::default().node("gw-a")).await;
    let b = Gateway::start(&redis, Options::default().node("gw-b")).await;
    let room = "chat:ticket-1";
    let mut bob = b.connect("bob").await; // the agent already in the room
    bob.join(room).await;
    let first = a.publish(room, "before", json!({})).await;
    let mut alice = vec![
        a.connect("alice").await,
        a.connect("alice").await,
        b.connect("alice").await,
    ];

    assert_eq!(tell(&redis, "BROKER.USER.JOIN", "alice", room), 3);
    for client in &mut alice {
        let (r, seq, epoch) = joined(client).await;
        assert_eq!(
            (r.as_str(), seq),
            (room, first),
            "joined at the room's position"
        );
        assert!(!epoch.is_empty());
    }
    let (who, action) = bob.recv_presence(room).await;
    assert_eq!(
        (who.as_str(), action.as_str()),
        ("alice", "join"),
        "one presence event"
    );
    let seq = a.publish(room, "hello", json!({"text": "hi"})).await;
    let seq_hello = seq;
    for client in &mut alice {
        assert_eq!(message(client, room).await, ("hello".to_string(), seq));
    }
    let members: Value = redis::cmd("BROKER.ROOM.COUNT")
        .arg(room)
        .query(&mut redis.client())
        .unwrap();
    assert_eq!(
        broker_tests::int(&broker_tests::field(&members, "connections")),
        4
    );

    // Joining again changes nothing and sends no second `joined`.
    assert_eq!(tell(&redis, "BROKER.USER.JOIN", "alice", room), 3);

    assert_eq!(tell(&redis, "BROKER.USER.LEAVE", "alice", room), 3);
    for client in &mut alice {
        assert_eq!(left(client).await, room);
    }
    let (who, action) = bob.recv_presence(room).await;
    assert_eq!((who.as_str(), action.as_str()), ("alice", "leave"));
    let after = a.publish(room, "after", json!({})).await;
    assert_eq!(message(&mut bob, room).await, ("before".to_string(), first));
    assert_eq!(message(&mut bob, room).await, ("hello".to_string(), seq));
    assert_eq!(message(&mut bob, room).await, ("after".to_string(), after));
    for client in &mut alice {
        let mut rest = Vec::new();
        while let Some(frame) = client.recv_within(Duration::from_millis(300)).await {
            rest.push(frame);
        }
        let wrong = rest.iter().any(|f| match f {
            ServerFrame::Msg { seq, .. } => *seq > seq_hello,
            ServerFrame::Joined { .. } => true,
            _ => false,
        });
        assert!(
            !wrong,
            "no message after the leave, no second joined: {rest:?}"
        );
    }
    // The lifecycle stream has each connection's join and its server leave.
    let entries: Value = redis::cmd("XRANGE")
        .arg("broker:events")
        .arg("-")
        .arg("+")
        .query(&mut redis.client())
        .unwrap();
    let about_room: Vec<(String, Option<String>)> = broker_tests::array(&entries)
        .iter()
        .map(|e| {
            let fields: Vec<String> = broker_tests::array(&broker_tests::array(e)[1])
                .iter()
                .map(broker_tests::text)
                .collect();
            let get = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .map(|kv| kv[1].clone())
            };
            (
                format!("{} {}", get("type").unwrap(), get("user").unwrap()),
                get("room").filter(|r| r == room).and(get("reason")),
            )
        })
        .filter(|(what, _)| {
            what.ends_with("alice") && (what.starts_with("join") || what.starts_with("leave"))
        })
        .collect();
    let joins = about_room
        .iter()
        .filter(|(w, _)| w.starts_with("join"))
        .count();
    let server_leaves = about_room
        .iter()
        .filter(|(w, reason)| w.starts_with("leave") && reason.as_deref() == Some("server"))
        .count();
    assert_eq!((joins, server_leaves), (3, 3), "{about_room:?}");
}

#[tokio::test]
async fn the_admin_api_joins_and_leaves_and_refuses_personal_rooms() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut carol = gw.connect("carol").await;
    let r = gw
        .admin_post("/api/users/carol/join", &json!({"room": "orders:o-7"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["connections"], 1);
    assert_eq!(joined(&mut carol).await.0, "orders:o-7");
    let r = gw
        .admin_post("/api/users/carol/leave", &json!({"room": "orders:o-7"}))
        .await;
    assert_eq!(r.json()["connections"], 1);
    assert_eq!(left(&mut carol).await, "orders:o-7");
    for (body, why) in [
        (json!({"room": "user:dave"}), "a personal room"),
        (json!({"room": "no-namespace"}), "an invalid room"),
        (json!({}), "no room"),
    ] {
        let r = gw.admin_post("/api/users/carol/join", &body).await;
        assert_eq!(r.status, 400, "{why}: {}", r.body);
    }
    let r = gw
        .admin_post("/api/users/nobody/join", &json!({"room": "chat:x"}))
        .await;
    assert_eq!(r.json()["connections"], 0, "a user with no connection");
    eventually("carol is still connected and in no extra room", || {
        let conns = broker_tests::gateway::presence(&redis, "carol");
        if conns.len() == 1 && conns[0].rooms == ["user:carol"] {
            Ok(())
        } else {
            Err(format!("{conns:?}"))
        }
    });
}

#[tokio::test]
async fn on_a_cluster_the_join_reaches_the_user_s_nodes_and_lands_on_the_room_s_shard() {
    let cluster = RedisCluster::start(3);
    let options = |node: &str| Options::default().node(node).redis_cluster(&cluster.urls());
    let a = Gateway::start(&cluster.servers[0], options("gw-ca")).await;
    let b = Gateway::start(&cluster.servers[0], options("gw-cb")).await;
    let user = "erin";
    let room = cluster
        .room_per_shard("chat")
        .into_iter()
        .find(|r| cluster.master_index(r) != cluster.master_index(user))
        .expect("a room on another shard than the user");
    let mut on_a = a.connect(user).await;
    let mut on_b = b.connect(user).await;
    let told = cluster.on(user, &["BROKER.USER.JOIN", user, &room]);
    assert_eq!(told, Value::Int(2));
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(joined(client).await.0, room);
    }
    let seq = a.publish(&room, "note", json!({})).await;
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(message(client, &room).await, ("note".to_string(), seq));
    }
    let members = cluster.on(&room, &["BROKER.ROOM.MEMBERS", &room]);
    assert!(format!("{members:?}").contains(user), "{members:?}");
    let told = cluster.on(user, &["BROKER.USER.LEAVE", user, &room]);
    assert_eq!(told, Value::Int(2));
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(left(client).await, room);
    }
    eventually("the room's shard no longer holds the user", || {
        let members = cluster.on(&room, &["BROKER.ROOM.MEMBERS", &room]);
        if format!("{members:?}").contains(user) {
            Err(format!("{members:?}"))
        } else {
            Ok(())
        }
    });
}
