//! The simulated clients and the harness's own bookkeeping.
//!
//! Each client is one task holding one WebSocket at a time. It knows which
//! rooms it wants to be in and, per room, the last `(seq, epoch)` it saw.
//! When its connection is lost without it asking (a fault), it reconnects
//! to any gateway and joins every room again with `since`; when it leaves
//! on purpose (churn), it starts over as a new session with no
//! expectations. What each client sees is judged per room as it arrives:
//! the next `seq` (delivered), a `seq` already seen (duplicate) or one that
//! fills an earlier gap (out of order), a jump (a gap, classified at the
//! end of the phase as reported missed or lost).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_tests::gateway::token;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as J};
use tokio_tungstenite::tungstenite::Message;

/// xorshift64*: a small deterministic generator.
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `n` of run `seed`.
    pub fn new(seed: u64, n: u64) -> Rng {
        Rng((0x9E37_79B9_7F4A_7C15 ^ seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A duration in `lo..hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// What the checker reads of one client.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// The user id.
    pub user: String,
    /// The connection id while a connection is open (from `welcome`).
    pub conn: Option<String>,
    /// Rooms whose join was acknowledged on the open connection.
    pub rooms: BTreeSet<String>,
    /// No request in flight, every wanted room joined, or away on purpose:
    /// the module should agree with `conn` and `rooms` now.
    pub settled: bool,
    /// The last `(seq, epoch)` seen per joined room.
    pub positions: BTreeMap<String, (u64, String)>,
}

/// A run of sequence numbers a client did not get.
#[derive(Debug, Clone)]
pub struct Gap {
    /// Client index.
    pub client: usize,
    /// The room.
    pub room: String,
    /// The room's epoch.
    pub epoch: String,
    /// First missing seq.
    pub from: u64,
    /// Last missing seq.
    pub to: u64,
    /// The fault window it was seen in.
    pub label: String,
    /// How it was seen (`live`, `rejoin recovered:true`, `tail`...).
    pub how: &'static str,
    /// The client was told (a join ack with `recovered: false`).
    pub told: bool,
}

/// A `missed` frame.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its `epoch`.
    pub epoch: String,
    /// Its `seq`.
    pub seq: u64,
    /// Its `count` (0 when absent).
    pub count: u64,
}

/// Counters and evidence shared by every task.
#[derive(Default)]
pub struct Ledger {
    /// `msg` frames taken in order (first time seen).
    pub delivered: AtomicU64,
    /// `msg` frames for a `seq` already received.
    pub duplicates: AtomicU64,
    /// `msg` frames that filled an earlier gap.
    pub reordered: AtomicU64,
    /// Messages before a fresh join's ack that the ack covers (not counted).
    pub early: AtomicU64,
    /// Messages of a room the client is not in.
    pub stray: AtomicU64,
    /// A room's epoch changed under a client.
    pub epoch_changes: AtomicU64,
    /// A join ack whose `seq` is below what the client already saw.
    pub rewinds: AtomicU64,
    /// Connections lost without asking.
    pub involuntary: AtomicU64,
    /// Sessions ended on purpose (churn).
    pub voluntary: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failures: AtomicU64,
    /// Joins and leaves sent.
    pub joins: AtomicU64,
    /// Leaves sent.
    pub leaves: AtomicU64,
    /// `err` answers to joins and leaves, by code.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Gaps of tracks that ended (or of every track after [`flush`]).
    pub gaps: Mutex<Vec<Gap>>,
    /// `missed` frames per (client, room).
    pub reports: Mutex<HashMap<(usize, String), Vec<Report>>>,
    /// Evidence lines of duplicates, reorders, rewinds (first 200).
    pub evidence: Mutex<Vec<String>>,
}

impl Ledger {
    fn note(&self, line: String) {
        let mut e = self.evidence.lock().expect("evidence");
        if e.len() < 200 {
            e.push(line);
        }
    }

    fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .expect("errors")
            .entry(code.to_string())
            .or_default() += 1;
    }
}

/// What every client task shares with the harness.
pub struct Shared {
    /// Public addresses of the gateways (fixed: a restart keeps its ports).
    pub gateways: Vec<SocketAddr>,
    /// Rooms clients pick from.
    pub rooms: Vec<String>,
    /// While set, clients take no action of their own (reconnects after a
    /// fault still happen).
    pub freeze: AtomicBool,
    /// Set at the end of a phase: clients close and stop.
    pub stop: AtomicBool,
    /// One view per client.
    pub views: Vec<Mutex<View>>,
    /// Counters and evidence.
    pub ledger: Ledger,
    /// The fault window now (gaps found are labelled with it).
    pub label: Mutex<String>,
    /// Random seed of the run.
    pub seed: u64,
    /// Tasks that have flushed.
    pub flushed: AtomicU64,
}

impl Shared {
    /// The label of the current fault window.
    pub fn label(&self) -> String {
        self.label.lock().expect("label").clone()
    }

    /// Sets the label of the current fault window.
    pub fn set_label(&self, label: &str) {
        *self.label.lock().expect("label") = label.to_string();
    }

    /// Whether every client is settled.
    pub fn unsettled(&self) -> Vec<usize> {
        self.views
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.lock().expect("view").settled)
            .map(|(i, _)| i)
            .collect()
    }

    /// A copy of every view.
    pub fn views(&self) -> Vec<View> {
        self.views
            .iter()
            .map(|v| v.lock().expect("view").clone())
            .collect()
    }
}

/// The user of client `i`: two clients per user.
pub fn user_of(i: usize) -> String {
    format!("u{}", i / 2)
}

/// What a client knows of one room it wants to be in.
struct Track {
    /// Last `(seq, epoch)` seen; `None` before the first join's ack.
    pos: Option<(u64, String)>,
    /// Joined on the open connection.
    joined: bool,
    /// Messages that came before a fresh join's ack.
    buffered: Vec<(u64, String)>,
    /// Missing runs below `pos`, not yet filled: `(from, to, label, how)`.
    gaps: Vec<(u64, u64, String, &'static str)>,
}

impl Track {
    fn fresh() -> Track {
        Track {
            pos: None,
            joined: false,
            buffered: Vec::new(),
            gaps: Vec::new(),
        }
    }
}

enum Pending {
    Join(String),
    Leave(String),
}

enum End {
    /// The client ended the session (churn).
    Voluntary,
    /// The server or the network did.
    Involuntary,
    /// The phase is over.
    Stop,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One simulated client.
pub struct Sim {
    id: usize,
    user: String,
    rng: Rng,
    shared: Arc<Shared>,
    tracks: BTreeMap<String, Track>,
    next_id: i64,
    token: String,
}

impl Sim {
    /// Client `id`; it starts after `delay`.
    pub fn new(id: usize, shared: Arc<Shared>) -> Sim {
        let user = user_of(id);
        shared.views[id].lock().expect("view").user = user.clone();
        Sim {
            id,
            rng: Rng::new(shared.seed, id as u64 + 1),
            token: token(&user, 6 * 3600, &[], &[]),
            user,
            shared,
            tracks: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Runs the client until the phase stops.
    pub async fn run(mut self, delay: Duration) {
        tokio::time::sleep(delay).await;
        self.pick_rooms();
        let mut backoff = 100;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let Some(ws) = self.connect().await else {
                self.publish_view(None, false);
                tokio::time::sleep(self.rng.ms(backoff / 2, backoff)).await;
                backoff = (backoff * 2).min(2000);
                continue;
            };
            backoff = 100;
            match self.session(ws).await {
                End::Stop => break,
                End::Involuntary => {
                    self.shared
                        .ledger
                        .involuntary
                        .fetch_add(1, Ordering::Relaxed);
                    for t in self.tracks.values_mut() {
                        t.joined = false;
                    }
                    self.publish_view(None, false);
                    tokio::time::sleep(self.rng.ms(50, 300)).await;
                }
                End::Voluntary => {
                    self.shared.ledger.voluntary.fetch_add(1, Ordering::Relaxed);
                    self.end_tracks();
                    // Away on purpose: the module should not know it.
                    self.publish_view(None, true);
                    tokio::time::sleep(self.rng.ms(300, 2000)).await;
                    while self.shared.freeze.load(Ordering::Relaxed)
                        && !self.shared.stop.load(Ordering::Relaxed)
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    self.publish_view(None, false);
                    self.pick_rooms();
                }
            }
        }
        self.end_tracks();
        self.publish_view(None, true);
        self.shared.flushed.fetch_add(1, Ordering::Relaxed);
    }

    fn pick_rooms(&mut self) {
        let n = 1 + self.rng.below(3);
        while self.tracks.len() < n {
            let room = self.shared.rooms[self.rng.below(self.shared.rooms.len())].clone();
            self.tracks.entry(room).or_insert_with(Track::fresh);
        }
    }

    /// Pushes the open gaps of every track to the ledger and forgets them.
    fn end_tracks(&mut self) {
        let tracks = std::mem::take(&mut self.tracks);
        let mut gaps = self.shared.ledger.gaps.lock().expect("gaps");
        for (room, t) in tracks {
            let epoch = t.pos.map(|p| p.1).unwrap_or_default();
            for (from, to, label, how) in t.gaps {
                gaps.push(Gap {
                    client: self.id,
                    room: room.clone(),
                    epoch: epoch.clone(),
                    from,
                    to,
                    label,
                    how,
                    told: false,
                });
            }
        }
    }

    fn publish_view(&self, conn: Option<&str>, settled: bool) {
        let mut v = self.shared.views[self.id].lock().expect("view");
        v.conn = conn.map(str::to_string);
        v.settled = settled;
        v.rooms.clear();
        v.positions.clear();
        if conn.is_some() {
            for (room, t) in &self.tracks {
                if t.joined {
                    v.rooms.insert(room.clone());
                }
                if let Some(p) = &t.pos {
                    v.positions.insert(room.clone(), p.clone());
                }
            }
        }
    }

    async fn connect(&mut self) -> Option<(Ws, String)> {
        let gws = &self.shared.gateways;
        let addr = gws[self.rng.below(gws.len())];
        let url = format!("ws://{addr}/ws?token={}", self.token);
        let fail = |s: &Self| {
            s.shared
                .ledger
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            None
        };
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await
        else {
            return fail(self);
        };
        // The first frame is the welcome.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => {
                    let f = broker::msgpack::to_json(&b).unwrap_or(J::Null);
                    if f["t"] == "welcome" {
                        let conn = f["conn"].as_str().unwrap_or_default().to_string();
                        return Some((ws, conn));
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => return fail(self),
            }
        }
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    async fn send(ws: &mut Ws, frame: J) -> bool {
        let bytes = broker_tests::gateway::msgpack(&frame);
        ws.send(Message::binary(bytes)).await.is_ok()
    }

    fn join_frame(&mut self, room: &str) -> (i64, J) {
        let id = self.id();
        let mut f = json!({"t": "join", "id": id, "room": room});
        if let Some((seq, epoch)) = self.tracks.get(room).and_then(|t| t.pos.clone()) {
            f["since"] = json!({"seq": seq, "epoch": epoch});
        }
        (id, f)
    }

    async fn session(&mut self, (mut ws, conn): (Ws, String)) -> End {
        let mut pending: HashMap<i64, Pending> = HashMap::new();
        let mut retries: Vec<(Instant, Pending)> = Vec::new();
        let rooms: Vec<String> = self.tracks.keys().cloned().collect();
        for room in rooms {
            let (id, f) = self.join_frame(&room);
            if !Self::send(&mut ws, f).await {
                return End::Involuntary;
            }
            self.shared.ledger.joins.fetch_add(1, Ordering::Relaxed);
            pending.insert(id, Pending::Join(room));
        }
        let mut next_action = Instant::now() + self.rng.ms(3000, 30_000);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let settled =
                pending.is_empty() && retries.is_empty() && self.tracks.values().all(|t| t.joined);
            tokio::select! {
                frame = ws.next() => {
                    let bytes = match frame {
                        Some(Ok(Message::Binary(b))) => b,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Involuntary,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(f) = broker::msgpack::to_json(&bytes) else { continue };
                    self.on_frame(&f, &mut pending, &mut retries);
                }
                _ = tick.tick() => {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        let _ = ws.close(None).await;
                        return End::Stop;
                    }
                    self.publish_view(Some(&conn), settled);
                    let now = Instant::now();
                    let due: Vec<Pending> = {
                        let (due, keep): (Vec<_>, Vec<_>) =
                            retries.drain(..).partition(|(at, _)| *at <= now);
                        retries = keep;
                        due.into_iter().map(|(_, p)| p).collect()
                    };
                    for p in due {
                        let (id, f, p) = match p {
                            Pending::Join(room) => {
                                if !self.tracks.contains_key(&room) { continue; }
                                let (id, f) = self.join_frame(&room);
                                (id, f, Pending::Join(room))
                            }
                            Pending::Leave(room) => {
                                let id = self.id();
                                (id, json!({"t": "leave", "id": id, "room": room}), Pending::Leave(room))
                            }
                        };
                        if !Self::send(&mut ws, f).await { return End::Involuntary; }
                        pending.insert(id, p);
                    }
                    if now >= next_action && settled && !self.shared.freeze.load(Ordering::Relaxed) {
                        next_action = now + self.rng.ms(10_000, 30_000);
                        let r = self.rng.below(100);
                        if r < 40 && self.tracks.len() < 3 || r < 80 && self.tracks.len() <= 1 {
                            let room = self.shared.rooms[self.rng.below(self.shared.rooms.len())].clone();
                            if self.tracks.contains_key(&room) { continue; }
                            self.tracks.insert(room.clone(), Track::fresh());
                            let (id, f) = self.join_frame(&room);
                            if !Self::send(&mut ws, f).await { return End::Involuntary; }
                            self.shared.ledger.joins.fetch_add(1, Ordering::Relaxed);
                            pending.insert(id, Pending::Join(room));
                        } else if r < 80 {
                            let rooms: Vec<&String> = self.tracks.keys().collect();
                            let room = rooms[self.rng.below(rooms.len())].clone();
                            let id = self.id();
                            if !Self::send(&mut ws, json!({"t": "leave", "id": id, "room": room})).await {
                                return End::Involuntary;
                            }
                            self.shared.ledger.leaves.fetch_add(1, Ordering::Relaxed);
                            pending.insert(id, Pending::Leave(room));
                        } else if r < 90 {
                            let _ = ws.close(None).await;
                            // Read until the server's close (or 2 s).
                            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                                while let Some(Ok(_)) = ws.next().await {}
                            }).await;
                            return End::Voluntary;
                        } else {
                            // The socket dropped without a close frame.
                            return End::Voluntary;
                        }
                    }
                }
            }
        }
    }

    fn on_frame(
        &mut self,
        f: &J,
        pending: &mut HashMap<i64, Pending>,
        retries: &mut Vec<(Instant, Pending)>,
    ) {
        match f["t"].as_str().unwrap_or_default() {
            "msg" => {
                let room = f["room"].as_str().unwrap_or_default();
                let seq = f["seq"].as_u64().unwrap_or(0);
                let epoch = f["epoch"].as_str().unwrap_or_default();
                self.on_msg(room, seq, epoch);
            }
            "ack" => {
                let Some(p) = f["id"].as_i64().and_then(|id| pending.remove(&id)) else {
                    return;
                };
                match p {
                    Pending::Join(room) => self.on_join_ack(&room, &f["data"]),
                    Pending::Leave(room) => {
                        if let Some(t) = self.tracks.remove(&room) {
                            self.end_track(&room, t);
                        }
                    }
                }
            }
            "err" => {
                let code = f["code"].as_str().unwrap_or_default();
                let Some(p) = f["id"].as_i64().and_then(|id| pending.remove(&id)) else {
                    return;
                };
                self.shared.ledger.error(code);
                match p {
                    Pending::Leave(room) if code == "not_member" => {
                        if let Some(t) = self.tracks.remove(&room) {
                            self.end_track(&room, t);
                        }
                    }
                    p => retries.push((Instant::now() + self.rng.ms(200, 600), p)),
                }
            }
            "missed" => {
                let room = f["room"].as_str().unwrap_or_default().to_string();
                let report = Report {
                    epoch: f["epoch"].as_str().unwrap_or_default().to_string(),
                    seq: f["seq"].as_u64().unwrap_or(0),
                    count: f["count"].as_u64().unwrap_or(0),
                };
                self.shared
                    .ledger
                    .reports
                    .lock()
                    .expect("reports")
                    .entry((self.id, room))
                    .or_default()
                    .push(report);
            }
            _ => {}
        }
    }

    fn end_track(&self, room: &str, t: Track) {
        let epoch = t.pos.map(|p| p.1).unwrap_or_default();
        let mut gaps = self.shared.ledger.gaps.lock().expect("gaps");
        for (from, to, label, how) in t.gaps {
            gaps.push(Gap {
                client: self.id,
                room: room.to_string(),
                epoch: epoch.clone(),
                from,
                to,
                label,
                how,
                told: false,
            });
        }
    }

    fn on_msg(&mut self, room: &str, seq: u64, epoch: &str) {
        let ledger = &self.shared.ledger;
        let Some(t) = self.tracks.get_mut(room) else {
            ledger.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some((last, ep)) = t.pos.as_mut() else {
            t.buffered.push((seq, epoch.to_string()));
            return;
        };
        if epoch != ep {
            ledger.epoch_changes.fetch_add(1, Ordering::Relaxed);
            ledger.note(format!(
                "client {} ({}) {room}: epoch {ep} -> {epoch} at seq {seq} (last {last})",
                self.id, self.user
            ));
            *ep = epoch.to_string();
            *last = seq;
            ledger.delivered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if seq == *last + 1 {
            *last = seq;
            ledger.delivered.fetch_add(1, Ordering::Relaxed);
        } else if seq > *last + 1 {
            let label = self.shared.label();
            t.gaps.push((*last + 1, seq - 1, label, "live"));
            *last = seq;
            ledger.delivered.fetch_add(1, Ordering::Relaxed);
        } else if let Some(i) = t.gaps.iter().position(|g| g.0 <= seq && seq <= g.1) {
            // It fills a gap: not lost, but out of order.
            let (from, to, label, how) = t.gaps.remove(i);
            if from < seq {
                t.gaps.push((from, seq - 1, label.clone(), how));
            }
            if seq < to {
                t.gaps.push((seq + 1, to, label, how));
            }
            ledger.reordered.fetch_add(1, Ordering::Relaxed);
            ledger.delivered.fetch_add(1, Ordering::Relaxed);
            ledger.note(format!(
                "client {} ({}) {room}: seq {seq} after {last} (out of order) [{}]",
                self.id,
                self.user,
                self.shared.label()
            ));
        } else {
            ledger.duplicates.fetch_add(1, Ordering::Relaxed);
            ledger.note(format!(
                "client {} ({}) {room}: seq {seq} again (last {last}, epoch {ep}) [{}]",
                self.id,
                self.user,
                self.shared.label()
            ));
        }
    }

    fn on_join_ack(&mut self, room: &str, data: &J) {
        let seq = data["seq"].as_u64().unwrap_or(0);
        let epoch = data["epoch"].as_str().unwrap_or_default().to_string();
        let recovered = data["recovered"].as_bool().unwrap_or(false);
        let label = self.shared.label();
        let id = self.id;
        let Some(t) = self.tracks.get_mut(room) else {
            return;
        };
        let ledger = &self.shared.ledger;
        t.joined = true;
        let mut replay = Vec::new();
        match t.pos.clone() {
            None => {
                t.pos = Some((seq, epoch));
                for (s, e) in std::mem::take(&mut t.buffered) {
                    if s <= seq {
                        ledger.early.fetch_add(1, Ordering::Relaxed);
                    } else {
                        replay.push((s, e));
                    }
                }
            }
            Some((last, ep)) if ep != epoch => {
                // The room's history is gone: what the old epoch had after
                // `last` is unknown, and the ack says so unless recovered.
                ledger.epoch_changes.fetch_add(1, Ordering::Relaxed);
                ledger.note(format!(
                    "client {id} {room}: rejoin since {last}/{ep} acked at {seq}/{epoch} recovered:{recovered} [{label}]"
                ));
                t.pos = Some((seq, epoch));
            }
            Some((last, _)) if last < seq => {
                if recovered {
                    t.gaps.push((last + 1, seq, label, "rejoin recovered:true"));
                } else {
                    ledger.gaps.lock().expect("gaps").push(Gap {
                        client: id,
                        room: room.to_string(),
                        epoch: epoch.clone(),
                        from: last + 1,
                        to: seq,
                        label,
                        how: "rejoin recovered:false",
                        told: true,
                    });
                }
                t.pos = Some((seq, epoch));
            }
            Some((last, _)) if last > seq => {
                ledger.rewinds.fetch_add(1, Ordering::Relaxed);
                ledger.note(format!(
                    "client {id} {room}: rejoin since {last} acked at seq {seq} (the room went back) [{label}]"
                ));
            }
            Some(_) => {}
        }
        for (s, e) in replay {
            self.on_msg(room, s, &e);
        }
    }
}

/// The classified gaps of a phase: per label, (reported missed, lost).
pub fn classify(ledger: &Ledger) -> (BTreeMap<String, (u64, u64)>, Vec<String>) {
    let gaps = ledger.gaps.lock().expect("gaps");
    let reports = ledger.reports.lock().expect("reports");
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut evidence = Vec::new();
    for g in gaps.iter() {
        let entry = out.entry(g.label.clone()).or_default();
        if g.told {
            entry.0 += g.to - g.from + 1;
            continue;
        }
        let rs = reports.get(&(g.client, g.room.clone()));
        let mut lost = 0;
        for seq in g.from..=g.to {
            let covered = rs.is_some_and(|rs| {
                rs.iter().any(|r| {
                    (r.epoch.is_empty() || r.epoch == g.epoch)
                        && if r.count == 0 {
                            seq <= r.seq
                        } else {
                            r.seq.saturating_sub(r.count) <= seq && seq <= r.seq + r.count
                        }
                })
            });
            if covered {
                entry.0 += 1;
            } else {
                lost += 1;
            }
        }
        entry.1 += lost;
        if lost > 0 && evidence.len() < 40 {
            evidence.push(format!(
                "client {} ({}) {} epoch {}: seq {}..={} not received, not reported ({}) [{}]",
                g.client,
                user_of(g.client),
                g.room,
                g.epoch,
                g.from,
                g.to,
                g.how,
                g.label
            ));
        }
    }
    (out, evidence)
}
