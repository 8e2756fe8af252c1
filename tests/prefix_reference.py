"""The scenarios of tests/test_prefix_off.py and how their reference results were made.

`python tests/prefix_reference.py OUT_DIR` writes each scenario's requests.csv; the files in
tests/data/prefix_off/ were written by the code before prefix caching existed (commit 52a104d,
branch main), so the test checks that `engine.prefix_caching: false` reproduces them exactly.

Rewritten 2026-12-05 by the same commit with one line changed, as the simulator changed it then:
`smooth_max` at p = 2 (llmsim/costmodel/roofline.py) returns `math.sqrt(c * c + m * m)` instead
of `math.hypot(c, m)`, so that numba can compile the analytic model's run loop to the same bits
(roofline_run.py). That moved only time columns, by at most 2e-15 relative; the unchanged
52a104d still reproduces the earlier files exactly. To rewrite them: `git archive 52a104d` into
a folder, make that change in its roofline.py, and run this script with PYTHONPATH set to it."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def scenario(kind: str, mode: str) -> dict:
    """40 Mooncake conversation requests (they carry hash ids) on 2 replicas, tight KV (evictions)."""
    return {
        "name": f"prefix-off-{kind}-{mode}", "seed": 7, "model": "llama-3.1-8b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": 2, "router": "least-outstanding-tokens"},
        "engine": {"mode": mode, "max_model_len": 131072, "kv_capacity_tokens": 30_000,
                   "max_batched_tokens": 24_576 if mode == "separate" else 8192},
        "scheduler": {"kind": kind},
        "workload": {"trace": {"path": str(ROOT / "traces/mooncake/conversation_trace.jsonl")},
                     "arrivals": {"kind": "trace", "spread_ties_s": 3.0, "rate_per_s": 8.0}, "num_requests": 40,
                     "filter": {"max_total_tokens": 24_000}, "max_new_tokens": 1024},
        "sla": {"ttft_s": 10, "max_tbt_s": 1.5},
    }


def cases():
    return [("aggressive", "separate"), ("aggressive", "mixed"), ("past-future", "mixed"), ("oracle", "separate"),
            ("conservative", "mixed")]


def main(out_dir: str) -> None:
    from llmsim import scenario_from_dict, simulate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for kind, mode in cases():
        res = simulate(scenario_from_dict(scenario(kind, mode)))
        res.requests.to_csv(out / f"{kind}-{mode}.csv", index=False, float_format="%.17g")


if __name__ == "__main__":
    main(sys.argv[1])
