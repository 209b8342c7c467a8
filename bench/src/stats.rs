//! Accounting shared by the message scenarios, the live progress line and
//! the final report.
//!
//! Reader tasks of every connection record into one [`Recorder`]: counters
//! are relaxed atomics, latencies go to [`Hist`], a histogram split in a
//! few shards (one per runtime thread, in practice) so that threads do not
//! queue on one lock at hundreds of thousands of records a second.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::client::Sink;
use crate::frame;
use crate::now_ns;

/// Latencies in microseconds, 1 µs to 60 s, 3 significant digits.
pub struct Hist {
    shards: Vec<Mutex<Histogram<u64>>>,
}

const SHARDS: usize = 8;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

impl Hist {
    /// Records one latency in µs (clamped to the bounds).
    pub fn record(&self, us: u64) {
        let shard = SHARD.with(|s| *s);
        self.shards[shard]
            .lock()
            .expect("histogram lock")
            .saturating_record(us.max(1));
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            // Same bounds, so adding cannot fail.
            let _ = all.add(&*shard.lock().expect("histogram lock"));
        }
        all
    }
}

/// The figures of one phase of a scenario.
#[derive(Default)]
pub struct Phase {
    /// `pub` frames written.
    pub sent: AtomicU64,
    /// `pub` answered with `ack`.
    pub acked: AtomicU64,
    /// `pub` answered with `err`, or lost with its connection.
    pub refused: AtomicU64,
    /// `msg` frames received (duplicates included).
    pub delivered: AtomicU64,
    /// `msg` frames whose `seq` was not new to the connection.
    pub duplicates: AtomicU64,
    /// When publishing started and ended (ns since the epoch).
    pub started_ns: AtomicU64,
    pub ended_ns: AtomicU64,
    /// The last delivery of one of this phase's messages.
    pub last_delivery_ns: AtomicU64,
    /// Publish (send time in the payload) to receive, µs.
    pub latency: Hist,
    /// `pub` written to its `ack`, µs.
    pub ack_latency: Hist,
}

impl Phase {
    /// Deliveries without duplicates.
    pub fn unique(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed) - self.duplicates.load(Ordering::Relaxed)
    }

    /// Marks the start of publishing.
    pub fn start(&self) {
        self.started_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Marks the end of publishing.
    pub fn end(&self) {
        self.ended_ns.store(now_ns(), Ordering::Relaxed);
    }
}

/// The [`Sink`] of the message scenarios.
pub struct Recorder {
    /// One entry per phase; a payload names its phase.
    pub phases: Vec<Phase>,
    /// Acked publishes per room (the rooms are fixed at creation).
    pub room_acked: HashMap<String, AtomicU64>,
    /// The phase that publish answers count for.
    pub current: AtomicUsize,
    /// Connections the server closed (or that failed) while in use.
    pub closes: AtomicU64,
    /// Counted events by description: refusals, closes, stray frames.
    pub events: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    /// A recorder with `phases` phases, counting acks for `rooms`.
    pub fn new(phases: usize, rooms: impl IntoIterator<Item = String>) -> Arc<Recorder> {
        Arc::new(Recorder {
            phases: (0..phases).map(|_| Phase::default()).collect(),
            room_acked: rooms.into_iter().map(|r| (r, AtomicU64::new(0))).collect(),
            current: AtomicUsize::new(0),
            closes: AtomicU64::new(0),
            events: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts one event.
    pub fn event(&self, what: impl Into<String>) {
        *self
            .events
            .lock()
            .expect("events lock")
            .entry(what.into())
            .or_default() += 1;
    }

    /// The phase publish answers go to.
    pub fn phase(&self) -> &Phase {
        &self.phases[self.current.load(Ordering::Relaxed)]
    }

    /// Total deliveries over every phase.
    pub fn delivered(&self) -> u64 {
        self.phases
            .iter()
            .map(|p| p.delivered.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until every phase has at least the deliveries `expected`
    /// returns for it, or deliveries stop for `quiet`, or `max` passes.
    /// Returns how long it waited.
    pub async fn drain(
        &self,
        expected: impl Fn(usize) -> u64,
        quiet: Duration,
        max: Duration,
    ) -> Duration {
        let start = Instant::now();
        let mut last = self.delivered();
        let mut last_change = Instant::now();
        loop {
            let done = self
                .phases
                .iter()
                .enumerate()
                .all(|(i, p)| p.unique() >= expected(i));
            if done || start.elapsed() >= max || last_change.elapsed() >= quiet {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.delivered();
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
    }
}

impl Sink for Recorder {
    fn msg(&self, _room: &str, data: &[u8], dup: bool) {
        let Some((sent, phase)) = frame::read_payload(data) else {
            self.event("msg with a payload the tool did not send");
            return;
        };
        let Some(p) = self.phases.get(usize::from(phase)) else {
            self.event("msg of an unknown phase");
            return;
        };
        let now = now_ns();
        p.delivered.fetch_add(1, Ordering::Relaxed);
        if dup {
            p.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            p.latency.record(now.saturating_sub(sent) / 1000);
        }
        p.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
    }

    fn published(&self, room: &str, sent: Instant, result: Result<(), &str>) {
        let p = self.phase();
        match result {
            Ok(()) => {
                p.acked.fetch_add(1, Ordering::Relaxed);
                p.ack_latency.record(sent.elapsed().as_micros() as u64);
                if let Some(n) = self.room_acked.get(room) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(code) => {
                p.refused.fetch_add(1, Ordering::Relaxed);
                self.event(format!("pub refused: {code}"));
            }
        }
    }

    fn closed(&self, why: String) {
        self.closes.fetch_add(1, Ordering::Relaxed);
        self.event(format!("connection ended by the server: {why}"));
    }

    fn stray(&self, what: String) {
        self.event(what);
    }
}

/// The live progress line on stderr: rewritten in place on a terminal, one
/// line every few seconds otherwise (logs, CI).
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    tty: bool,
}

impl Progress {
    /// Prints `line()` every second (every 2 s when stderr is not a
    /// terminal) until [`Progress::stop`]. `quiet` prints nothing.
    pub fn start(quiet: bool, line: impl Fn() -> String + Send + 'static) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let every = Duration::from_secs(if tty { 1 } else { 2 });
        let start = Instant::now();
        let task = tokio::spawn(async move {
            if quiet {
                return;
            }
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let text = format!("[{:6.1}s] {}", start.elapsed().as_secs_f64(), line());
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[K{text}");
                } else {
                    let _ = writeln!(err, "{text}");
                }
                let _ = err.flush();
            }
        });
        Progress { task, tty }
    }

    /// Stops and clears the line.
    pub fn stop(self) {
        self.task.abort();
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

/// A per-second rate from a counter, for progress lines.
pub struct Rate {
    last: AtomicU64,
    at: Mutex<Instant>,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            last: AtomicU64::new(0),
            at: Mutex::new(Instant::now()),
        }
    }
}

impl Rate {
    /// The rate of `now` (a counter) since the last call.
    pub fn per_s(&self, now: u64) -> f64 {
        let mut at = self.at.lock().expect("rate lock");
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        *at = Instant::now();
        let last = self.last.swap(now, Ordering::Relaxed);
        now.saturating_sub(last) as f64 / secs
    }
}

/// The final figures: sections of rows, printed as Markdown tables or as
/// one JSON object.
pub struct Report {
    scenario: &'static str,
    params: Map<String, Value>,
    /// (JSON key, title, rows).
    sections: Vec<(String, String, Vec<Row>)>,
    /// Tables of several columns, after the sections.
    grids: Vec<Grid>,
    /// Goals the run missed; the tool exits non-zero when there is one.
    failures: Vec<String>,
}

/// A table with a header row and any number of columns.
struct Grid {
    key: String,
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    value: Value,
}

struct Row {
    key: String,
    label: String,
    value: Value,
    shown: String,
}

impl Report {
    /// An empty report for `scenario`, with the parameters it ran with.
    pub fn new(scenario: &'static str, params: Value) -> Report {
        Report {
            scenario,
            params: match params {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            sections: Vec::new(),
            grids: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// A table of several columns titled `title` (`header`, then `rows`),
    /// shown after the sections; `value` is its entry `key` in the JSON
    /// results.
    pub fn grid(
        &mut self,
        key: &str,
        title: impl Into<String>,
        header: &[&str],
        rows: Vec<Vec<String>>,
        value: Value,
    ) -> &mut Self {
        self.grids.push(Grid {
            key: key.to_owned(),
            title: title.into(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows,
            value,
        });
        self
    }

    /// Records a missed goal: shown under the tables, listed in the JSON
    /// (`failures`), and the tool exits with status 1.
    pub fn fail(&mut self, why: impl Into<String>) -> &mut Self {
        self.failures.push(why.into());
        self
    }

    /// The goals missed so far.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Starts a section: a table of its own titled `title`, the object
    /// `key` in the JSON results.
    pub fn section(&mut self, key: &str, title: impl Into<String>) -> &mut Self {
        self.sections
            .push((key.to_owned(), title.into(), Vec::new()));
        self
    }

    fn push(&mut self, key: &str, label: &str, value: Value, shown: String) -> &mut Self {
        if self.sections.is_empty() {
            self.section(self.scenario, self.scenario);
        }
        let rows = &mut self.sections.last_mut().expect("a section").2;
        rows.push(Row {
            key: key.to_owned(),
            label: label.to_owned(),
            value,
            shown,
        });
        self
    }

    /// A count.
    pub fn int(&mut self, key: &str, label: &str, n: u64) -> &mut Self {
        self.push(key, label, json!(n), group(n))
    }

    /// A measured quantity shown with `decimals` decimals.
    pub fn num(&mut self, key: &str, label: &str, x: f64, decimals: usize) -> &mut Self {
        let shown = if x.is_finite() && x.abs() >= 1000.0 && decimals <= 1 {
            group(x.round() as u64)
        } else {
            format!("{x:.decimals$}")
        };
        let value = if x.is_finite() { json!(x) } else { Value::Null };
        self.push(key, label, value, shown)
    }

    /// Text (yes/no, lists of errors).
    pub fn text(&mut self, key: &str, label: &str, s: impl Into<String>) -> &mut Self {
        let s = s.into();
        self.push(key, label, json!(s), s.clone())
    }

    /// Latency percentiles of `hist` (µs) in ms: p50, p99, p99.9, max.
    pub fn latency(&mut self, key: &str, label: &str, hist: &Histogram<u64>) -> &mut Self {
        if hist.is_empty() {
            return self.push(key, label, Value::Null, "-".into());
        }
        let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
        let value = json!({
            "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999),
            "max_ms": hist.max() as f64 / 1000.0, "count": hist.len(),
        });
        let shown = format!(
            "{} / {} / {} / {} ms",
            ms(q(0.5)),
            ms(q(0.99)),
            ms(q(0.999)),
            ms(hist.max() as f64 / 1000.0)
        );
        self.push(key, label, value, shown)
    }

    /// Counted events, or "none".
    pub fn events(&mut self, key: &str, label: &str, events: &BTreeMap<String, u64>) -> &mut Self {
        let value = json!(events);
        let shown = if events.is_empty() {
            "none".to_owned()
        } else {
            events
                .iter()
                .map(|(k, n)| format!("{n} × {k}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.push(key, label, value, shown)
    }

    /// Markdown tables, one per section.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (_, title, rows) in &self.sections {
            let _ = writeln!(out, "| {title} | |");
            let _ = writeln!(out, "|---|---:|");
            for row in rows {
                let _ = writeln!(out, "| {} | {} |", row.label, row.shown.replace('|', "/"));
            }
            out.push('\n');
        }
        for grid in &self.grids {
            let _ = writeln!(out, "**{}**\n", grid.title);
            let _ = writeln!(out, "| {} |", grid.header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(grid.header.len()));
            for row in &grid.rows {
                let cells: Vec<String> = row.iter().map(|c| c.replace('|', "/")).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            out.push('\n');
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "Goals missed:\n");
            for why in &self.failures {
                let _ = writeln!(out, "- {why}");
            }
            out.push('\n');
        }
        out
    }

    /// `{"scenario", "params", "results": {section: {key: value}}}`.
    pub fn json(&self) -> Value {
        let mut results = Map::new();
        for (key, _, rows) in &self.sections {
            let section: Map<String, Value> = rows
                .iter()
                .map(|r| (r.key.clone(), r.value.clone()))
                .collect();
            results.insert(key.clone(), Value::Object(section));
        }
        for grid in &self.grids {
            results.insert(grid.key.clone(), grid.value.clone());
        }
        json!({
            "scenario": self.scenario, "params": self.params, "results": results,
            "failures": self.failures,
        })
    }
}

/// Rows shared by the scenarios that publish: what was published, what
/// arrived, how fast and how late. `expected` is the number of deliveries
/// owed (acked publishes × members), when the scenario knows it.
pub fn phase_rows(report: &mut Report, phase: &Phase, expected: Option<u64>) {
    let started = phase.started_ns.load(Ordering::Relaxed);
    let ended = phase.ended_ns.load(Ordering::Relaxed).max(started);
    let last = phase.last_delivery_ns.load(Ordering::Relaxed).max(started);
    let pub_secs = (ended - started) as f64 / 1e9;
    let deliver_secs = (last - started) as f64 / 1e9;
    let acked = phase.acked.load(Ordering::Relaxed);
    let unique = phase.unique();
    report
        .int(
            "published",
            "publishes sent",
            phase.sent.load(Ordering::Relaxed),
        )
        .int("acked", "publishes acked", acked)
        .int(
            "refused",
            "publishes refused or lost",
            phase.refused.load(Ordering::Relaxed),
        )
        .num(
            "publish_per_s",
            "publishes acked / s",
            acked as f64 / pub_secs.max(1e-9),
            1,
        )
        .latency(
            "ack_latency",
            "pub → ack p50 / p99 / p99.9 / max",
            &phase.ack_latency.merged(),
        );
    if let Some(expected) = expected {
        report.int("expected", "deliveries expected", expected);
    }
    report.int("delivered", "deliveries (unique)", unique).num(
        "delivered_per_s",
        "deliveries / s",
        unique as f64 / deliver_secs.max(1e-9),
        0,
    );
    if let Some(expected) = expected {
        report.int("lost", "lost", expected.saturating_sub(unique));
        if unique > expected {
            report.int(
                "unexpected",
                "unexpected extra deliveries",
                unique - expected,
            );
        }
    }
    report
        .int(
            "duplicates",
            "duplicates",
            phase.duplicates.load(Ordering::Relaxed),
        )
        .latency(
            "latency",
            "publish → receive p50 / p99 / p99.9 / max",
            &phase.latency.merged(),
        );
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds as a table cell: 2 decimals below 10, 1 below 100, else none.
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn report_as_table_and_json() {
        let mut r = Report::new("x", json!({"n": 1}));
        r.section("phase", "phase")
            .int("sent", "sent", 1500)
            .num("rate", "rate", 2.5, 2);
        assert_eq!(
            r.table(),
            "| phase | |\n|---|---:|\n| sent | 1,500 |\n| rate | 2.50 |\n\n"
        );
        assert_eq!(
            r.json(),
            json!({"scenario": "x", "params": {"n": 1}, "results": {"phase": {"sent": 1500, "rate": 2.5}}, "failures": []})
        );
    }

    #[test]
    fn recorder_counts_duplicates_apart() {
        let rec = Recorder::new(2, ["chat:a".to_owned()]);
        let data = frame::payload(now_ns(), 1);
        rec.msg("chat:a", &data, false);
        rec.msg("chat:a", &data, true);
        assert_eq!(rec.phases[1].unique(), 1);
        assert_eq!(rec.phases[1].duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(rec.phases[1].latency.merged().len(), 1);
        rec.published("chat:a", Instant::now(), Ok(()));
        rec.published("chat:a", Instant::now(), Err("rate_limited"));
        assert_eq!(rec.room_acked["chat:a"].load(Ordering::Relaxed), 1);
        assert_eq!(rec.events.lock().unwrap()["pub refused: rate_limited"], 1);
    }
}
