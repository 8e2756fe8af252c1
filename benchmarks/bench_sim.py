"""Simulated requests per wall second: 10,000 ShareGPT requests on one replica, each scheduler.

Usage:  python benchmarks/bench_sim.py [--requests 10000] [--repeats 3] [--rate 4.2]

Runs scenarios/sharegpt.yaml (Llama-2-7B, one H100, Poisson arrivals near saturation) with each
scheduler and prints the median over repeats of wall time and simulated requests per wall second,
plus the peak resident memory of the process. Not a unit test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from pathlib import Path

from llmsim import load_scenario, simulate

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "sharegpt.yaml"
SCHEDULERS = ("aggressive", "conservative", "past-future", "oracle")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=4.2, help="arrival rate, requests/s")
    args = ap.parse_args()
    print(f"# {args.requests} ShareGPT requests, 1 replica, {args.rate} req/s; median of {args.repeats}; "
          f"python {platform.python_version()} on {platform.machine()} ({platform.processor() or 'cpu'})")
    print(f"{'scheduler':<14}{'wall_s':>9}{'req/wall_s':>12}{'steps':>9}{'steps/wall_s':>14}{'evictions':>11}")
    for kind in SCHEDULERS:
        loaded = load_scenario(SCENARIO, [f"workload.num_requests={args.requests}", f"workload.arrivals.rate_per_s={args.rate}"], scheduler=kind)
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = simulate(loaded)
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        steps = sum(result.derived["replica_steps"])
        print(f"{kind:<14}{wall:>9.2f}{args.requests / wall:>12,.0f}{steps:>9,}{steps / wall:>14,.0f}{result.summary['evictions']:>11,}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# peak resident memory of this process: {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
