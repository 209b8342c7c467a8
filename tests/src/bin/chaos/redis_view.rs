//! What the module says, read from every master, and its comparison with
//! what the clients hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use broker_tests::commands::Command as _;
use broker_tests::{array, int, map, text, History, Online, Presence, RoomCount, RoomMembers};
use redis::{Connection, Value};

use crate::sim::View;

/// CRC16 (XMODEM), the Redis Cluster key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of `key` (with `{hash tags}`).
pub fn slot(key: &str) -> u16 {
    let k = key.as_bytes();
    let hashed = match k.iter().position(|&c| c == b'{') {
        Some(open) => match k[open + 1..].iter().position(|&c| c == b'}') {
            Some(len) if len > 0 => &k[open + 1..open + 1 + len],
            _ => k,
        },
        None => k,
    };
    crc16(hashed) % 16384
}

fn connect(port: u16) -> redis::RedisResult<Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let con = client.get_connection_with_timeout(Duration::from_millis(500))?;
    con.set_read_timeout(Some(Duration::from_secs(5)))?;
    con.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(con)
}

/// Which master serves which slots: `(first, last, port)`; one range over
/// everything for a single server.
pub fn topology(ports: &[u16], cluster: bool) -> Result<Vec<(u16, u16, u16)>, String> {
    if !cluster {
        return Ok(vec![(0, 16383, ports[0])]);
    }
    let mut last = String::from("no server answers");
    for &p in ports {
        let Ok(mut con) = connect(p) else { continue };
        match redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut con) {
            Ok(v) => {
                let mut out = Vec::new();
                for r in array(&v) {
                    let r = array(&r);
                    let master = array(&r[2]);
                    out.push((int(&r[0]) as u16, int(&r[1]) as u16, int(&master[1]) as u16));
                }
                let covered: u32 = out.iter().map(|r| u32::from(r.1 - r.0) + 1).sum();
                if covered == 16384 {
                    return Ok(out);
                }
                last = format!("{p}: slots cover {covered}");
            }
            Err(e) => last = format!("{p}: {e}"),
        }
    }
    Err(last)
}

/// Master ports in `topology`.
pub fn masters(topo: &[(u16, u16, u16)]) -> Vec<u16> {
    let set: BTreeSet<u16> = topo.iter().map(|r| r.2).collect();
    set.into_iter().collect()
}

/// The master serving `key`.
pub fn master_for(topo: &[(u16, u16, u16)], key: &str) -> u16 {
    let s = slot(key);
    topo.iter()
        .find(|r| r.0 <= s && s <= r.1)
        .map_or(topo[0].2, |r| r.2)
}

/// The module's state as the harness reads it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `BROKER.ONLINE` summed over the masters.
    pub online: (i64, i64),
    /// `BROKER.PRESENCE`: user → (conn → node).
    pub presence: HashMap<String, BTreeMap<String, String>>,
    /// `BROKER.ROOM.MEMBERS`: room → user → connections.
    pub members: HashMap<String, BTreeMap<String, i64>>,
    /// `BROKER.ROOM.COUNT`: room → (users, connections).
    pub counts: HashMap<String, (i64, i64)>,
}

/// Reads presence of `users`, members and counts of `rooms`, and ONLINE on
/// every master, one pipeline per master.
pub fn snapshot(
    ports: &[u16],
    cluster: bool,
    users: &[String],
    rooms: &[String],
) -> Result<Snapshot, String> {
    let topo = topology(ports, cluster)?;
    let mut snap = Snapshot::default();
    for port in masters(&topo) {
        let mut con = connect(port).map_err(|e| format!("{port}: {e}"))?;
        let my_users: Vec<&String> = users
            .iter()
            .filter(|u| master_for(&topo, u) == port)
            .collect();
        let my_rooms: Vec<&String> = rooms
            .iter()
            .filter(|r| master_for(&topo, r) == port)
            .collect();
        let mut pipe = redis::pipe();
        pipe.add_command(Online.to_cmd());
        for u in &my_users {
            pipe.add_command(Presence::new(u).to_cmd());
        }
        for r in &my_rooms {
            pipe.add_command(RoomMembers::new(r).limit(RoomMembers::MAX_LIMIT).to_cmd());
            pipe.add_command(RoomCount::new(r).to_cmd());
        }
        let replies: Vec<Value> = pipe.query(&mut con).map_err(|e| format!("{port}: {e}"))?;
        let mut it = replies.into_iter();
        let online = map(&it.next().ok_or("no ONLINE reply")?);
        snap.online.0 += int(&online["users"]);
        snap.online.1 += int(&online["connections"]);
        for u in my_users {
            let p = map(&it.next().ok_or("short reply")?);
            let conns: BTreeMap<String, String> = array(&p["conns"])
                .iter()
                .map(|c| {
                    let c = map(c);
                    (text(&c["conn"]), text(&c["node"]))
                })
                .collect();
            if !conns.is_empty() {
                snap.presence.insert(u.clone(), conns);
            }
        }
        for r in my_rooms {
            let m: BTreeMap<String, i64> = map(&it.next().ok_or("short reply")?)
                .iter()
                .map(|(k, v)| (k.clone(), int(v)))
                .collect();
            let c = map(&it.next().ok_or("short reply")?);
            snap.members.insert(r.clone(), m);
            snap.counts
                .insert(r.clone(), (int(&c["users"]), int(&c["connections"])));
        }
    }
    Ok(snap)
}

/// The current `(seq, epoch)` of each room.
pub fn room_seqs(
    ports: &[u16],
    cluster: bool,
    rooms: &[String],
) -> Result<HashMap<String, (u64, String)>, String> {
    let topo = topology(ports, cluster)?;
    let mut out = HashMap::new();
    for port in masters(&topo) {
        let mut con = connect(port).map_err(|e| format!("{port}: {e}"))?;
        let mine: Vec<&String> = rooms
            .iter()
            .filter(|r| master_for(&topo, r) == port)
            .collect();
        let mut pipe = redis::pipe();
        for r in &mine {
            pipe.add_command(History::new(r).limit(1).to_cmd());
        }
        let replies: Vec<Value> = pipe.query(&mut con).map_err(|e| format!("{port}: {e}"))?;
        for (r, v) in mine.into_iter().zip(replies) {
            let h = map(&v);
            out.insert(r.clone(), (int(&h["seq"]) as u64, text(&h["epoch"])));
        }
    }
    Ok(out)
}

/// How the module and the clients disagree.
#[derive(Debug, Default, Clone)]
pub struct Diff {
    /// Connections the module holds that no client has: `user conn@node`.
    pub ghosts: Vec<String>,
    /// Connections a client holds that the module does not know.
    pub missing: Vec<String>,
    /// Rooms whose members or counts differ, and ONLINE.
    pub counts: Vec<String>,
}

impl Diff {
    /// Nothing differs.
    pub fn exact(&self) -> bool {
        self.ghosts.is_empty() && self.missing.is_empty() && self.counts.is_empty()
    }

    /// A one-line summary with a few examples.
    pub fn summary(&self) -> String {
        let few = |v: &[String]| v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        format!(
            "{} ghosts [{}], {} missing [{}], {} count mismatches [{}]",
            self.ghosts.len(),
            few(&self.ghosts),
            self.missing.len(),
            few(&self.missing),
            self.counts.len(),
            few(&self.counts)
        )
    }
}

/// Compares the module's state with what the clients hold.
pub fn compare(snap: &Snapshot, views: &[View], rooms: &[String]) -> Diff {
    let mut diff = Diff::default();
    let mut want: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut members: HashMap<&str, BTreeMap<String, i64>> = HashMap::new();
    for v in views {
        let Some(conn) = &v.conn else { continue };
        want.entry(v.user.clone()).or_default().insert(conn.clone());
        for r in &v.rooms {
            *members
                .entry(r.as_str())
                .or_default()
                .entry(v.user.clone())
                .or_default() += 1;
        }
    }
    for (user, conns) in &snap.presence {
        for (conn, node) in conns {
            if !want.get(user).is_some_and(|w| w.contains(conn)) {
                diff.ghosts.push(format!("{user} {conn}@{node}"));
            }
        }
    }
    for (user, conns) in &want {
        for conn in conns {
            if !snap
                .presence
                .get(user)
                .is_some_and(|p| p.contains_key(conn))
            {
                diff.missing.push(format!("{user} {conn}"));
            }
        }
    }
    let live: i64 = want.values().map(|c| c.len() as i64).sum();
    if snap.online != (want.len() as i64, live) {
        diff.counts.push(format!(
            "ONLINE {:?}, clients hold ({}, {live})",
            snap.online,
            want.len()
        ));
    }
    let empty = BTreeMap::new();
    for r in rooms {
        let w = members.get(r.as_str()).unwrap_or(&empty);
        let got = snap.members.get(r).unwrap_or(&empty);
        if got != w {
            let extra: Vec<String> = got
                .iter()
                .filter(|(u, n)| w.get(*u) != Some(n))
                .map(|(u, n)| format!("{u}:{n}"))
                .take(3)
                .collect();
            let lack: Vec<String> = w
                .iter()
                .filter(|(u, n)| got.get(*u) != Some(n))
                .map(|(u, n)| format!("{u}:{n}"))
                .take(3)
                .collect();
            diff.counts
                .push(format!("{r} MEMBERS module {extra:?} clients {lack:?}"));
        }
        let want_count = (w.len() as i64, w.values().sum::<i64>());
        let got_count = snap.counts.get(r).copied().unwrap_or((0, 0));
        if got_count != want_count {
            diff.counts.push(format!(
                "{r} COUNT module {got_count:?} clients {want_count:?}"
            ));
        }
    }
    diff
}
