#!/usr/bin/env python3
"""Plots for docs/benchmarks.md from the JSON reports of
scripts/bench-network.sh (REPORTS=dir).

Default: per engine, transfers committed per second and p99 latency against
the offered rate, both in multiples of the machine's yardstick V, one line
per report directory (e.g. two commits measured in one sitting).

--growth: per engine, the committed rate and the CPU time per transfer (all
nodes together) against the number of validators, one line per offered
rate; the directories hold runs with different VALIDATORS.

    pip install matplotlib
    scripts/plots.py --v 7374 --out docs/throughput.png before=DIR after=DIR
    scripts/plots.py --growth --v 8147 --out docs/growth.png DIR4 DIR7 DIR10
"""

import argparse
import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(directory):
    reports = [json.load(open(f)) for f in glob.glob(os.path.join(directory, "*.json"))]
    by_engine = {}
    for r in reports:
        by_engine.setdefault(r["engine"], []).append(r)
    for rs in by_engine.values():
        rs.sort(key=lambda r: r["offered_rate"])
    return by_engine


def growth(args):
    reports = []
    for d in args.runs:
        for rs in load(d.split("=", 1)[-1]).values():
            reports.extend(rs)
    # Only rates measured at more than one size make a line.
    sizes = {}
    for r in reports:
        sizes.setdefault((r["engine"], r["offered_rate"]), set()).add(r["nodes"])
    lines = sorted(k for k, n in sizes.items() if len(n) > 1)
    engines = sorted({e for e, _ in lines})
    fig, axes = plt.subplots(2, len(engines), figsize=(5 * len(engines), 7), squeeze=False)
    for col, engine in enumerate(engines):
        top, bottom = axes[0][col], axes[1][col]
        rates = [rate for e, rate in lines if e == engine]
        for rate in rates:
            rs = sorted(
                (r for r in reports if r["engine"] == engine and r["offered_rate"] == rate),
                key=lambda r: r["nodes"],
            )
            n = [r["nodes"] for r in rs]
            label = f"offered {rate:,}/s ({rate / args.v:.1f} V)"
            top.plot(n, [r["committed_per_s"] for r in rs], "o-", label=label)
            cpu = [
                1e6 * sum(x.get("cpu_seconds", 0) for x in r["per_node"]) / max(r["committed"], 1)
                for r in rs
            ]
            bottom.plot(n, cpu, "o-", label=label)
        top.set_title(f"{engine}: committed per second")
        top.set_ylabel("transfers/s")
        bottom.set_title(f"{engine}: CPU per transfer, all nodes")
        bottom.set_ylabel("CPU µs per committed transfer")
        for ax in (top, bottom):
            ax.set_xlabel("validators (processes on one 2-core machine)")
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.suptitle(f"Growth with the number of validators, V = {args.v:,.0f}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--v", type=float, required=True, help="the yardstick V of the sitting")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--growth", action="store_true", help="against the number of validators")
    ap.add_argument("runs", nargs="+", help="LABEL=DIR (or DIR) of JSON reports")
    args = ap.parse_args()
    if args.growth:
        growth(args)
        return
    runs = [(r.split("=", 1)[0], load(r.split("=", 1)[1])) for r in args.runs]
    engines = sorted({e for _, d in runs for e in d})
    fig, axes = plt.subplots(2, len(engines), figsize=(5 * len(engines), 7), squeeze=False)
    for col, engine in enumerate(engines):
        top, bottom = axes[0][col], axes[1][col]
        for label, data in runs:
            rs = data.get(engine, [])
            if not rs:
                continue
            offered = [r["offered_rate"] / args.v for r in rs]
            top.plot(offered, [r["committed_per_s"] / args.v for r in rs], "o-", label=label)
            bottom.plot(offered, [r["latency_ms"]["p99"] / 1000 for r in rs], "o-", label=label)
        top.plot([0, 2.2], [0, 2.2], ":", color="grey", linewidth=0.8)
        top.set_title(f"{engine}: committed against offered")
        top.set_xlabel("offered (× V)")
        top.set_ylabel("committed per second (× V)")
        bottom.set_title(f"{engine}: p99 latency")
        bottom.set_xlabel("offered (× V)")
        bottom.set_ylabel("p99 (s, log scale)")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.suptitle(f"4 validators and the load generator on one 2-core machine, V = {args.v:,.0f}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
