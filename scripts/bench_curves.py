#!/usr/bin/env python3
"""Turns scripts/bench_curves.sh's JSON lines (bench/results/curves.jsonl) into the cost curves'
plots (bench/results/curve-*.png) and bench/curves.md: the tables of every point, the plots, and
the written analysis bench/curves-analysis.md (by hand) after them. scripts/bench_report.py puts
bench/curves.md at the end of BENCHMARKS.md. Where a point was measured more than once, the
last line counts."""
import argparse
import json
import os

ap = argparse.ArgumentParser()
ap.add_argument("results")
ap.add_argument("--out-dir", default="bench/results")
ap.add_argument("--md", default="bench/curves.md")
a = ap.parse_args()

points = {}
for line in open(a.results):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)
    if r.get("scenario") == "gossip-cost":
        c = r["result"]
        points[("gossip", r["label"], c["nodes"], c["rooms_per_node"])] = c
    elif r["curve"] == "nodes-cpu":
        points[("nodes-cpu", r["label"], r["nodes"], r["rate"])] = r
    else:
        points[(r["curve"], r["label"], r["nodes"], r["members"])] = r


def num(v):
    return "–" if v is None else f"{v:,.0f}"


def of(curve):
    return sorted((k, v) for k, v in points.items() if k[0] == curve)


out = []
w = out.append


def img(name, alt):
    # Relative to the repository's root: the fragment is read inside BENCHMARKS.md.
    w(f"![{alt}]({os.path.join(a.out_dir, name)})\n")


try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None

w("## Cost curves\n")
w("Measured on this machine by `scripts/bench_curves.sh` (`scripts/bench_curves.sh all` runs every curve and")
w("then the plots, about an hour on two cores; the command of each curve is given below; raw points:")
w("`bench/results/curves.jsonl`, where a point measured again counts by its last line; tables and plots:")
w("`scripts/bench_curves.sh plot`, into `bench/curves.md`, which `scripts/bench_report.py` puts at")
w("the end of this file; the analysis under the plots is `bench/curves-analysis.md`). CPU per delivery")
w("is counted in instructions by `valgrind --tool=callgrind` (every node under it, instrumentation")
w("on only for the measured step, after the joins have settled), summed over the nodes and divided")
w("by the deliveries the clients counted: repeatable where CPU seconds on two shared cores are not.")
w("Instructions are the server's user-space work only; the kernel's (the `sendto` per delivery, about")
w("half of all CPU in the fan-out) is not in them.\n")

rooms = of("rooms")
if rooms:
    w("### CPU per delivery as the room grows\n")
    w("One room of N members on one node (`MEASURE_JOIN=1 scripts/bench_curves.sh rooms 10,100,1000,3000,10000`)")
    w("and on three (`NODES=3 MEASURE_JOIN=1 scripts/bench_curves.sh rooms 10,100,1000,3000,10000`, members connected")
    w("to the nodes in turn), about 30,000 deliveries per point; the baseline build: `BIN=run/clusterchat-baseline-49c055c")
    w("LABEL=clusterchat-baseline scripts/bench_curves.sh rooms 1000,3000`.\n")
    w("'Without gossip': less the gossip task's instructions (chitchat's loop, inclusive), paid per node")
    w("and per second whatever the load. 'Join': the connects, joins and settling, per client")
    w("(`MEASURE_JOIN=1`). 'Leave': the clients closing after the step, per client, counted apart")
    w("since session 17 (before, the step's figure included it); it holds the nodes' per-second work")
    w("(the gossip task) until they have seen every client go, which is most of it at 10 and 100 members.\n")
    w("| build | nodes | members | msg/s | deliveries | delivered | instructions per delivery | without gossip | join: instructions per client | leave: instructions per client |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (_, label, n, m), r in rooms:
        w(f"| {label} | {n} | {m:,} | {r['rate']} | {r['delivered']:,} | {r['delivered_pct']:.1f} % | {r['instructions_per_delivery']:,.0f} | {num(r.get('instructions_per_delivery_without_gossip'))} | {num(r.get('join_instructions_per_client'))} | {num(r.get('leave_instructions_per_client'))} |")
    w("")
    if plt:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label in sorted({k[1] for k, _ in rooms}):
            for n in sorted({k[2] for k, _ in rooms if k[1] == label}):
                xs = [(k[3], v["instructions_per_delivery"]) for k, v in rooms if k[1] == label and k[2] == n]
                line, = ax.plot([x for x, _ in xs], [y for _, y in xs], marker="o", label=f"{label}, {n} node(s)")
                if n > 1:
                    xs = [(k[3], v.get("instructions_per_delivery_without_gossip")) for k, v in rooms if k[1] == label and k[2] == n]
                    xs = [(x, y) for x, y in xs if y is not None]
                    ax.plot([x for x, _ in xs], [y for _, y in xs], marker="o", linestyle="--", color=line.get_color(),
                            label=f"{label}, {n} node(s), without the gossip task")
        ax.set_xscale("log")
        ax.set_xlabel("members of the room")
        ax.set_ylabel("instructions per delivery (callgrind)")
        ax.set_ylim(bottom=0)
        ax.set_title("CPU per delivery vs room size (callgrind instruction counts)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(a.out_dir, "curve-rooms.png"), dpi=100)
        img("curve-rooms.png", "instructions per delivery vs room size")

nodes = of("nodes")
cpu = of("nodes-cpu")
if nodes or cpu:
    w("### CPU per delivery as nodes grow\n")
    w("20 rooms x 30 members (600 clients, connected to the nodes in turn, so most deliveries of a")
    w("message cross nodes), the same offered load at every size: instructions at 100 msg/s under")
    w("callgrind (`scripts/bench_curves.sh nodes`), and server CPU-seconds from `/proc` at 500 and 1,000")
    w("msg/s natively, the points of one run back to back (`scripts/bench_curves.sh nodes-cpu`).\n")
    w("| nodes | measure | msg/s | deliveries | delivered | per delivery |")
    w("| ---: | --- | ---: | ---: | ---: | ---: |")
    for (_, label, n, _), r in nodes:
        w(f"| {n} | instructions ({label}) | {r['rate']} | {r['delivered']:,} | {r['delivered_pct']:.1f} % | {r['instructions_per_delivery']:,.0f} |")
        if r.get("instructions_per_delivery_without_gossip") is not None:
            w(f"| {n} | instructions without the gossip task | {r['rate']} | {r['delivered']:,} | {r['delivered_pct']:.1f} % | {r['instructions_per_delivery_without_gossip']:,.0f} |")
    for (_, label, n, rate), r in cpu:
        w(f"| {n} | CPU µs, user + sys ({label}) | {rate} | {r['delivered']:,} | {r['delivered_pct']:.1f} % | {r['cpu_us_per_delivery']:.2f} ({r['server_user_s'] * 1e6 / max(r['delivered'], 1):.2f} + {r['server_sys_s'] * 1e6 / max(r['delivered'], 1):.2f}) |")
    w("")
    if plt:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        if nodes:
            xs = [(k[2], v["instructions_per_delivery"]) for k, v in nodes]
            axes[0].plot([x for x, _ in xs], [y for _, y in xs], marker="o", label="all")
            xs = [(k[2], v.get("instructions_per_delivery_without_gossip")) for k, v in nodes]
            xs = [(x, y) for x, y in xs if y is not None]
            axes[0].plot([x for x, _ in xs], [y for _, y in xs], marker="o", linestyle="--", label="without the gossip task")
            axes[0].legend(fontsize=7)
        axes[0].set_xlabel("nodes")
        axes[0].set_ylabel("instructions per delivery, all nodes (callgrind)")
        axes[0].set_ylim(bottom=0)
        axes[0].set_title("instructions per delivery vs nodes (callgrind)")
        for rate in sorted({k[3] for k, _ in cpu}):
            xs = [(k[2], v["cpu_us_per_delivery"]) for k, v in cpu if k[3] == rate]
            axes[1].plot([x for x, _ in xs], [y for _, y in xs], marker="o", label=f"{rate} msg/s")
        axes[1].set_xlabel("nodes")
        axes[1].set_ylabel("server CPU µs per delivery (/proc)")
        axes[1].set_ylim(bottom=0)
        axes[1].set_title("CPU µs per delivery vs nodes (/proc, noisy)")
        axes[1].legend(fontsize=7)
        for ax in axes:
            ax.set_xticks([1, 3, 5])
        fig.tight_layout()
        fig.savefig(os.path.join(a.out_dir, "curve-nodes.png"), dpi=100)
        img("curve-nodes.png", "CPU per delivery vs nodes")

gossip = of("gossip")
if gossip:
    w("### Gossip traffic and convergence\n")
    w("In-process rings on loopback (`chatbench gossip-cost`, run by `scripts/bench_curves.sh gossip`):")
    w("every node a whole clusterchat node (gossip every 100 ms), bytes counted at each node's gossip")
    w("socket (sealed UDP payloads sent, the `clusterchat_gossip_sent_bytes` metric), over 10 s with no")
    w("key changing once every node has every other's room keys; convergence: a new room key set on")
    w("one node until every other node's membership shows it (5 trials, a different origin each).\n")
    w("| nodes | rooms per node | sync of all room keys (ms) | bytes/s sent per node (max) | datagrams/s per node | convergence median (max), ms | CPU per node (cores) |")
    w("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (_, label, n, r), c in gossip:
        w(f"| {n} | {r:,} | {c['sync_ms']:,.0f} | {c['sent_bytes_per_node_s']:,.0f} ({c['sent_bytes_per_node_s_max']:,.0f}) | {c['sent_datagrams_per_node_s']:.1f} | {c['convergence_median_ms']:.0f} ({c['convergence_max_ms']:.0f}) | {c['cpu_per_node']:.3f} |")
    w("")
    if plt:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        base_rooms = min(k[3] for k, _ in gossip)
        by_n = [(k[2], v) for k, v in gossip if k[3] == base_rooms]
        ax = axes[0]
        ax.plot([n for n, _ in by_n], [v["sent_bytes_per_node_s"] for _, v in by_n], marker="o", color="C0", label="bytes/s sent per node")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(f"nodes ({base_rooms} room keys per node)")
        ax.set_ylabel("bytes/s sent per node", color="C0")
        ax2 = ax.twinx()
        ax2.plot([n for n, _ in by_n], [v["convergence_median_ms"] for _, v in by_n], marker="s", color="C1", label="convergence median")
        ax2.set_ylabel("new key convergence, median (ms)", color="C1")
        ax2.set_ylim(bottom=0)
        ax.set_title("gossip vs nodes")
        small_n = min(k[2] for k, _ in gossip)
        by_r = [(k[3], v) for k, v in gossip if k[2] == small_n and k[3] > 0]
        ax = axes[1]
        ax.plot([r for r, _ in by_r], [v["sent_bytes_per_node_s"] for _, v in by_r], marker="o", color="C0")
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel(f"rooms per node ({small_n} nodes)")
        ax.set_ylabel("bytes/s sent per node (steady)", color="C0")
        ax2 = ax.twinx()
        ax2.plot([r for r, _ in by_r], [v["convergence_median_ms"] for _, v in by_r], marker="s", color="C1")
        ax2.plot([r for r, _ in by_r], [v["sync_ms"] for _, v in by_r], marker="^", color="C2")
        ax2.set_yscale("log")
        ax2.set_ylabel("ms (squares: a new key, triangles: all keys)", color="C1")
        ax.set_title("gossip vs rooms per node")
        fig.tight_layout()
        fig.savefig(os.path.join(a.out_dir, "curve-gossip.png"), dpi=100)
        img("curve-gossip.png", "gossip bytes and convergence vs nodes and rooms")

analysis = os.path.join(os.path.dirname(a.md) or ".", "curves-analysis.md")
if os.path.exists(analysis):
    w(open(analysis).read())
open(a.md, "w").write("\n".join(out) + "\n")
print(f"wrote {a.md}")
