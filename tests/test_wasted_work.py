"""Attempts per original request and wasted work (llmsim.metrics): hand-computed on a small table,
and their invariants on simulations with evictions, guard aborts and closed-loop re-sends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmsim import scenario_from_dict, simulate
from llmsim.metrics import _wasted_work


def test_wasted_work_by_hand():
    # origin 0 was sent twice: the first attempt was aborted after 7 tokens, the second was good
    # after one eviction (re-prefill of prompt 100 + 30 generated); origin 1 finished late (not good)
    df = pd.DataFrame({
        "origin_id": [0, 1, 0],
        "prefill_tokens": [100, 50, 230],
        "recompute_tokens": [0, 0, 130],
        "generated_tokens": [7, 20, 60],
        "evictions": [0, 0, 1],
    })
    good = np.array([False, False, True])
    w = _wasted_work(df, good, busy_s=10.0)
    assert w["num_origins"] == 2
    assert w["attempts_per_request"] == 1.5
    assert w["evictions_per_request"] == 0.5
    assert (w["prefill_tokens"], w["decode_tokens"]) == (380, 87)
    assert w["wasted_prefill_tokens"] == 100 + 50 + 130
    assert w["wasted_decode_tokens"] == 7 + 20
    assert w["wasted_work_fraction"] == pytest.approx(307 / 467)
    assert w["wasted_gpu_s"] == pytest.approx(10.0 * 307 / 467)


def _scenario(num_requests: int, **arrivals) -> dict:
    return {
        "name": "wasted", "seed": 3, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "engine": {"max_model_len": 4096, "kv_capacity_tokens": 12000, "block_size": 16,
                   "sla_guard": {"max_tbt_s": 0.5}},
        "scheduler": {"kind": "aggressive"},
        "sla": {"ttft_s": 5.0, "max_tbt_s": 0.5},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [200, 1500], "output_tokens": [100, 900]},
                     "arrivals": arrivals, "num_requests": num_requests, "max_new_tokens": "exact"},
    }


@pytest.mark.parametrize("arrivals", [
    (300, {"kind": "poisson", "rate_per_s": 40.0}),
    (120, {"kind": "closed-loop", "clients": 24, "think_time_s": 0.0, "resend_failed": True, "max_attempts": 3}),
], ids=["open-loop", "closed-loop-resends"])
def test_prefill_tokens_count_every_prefill_and_wasted_work_adds_up(arrivals):
    num_requests, arrivals = arrivals
    r = simulate(scenario_from_dict(_scenario(num_requests, **arrivals)))
    df, s = r.requests, r.summary
    assert s["evictions"] > 0  # the premise: memory is tight enough to evict
    fin = df["finished"]
    never_evicted = fin & (df["evictions"] == 0)
    # a request never evicted computed its prompt exactly once; an evicted one recomputed more
    assert (df.loc[never_evicted, "prefill_tokens"] == df.loc[never_evicted, "prompt_tokens"]).all()
    evicted = fin & (df["evictions"] > 0)
    assert (df.loc[evicted, "prefill_tokens"] > df.loc[evicted, "prompt_tokens"]).all()
    assert (df["recompute_tokens"] == (df["prefill_tokens"] - df["prompt_tokens"]).clip(lower=0)).all()
    good = df["good"]
    want_prefill = int(df.loc[~good, "prefill_tokens"].sum() + df.loc[good, "recompute_tokens"].sum())
    assert s["wasted_prefill_tokens"] == want_prefill
    assert s["wasted_decode_tokens"] == int(df.loc[~good, "generated_tokens"].sum())
    assert 0.0 < s["wasted_work_fraction"] < 1.0
    assert s["attempts_per_request"] == len(df) / df["origin_id"].nunique()
    if arrivals["kind"] == "closed-loop":
        assert s["attempts_per_request"] > 1.0  # failed attempts were re-sent
    else:
        assert s["attempts_per_request"] == 1.0


def test_fast_forward_counts_the_same_prefill_work():
    sc = _scenario(200, kind="poisson", rate_per_s=40.0)
    sc["engine"]["sla_guard"] = {}  # fast-forward's prefill+run path runs without the guard
    a = simulate(scenario_from_dict(sc))
    sc["engine"]["fast_forward"] = False
    b = simulate(scenario_from_dict(sc))
    assert a.requests["prefill_tokens"].equals(b.requests["prefill_tokens"])
    assert a.summary["wasted_prefill_tokens"] == b.summary["wasted_prefill_tokens"]
