#!/usr/bin/env python3
"""The "Backends" section of docs/BENCHMARKS.md from scripts/bench-backends.sh's results.

    bench-backends-report.py RESULTS_DIR DOC --runs N --date D --commit C --machine M
                             --elapsed S --conns N --duration S --hook-seconds S --rpc-rates "R ..."

RESULTS_DIR holds broker-bench's JSON per run (connect-on-1.json, churn-off-2.json,
rpc-10000-3.json, webhooks-1.json, ...), INFO commandstats excerpts (*.cmdstats),
`top` snapshots (rpc-*.top) and the gateways' warnings (*.warnings). The section
replaces what is between the bench-backends markers of DOC (or is added at the end).
"""

import argparse
import glob
import json
import os
import re
import statistics

BEGIN = "<!-- bench-backends:begin (written by scripts/bench-backends.sh; edit the scripts, not this part) -->"
END = "<!-- bench-backends:end -->"


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def get(doc, *keys):
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


def num(x, decimals=0):
    if x is None:
        return "–"
    if abs(x) >= 1000 and decimals <= 1:
        return f"{round(x):,}"
    return f"{x:.{decimals}f}"


def ms(x):
    if x is None:
        return "–"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cmdstats(path):
    """{command: (calls, usec_per_call)} from INFO commandstats lines."""
    out = {}
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return out
    for line in lines:
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=\d+,usec_per_call=([\d.]+)", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), float(m.group(3)))
    return out


def top(path):
    """({process: %CPU}, machine idle %) from the second `top -b` iteration."""
    procs, idle = {}, None
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return procs, idle
    names = {"node": "node", "broker-ga": "gateway", "redis-ser": "redis", "broker-be": "broker-bench"}
    header = False
    for line in lines:
        m = re.search(r"([\d.]+) id,", line)
        if line.startswith("%Cpu") and m:
            idle = float(m.group(1))
        if line.strip().startswith("PID"):
            header = True
            continue
        if header and line.strip():
            cols = line.split()
            if len(cols) >= 12:
                for prefix, name in names.items():
                    if cols[11].startswith(prefix):
                        procs[name] = float(cols[8])
    return procs, idle


def runs_of(results, pattern, runs):
    return [load(os.path.join(results, pattern.format(r))) for r in range(1, runs + 1)]


def listing(xs, f):
    return ", ".join(f(x) for x in xs)


def events_part(a, out):
    runs = a.runs
    rows = []
    figures = {}
    for mode in ("off", "on"):
        conn = runs_of(a.results, "connect-" + mode + "-{}.json", runs)
        churn = runs_of(a.results, "churn-" + mode + "-{}.json", runs)
        if not any(conn) and not any(churn):
            return False
        cps = [get(d, "results", "connect", "conns_per_s") for d in conn]
        hs = [get(d, "results", "connect", "handshake", "p99_ms") for d in conn]
        ops = [get(d, "results", "churn", "ops_per_s") for d in churn]
        joins = []
        for d, o in zip(churn, ops):
            j, l = get(d, "results", "churn", "joins"), get(d, "results", "churn", "leaves")
            joins.append(o * j / (j + l) if o is not None and j is not None and (j + l) > 0 else None)
        jp99 = [get(d, "results", "churn", "join_latency", "p99_ms") for d in churn]
        exact = [get(d, "results", "churn", "room_count_exact") for d in churn]
        stats = [cmdstats(os.path.join(a.results, f"events-{mode}-{r}.cmdstats")) for r in range(1, runs + 1)]
        figures[mode] = dict(cps=cps, hs=hs, ops=ops, joins=joins, jp99=jp99, exact=exact, stats=stats)

    def row(label, key, fmt, higher_better, goal=None):
        off, on = figures["off"][key], figures["on"][key]
        mo, mn = med(off), med(on)
        ratio = f"{mn / mo:.3f}" if mo and mn is not None else "–"
        verdict = ""
        if goal is not None and mo and mn is not None:
            loss = 1 - mn / mo
            verdict = f"{loss * 100:.1f} % fewer: " + ("met" if loss <= goal else "**not met**")
            if loss < 0:
                verdict = f"{-loss * 100:.1f} % more: met"
        rows.append(f"| {label} | {listing(off, fmt)} | **{fmt(mo)}** | {listing(on, fmt)} | **{fmt(mn)}** | {ratio} | {verdict} |")

    row("connections / s (connect storm)", "cps", num, True, 0.10)
    row("joins / s (churn)", "joins", num, True, 0.10)
    row("joins + leaves / s (churn)", "ops", num, True)
    row("handshake p99 (ms)", "hs", ms, False)
    row("join → ack p99 (ms)", "jp99", ms, False)
    out.append("### Cost of the lifecycle stream")
    out.append("")
    out.append(f"The same two scenarios against a fresh Redis per run, loaded with `EVENTS 0` (no stream) and")
    out.append(f"with the default (`EVENTS 10000`: one `XADD broker:events MAXLEN ~ 10000` per event, in the")
    out.append(f"command that changes the state), alternating off/on, on/off, ... ({runs} runs each). Goal of")
    out.append("issue 16: at most 10 % fewer connections/s and joins/s with the stream on. Two gateways with")
    out.append("bench-gateway.sh's configuration and no request limit (`limits.requests`: its default, 200 per")
    out.append("10 s and connection, caps churn's 200 connections at 5,000 joins + leaves a second).")
    out.append("")
    out.append("| figure | `EVENTS 0`, runs | median | `EVENTS 10000`, runs | median | on / off | goal ≤ 10 % fewer |")
    out.append("|---|---|---:|---|---:|---:|---|")
    out.extend(rows)
    out.append("")
    ex = figures["on"]["exact"] + figures["off"]["exact"]
    if ex and all(isinstance(e, str) and e.startswith("yes") for e in ex):
        out.append("BROKER.ROOM.COUNT was exact after every churn run.")
        out.append("")
    # Module commands' own cost.
    cmds = ["broker.conn.open", "broker.conn.close", "broker.join", "broker.leave"]
    out.append("Redis' own time in the module's commands (`INFO commandstats` `usec_per_call`, reset after the")
    out.append("gateways started; medians over the runs; the connect storm and the churn together):")
    out.append("")
    out.append("| command | calls per run (median) | µs per call, `EVENTS 0` | µs per call, `EVENTS 10000` | on − off (µs) |")
    out.append("|---|---:|---:|---:|---:|")
    for c in cmds:
        calls = med([s.get(c, (None, None))[0] for s in figures["on"]["stats"]])
        off = med([s.get(c, (None, None))[1] for s in figures["off"]["stats"]])
        on = med([s.get(c, (None, None))[1] for s in figures["on"]["stats"]])
        diff = f"{on - off:+.2f}" if on is not None and off is not None else "–"
        out.append(f"| `{c.upper()}` | {num(calls)} | {num(off, 2)} | {num(on, 2)} | {diff} |")
    out.append("")
    return True


def rpc_part(a, out):
    rates = a.rpc_rates.split()
    rows, cpu_rows = [], []
    found = False
    for rate in rates:
        docs = runs_of(a.results, f"rpc-{rate}-{{}}.json", a.runs)
        if not any(docs):
            continue
        found = True
        sec = [get(d, "results", "rpc") or {} for d in docs]
        ach = [s.get("acked_per_s") for s in sec]
        p50 = [get(s, "latency", "p50_ms") for s in sec]
        p99 = [get(s, "latency", "p99_ms") for s in sec]
        p999 = [get(s, "latency", "p999_ms") for s in sec]
        errs = sum(s.get("errors") or 0 for s in sec)
        codes = {}
        for s in sec:
            for k, v in (s.get("errors_by_code") or {}).items():
                codes[k] = codes.get(k, 0) + v
        throttled = sum(s.get("throttled") or 0 for s in sec)
        code_text = ", ".join(f"{v} {k}" for k, v in sorted(codes.items())) or "none"
        rows.append(
            f"| {int(rate):,} | {listing(ach, num)} | **{num(med(ach))}** | {listing(p50, ms)} | **{ms(med(p50))}** "
            f"| {listing(p99, ms)} | **{ms(med(p99))}** | {ms(med(p999))} | {errs} ({code_text}) | {throttled:,} |"
        )
        snaps = [top(os.path.join(a.results, f"rpc-{rate}-{r}.top")) for r in range(1, a.runs + 1)]
        procs = ["node", "redis", "gateway", "broker-bench"]
        cells = [num(med([s[0].get(p) for s in snaps])) for p in procs]
        idle = med([s[1] for s in snaps])
        cpu_rows.append(f"| {int(rate):,} | " + " | ".join(cells) + f" | {num(idle)} |")
    if not found:
        return False
    out.append("### RPC round trip through a Node backend")
    out.append("")
    out.append("One gateway; 100 connections each send `rpc` `bench:echo` frames (`data` `[k]`) at 1/100 of the")
    out.append("offered rate, spread evenly, not waiting for answers (at most 100 unanswered per connection, the")
    out.append("gateway's limit: a sender then waits, counted as \"throttled\"), 2 s warm-up then")
    out.append(f"{a.duration} s measured. Time: `rpc` written → its `ack` read. The backend is one Node process,")
    out.append("`scripts/bench-rpc-backend.mjs`: `broker.rpc.handle('bench:echo', d => d)` and")
    out.append("`rpc.start({group: 'bench', concurrency: 256})` on `@broker/node` (clients/node). Request limit")
    out.append("of the connections raised (`limits.requests`); `rpc.timeout_ms` 5000 (default).")
    out.append("")
    out.append("| offered rpc/s | answered/s, runs | median | p50 ms, runs | median | p99 ms, runs | median | p99.9 (median) | errors + timeouts (all runs) | throttled sends |")
    out.append("|---:|---|---:|---|---:|---|---:|---:|---|---:|")
    out.extend(rows)
    out.append("")
    out.append("CPU in the middle of each measured phase (`top -b -d 3`, % of one core, medians over the runs;")
    out.append("the machine has 2 cores, shared with other work, whose use is in neither column):")
    out.append("")
    out.append("| offered rpc/s | node | redis | gateway | broker-bench | machine idle % |")
    out.append("|---:|---:|---:|---:|---:|---:|")
    out.extend(cpu_rows)
    out.append("")
    stats = cmdstats(os.path.join(a.results, "rpc.cmdstats"))
    if stats:
        out.append("Redis' time per command over all RPC runs (`INFO commandstats`): " + "; ".join(
            f"`{c.upper()}` {stats[c][0]:,} calls, {stats[c][1]:.2f} µs" for c in sorted(stats)) + ".")
        out.append("")
    return True


def hooks_part(a, out):
    docs = runs_of(a.results, "webhooks-{}.json", a.runs)
    if not any(docs):
        return False
    out.append("### Webhook delivery lag")
    out.append("")
    out.append("Two gateways with `[webhooks] url` set to the tool's own receiver (`broker-bench webhooks`;")
    out.append("`batch_max` 100 and `timeout_ms` 3000, the defaults), Redis with the default `EVENTS 10000`.")
    out.append(f"The tool opens connections as new users at 200 a second for {a.hook_seconds} s, each joining a room,")
    out.append("leaving it and closing (6 events: connect, online, join, leave, disconnect, offline), and")
    out.append("receives the POSTs: lag = receipt time − the event's `ts` (the module's write time, in ms, so")
    out.append("the lag reads up to 1 ms high). \"written\" is `INFO broker` `events_written` over the run.")
    out.append("")
    out.append("| run | written | received | missing | duplicates | bad signatures | delivered / s | lag p50 ms | p99 ms | p99.9 ms | max ms | POSTs | events / POST |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    secs = []
    for i, d in enumerate(docs, 1):
        s = get(d, "results", "webhooks")
        if not s:
            out.append(f"| {i} | failed | | | | | | | | | | | |")
            continue
        secs.append(s)
        lag = s.get("lag") or {}
        out.append(
            f"| {i} | {num(s.get('written'))} | {num(s.get('received'))} | {s.get('missing')} | {s.get('duplicates')} "
            f"| {s.get('bad_signature')} | {num(s.get('delivered_per_s'))} | {ms(lag.get('p50_ms'))} | {ms(lag.get('p99_ms'))} "
            f"| {ms(lag.get('p999_ms'))} | {ms(lag.get('max_ms'))} | {num(s.get('posts'))} | {num(s.get('events_per_post'), 1)} |"
        )
    if secs:
        m = lambda f: med([f(s) for s in secs])
        out.append(
            f"| **median** | {num(m(lambda s: s.get('written')))} | {num(m(lambda s: s.get('received')))} "
            f"| {m(lambda s: s.get('missing'))} | {m(lambda s: s.get('duplicates'))} | {m(lambda s: s.get('bad_signature'))} "
            f"| **{num(m(lambda s: s.get('delivered_per_s')))}** | **{ms(m(lambda s: get(s, 'lag', 'p50_ms')))}** "
            f"| **{ms(m(lambda s: get(s, 'lag', 'p99_ms')))}** | {ms(m(lambda s: get(s, 'lag', 'p999_ms')))} "
            f"| **{ms(m(lambda s: get(s, 'lag', 'max_ms')))}** | {num(m(lambda s: s.get('posts')))} "
            f"| {num(m(lambda s: s.get('events_per_post')), 1)} |"
        )
    out.append("")
    total_missing = sum(s.get("missing") or 0 for s in secs)
    out.append(
        "Every event written arrived in every run." if secs and total_missing == 0 and len(secs) == len(docs)
        else f"**Events missing: {total_missing} over {len(secs)} run(s).**"
    )
    out.append("")
    return True


def warnings(a, out):
    lines = []
    for path in sorted(glob.glob(os.path.join(a.results, "*.warnings"))):
        text = open(path).read().strip()
        if text:
            part = os.path.basename(path)[: -len(".warnings")]
            lines.append(f"{part}:")
            lines.extend("  " + l.strip() for l in text.splitlines())
    backend = os.path.join(a.results, "rpc.backend")
    if os.path.exists(backend) and open(backend).read().strip():
        lines.append("Node backend output:")
        lines.extend("  " + l.strip() for l in open(backend).read().strip().splitlines())
    out.append("### Logs")
    out.append("")
    if lines:
        out.append("Gateway lines above INFO, counted by message (ids cut), and the Node backend's output:")
        out.append("")
        out.append("```")
        out.extend(lines)
        out.append("```")
    else:
        out.append("Nothing above INFO in the gateways' logs; nothing from the Node backend.")
    out.append("")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("doc")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--date", default="")
    p.add_argument("--commit", default="")
    p.add_argument("--machine", default="")
    p.add_argument("--elapsed", default="")
    p.add_argument("--conns", default="10000")
    p.add_argument("--duration", default="10")
    p.add_argument("--hook-seconds", default="20")
    p.add_argument("--rpc-rates", default="1000 10000")
    a = p.parse_args()

    out = [BEGIN, ""]
    out.append(f"Run on {a.date} at commit `{a.commit}`: {a.machine}. Whole run: {a.elapsed} s.")
    out.append("The machine is shared with other work (other engineers' test suites and Node scenarios")
    out.append("ran meanwhile) and Redis, the gateways, the Node backend and the load tool share its two")
    out.append("cores: the figures are noisy floors; every run is listed next to the median.")
    out.append("")
    out.append("```sh")
    out.append("make bench-backends                       # or scripts/bench-backends.sh; BENCH_NO_BUILD=1 skips the build")
    out.append("BENCH_RUNS=5 BENCH_PARTS=rpc scripts/bench-backends.sh   # one part, more runs")
    out.append("# which runs, against its own Redis and gateways per part ($WS1, $WS2, $ADMIN1, $ADMIN2, $REDIS):")
    out.append(f"broker-bench connect --url $WS1 --admin $ADMIN1 -n {a.conns} --concurrency 100 --idle 0")
    out.append(f"broker-bench churn --url $WS1 --url $WS2 --admin $ADMIN1 --admin $ADMIN2 --redis $REDIS -c 200 --rooms 20 -p 2 --rate 100 --duration {a.duration}")
    out.append("node scripts/bench-rpc-backend.mjs $REDIS 256 &")
    out.append(f"broker-bench rpc --url $WS1 --admin $ADMIN1 -n 100 --rate RATE --duration {a.duration} --warmup 2")
    out.append(f"broker-bench webhooks --url $WS1 --url $WS2 --admin $ADMIN1 --admin $ADMIN2 --redis $REDIS --listen 127.0.0.1:PORT --rate 200 --duration {a.hook_seconds}")
    out.append("```")
    out.append("")
    events_part(a, out)
    rpc_part(a, out)
    hooks_part(a, out)
    warnings(a, out)
    out.append(END)
    section = "\n".join(out) + "\n"

    text = open(a.doc).read() if os.path.exists(a.doc) else "# Benchmarks\n"
    if BEGIN.split(" (")[0] in text and END in text:
        start = text.index(BEGIN.split(" (")[0])
        end = text.index(END) + len(END)
        text = text[:start] + section.rstrip("\n") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n## Backends\n\n" + section
    with open(a.doc, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
