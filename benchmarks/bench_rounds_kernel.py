"""Time past-future's rounds-ahead kernel alone, on calls captured from a simulation.

Usage:
    python benchmarks/bench_rounds_kernel.py                        # calls 15,001-18,000 of a 30,000-request run
    python benchmarks/bench_rounds_kernel.py --requests 4000 --skip 0 --calls 1000

Runs scenarios/sharegpt.yaml on one replica with past-future (Poisson arrivals at --rate) and
records the arguments of `--calls` calls of `_compiled.past_future_rounds_ahead` after the first
`--skip` (the running batch's rows of the request table, renumbered, so that a call needs no
table), then stops the run. It then calls the kernel on the recorded arguments (`--repeats` times,
the stream's state restored each time) and prints the best CPU time per call, the time per call of an
empty compiled function with the same arguments (numba's dispatch: checking the argument types),
the calls' mean running requests and rounds, and a digest of the kernel's answers (each call's
first admitting round and the stream's state after it): a kernel change that keeps results
identical prints the same digest. Not a unit test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "sharegpt.yaml"
_TABLE_ARGS = (3, 4, 5, 6, 7)  # prompt, cap, generated, kv, clock_base: columns indexed by request id


class _Captured(Exception):
    """Raised from the kernel's wrapper once enough calls are recorded, to end the run."""


def capture(requests: int, rate: float, skip: int, calls: int) -> list[tuple]:
    """The arguments of calls skip+1 .. skip+calls of the rounds-ahead kernel in a past-future run."""
    from llmsim import load_scenario, simulate
    from llmsim.schedulers import _compiled

    kernel = _compiled.past_future_rounds_ahead
    recorded: list[tuple] = []
    seen = 0

    def record(*args):
        nonlocal seen
        seen += 1
        if seen > skip:
            ids = args[2]
            rows = tuple(args[j][ids].copy() for j in _TABLE_ARGS)
            recorded.append((args[0].copy(), args[1].copy(), np.arange(len(ids))) + rows + args[8:12]
                            + (args[12].copy(),) + args[13:])
            if len(recorded) >= calls:
                raise _Captured
        return kernel(*args)

    loaded = load_scenario(SCENARIO, [f"workload.num_requests={requests}", f"workload.arrivals.rate_per_s={rate}"],
                           scheduler="past-future")
    _compiled.past_future_rounds_ahead = record  # past_future.py looks the kernel up at each call
    try:
        simulate(loaded)
    except _Captured:
        pass
    finally:
        _compiled.past_future_rounds_ahead = kernel
    return recorded


def best_us_per_call(function, recorded: list[tuple], repeats: int) -> tuple[float, list]:
    """(best time per call in microseconds over `repeats` passes, the last pass's answers)."""
    best, answers = float("inf"), []
    for _ in range(repeats):
        args = [(call[0].copy(),) + call[1:] for call in recorded]  # each pass from the recorded state
        start = time.process_time()  # CPU time: steadier than wall time on a shared machine
        answers = [function(*a) for a in args]
        best = min(best, time.process_time() - start)
        answers = [(answer, int(a[0][0])) for answer, a in zip(answers, args)]
    return best / len(recorded) * 1e6, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=30000)
    ap.add_argument("--rate", type=float, default=4.2, help="arrivals per second (default 4.2, as bench_sim.py)")
    ap.add_argument("--skip", type=int, default=15000, help="calls let through before recording")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    from numba import njit

    from llmsim.schedulers import _compiled

    recorded = capture(args.requests, args.rate, args.skip, args.calls)
    if not recorded:
        raise SystemExit(f"no call recorded: the run made at most {args.skip} calls; lower --skip")
    kernel_us, answers = best_us_per_call(_compiled.past_future_rounds_ahead, recorded, args.repeats)
    empty = njit(lambda *a: 0)
    dispatch_us, _ = best_us_per_call(empty, recorded, args.repeats)
    digest = hashlib.sha256(repr([(int(answer[0]), state) for answer, state in answers]).encode()).hexdigest()[:16]
    admitted = np.mean([answer[0] < len(call[12]) for (answer, _), call in zip(answers, recorded)])
    print(f"{len(recorded)} calls: mean {np.mean([len(c[2]) for c in recorded]):.1f} running, "
          f"{np.mean([len(c[12]) for c in recorded]):.2f} rounds, {100 * admitted:.1f}% admit the head")
    print(f"kernel {kernel_us:.2f} us/call, of which dispatch (empty function, same arguments) {dispatch_us:.2f} us")
    print(f"answers digest {digest}")


if __name__ == "__main__":
    main()
