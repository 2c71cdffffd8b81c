#!/usr/bin/env python3
"""Per-kernel totals of an `ncu --metrics gpu__time_duration.sum --csv` log: one line per kernel
name (total, launches, time per launch), most time first, then the total kernel time."""
import collections
import csv
import sys

UNIT_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}

rows = list(csv.reader(open(sys.argv[1])))
rows = rows[next(i for i, r in enumerate(rows) if "Kernel Name" in r):]
hdr = rows[0]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
tot, cnt = collections.defaultdict(float), collections.Counter()
for r in rows[1:]:
    us = float(r[vi].replace(",", "")) * UNIT_US[r[ui]]
    name = r[ki].split("(")[0]
    tot[name] += us
    cnt[name] += 1
for k, v in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"{k[:40]:40} {v:10.1f} us {cnt[k]:5d} launches {v / cnt[k]:9.2f} us each")
print(f"{'total kernel time':40} {sum(tot.values()):10.1f} us")
