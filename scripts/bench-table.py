#!/usr/bin/env python3
"""Prints criterion results (target/criterion/**/new/estimates.json) as a markdown table:
benchmark id, median time per iteration and its 95 % confidence interval."""
import json, pathlib, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    m = json.loads(est.read_text())["median"]
    rows.append((bench["full_id"], m["point_estimate"], m["confidence_interval"]["lower_bound"], m["confidence_interval"]["upper_bound"]))

def fmt(ns):
    for unit, f in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= f:
            return f"{ns / f:.3g} {unit}"
    return f"{ns:.3g} ns"

print("| benchmark | median | 95% CI |")
print("|---|---|---|")
for name, med, lo, hi in rows:
    print(f"| {name} | {fmt(med)} | {fmt(lo)} – {fmt(hi)} |")
