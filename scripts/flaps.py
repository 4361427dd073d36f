#!/usr/bin/env python3
"""Counts membership flaps in node logs: a member a node saw leave and come back within 3 s
(a failure detector's false alarm, not a restart: each "joined the gossip ring" line starts a
new process's count). Used in session 20 to count them over end-to-end runs:

    for i in 1 2 3 4; do node tests/e2e/e2e.mjs; done   # keep each run's run/node*.log lines
    scripts/flaps.py run/node1.log run/node2.log run/node3.log
"""
import datetime
import re
import sys

WINDOW_S = 3


def main(paths):
    flaps, details = 0, []
    for path in paths:
        prev, gone = None, {}
        for line in open(path, errors="replace"):
            if "joined the gossip ring" in line:
                prev, gone = None, {}
                continue
            if "membership changed members=" not in line:
                continue
            at = datetime.datetime.fromisoformat(line[:26].replace("Z", ""))
            listed = re.search(r"members=\[([^\]]*)\]", line).group(1)
            members = {m.strip().strip('"') for m in listed.split(",") if m.strip()}
            if prev is not None:
                for node in prev - members:
                    gone[node] = at
                for node in members - prev:
                    if node in gone and (at - gone[node]).total_seconds() < WINDOW_S:
                        flaps += 1
                        details.append(f"{path}: {node} back after {(at - gone[node]).total_seconds():.2f} s")
                    gone.pop(node, None)
            prev = members
    print(f"flaps={flaps}")
    for d in details:
        print(d)


if __name__ == "__main__":
    main(sys.argv[1:])
