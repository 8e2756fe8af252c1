"""A/B of this checkout against an older commit, alternating runs: the speed table of issue 20.

Usage:
    python benchmarks/ab_commit.py --old 91c1e79 --requests 100000 --pairs 3
    python benchmarks/ab_commit.py --old 91c1e79 --requests 1000000 --replicas 64 \
        --router least-outstanding-tokens --pairs 2
    python benchmarks/ab_commit.py --old 91c1e79 --same-system --rate 12    # the same simulated system

The old commit is exported with `git archive` into a temporary folder (no checkout is touched),
and each scheduler runs once per version on 1,000 requests first, so that numba's on-disk caches
of both trees are warm. Then each pair runs both versions, each in a fresh process, old first in
odd pairs and new first in even ones (neither always runs first on a machine that drifts):
`PYTHONPATH=TREE python TREE/benchmarks/bench_sim.py --one ...`, each tree its own benchmark, as
issue 20 measures. With --same-system, this checkout's bench_same_system.py runs against either
tree (the constant cost model, the same in both: the simulators' own speed).

Prints a line per run as it ends, then a Markdown table per scheduler: medians of the seconds of
`simulate()` (CPU seconds where both versions print them; 91c1e79's bench_sim prints wall seconds
only, the same within 0.1 % for this one-thread process), new/old speed, each pair's ratio, peak
resident memory, and whether both versions simulated the same steps, evictions and SLA attainment
(the same system; the cycles, one SimPy timeout each, are the simulator's own work and may differ:
since 516d1f0 a leading prefill and a one-step run share a timeout). Figures depend on the
machine; not a unit test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
SAME_SYSTEM_KEYS = ("steps", "evictions", "sla_attainment")  # not "cycles": the simulator's own work


def export(commit: str, into: Path) -> Path:
    """`commit`'s tree, written under `into` by git archive."""
    tree = into / commit
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", commit], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--old {commit}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run_once(tree: Path, scheduler: str, requests: int, args) -> dict:
    """One simulation of `tree`'s llmsim in a fresh process: the JSON line its benchmark prints."""
    common = ["--scheduler", scheduler, "--requests", str(requests), "--replicas", str(args.replicas),
              "--router", args.router, "--rate", str(args.rate)]
    if args.same_system:
        cmd = [sys.executable, str(HERE / "bench_same_system.py")] + common
    else:
        cmd = [sys.executable, str(tree / "benchmarks" / "bench_sim.py"), "--one"] + common
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={tree}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def seconds(runs: dict[str, list[dict]]) -> tuple[str, dict[str, list[float]]]:
    """('cpu_s' or 'wall_s', the seconds of each version's runs): CPU seconds only if both print them."""
    key = "cpu_s" if all("cpu_s" in r for rs in runs.values() for r in rs) else "wall_s"
    return key, {v: [r[key] for r in rs] for v, rs in runs.items()}


def table(scheduler: str, runs: dict[str, list[dict]], args) -> str:
    key, s = seconds(runs)
    old, new = statistics.median(s["old"]), statistics.median(s["new"])
    ratios = ", ".join(f"{o / n:.2f}" for o, n in zip(s["old"], s["new"]))
    peak = {v: statistics.median(r["peak_rss_mib"] for r in rs) for v, rs in runs.items()}
    same = all(runs["old"][0].get(k) == runs["new"][0].get(k) for k in SAME_SYSTEM_KEYS)
    what = f"{scheduler} {args.requests:,}, {args.replicas} replica(s)"
    return (f"| {what} | {len(s['old'])} | {old:.2f} / {new:.2f} ({key}) | **{old / new:.2f}** | {ratios} "
            f"| {peak['old']:.0f} / {peak['new']:.0f} | {'yes' if same else 'no'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the commit to compare against (e.g. 91c1e79)")
    ap.add_argument("--schedulers", default="aggressive,conservative,past-future,oracle")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--router", default="round-robin")
    ap.add_argument("--rate", type=float, default=None, help="per replica, requests/s (default: 4.2, or 12 with --same-system)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--same-system", action="store_true", help="constant cost model (bench_same_system.py) in both versions")
    args = ap.parse_args()
    if args.rate is None:
        args.rate = 12.0 if args.same_system else 4.2
    schedulers = args.schedulers.split(",")
    with tempfile.TemporaryDirectory(prefix="llmsim-ab-") as tmp:
        trees = {"old": export(args.old, Path(tmp)), "new": CHECKOUT}
        for scheduler in schedulers:  # warm numba's caches of both trees
            for tree in trees.values():
                run_once(tree, scheduler, 1000, args)
        rows = []
        for scheduler in schedulers:
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for pair in range(args.pairs):
                for version in ("old", "new") if pair % 2 == 0 else ("new", "old"):
                    runs[version].append(run_once(trees[version], scheduler, args.requests, args))
                    print(version, scheduler, pair + 1, json.dumps(runs[version][-1]), flush=True)
            rows.append(table(scheduler, runs, args))
    print(f"\n{args.old} (old) against {CHECKOUT} (new), {args.rate} requests/s per replica, router {args.router}"
          f"{', constant cost model' if args.same_system else ''}\n")
    print("| | pairs | s old / new (medians) | speed new/old | pair ratios (old/new) | peak MiB old / new | same system |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
