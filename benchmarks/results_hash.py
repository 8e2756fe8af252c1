"""Hashes of simulation results, to show that a speed change leaves every result bit-identical.

Usage:
    python benchmarks/results_hash.py --out before.json          # at the commit before the change
    python benchmarks/results_hash.py --out after.json --compare before.json

Simulates scenarios/sharegpt.yaml (--requests ShareGPT requests each, default 3,000) in 20
configurations: the 4 schedulers x {1 replica, 8 replicas with least-outstanding-tokens routing,
mixed mode (chunked prefill) with fast-forward on and off}, and conservative and past-future with
the SLA guard on and with closed-loop clients that re-send failures. For each it prints a hash of
the request table (numeric columns by their bytes, others by their repr), of the summary and of
the derived series. --compare exits with status 1 naming the configurations that differ. With
fast-forward off and on, the request tables and summaries hash the same; the derived series differ
(they count SimPy timeouts). Takes about a minute per 3,000 requests on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "sharegpt.yaml"
SCHEDULERS = ("aggressive", "conservative", "past-future", "oracle")
OPEN_LOOP = "workload.arrivals.rate_per_s=4.2"  # per replica, as bench_sim.py


def configurations():
    """(name, overrides) of every configuration hashed."""
    for s in SCHEDULERS:
        yield f"{s}/1rep", s, [OPEN_LOOP]
        yield f"{s}/8lot", s, ["cluster.replicas=8", "cluster.router=least-outstanding-tokens", "workload.arrivals.rate_per_s=33.6"]
        yield f"{s}/mixed-ff", s, [OPEN_LOOP, "engine.mode=mixed", "engine.fast_forward=true"]
        yield f"{s}/mixed-noff", s, [OPEN_LOOP, "engine.mode=mixed", "engine.fast_forward=false"]
    for s in ("conservative", "past-future"):
        yield f"{s}/guard", s, [OPEN_LOOP, "engine.sla_guard.max_queue_s=8", "engine.sla_guard.max_tbt_s=1.49"]
        yield f"{s}/closed", s, ["workload.arrivals={kind: closed-loop, clients: 60, think_time_s: 0.5, resend_failed: true}"]


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def result_hashes(result) -> dict:
    """Hashes of the request table, the summary and the derived series of one SimulationResult."""
    df = result.requests
    columns = [df[c].to_numpy() for c in df.columns]
    table = pickle.dumps((list(df.columns), [c.tobytes() if c.dtype.kind in "biuf" else repr(c.tolist()).encode() for c in columns]))
    derived = sorted((k, repr(v) if isinstance(v, (str, dict)) else np.asarray(v).tobytes()) for k, v in result.derived.items())
    return {"requests": _hash(table), "summary": _hash(repr(sorted(result.summary.items())).encode()),
            "derived": _hash(repr(derived).encode()), "rows": len(df)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--out", type=Path, help="write the hashes here (JSON)")
    ap.add_argument("--compare", type=Path, help="hashes written before (JSON): exit 1 if any differ")
    args = ap.parse_args()
    from llmsim import load_scenario, simulate

    hashes = {}
    for name, scheduler, overrides in configurations():
        loaded = load_scenario(SCENARIO, [f"workload.num_requests={args.requests}", *overrides], scheduler=scheduler)
        hashes[name] = result_hashes(simulate(loaded))
        h = hashes[name]
        print(f"{name:26s} {h['requests']} {h['summary']} {h['derived']} rows={h['rows']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(hashes, indent=1))
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = sorted(k for k in before.keys() | hashes.keys() if before.get(k) != hashes.get(k))
        print("identical" if not differ else "DIFFER: " + ", ".join(differ))
        if differ:
            sys.exit(1)


if __name__ == "__main__":
    main()
