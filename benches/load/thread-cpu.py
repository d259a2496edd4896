#!/usr/bin/env python3
"""CPU of a process by thread name, once a second: `thread-cpu.py PID`.

Prints, every second, the milliseconds of CPU (user + system) that each
group of same-named threads used in it (tokio-rt-worker, tessera-hasher-,
sqlx-sqlite-wor, ...), until the process ends. docs/benchmarks.md uses it
beside `signin-load` to see where a login's CPU goes.
"""
import collections
import os
import sys
import time

pid = sys.argv[1]
tick = os.sysconf("SC_CLK_TCK")


def snapshot():
    by_name = collections.Counter()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        # After the name: state is field 3, utime 14, stime 15.
        by_name[name] += int(fields[11]) + int(fields[12])
    return by_name


previous = snapshot()
while previous is not None:
    time.sleep(1)
    current = snapshot()
    if current is None:
        break
    line = " ".join(
        f"{name}={(current[name] - previous.get(name, 0)) * 1000 // tick}"
        for name in sorted(current)
        if current[name] != previous.get(name, 0)
    )
    print(time.strftime("%H:%M:%S"), line, flush=True)
    previous = current
