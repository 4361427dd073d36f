#!/usr/bin/env python3
"""Context switches and CPU time of processes' threads, grouped by thread name (issue 14).

    scripts/thread_stats.py snap OUT.json PID...     the counters of every thread of these PIDs now
    scripts/thread_stats.py diff BEFORE.json AFTER.json   what each kind of thread spent between two
                                                     snapshots (threads in both)

Read from /proc/PID/task/TID/{comm,status,stat}: voluntary switches (the thread waited: a wake
for each) and involuntary ones (it was preempted), user and system clock ticks.
"""
import collections
import json
import os
import re
import sys


def snap(path, pids):
    out = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            base = f"/proc/{pid}/task/{tid}"
            try:
                name = open(f"{base}/comm").read().strip()
                status = open(f"{base}/status").read()
                stat = open(f"{base}/stat").read().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # the thread ended meanwhile
                continue
            switches = [int(re.search(rf"^{k}:\s+(\d+)", status, re.M).group(1))
                        for k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")]
            out[f"{pid}/{tid}"] = [name, *switches, int(stat[11]), int(stat[12])]
    json.dump(out, open(path, "w"))


def diff(before, after):
    a, b = json.load(open(before)), json.load(open(after))
    kinds = collections.defaultdict(lambda: [0] * 5)
    for key, (name, *now) in b.items():
        if key not in a:
            continue
        k = kinds[name]
        k[0] += 1
        for i, (x, y) in enumerate(zip(a[key][1:], now)):
            k[i + 1] += y - x
    hz = os.sysconf("SC_CLK_TCK")
    print(f"{'threads':18s} {'count':>5s} {'voluntary':>10s} {'involuntary':>12s} {'user s':>7s} {'sys s':>7s}")
    for name, (n, vol, invol, user, system) in sorted(kinds.items()):
        print(f"{name:18s} {n:5d} {vol:10d} {invol:12d} {user / hz:7.2f} {system / hz:7.2f}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "snap":
        snap(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
