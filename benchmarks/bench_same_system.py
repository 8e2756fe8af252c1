"""One simulation with the constant cost model, for A/B runs of two llmsim versions on the same system.

Usage (once per tree, alternating; PYTHONPATH picks the version):
    PYTHONPATH=TREE python benchmarks/bench_same_system.py --scheduler aggressive --requests 100000 --rate 12
    PYTHONPATH=TREE python benchmarks/bench_same_system.py --scheduler past-future --requests 1000000 \
        --replicas 64 --router least-outstanding-tokens --rate 12

bench_sim.py's ratios between two versions mix the simulator's own speed with what it simulates:
when the analytic cost model changes (issue 23 made its steps slower), the same arrival rate is a
different load, with other batch sizes, queues and numbers of admission rounds. The constant cost
model (`cost_model.kind: constant`: step_time_s + per_token_s x tokens) is the same in every
version since 91c1e79, so with it two versions simulate the same system: the printed steps,
evictions and SLA attainment must agree (cycles, the simulator's own timeouts, may differ), and
then the CPU seconds compare the simulators alone. 8 ms a step plus 16 us a token puts ShareGPT
on Llama-2-7B near saturation at 12 requests/s per replica (aggressive evicts, conservative
queues). Uses only `load_scenario` and `simulate`, so
it runs against old trees too. Prints one JSON line (bench_sim.py's `measure`); not a unit test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import llmsim
from llmsim import load_scenario

from bench_sim import measure  # this folder is on sys.path when the script runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheduler", required=True)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--router", default="round-robin")
    ap.add_argument("--rate", type=float, default=12.0, help="arrival rate per replica, requests/s")
    ap.add_argument("--step-time-s", type=float, default=0.008)
    ap.add_argument("--per-token-s", type=float, default=1.6e-5)
    args = ap.parse_args()
    # the scenario of the llmsim being measured (PYTHONPATH), not of this file's checkout
    scenario = Path(llmsim.__file__).resolve().parents[1] / "scenarios" / "sharegpt.yaml"
    overrides = [
        f"workload.num_requests={args.requests}",
        f"workload.arrivals.rate_per_s={args.rate * args.replicas}",
        f"cluster.replicas={args.replicas}",
        f"cluster.router={args.router}",
        "engine.fast_forward=true",
        "cost_model.kind=constant",
        f"cost_model.step_time_s={args.step_time_s}",
        f"cost_model.per_token_s={args.per_token_s}",
    ]
    measure(load_scenario(scenario, overrides, scheduler=args.scheduler))


if __name__ == "__main__":
    main()
