"""Cost of the multi-turn session workload: drawing it, and simulating it.

Usage:
    python benchmarks/bench_sessions.py            # 10,000 and 100,000 sessions drawn; chat-sessions.yaml run (caching off, on)

Prints, for scenarios/chat-sessions.yaml's session settings: the wall time to draw N sessions
(turns, lengths, think times, prompts, the context-limit cut and every block hash id:
llmsim.workload.sessions), the turns and hash ids drawn, and the wall time of one full run of the
scenario (2,000 sessions, about 8,100 turns), with prefix caching off and on.
"""

from __future__ import annotations

import time
from pathlib import Path

from llmsim import simulate
from llmsim.cluster.build import longest_request_tokens, resolve
from llmsim.config import load_scenario
from llmsim.workload import build_workload

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "chat-sessions.yaml"


def main() -> None:
    for count in (10_000, 100_000):
        loaded = load_scenario(SCENARIO, [f"workload.sessions.count={count}"])
        sc = loaded.scenario
        limit = longest_request_tokens(sc, resolve(loaded))
        t0 = time.perf_counter()
        wl = build_workload(sc.workload, sc.seed, limit)
        wall_s = time.perf_counter() - t0
        ids = sum(len(a) for a in wl.block_hash_ids)
        print(f"draw {count:>7,} sessions: {len(wl):>9,} turns, {ids:>10,} hash ids in {wall_s:6.2f} s "
              f"({wall_s / len(wl) * 1e6:.1f} us a turn)")
    for overrides, label in (([], ""), (["engine.prefix_caching=true"], " with prefix caching")):
        t0 = time.perf_counter()
        r = simulate(load_scenario(SCENARIO, overrides))
        print(f"run chat-sessions.yaml{label}: {len(r.requests):,} turns in {time.perf_counter() - t0:.1f} s wall, "
              f"{r.summary['sessions']['completed']:,} sessions completed")


if __name__ == "__main__":
    main()
