#!/usr/bin/env python3
"""Side-by-side report of the broker and the Socket.IO peer.

    scripts/bench-report.py OUT_DIR DOC SVG [--machine TEXT] [--command TEXT]

OUT_DIR holds ours/<run>/<scenario>.json (scripts/bench-gateway.sh),
peer/<run>/<scenario>.json (scripts/bench-peer.sh) and
sio/<run>/<scenario>.json (scripts/bench-sio.sh: the peer's driver against
our gateway's /socket.io/), one directory per repeated run, in
broker-bench's JSON shape: {"scenario", "params", "results": {section:
{key: value}}}. Every figure is the median over the runs; the ratio
compares the medians. With ours, the Markdown goes between the
bench-compare markers of DOC (replaced, or appended) and the chart to SVG;
with sio and peer, the "Same client, two servers" section goes between the
bench-sio markers (replaced, or put after the bench-compare section).
Standard library only.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

# (label, scenario, path in results, higher is better, target ratio or None)
FIGURES = [
    ("connections / s (connect storm)", "connect", "connect.conns_per_s", True, 5.0),
    ("handshake p99 (ms)", "connect", "connect.handshake.p99_ms", False, None),
    ("RSS per idle connection (KiB)", "connect", "connect.rss_per_conn_kib", False, 4.0),
    ("fan-out at 100 msg/s: deliveries / s", "fanout", "phase1.delivered_per_s", True, None),
    ("fan-out at 100 msg/s: latency p50 (ms)", "fanout", "phase1.latency.p50_ms", False, None),
    ("fan-out at 100 msg/s: latency p99 (ms)", "fanout", "phase1.latency.p99_ms", False, 5.0),
    ("fan-out at 100 msg/s: latency p99.9 (ms)", "fanout", "phase1.latency.p999_ms", False, None),
    ("fan-out at 100 msg/s: lost", "fanout", "phase1.lost", False, None),
    ("fan-out at max rate: deliveries / s", "fanout", "phase2.delivered_per_s", True, 10.0),
    ("fan-out at max rate: latency p99 (ms)", "fanout", "phase2.latency.p99_ms", False, None),
    ("fan-out at max rate: lost", "fanout", "phase2.lost", False, None),
    ("chat: deliveries / s", "chat", "chat.delivered_per_s", True, None),
    ("chat: latency p50 (ms)", "chat", "chat.latency.p50_ms", False, None),
    ("chat: latency p99 (ms)", "chat", "chat.latency.p99_ms", False, None),
    ("chat: lost", "chat", "chat.lost", False, None),
    ("churn: joins + leaves / s", "churn", "churn.ops_per_s", True, None),
    ("churn: join p99 (ms)", "churn", "churn.join_latency.p99_ms", False, None),
]
TEXTS = [("churn: room counts exact at the end", "churn", "churn.room_count_exact")]

# Same client, two servers (sio against peer): (label, scenario, path or a
# function of one run's results, higher is better). The CPU rows cover the
# whole scenario (set-up included), the same work on both sides.
def per_delivery_us(doc):
    cpu = dig(doc, "cpu.nodes_cpu_s")
    n = sum(dig(doc, f"{p}.delivered") or 0 for p in ("phase1", "phase2"))
    return cpu * 1e6 / n if isinstance(cpu, (int, float)) and n else None


SIO_FIGURES = [
    ("connections / s (connect storm)", "connect", "connect.conns_per_s", True),
    ("handshake p50 (ms)", "connect", "connect.handshake.p50_ms", False),
    ("handshake p99 (ms)", "connect", "connect.handshake.p99_ms", False),
    ("server RSS per idle connection (KiB)", "connect", "connect.rss_per_conn_kib", False),
    ("fan-out at 100 msg/s: deliveries / s", "fanout", "phase1.delivered_per_s", True),
    ("fan-out at 100 msg/s: latency p50 (ms)", "fanout", "phase1.latency.p50_ms", False),
    ("fan-out at 100 msg/s: latency p99 (ms)", "fanout", "phase1.latency.p99_ms", False),
    ("fan-out at 100 msg/s: latency p99.9 (ms)", "fanout", "phase1.latency.p999_ms", False),
    ("fan-out at 100 msg/s: lost", "fanout", "phase1.lost", False),
    ("fan-out at max rate: publishes acked / s", "fanout", "phase2.publish_per_s", True),
    ("fan-out at max rate: deliveries / s", "fanout", "phase2.delivered_per_s", True),
    ("fan-out at max rate: latency p50 (ms)", "fanout", "phase2.latency.p50_ms", False),
    ("fan-out at max rate: latency p99 (ms)", "fanout", "phase2.latency.p99_ms", False),
    ("fan-out at max rate: lost", "fanout", "phase2.lost", False),
    ("fan-out: connections ended by the server", "fanout", "gateways.closes", False),
    ("fan-out: server CPU per delivery (µs, both nodes)", "fanout", per_delivery_us, False),
    ("chat: deliveries / s", "chat", "chat.delivered_per_s", True),
    ("chat: latency p50 (ms)", "chat", "chat.latency.p50_ms", False),
    ("chat: latency p99 (ms)", "chat", "chat.latency.p99_ms", False),
    ("chat: latency p99.9 (ms)", "chat", "chat.latency.p999_ms", False),
    ("chat: lost", "chat", "chat.lost", False),
    ("chat: server CPU (s, both nodes)", "chat", "cpu.nodes_cpu_s", False),
    ("chat: driver CPU (s)", "chat", "cpu.driver_cpu_s", False),
]


def dig(doc, path):
    node = doc.get("results", {})
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load(side_dir):
    """{scenario: [results of each run]} for one side."""
    runs = {}
    if not side_dir.is_dir():
        return runs
    for run in sorted(p for p in side_dir.iterdir() if p.is_dir()):
        for f in sorted(run.glob("*.json")):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            runs.setdefault(f.stem, []).append(doc)
    return runs


def values(runs, scenario, path):
    out = []
    for doc in runs.get(scenario, []):
        v = path(doc) if callable(path) else dig(doc, path)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
    return out


def fmt(x):
    if x is None:
        return "–"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100 or x == int(x):
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def spread(vs):
    """Relative spread (max-min)/median, for the noise note."""
    if len(vs) < 2:
        return 0.0
    m = statistics.median(vs)
    return (max(vs) - min(vs)) / m if m else 0.0


def advantage(ours, theirs, higher):
    """How many times better ours is (>1: better)."""
    if ours is None or theirs is None:
        return None
    if higher:
        return ours / theirs if theirs else None
    return theirs / ours if ours else None


def table(ours_runs, peer_runs):
    rows, noisy, shortfalls = [], [], []
    for label, scenario, path, higher, target in FIGURES:
        ov, pv = values(ours_runs, scenario, path), values(peer_runs, scenario, path)
        om = statistics.median(ov) if ov else None
        pm = statistics.median(pv) if pv else None
        adv = advantage(om, pm, higher)
        if path.endswith("lost"):
            ratio = "–"
        elif adv is None:
            ratio = "–"
        else:
            ratio = f"{adv:.1f}× {'better' if adv >= 1 else 'worse'}"
        if target is None:
            goal = ""
        else:
            met = adv is not None and adv >= target
            want = f"≥ {target:g}×" if higher else f"≤ 1/{target:g}"
            goal = f"{want}: {'met' if met else '**not met**'}"
            if not met:
                shortfalls.append((label, adv, target))
        for side, vs in (("ours", ov), ("Socket.IO", pv)):
            if spread(vs) > 0.25:
                noisy.append(f"{label} ({side}: {', '.join(fmt(v) for v in vs)})")
        rows.append(f"| {label} | {fmt(om)} | {fmt(pm)} | {ratio} | {goal} |")
    for label, scenario, path in TEXTS:
        o = [dig(d, path) for d in ours_runs.get(scenario, [])]
        p = [dig(d, path) for d in peer_runs.get(scenario, [])]
        rows.append(f"| {label} | {o[-1] if o else '–'} | {p[-1] if p else '–'} | | |")
    return rows, noisy, shortfalls


def svg_chart(ours_runs, peer_runs):
    """Two panels: latency percentiles, and throughput; log scales."""
    import math

    lat = [
        ("fan-out p50", "fanout", "phase1.latency.p50_ms"),
        ("fan-out p99", "fanout", "phase1.latency.p99_ms"),
        ("fan-out p99.9", "fanout", "phase1.latency.p999_ms"),
        ("chat p50", "chat", "chat.latency.p50_ms"),
        ("chat p99", "chat", "chat.latency.p99_ms"),
        ("chat p99.9", "chat", "chat.latency.p999_ms"),
    ]
    thr = [
        ("fan-out max deliveries/s", "fanout", "phase2.delivered_per_s"),
        ("connections/s", "connect", "connect.conns_per_s"),
        ("churn ops/s", "churn", "churn.ops_per_s"),
    ]

    def med(runs, s, p):
        vs = values(runs, s, p)
        return statistics.median(vs) if vs else None

    width, height = 900, 380
    colors = {"ours": "#2b7bba", "peer": "#e07b39"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]

    def panel(x0, title, items, unit, lower_better):
        pw, ph, top, bottom = 400, 250, 50, 320
        vals = [v for _, s, p in items for v in (med(ours_runs, s, p), med(peer_runs, s, p)) if v]
        if not vals:
            return
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        if hi <= lo:
            hi = lo * 10

        def y(v):
            return bottom - ph * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

        note = "lower is better" if lower_better else "higher is better"
        out.append(f'<text x="{x0}" y="25" font-size="14" font-weight="bold">{title}</text>')
        out.append(f'<text x="{x0}" y="40" fill="#555">{unit}, log scale, median of runs; {note}</text>')
        decade = lo
        while decade <= hi * 1.0001:
            yy = y(decade)
            out.append(f'<line x1="{x0 + 40}" y1="{yy:.1f}" x2="{x0 + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{x0 + 36}" y="{yy + 4:.1f}" text-anchor="end">{fmt(decade)}</text>')
            decade *= 10
        slot = (pw - 50) / len(items)
        for i, (label, s, p) in enumerate(items):
            bx = x0 + 50 + i * slot
            for j, (side, runs) in enumerate((("ours", ours_runs), ("peer", peer_runs))):
                v = med(runs, s, p)
                if not v:
                    continue
                bw = slot * 0.35
                x = bx + j * bw
                out.append(
                    f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bw:.1f}" height="{bottom - y(v):.1f}" '
                    f'fill="{colors[side]}"><title>{label} {side}: {fmt(v)}</title></rect>'
                )
            out.append(
                f'<text x="{bx + slot * 0.35:.1f}" y="{bottom + 14}" text-anchor="middle" '
                f'font-size="10">{label}</text>'
            )

    panel(20, "Publish → receive latency", lat, "ms", True)
    panel(480, "Throughput", thr, "per second", False)
    out.append(f'<rect x="20" y="{height - 28}" width="12" height="12" fill="{colors["ours"]}"/>')
    out.append(f'<text x="38" y="{height - 18}">this broker (Rust gateway + Redis module)</text>')
    out.append(f'<rect x="330" y="{height - 28}" width="12" height="12" fill="{colors["peer"]}"/>')
    out.append(f'<text x="348" y="{height - 18}">Socket.IO 4 + @socket.io/redis-adapter (Node)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def spread_text(vs):
    """The runs' range, min–max, or – with fewer than 2 runs."""
    return f"{fmt(min(vs))}–{fmt(max(vs))}" if len(vs) >= 2 else "–"


def sio_table(sio_runs, peer_runs):
    """Rows of the same-client table: medians, spreads, ratio."""
    rows = []
    for label, scenario, path, higher in SIO_FIGURES:
        sv, pv = values(sio_runs, scenario, path), values(peer_runs, scenario, path)
        sm = statistics.median(sv) if sv else None
        pm = statistics.median(pv) if pv else None
        adv = advantage(sm, pm, higher)
        if (isinstance(path, str) and path.endswith((".lost", ".closes"))) or adv is None:
            ratio = "–"
        else:
            ratio = f"{adv:.1f}× {'better' if adv >= 1 else 'worse'}"
        rows.append(f"| {label} | {fmt(sm)} | {spread_text(sv)} | {fmt(pm)} | {spread_text(pv)} | {ratio} |")
    return rows


def odd_events(runs, label):
    """What the driver counted besides the figures (refusals, closes, the
    server's error events, set-up failures), summed over the runs."""
    out = []
    for scenario in ("connect", "fanout", "chat"):
        total = {}
        for doc in runs.get(scenario, []):
            for section in doc.get("results", {}).values():
                for key in ("events", "setup_failures", "failures"):
                    for what, n in (section.get(key) or {}).items():
                        total[what] = total.get(what, 0) + n
        if total:
            items = "; ".join(f"{n} × {what}" for what, n in sorted(total.items()))
            out.append(f"{label} {scenario}: {items}")
    return out


def replace_section(text, begin, end, section, heading, after=None):
    """Puts `section` between the markers, or after the marker `after`
    (under `heading`), or at the end."""
    if begin in text and end in text:
        head = text[: text.index(begin)]
        tail = text[text.index(end) + len(end):].lstrip("\n")
        return head + section + ("\n" + tail if tail else "")
    if after and after in text:
        at = text.index(after) + len(after)
        tail = text[at:].lstrip("\n")
        return text[:at] + "\n\n" + heading + "\n\n" + section + ("\n" + tail if tail else "")
    return text.rstrip("\n") + "\n\n" + heading + "\n\n" + section


def compare_section(args, ours, peer):
    runs = max(len(v) for v in ours.values())
    peer_runs = max((len(v) for v in peer.values()), default=0)
    rows, noisy, shortfalls = table(ours, peer)
    svg_path = Path(args.svg)
    svg_path.write_text(svg_chart(ours, peer))
    lines = [
        "<!-- bench-compare:begin (written by scripts/bench.sh; edit the scripts, not this part) -->",
        "",
        args.machine,
        "",
        "```sh",
        args.command,
        "```",
        "",
        f"Medians of {runs} run(s) of ours and {peer_runs} of the Socket.IO peer, the same",
        "scenarios with the same parameters, one after the other on this machine"
        + (f" ({args.elapsed})." if args.elapsed else "."),
        "",
        "| figure | ours | Socket.IO | ours vs theirs | target |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
        f"![latency and throughput]({svg_path.name})",
        "",
    ]
    if noisy:
        lines += ["Noisy (runs differ by more than 25%): " + "; ".join(noisy) + ".", ""]
    if shortfalls:
        parts = [
            f"{label}: {('%.1f×' % adv) if adv else 'no figure'} against {t:g}×"
            for label, adv, t in shortfalls
        ]
        lines += ["Targets not met: " + "; ".join(parts) + ".", ""]
    lines.append("<!-- bench-compare:end -->")
    return "\n".join(lines) + "\n"


SIO_HEADING = (
    "## Same client, two servers: socket.io-client against this gateway's /socket.io/ "
    "and the Socket.IO server"
)


def sio_section(args, sio, peer):
    runs = max(len(v) for v in sio.values())
    peer_runs = max((len(v) for v in peer.values()), default=0)
    events = odd_events(sio, "gateway") + odd_events(peer, "Socket.IO")
    lines = [
        "<!-- bench-sio:begin (written by scripts/bench.sh; edit the scripts, not this part) -->",
        "",
        args.machine,
        "",
        "```sh",
        args.command,
        "```",
        "",
        "One load driver, `bench/socketio/driver.js` (socket.io-client 4, WebSocket transport,",
        "an HS256 token in the CONNECT `auth`, the connections in 2 worker threads), runs the",
        "same scenarios with the same parameters against two servers: this broker's two gateway",
        "nodes at `/socket.io/` (`scripts/bench-sio.sh`: `--dialect broker`, so `broker:join`,",
        "`broker:publish` and messages as `msg (data, meta, offset)`; Redis with the module;",
        "bench-gateway.sh's configuration) and two Socket.IO 4 nodes with",
        "`@socket.io/redis-adapter` (`scripts/bench-peer.sh`: `join`, `pub`, `msg {room, seq,",
        "data}`). The only code that differs is `bench/socketio/lib/dialect.js`. The server's",
        "memory comes from its admin `/metrics` (gateway) or `GET /rss` (Socket.IO), its CPU",
        "from `/proc` or `process.cpuUsage()`.",
        "",
        "The driver is the heavier party: socket.io-client needs about one core of this machine for",
        "the fan-out's 100,000 deliveries/s, so the fan-out's latencies and its maximum rate are",
        "set by the client and by what else the machine runs as much as by the server; read the",
        "ranges. The CPU rows are the servers' own work for the same load. The gateway's packets",
        "are larger (a message carries `meta` and the recovery `offset`: about 210 bytes against",
        "the peer's 165 here), so the same client spends a little more CPU on them.",
        "",
        f"Medians of {runs} run(s) against the gateway and {peer_runs} against the Socket.IO server,",
        "one after the other on this machine"
        + (f" ({args.elapsed})" if args.elapsed else "")
        + "; each median is followed by the range (min–max) of the runs.",
        "",
        "| figure | gateway /socket.io/ | runs | Socket.IO server | runs | gateway vs Socket.IO |",
        "|---|---:|---:|---:|---:|---:|",
        *sio_table(sio, peer),
        "",
    ]
    if events:
        lines += ["What the driver counted besides the figures, all runs: " + "; ".join(events) + ".", ""]
    lines.append("<!-- bench-sio:end -->")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("doc")
    ap.add_argument("svg")
    ap.add_argument("--machine", default="")
    ap.add_argument("--command", default="make bench")
    ap.add_argument("--elapsed", default="")
    args = ap.parse_args()
    out = Path(args.out_dir)
    ours, peer, sio = load(out / "ours"), load(out / "peer"), load(out / "sio")
    if not ours and not (sio and peer):
        sys.exit(f"no results under {out}: ours/, or sio/ and peer/")
    doc_path = Path(args.doc)
    text = doc_path.read_text() if doc_path.exists() else "# Benchmarks\n"
    if ours:
        section = compare_section(args, ours, peer)
        text = replace_section(
            text,
            "<!-- bench-compare:begin",
            "<!-- bench-compare:end -->",
            section,
            "## Side by side with the Socket.IO stack",
        )
        print(section)
    if sio and peer:
        section = sio_section(args, sio, peer)
        text = replace_section(
            text,
            "<!-- bench-sio:begin",
            "<!-- bench-sio:end -->",
            section,
            SIO_HEADING,
            after="<!-- bench-compare:end -->",
        )
        print(section)
    doc_path.write_text(text)


if __name__ == "__main__":
    main()
