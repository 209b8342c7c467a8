//! `chaos`: a fault harness with figures (`make chaos`).
//!
//! Real parts only: a 3+3 Redis Cluster with the module, three gateway
//! processes with fixed node ids, and a few thousand WebSocket clients in
//! rooms of a namespace with history, publishing (through the gateways'
//! admin API) and churning, while a fault script injects, at random
//! intervals, the kinds given with `--faults`. A second phase runs one
//! Redis (each gateway behind its own TCP proxy) for the link cuts and the
//! restarts with AOF, a third one for the restarts from an RDB.
//!
//! After each fault the harness measures how long until publishing works
//! again (a probe publish through every gateway to a room on every master)
//! and until presence is exact again (checked against what the clients
//! hold, stable for one lease), then checks for ghosts and unready
//! gateways. At the end of each phase it classifies every gap a client
//! saw, looks for module panics in the Redis logs, prints the figures and
//! exits 1 when something was lost, duplicated, reordered, a ghost stayed,
//! presence stayed wrong, a gateway stayed unready, or a server panicked.
//!
//! Usage: `chaos [--seconds N] [--clients N] [--rate N] [--rooms N]
//! [--faults a,b,...] [--lease-ms N] [--grace-s N] [--quiet-s LO-HI]
//! [--seed N] [--out DIR]`.

mod redis_view;
mod sim;
mod world;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_view::{compare, room_seqs, snapshot, Diff};
use sim::{classify, user_of, Ledger, Rng, Shared, Sim, View};
use world::{drain_publishes, probe, run_publisher, Fault, World};

/// The command line.
#[derive(Debug, Clone)]
struct Config {
    seconds: u64,
    clients: usize,
    rate: u64,
    rooms: usize,
    faults: Vec<Fault>,
    lease_ms: u64,
    grace: Duration,
    quiet: (u64, u64),
    seed: u64,
    out: PathBuf,
}

fn usage() -> ! {
    let kinds: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
    eprintln!(
        "usage: chaos [--seconds N] [--clients N] [--rate MSG_PER_S] [--rooms N] \
         [--faults {}] [--lease-ms N] [--grace-s N] [--quiet-s LO-HI] [--seed N] [--out DIR]",
        kinds.join(",")
    );
    std::process::exit(2)
}

impl Config {
    fn parse() -> Config {
        let mut c = Config {
            seconds: 600,
            clients: 3000,
            rate: 200,
            rooms: 100,
            faults: Fault::ALL.to_vec(),
            lease_ms: 2000,
            grace: Duration::from_secs(15),
            quiet: (4, 10),
            seed: broker_tests::now_ms() as u64,
            out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/chaos")),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().unwrap_or_else(|| usage());
            let num = |v: String| v.parse::<u64>().unwrap_or_else(|_| usage());
            match flag.as_str() {
                "--seconds" => c.seconds = num(value()),
                "--clients" => c.clients = num(value()) as usize,
                "--rate" => c.rate = num(value()),
                "--rooms" => c.rooms = num(value()).max(1) as usize,
                "--lease-ms" => c.lease_ms = num(value()),
                "--grace-s" => c.grace = Duration::from_secs(num(value())),
                "--seed" => c.seed = num(value()),
                "--out" => c.out = PathBuf::from(value()),
                "--quiet-s" => {
                    let v = value();
                    let (lo, hi) = v.split_once('-').unwrap_or_else(|| usage());
                    c.quiet = (num(lo.into()), num(hi.into()).max(num(lo.into()) + 1));
                }
                "--faults" => {
                    c.faults = value()
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            Fault::parse(s).unwrap_or_else(|| {
                                eprintln!("unknown fault kind `{s}`");
                                usage()
                            })
                        })
                        .collect();
                }
                "-h" | "--help" => usage(),
                _ => usage(),
            }
        }
        c
    }
}

/// What one fault (or a phase's baseline and end) came to.
#[derive(Debug, Clone)]
struct Outcome {
    phase: &'static str,
    kind: String,
    label: String,
    what: String,
    publish_recovery: Option<Duration>,
    presence_recovery: Option<Duration>,
    /// The disagreement left at the deadline (`None`: exact).
    diff: Option<Diff>,
    /// Clients not reconnected and rejoined at the deadline.
    unsettled: usize,
    /// Gateways not ready at the deadline.
    stuck: Vec<String>,
}

/// Totals of one phase.
#[derive(Debug, Default)]
struct PhaseFigures {
    published_acked: u64,
    published_failed: u64,
    room_seqs: u64,
    delivered: u64,
    duplicates: u64,
    reordered: u64,
    rewinds: u64,
    epoch_changes: u64,
    involuntary: u64,
    voluntary: u64,
    connect_failures: u64,
    joins: u64,
    leaves: u64,
    errors: BTreeMap<String, u64>,
    /// label → (reported missed, lost).
    gaps: BTreeMap<String, (u64, u64)>,
    evidence: Vec<String>,
    panics: Vec<String>,
    /// Servers that exited by themselves, by fault window.
    crashes: Vec<String>,
}

fn main() {
    let cfg = Config::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(cfg));
    std::process::exit(code);
}

/// The phases: (name, cluster, aof, its fault kinds).
fn phases(cfg: &Config) -> Vec<(&'static str, bool, bool, Vec<Fault>)> {
    let on = |f: Fault| cfg.faults.contains(&f);
    let pick =
        |kinds: &[Fault]| -> Vec<Fault> { kinds.iter().copied().filter(|&f| on(f)).collect() };
    let mut out = Vec::new();
    let cluster = pick(&[
        Fault::GatewayKill,
        Fault::MasterKill,
        Fault::Pause,
        Fault::Sleep,
    ]);
    if !cluster.is_empty() {
        out.push(("cluster", true, false, cluster));
    }
    let aof = pick(&[Fault::Cut, Fault::RestartAof]);
    let rdb = pick(&[Fault::Cut, Fault::RestartRdb]);
    if on(Fault::RestartAof) || (aof.len() == 1 && !on(Fault::RestartRdb)) {
        out.push(("single-aof", false, true, aof));
    }
    if on(Fault::RestartRdb) {
        out.push(("single-rdb", false, false, rdb));
    }
    out
}

async fn run(cfg: Config) -> i32 {
    let started = Instant::now();
    let plan = phases(&cfg);
    if plan.is_empty() {
        eprintln!("no fault kind selected");
        return 2;
    }
    let weight: usize = plan.iter().map(|p| p.3.len()).sum();
    println!(
        "chaos: {} s, {} clients, {} msg/s, {} rooms, lease {} ms, faults {:?}, seed {}",
        cfg.seconds,
        cfg.clients,
        cfg.rate,
        cfg.rooms,
        cfg.lease_ms,
        cfg.faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
        cfg.seed
    );
    let mut outcomes = Vec::new();
    let mut figures = Vec::new();
    for (n, (name, cluster, aof, kinds)) in plan.iter().enumerate() {
        let secs = cfg.seconds * kinds.len() as u64 / weight as u64;
        let (o, f) = phase(&cfg, n as u64, name, *cluster, *aof, kinds, secs).await;
        outcomes.extend(o);
        figures.push((*name, f));
    }
    let (table, failed) = report(&cfg, &outcomes, &figures, started.elapsed());
    println!("{table}");
    let _ = std::fs::create_dir_all(&cfg.out);
    let _ = std::fs::write(cfg.out.join("figures.txt"), &table);
    if failed {
        println!(
            "chaos: FAILED (details above; logs in {})",
            cfg.out.display()
        );
        1
    } else {
        println!("chaos: passed");
        0
    }
}

fn log(start: Instant, line: &str) {
    println!("[{:>6.1}s] {line}", start.elapsed().as_secs_f64());
}

/// The harness's view of one phase while it runs.
struct Phase {
    name: &'static str,
    shared: Arc<Shared>,
    world: World,
    rooms: Vec<String>,
    users: Vec<String>,
    probe_rooms: Vec<String>,
    start: Instant,
    out: PathBuf,
}

impl Phase {
    fn ports(&self) -> (Vec<u16>, bool) {
        (self.world.ports(), self.world.is_cluster())
    }

    /// A snapshot compared with the clients, when every client is settled.
    fn check(&self) -> Result<Diff, String> {
        let unsettled = self.shared.unsettled();
        if !unsettled.is_empty() {
            return Err(format!("{} clients not settled", unsettled.len()));
        }
        let views = self.shared.views();
        let (ports, cluster) = self.ports();
        let snap = tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                snapshot(&ports, cluster, &self.users, &self.rooms)
            }))
            .unwrap_or_else(|_| Err("unexpected reply".into()))
        })?;
        // The clients must not have moved while the module was read.
        if !self.shared.unsettled().is_empty() || !same(&views, &self.shared.views()) {
            return Err("clients moved during the read".into());
        }
        Ok(compare(&snap, &views, &self.rooms))
    }

    /// Measures recovery after a fault injected at `t0` and ended at
    /// `ended`: until publishing works, presence is exact for one lease and
    /// every gateway is ready, or the deadline (end + lease + grace).
    async fn settle(
        &self,
        cfg: &Config,
        t0: Instant,
        ended: Instant,
        kind: &str,
        label: &str,
        what: String,
    ) -> Outcome {
        let lease = Duration::from_millis(cfg.lease_ms);
        let deadline = ended + lease + cfg.grace;
        let mut publish_recovery = None;
        let mut presence_recovery = None;
        let mut exact_since: Option<Instant> = None;
        let mut last = Err("not checked".to_string());
        let mut stuck;
        loop {
            let now = Instant::now();
            if publish_recovery.is_none() && probe(&self.world.publish, &self.probe_rooms).await {
                publish_recovery = Some(now - t0);
            }
            if presence_recovery.is_none() {
                last = self.check();
                match &last {
                    Ok(d) if d.exact() => {
                        let since = *exact_since.get_or_insert(now);
                        if now >= since + lease && now >= ended + lease {
                            presence_recovery = Some(since - t0);
                        }
                    }
                    _ => exact_since = None,
                }
            }
            stuck = self.world.unready().await;
            let done =
                publish_recovery.is_some() && presence_recovery.is_some() && stuck.is_empty();
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let unsettled = self.shared.unsettled().len();
        let diff = match (&presence_recovery, last) {
            (Some(_), _) => None,
            (None, Ok(d)) => Some(d),
            (None, Err(_)) => None,
        };
        let o = Outcome {
            phase: self.name,
            kind: kind.to_string(),
            label: label.to_string(),
            what,
            publish_recovery,
            presence_recovery,
            diff,
            unsettled,
            stuck,
        };
        log(self.start, &describe(&o));
        o
    }
}

fn same(a: &[View], b: &[View]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.conn == y.conn && x.rooms == y.rooms)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64()))
}

fn describe(o: &Outcome) -> String {
    let mut s = format!(
        "{} {}: publishing after {}, presence exact after {}",
        o.label,
        o.what,
        ms(o.publish_recovery),
        ms(o.presence_recovery)
    );
    if let Some(d) = &o.diff {
        let _ = write!(s, "; NOT EXACT: {}", d.summary());
    }
    if o.presence_recovery.is_none() && o.diff.is_none() {
        let _ = write!(
            s,
            "; {} clients could not reconnect and rejoin",
            o.unsettled
        );
    }
    if !o.stuck.is_empty() {
        let _ = write!(s, "; UNREADY: {:?}", o.stuck);
    }
    s
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    cfg: &Config,
    n: u64,
    name: &'static str,
    cluster: bool,
    aof: bool,
    kinds: &[Fault],
    secs: u64,
) -> (Vec<Outcome>, PhaseFigures) {
    let start = Instant::now();
    log(
        start,
        &format!(
            "phase {name}: starting ({secs} s of faults: {:?})",
            kinds.iter().map(|f| f.name()).collect::<Vec<_>>()
        ),
    );
    let world = World::start(cluster, aof, cfg.lease_ms).await;
    let rooms: Vec<String> = (0..cfg.rooms).map(|i| format!("chaos:r{i}")).collect();
    let users: Vec<String> = (0..cfg.clients.div_ceil(2))
        .map(|i| user_of(i * 2))
        .collect();
    // A probe room on every master (by slot).
    let topo = redis_view::topology(&world.ports(), cluster).expect("topology");
    let mut probe_rooms = BTreeMap::new();
    for i in 0..10_000 {
        let room = format!("chaos:probe{i}");
        probe_rooms
            .entry(redis_view::master_for(&topo, &room))
            .or_insert(room);
        if probe_rooms.len() == redis_view::masters(&topo).len() {
            break;
        }
    }
    let shared = Arc::new(Shared {
        gateways: world.gateways.iter().map(|g| g.addr).collect(),
        rooms: rooms.clone(),
        freeze: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        views: (0..cfg.clients)
            .map(|_| Mutex::new(View::default()))
            .collect(),
        ledger: Ledger::default(),
        label: Mutex::new(format!("{name}:steady")),
        seed: cfg.seed ^ n,
        flushed: AtomicU64::new(0),
    });
    let mut p = Phase {
        name,
        shared: shared.clone(),
        world,
        rooms: rooms.clone(),
        users,
        probe_rooms: probe_rooms.into_values().collect(),
        start,
        out: cfg.out.clone(),
    };
    // Clients come up over a ramp (about 300 a second).
    let ramp_ms = (cfg.clients as u64 * 1000 / 300).max(1);
    for i in 0..cfg.clients {
        let sim = Sim::new(i, shared.clone());
        let delay = Duration::from_millis(i as u64 * ramp_ms / cfg.clients as u64);
        tokio::spawn(sim.run(delay));
    }
    let publisher = tokio::spawn(run_publisher(
        p.world.publish.clone(),
        rooms.clone(),
        cfg.rate,
        cfg.seed ^ n,
    ));
    tokio::time::sleep(Duration::from_millis(ramp_ms)).await;
    let mut outcomes = Vec::new();
    // Baseline: everyone up, no fault yet.
    shared.freeze.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let label = format!("{name}:baseline");
    outcomes.push(
        p.settle(cfg, t0, t0, "baseline", &label, "all clients up".into())
            .await,
    );
    shared.freeze.store(false, Ordering::Relaxed);

    let mut rng = Rng::new(cfg.seed ^ n, 0xfa17);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut count = 0;
    let mut crashes = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_secs(cfg.quiet.0) + rng.ms(0, (cfg.quiet.1 - cfg.quiet.0) * 1000),
        )
        .await;
        if Instant::now() >= deadline {
            break;
        }
        let fault = kinds[rng.below(kinds.len())];
        count += 1;
        let label = format!("{name}:{}#{count}", fault.name());
        let mut t0 = Instant::now();
        let sh = shared.clone();
        let lb = label.clone();
        let injected = p
            .world
            .inject(fault, &mut rng, || {
                sh.set_label(&lb);
                sh.freeze.store(true, Ordering::Relaxed);
                t0 = Instant::now();
            })
            .await;
        match injected {
            Ok(i) => {
                let o = p
                    .settle(cfg, t0, i.ended, fault.name(), &label, i.what)
                    .await;
                outcomes.push(o);
            }
            Err(e) => log(start, &format!("{label}: not injected: {e}")),
        }
        for port in p.world.restart_crashed() {
            log(
                start,
                &format!("{label}: redis {port} had exited by itself (crash); started again"),
            );
            crashes.push(format!("{label}: redis {port}"));
        }
        shared.freeze.store(false, Ordering::Relaxed);
    }

    // The end: nothing new, everything delivered, the module exact.
    log(start, &format!("phase {name}: stopping"));
    shared.freeze.store(true, Ordering::Relaxed);
    p.world.publish.stop.store(true, Ordering::Relaxed);
    let _ = publisher.await;
    drain_publishes(&p.world.publish, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    let label = format!("{name}:end");
    let end = p
        .settle(cfg, t0, t0, "end", &label, "publishing stopped".into())
        .await;
    outcomes.push(end);
    let mut figures = finish(&p).await;
    figures.crashes = crashes;
    (outcomes, figures)
}

/// Waits for every message to arrive, records what did not (tail gaps),
/// stops the clients and gathers the phase's figures.
async fn finish(p: &Phase) -> PhaseFigures {
    let shared = &p.shared;
    let (ports, cluster) = p.ports();
    let seqs =
        tokio::task::block_in_place(|| room_seqs(&ports, cluster, &p.rooms)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let behind = shared
            .views()
            .iter()
            .flat_map(|v| v.positions.iter())
            .filter(|(room, pos)| seqs.get(*room).is_some_and(|s| s.1 == pos.1 && s.0 > pos.0))
            .count();
        if behind == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let label = shared.label();
    {
        let mut gaps = shared.ledger.gaps.lock().expect("gaps");
        for (i, v) in shared.views().iter().enumerate() {
            for (room, pos) in &v.positions {
                if let Some(s) = seqs.get(room) {
                    if s.1 == pos.1 && s.0 > pos.0 {
                        gaps.push(sim::Gap {
                            client: i,
                            room: room.clone(),
                            epoch: pos.1.clone(),
                            from: pos.0 + 1,
                            to: s.0,
                            label: label.clone(),
                            how: "tail",
                            told: false,
                        });
                    }
                }
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.flushed.load(Ordering::Relaxed) < shared.views.len() as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let l = &shared.ledger;
    let (gaps, evidence_gaps) = classify(l);
    let mut evidence: Vec<String> = l.evidence.lock().expect("evidence").clone();
    evidence.extend(evidence_gaps);
    let mut panics = Vec::new();
    for s in p.world.servers() {
        for (i, line) in s.log().lines().chain(s.stderr().lines()).enumerate() {
            let lower = line.to_ascii_lowercase();
            if (lower.contains("panic")
                || lower.contains("crashed by signal")
                || lower.contains("bug report")
                || lower.contains("assertion"))
                && panics.len() < 20
            {
                panics.push(format!("redis {} line {i}: {line}", s.port()));
            }
        }
    }
    for g in &p.world.gateways {
        for line in g.log().lines() {
            if line.contains("panicked") && panics.len() < 20 {
                panics.push(format!("{}: {line}", g.node));
            }
        }
    }
    let f = PhaseFigures {
        published_acked: p.world.publish.acked.load(Ordering::Relaxed),
        published_failed: p.world.publish.failed.load(Ordering::Relaxed),
        room_seqs: seqs.values().map(|s| s.0).sum(),
        delivered: l.delivered.load(Ordering::Relaxed),
        duplicates: l.duplicates.load(Ordering::Relaxed),
        reordered: l.reordered.load(Ordering::Relaxed),
        rewinds: l.rewinds.load(Ordering::Relaxed),
        epoch_changes: l.epoch_changes.load(Ordering::Relaxed),
        involuntary: l.involuntary.load(Ordering::Relaxed),
        voluntary: l.voluntary.load(Ordering::Relaxed),
        connect_failures: l.connect_failures.load(Ordering::Relaxed),
        joins: l.joins.load(Ordering::Relaxed),
        leaves: l.leaves.load(Ordering::Relaxed),
        errors: l.errors.lock().expect("errors").clone(),
        gaps,
        evidence,
        panics,
        crashes: Vec::new(),
    };
    save_logs(p);
    f
}

/// Copies the servers' and gateways' logs under `<out>/<phase>/`.
fn save_logs(p: &Phase) {
    let dir = p.out.join(p.name);
    let _ = std::fs::create_dir_all(&dir);
    for s in p.world.servers() {
        let _ = std::fs::write(
            dir.join(format!("redis-{}.log", s.port())),
            s.log() + &s.stderr(),
        );
    }
    for g in &p.world.gateways {
        let _ = std::fs::write(dir.join(format!("{}.log", g.node)), g.log());
    }
}

fn percentile(mut v: Vec<Duration>, q: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}

/// The figures table and whether anything failed.
fn report(
    cfg: &Config,
    outcomes: &[Outcome],
    figures: &[(&'static str, PhaseFigures)],
    took: Duration,
) -> (String, bool) {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n## chaos figures ({} clients, {} msg/s, {} rooms, lease {} ms, seed {}, {:.0} s)\n",
        cfg.clients,
        cfg.rate,
        cfg.rooms,
        cfg.lease_ms,
        cfg.seed,
        took.as_secs_f64()
    );
    let _ = writeln!(
        t,
        "| phase | fault | injected | publishing back p50 / max | presence exact p50 / max | not exact | ghosts | unready | lost | reported missed |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    let mut kinds: Vec<(&str, String)> =
        outcomes.iter().map(|o| (o.phase, o.kind.clone())).collect();
    kinds.dedup();
    let mut seen = std::collections::BTreeSet::new();
    kinds.retain(|k| seen.insert(k.clone()));
    let mut failed = false;
    let mut ghosts_total = 0;
    for (phase, kind) in &kinds {
        let os: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.phase == *phase && &o.kind == kind)
            .collect();
        let pubs: Vec<Duration> = os.iter().filter_map(|o| o.publish_recovery).collect();
        let pres: Vec<Duration> = os.iter().filter_map(|o| o.presence_recovery).collect();
        let never_pub = os.len() - pubs.len();
        let never_pres = os.len() - pres.len();
        let ghosts: usize = os
            .iter()
            .filter_map(|o| o.diff.as_ref())
            .map(|d| d.ghosts.len())
            .sum();
        let unready = os.iter().filter(|o| !o.stuck.is_empty()).count();
        ghosts_total += ghosts;
        let (missed, lost) = figures
            .iter()
            .filter(|(p, _)| p == phase)
            .flat_map(|(_, f)| f.gaps.iter())
            .filter(|(label, _)| {
                let k = label.split(':').nth(1).unwrap_or("");
                k.split('#').next() == Some(kind.as_str()) || (kind == "baseline" && k == "steady")
            })
            .fold((0, 0), |a, (_, g)| (a.0 + g.0, a.1 + g.1));
        let fmt = |v: &[Duration], never: usize| {
            let mut s = format!(
                "{} / {}",
                ms(percentile(v.to_vec(), 0.5)),
                ms(v.iter().max().copied())
            );
            if never > 0 {
                let _ = write!(s, " ({never} never)");
            }
            s
        };
        if never_pres > 0 || unready > 0 || ghosts > 0 || lost > 0 {
            failed = true;
        }
        let _ = writeln!(
            t,
            "| {phase} | {kind} | {} | {} | {} | {never_pres} | {ghosts} | {unready} | {lost} | {missed} |",
            os.len(),
            fmt(&pubs, never_pub),
            fmt(&pres, never_pres),
        );
    }
    let _ = writeln!(t, "\n| phase | published (acked) | publish failed | room seqs at end | delivered | reported missed | lost | duplicated | out of order | seq went back | epoch changes | reconnects after a fault | churn sessions | connect failures | panics |");
    let _ = writeln!(
        t,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut lost_total = 0;
    for (name, f) in figures {
        let missed: u64 = f.gaps.values().map(|g| g.0).sum();
        let lost: u64 = f.gaps.values().map(|g| g.1).sum();
        lost_total += lost;
        if lost > 0
            || f.duplicates > 0
            || f.reordered > 0
            || f.rewinds > 0
            || !f.panics.is_empty()
            || !f.crashes.is_empty()
        {
            failed = true;
        }
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {} | {} | {missed} | {lost} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.published_acked,
            f.published_failed,
            f.room_seqs,
            f.delivered,
            f.duplicates,
            f.reordered,
            f.rewinds,
            f.epoch_changes,
            f.involuntary,
            f.voluntary,
            f.connect_failures,
            f.panics.len()
        );
    }
    let crashes: usize = figures.iter().map(|(_, f)| f.crashes.len()).sum();
    let _ = writeln!(
        t,
        "\nghosts found: {ghosts_total}, messages lost: {lost_total}, Redis crashes: {crashes}"
    );
    for (name, f) in figures {
        if !f.errors.is_empty() {
            let _ = writeln!(
                t,
                "{name}: err answers to joins/leaves: {:?} ({} joins, {} leaves sent)",
                f.errors, f.joins, f.leaves
            );
        }
    }
    let problems: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.presence_recovery.is_none() || !o.stuck.is_empty() || o.publish_recovery.is_none()
        })
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(t, "\nfaults that did not recover:");
        for o in problems {
            let _ = writeln!(t, "- {}", describe(o));
        }
    }
    for (name, f) in figures {
        if !f.evidence.is_empty() {
            let _ = writeln!(
                t,
                "\n{name}: evidence (first {}):",
                f.evidence.len().min(30)
            );
            for e in f.evidence.iter().take(30) {
                let _ = writeln!(t, "- {e}");
            }
        }
        for line in &f.panics {
            let _ = writeln!(t, "- PANIC {line}");
        }
        for line in &f.crashes {
            let _ = writeln!(t, "- CRASHED {line}");
        }
    }
    (t, failed)
}
