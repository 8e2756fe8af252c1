"""Property tests of whole simulations (hypothesis): random small scenarios across every scheduler,
engine mode, preemption mode, victim order, block size, router and cost model, on a KV cache just
large enough for the longest request so that the eviction paths run.

Properties (docs/architecture.md, "Invariants and where they are checked";
docs/schedulers.md §1):
- KV use never exceeds capacity at any step, and the engines' block accounting holds at the end;
- every request finishes exactly once, with generated tokens == its trace output (after the cap);
- every block is free at the end (GPU and swap space);
- per-request timestamps are ordered: arrival <= first admission <= first token <= finish;
- conservative never evicts when caps are honoured, and neither do oracle and reserve-peak in
  `separate` mode (in `mixed` mode the oracle can: a known limitation, kept as a strict xfail).
Plus two fixed scenarios that show a small swap space swapping some victims and recomputing others.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsim.registry import ROUTERS
from llmsim.cluster.simulation import simulate
from llmsim.config import scenario_from_dict
from llmsim.request import FINISHED

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

SCHEDULER_KINDS = ("aggressive", "conservative", "past-future", "oracle", "reserve-peak")
# The general property draws the schedulers that evict twice as often: their paths need the examples.
WEIGHTED_KINDS = ("aggressive", "aggressive", "past-future", "past-future", "conservative", "oracle", "reserve-peak")
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def simulate_recording(data: dict):
    """simulate() with a progress callback; returns (result, the (finished, total) calls).

    simulate() reports the running count of finished requests after every step that finishes
    some (every finish counts, since these runs have at most 200 requests)."""
    calls: list[tuple[int, int]] = []
    result = simulate(scenario_from_dict(data, REPO), progress=lambda done, total: calls.append((done, total)))
    return result, calls


@st.composite
def scenarios(draw, kinds=SCHEDULER_KINDS, modes=("separate", "mixed")):
    """A small random scenario whose KV cache holds the longest possible request plus a few blocks."""
    kind = draw(st.sampled_from(kinds))
    mode = draw(st.sampled_from(modes))
    block_size = draw(st.sampled_from([1, 2, 4, 8, 16]))
    in_lo = draw(st.integers(1, 48))
    in_hi = draw(st.integers(in_lo, 64))
    out_lo = draw(st.integers(1, 48))
    out_hi = draw(st.integers(out_lo, 64))
    caps = draw(st.one_of(st.just("exact"), st.integers(1, 80)))
    longest = in_hi + out_hi - 1  # the KV peak of the longest request this workload can draw
    extra_blocks = draw(st.integers(0, 3))
    kv_capacity = math.ceil(longest / block_size) * block_size + extra_blocks * block_size
    if mode == "separate":
        # a whole (re-)prefill runs in one step, so the budget must hold the longest one
        max_batched = draw(st.integers(longest, longest + 64))
    else:
        max_batched = draw(st.integers(1, 64))  # small budgets: prefills are chunked
    cost_model = draw(
        st.one_of(
            st.builds(lambda t: {"kind": "constant", "step_time_s": t}, st.sampled_from([0.001, 0.01, 0.03])),
            st.just({"kind": "analytic"}),
        )
    )
    knobs = {
        "decode_steps_between_rounds": draw(st.integers(0, 2)),
        "max_admissions_per_round": draw(st.one_of(st.none(), st.integers(1, 3))),
    }
    if kind == "past-future":
        knobs.update(history_window=draw(st.integers(1, 20)), prior_count=draw(st.one_of(st.none(), st.integers(0, 10))))
    return {
        "name": "property",
        "seed": draw(st.integers(0, 2**16)),
        "model": "llama-2-7b",
        "hardware": "h100-80g-sxm",
        "cluster": {"replicas": draw(st.integers(1, 3)), "router": draw(st.sampled_from(sorted(ROUTERS)))},
        "engine": {
            "mode": mode,
            "block_size": block_size,
            "max_num_seqs": draw(st.integers(1, 16)),
            "max_batched_tokens": max_batched,
            "kv_capacity_tokens": kv_capacity,
            "preemption": draw(st.sampled_from(["recompute", "swap"])),
            # llama-2-7b: 512 KiB of KV per token, so 0.005-0.1 GiB holds only a handful of
            # blocks: swap space fills up and eviction falls back to recompute
            "swap_space_gib": draw(st.sampled_from([0.0, 0.005, 0.02, 0.1])),
            "victim": draw(st.sampled_from(["newest", "latest-arrival", "largest-remaining-cap", "longest-context"])),
            "record_steps": True,
        },
        "cost_model": cost_model,
        "scheduler": {"kind": kind, kind: knobs},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [in_lo, in_hi], "output_tokens": [out_lo, out_hi]},
            "arrivals": {"kind": "poisson", "rate_per_s": draw(st.sampled_from([5.0, 50.0, 500.0, 5000.0]))},
            "num_requests": draw(st.integers(1, 80)),
            "max_new_tokens": caps,
        },
    }


def check_kv_never_above_capacity(result) -> None:
    blocks = result.derived["kv_blocks"]
    steps = result.steps
    assert steps is not None and len(steps) > 0
    assert steps["used_blocks"].max() <= blocks, steps.loc[steps["used_blocks"].idxmax()].to_dict()
    assert steps["used_blocks"].min() >= 0
    assert all(peak <= blocks for peak in (e.stats.peak_used_blocks for e in result.engines))
    for engine in result.engines:
        engine.check_invariants()


def check_every_request_finished_once(result, progress_calls) -> None:
    df = result.requests
    n = len(df)
    # every request reached FINISHED, and the engines reported n finishes in all: so each request
    # finished exactly once (a request finishing twice would push the count past n)
    assert (result.table.status == FINISHED).all()
    assert df["finished"].all()
    assert progress_calls, "no finish was ever reported"
    done = [d for d, _ in progress_calls]
    assert done == sorted(done)
    assert done[-1] == n and max(done) == n
    assert {total for _, total in progress_calls} == {n}
    assert result.summary["num_finished"] == n
    # the trace output after the cap: output_tokens <= max_new_tokens, and every token was generated
    assert (df["output_tokens"] <= df["max_new_tokens"]).all()
    np.testing.assert_array_equal(df["generated_tokens"].to_numpy(), df["output_tokens"].to_numpy())


def check_all_blocks_free(result) -> None:
    for engine in result.engines:
        assert engine.kv.used_blocks == 0
        assert engine.swap.used_blocks == 0
        assert not engine.running and not engine.waiting


def check_timestamps_ordered(result) -> None:
    t = result.table
    assert not np.isnan(t.first_admit_s).any()
    assert not np.isnan(t.first_token_s).any()
    assert (t.arrival_s <= t.first_admit_s).all()
    assert (t.first_admit_s <= t.first_token_s).all()
    assert (t.first_token_s <= t.finish_s).all()
    assert (t.max_tbt_s >= 0).all()
    df = result.requests
    assert (df["ttft_s"] > 0).all()
    assert (df["queue_delay_s"] >= 0).all()
    assert (df["e2e_s"] >= df["ttft_s"]).all()
    multi = df["generated_tokens"] > 1
    assert (df.loc[multi, "max_tbt_s"] > 0).all()
    # the largest gap is at least the mean gap
    assert (df.loc[multi, "max_tbt_s"] >= df.loc[multi, "tpot_s"] * (1 - 1e-9)).all()


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(data=scenarios(kinds=WEIGHTED_KINDS))
def test_random_scenarios_keep_kv_within_capacity_finish_every_request_once_and_free_all_blocks(data):
    result, progress_calls = simulate_recording(data)
    check_kv_never_above_capacity(result)
    check_every_request_finished_once(result, progress_calls)
    check_all_blocks_free(result)
    check_timestamps_ordered(result)
    replicas = data["cluster"]["replicas"]
    replica = result.requests["replica"].to_numpy()
    assert ((0 <= replica) & (replica < replicas)).all()
    if data["cluster"]["router"] == "round-robin":
        np.testing.assert_array_equal(replica, np.arange(len(replica)) % replicas)
    assert result.summary["evictions"] == int(result.requests["evictions"].sum())
    assert result.summary["swaps"] <= result.summary["evictions"]
    if data["engine"]["preemption"] == "recompute":
        assert result.summary["swaps"] == 0


def check_no_evictions(result) -> None:
    assert result.summary["evictions"] == 0
    assert (result.requests["evictions"] == 0).all()
    assert (result.requests["swaps"] == 0).all()
    check_kv_never_above_capacity(result)
    check_all_blocks_free(result)
    check_timestamps_ordered(result)


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(data=scenarios(kinds=("conservative",)))
def test_conservative_never_evicts_in_either_engine_mode_when_caps_are_honoured(data):
    result, _ = simulate_recording(data)
    check_no_evictions(result)


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(data=scenarios(kinds=("oracle", "reserve-peak"), modes=("separate",)))
def test_oracle_and_reserve_peak_never_evict_in_separate_mode_when_caps_are_honoured(data):
    result, _ = simulate_recording(data)
    check_no_evictions(result)


def _mixed_mode_oracle_counterexample() -> dict:
    """Found by hypothesis (shrunk): request 0 (prompt 1, output 3) runs alone; request 1
    (prompt 1, output 2) is admitted at 0.01 s with the peak exactly at capacity (4 tokens, block
    size 1, slack 0). Its prefill step emits its first token without growing while request 0
    decodes, so one step later both need a block and only one is free: request 1 is evicted."""
    return {
        "name": "oracle-mixed",
        "seed": 0,
        "model": "llama-2-7b",
        "hardware": "h100-80g-sxm",
        "engine": {"mode": "mixed", "block_size": 1, "max_num_seqs": 2, "max_batched_tokens": 2, "kv_capacity_tokens": 4, "record_steps": True},
        "cost_model": {"kind": "constant", "step_time_s": 0.01},
        "scheduler": {"kind": "oracle", "oracle": {"decode_steps_between_rounds": 0}},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [1, 2], "output_tokens": [1, 3]},
            "arrivals": {"kind": "poisson", "rate_per_s": 200.0},
            "num_requests": 3,
            "max_new_tokens": "exact",
        },
    }


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known limitation (llmsim/schedulers/oracle.py docstring): in mixed mode the peak formula "
    "ignores that a candidate starts growing only after its prefill step(s), while running requests keep decoding",
)
def test_oracle_never_evicts_in_mixed_mode_either():
    result, _ = simulate_recording(_mixed_mode_oracle_counterexample())
    check_no_evictions(result)


def _swap_scenario(swap_space_gib: float) -> dict:
    return {
        "name": "swap",
        "seed": 1,
        "model": "llama-2-7b",  # 512 KiB of KV per token: a 4-token block is 2 MiB
        "hardware": "h100-80g-sxm",
        "engine": {"block_size": 4, "max_num_seqs": 16, "kv_capacity_tokens": 256, "preemption": "swap",
                   "swap_space_gib": swap_space_gib, "record_steps": True},
        "cost_model": {"kind": "constant", "step_time_s": 0.01},
        "scheduler": {"kind": "aggressive"},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [8, 32], "output_tokens": [32, 96]},
            "arrivals": {"kind": "all-at-once"},
            "num_requests": 30,
            "max_new_tokens": "exact",
        },
    }


@pytest.mark.slow
def test_small_swap_space_swaps_some_victims_and_recomputes_the_others():
    result, progress_calls = simulate_recording(_swap_scenario(0.01))  # 10.24 MiB: 5 blocks of 2 MiB
    assert result.engines[0].swap.capacity_blocks == 5
    s = result.summary
    assert 0 < s["swaps"] < s["evictions"]
    check_kv_never_above_capacity(result)
    check_every_request_finished_once(result, progress_calls)
    check_all_blocks_free(result)
    check_timestamps_ordered(result)


@pytest.mark.slow
def test_ample_swap_space_swaps_every_victim_and_none_swaps_nothing():
    ample, _ = simulate_recording(_swap_scenario(1.0))
    assert ample.summary["evictions"] > 0
    assert ample.summary["swaps"] == ample.summary["evictions"]
    none, _ = simulate_recording(_swap_scenario(0.0))
    assert none.summary["evictions"] > 0
    assert none.summary["swaps"] == 0
