"""Instructions that simulate() executes, counted by valgrind's callgrind: a repeatable figure for
comparing two versions of a small change on a noisy machine.

Usage:
    python benchmarks/bench_instructions.py --scheduler past-future --requests 3000
    PYTHONPATH=OTHER_TREE python benchmarks/bench_instructions.py --scheduler aggressive   # another version

On the 2-core development machine, wall time moves by 3 to 5 % between runs of the same code, so
a 1 % change cannot be seen in a few pairs; this count moves by under 0.1 % (the child runs with
PYTHONHASHSEED=0, so sets and dicts iterate the same way every time). It runs
scenarios/sharegpt.yaml of the llmsim on the path (bench_sim.py's scenario: one replica, 4.2
requests/s), after a 300-request warm-up in the same process (imports, numba's kernel loads),
with callgrind's instrumentation on only around the measured simulate() (`callgrind_control`):
about 40 s for 3,000 requests. Instructions are not time: the interpreter's branch mispredictions
and cache misses are not in them (past-future on 3,000 requests, f9ae86e against 91c1e79: 8 % more
instructions, 16 % more time), so confirm a change with bench_sim.py or ab_commit.py.
Needs valgrind. Prints one JSON line; not a unit test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

_CHILD = "LLMSIM_BENCH_INSTRUCTIONS_CHILD"


def _child(scheduler: str, requests: int) -> None:
    """Under valgrind: warm up, then simulate with the instrumentation on."""
    from pathlib import Path

    import llmsim
    from llmsim import load_scenario, simulate

    scenario = Path(llmsim.__file__).resolve().parents[1] / "scenarios" / "sharegpt.yaml"

    def loaded(n: int):
        return load_scenario(scenario, [f"workload.num_requests={n}", "workload.arrivals.rate_per_s=4.2",
                                        "cluster.replicas=1"], scheduler=scheduler)

    simulate(loaded(300))
    measured = loaded(requests)
    toggle = ["callgrind_control", "--instr={}", str(os.getpid())]
    subprocess.run([a.format("on") for a in toggle], check=True, capture_output=True)
    simulate(measured)
    subprocess.run([a.format("off") for a in toggle], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheduler", default="past-future")
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    if os.environ.get(_CHILD):
        _child(args.scheduler, args.requests)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_instructions.py needs valgrind (apt install valgrind)")
    if importlib.util.find_spec("llmsim") is None:
        raise SystemExit(f"llmsim is not importable by {sys.executable} (activate its environment or set PYTHONPATH)")
    env = dict(os.environ, PYTHONHASHSEED="0", **{_CHILD: "1"})
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
           sys.executable, __file__, "--scheduler", args.scheduler, "--requests", str(args.requests)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed:\n{done.stderr[-2000:]}")
    print(json.dumps({"scheduler": args.scheduler, "requests": args.requests,
                      "instructions_m": round(int(found.group(1)) / 1e6, 1)}))


if __name__ == "__main__":
    main()
