"""Simulated requests per wall second and peak memory, per scheduler.

Usage:
    python benchmarks/bench_sim.py                               # 10,000 requests, 1 replica, each scheduler
    python benchmarks/bench_sim.py --requests 10000,100000       # several sizes (linearity)
    python benchmarks/bench_sim.py --requests 1000000 --replicas 64 --router least-outstanding-tokens
    python benchmarks/bench_sim.py --step-by-step                # fast_forward: false, for before/after

Runs scenarios/sharegpt.yaml (ShareGPT lengths, Llama-2-7B, H100 analytic profile, Poisson
arrivals at --rate per replica, near saturation by default). Each (scheduler, size) runs in a fresh
process, --repeats times; the median wall time and the peak resident memory of that process are
printed, with the median CPU seconds of simulate() (steadier than wall time on a shared machine),
the simulated steps and the engine's plan/apply cycles (one per step, or one per fast-forwarded
run; each is one SimPy timeout of its replica's process, llmsim/cluster/replica.py).
Not a unit test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "sharegpt.yaml"
SCHEDULERS = ("aggressive", "conservative", "past-future", "oracle")


def _one(args) -> None:
    """Child: run one simulation, print a JSON line."""
    from llmsim import load_scenario

    overrides = [
        f"workload.num_requests={args.requests}",
        f"workload.arrivals.rate_per_s={args.rate * args.replicas}",
        f"cluster.replicas={args.replicas}",
        f"cluster.router={args.router}",
        f"engine.fast_forward={'false' if args.step_by_step else 'true'}",
    ]
    measure(load_scenario(SCENARIO, overrides, scheduler=args.scheduler))


def measure(loaded) -> None:
    """Simulate a loaded scenario and print its figures as one JSON line (also bench_same_system.py's)."""
    from llmsim import simulate

    t0, c0 = time.perf_counter(), time.process_time()
    r = simulate(loaded)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "wall_s": wall,
        "cpu_s": cpu,  # this process's CPU time in simulate(): steadier than wall time on a shared machine
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": sum(r.derived["replica_steps"]),
        "cycles": sum(r.derived["replica_timeouts"]),
        "evictions": r.summary["evictions"],
        "sla_attainment": r.summary["sla_attainment"],
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", default="10000", help="comma-separated request counts")
    ap.add_argument("--schedulers", default=",".join(SCHEDULERS))
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--router", default="round-robin")
    ap.add_argument("--rate", type=float, default=4.2, help="arrival rate per replica, requests/s")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--step-by-step", action="store_true", help="fast_forward: false")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scheduler", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        args.requests = int(args.requests)
        _one(args)
        return
    mode = "step-by-step" if args.step_by_step else "fast-forward"
    print(f"# ShareGPT, {args.replicas} replica(s), router {args.router}, {args.rate} req/s per replica, {mode}; "
          f"median of {args.repeats}; python {platform.python_version()} on {platform.machine()}, {_cpu()}")
    print(f"{'scheduler':<14}{'requests':>10}{'wall_s':>9}{'req/wall_s':>12}{'cpu_s':>9}{'steps':>12}{'cycles':>11}{'peak_MiB':>10}{'evictions':>10}")
    for n in [int(x) for x in args.requests.split(",")]:
        for kind in args.schedulers.split(","):
            runs = []
            for _ in range(args.repeats):
                cmd = [sys.executable, __file__, "--one", "--scheduler", kind, "--requests", str(n), "--replicas", str(args.replicas),
                       "--router", args.router, "--rate", str(args.rate)] + (["--step-by-step"] if args.step_by_step else [])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                runs.append(json.loads(out))
            wall = statistics.median(r["wall_s"] for r in runs)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            last = runs[-1]
            peak = max(r["peak_rss_mib"] for r in runs)
            print(f"{kind:<14}{n:>10,}{wall:>9.2f}{n / wall:>12,.0f}{cpu:>9.2f}{last['steps']:>12,}{last['cycles']:>11,}{peak:>10,.0f}{last['evictions']:>10,}", flush=True)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{len([l for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('processor')])}"
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
