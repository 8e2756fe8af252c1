"""Prefix caching in whole simulations, on random small scenarios (hypothesis): after every step
the cache's accounting agrees with the requests (a block is in the free queue exactly when no
running request holds it, so a shared block is never freed while referenced; used blocks =
private + held cached blocks <= capacity: `ReplicaEngine.check_invariants`); at the end no block
is held; every request ends exactly once; fast-forward and step-by-step runs are identical; the
SLA guard on and off. Also: `prefix_caching: false` leaves a run as it was, and a workload
without hash ids finds nothing cached.

The workloads are uniform lengths with block hash ids attached (a few conversation-like
prefixes that requests share in part), as `sessions` workloads will carry them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

import llmsim.cluster.simulation as simulation
from llmsim import scenario_from_dict, simulate
from llmsim.schedulers import SCHEDULERS

from helpers import draw_arrivals, draw_policy_knobs
from test_core_invariants import _check_result, _checked_run


def _with_hash_ids(seed: int, hash_block_tokens: int, prefixes: int):
    """A build_workload that gives each request hash ids: the first ids of one of `prefixes`
    shared id sequences (a random share of its prompt), then ids of its own."""
    original = simulation.build_workload

    def build(cfg, scenario_seed, *rest):
        wl = original(cfg, scenario_seed, *rest)
        rng = np.random.default_rng(seed)
        bases = [rng.integers(0, 10**6, size=200) for _ in range(prefixes)]
        ids = []
        for i, prompt in enumerate(wl.prompt_tokens):
            n = -(-int(prompt) // hash_block_tokens)
            common = int(rng.integers(0, n + 1))
            own = 10**7 + i * 1000 + np.arange(n - common)
            ids.append(np.concatenate([bases[int(rng.integers(prefixes))][:common], own]).astype(np.int64))
        wl.block_hash_ids, wl.hash_block_tokens = ids, hash_block_tokens
        return wl

    return build


def _scenario(draw) -> dict:
    kind = draw(st.sampled_from(sorted(SCHEDULERS)))
    mode = draw(st.sampled_from(["separate", "mixed"]))
    engine = {
        "mode": mode, "block_size": draw(st.sampled_from([4, 8, 16])), "max_model_len": 4096,
        "max_batched_tokens": draw(st.sampled_from([256, 2048])) if mode == "mixed" else 4096,
        "kv_capacity_tokens": draw(st.integers(1200, 4000)), "max_num_seqs": draw(st.integers(2, 16)),
        "preemption": draw(st.sampled_from(["recompute", "swap"])), "swap_space_gib": draw(st.sampled_from([0.001, 1.0])),
        "record_steps": True, "prefix_caching": True,
    }
    if draw(st.booleans()):
        engine["sla_guard"] = {"max_queue_s": draw(st.floats(0.1, 3.0)), "max_tbt_s": draw(st.floats(0.02, 0.3))}
    return {
        "name": "prefix", "seed": draw(st.integers(0, 10_000)), "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": draw(st.integers(1, 3)),
                    "router": draw(st.sampled_from(["prefix-affinity", "cache-aware", "least-outstanding-tokens", "round-robin"]))},
        "engine": engine,
        "cost_model": {"kind": "constant", "step_time_s": 0.01, "per_token_s": 1e-5},
        "scheduler": {"kind": kind, kind: draw_policy_knobs(draw, kind)},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [4, 600], "output_tokens": [1, 300]},
            "arrivals": draw_arrivals(draw, 60.0), "num_requests": draw(st.integers(5, 40)),
            "max_new_tokens": draw(st.sampled_from(["exact", 300])),
        },
        "sla": {"ttft_s": 0.5, "max_tbt_s": 0.3},
    }


def _check_cache_empty(res) -> None:
    for e in res.engines:
        assert not e.kv.held and e.kv.ref_sum == 0, f"replica {e.index}: cached blocks still held"
        assert all(c == 0 for c in e.kv.refs.values())


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.data())
def test_prefix_caching_keeps_the_accounting_and_fast_forward_changes_nothing(data):
    sc = _scenario(data.draw)
    hash_tokens = data.draw(st.sampled_from([8, 16, 24]))
    note(f"scenario = {sc!r}, hash_block_tokens = {hash_tokens}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simulation, "build_workload", _with_hash_ids(sc["seed"], hash_tokens, 3))
        step, step_ended = _checked_run(sc, fast=False)
        fast, fast_ended = _checked_run(sc, fast=True)
    for res, ended in ((step, step_ended), (fast, fast_ended)):
        _check_result(sc, res, ended)
        _check_cache_empty(res)
        assert (res.requests.cached_prompt_tokens < res.requests.prompt_tokens + res.requests.generated_tokens).all()
    assert step.requests.equals(fast.requests), "fast-forward and step-by-step requests differ"
    assert step.summary == fast.summary
    assert step.steps.equals(fast.steps)


def _small(prefix: bool, router: str = "least-outstanding-tokens") -> dict:
    return {
        "name": "small", "seed": 3, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": 2, "router": router},
        "engine": {"kv_capacity_tokens": 3000, "block_size": 8, "prefix_caching": prefix},
        "cost_model": {"kind": "constant", "step_time_s": 0.01, "per_token_s": 1e-4},
        "scheduler": {"kind": "past-future"},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [50, 600], "output_tokens": [1, 200]},
                     "arrivals": {"kind": "poisson", "rate_per_s": 20.0}, "num_requests": 60, "max_new_tokens": 300},
    }


def test_hits_skip_prefill_work_and_a_workload_without_hash_ids_finds_nothing_cached():
    plain = simulate(scenario_from_dict(_small(True)))
    assert plain.summary["prefix_cache"]["hit_tokens"] == 0 and (plain.requests.cached_prompt_tokens == 0).all()
    off = simulate(scenario_from_dict(_small(False)))
    assert "prefix_cache" not in off.summary
    # without hash ids, caching on changes nothing but the summary's prefix-cache entry
    assert plain.requests.equals(off.requests)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simulation, "build_workload", _with_hash_ids(0, 16, 2))
        on = simulate(scenario_from_dict(_small(True, "prefix-affinity")))
    pc, req = on.summary["prefix_cache"], on.requests
    # the column counts first admissions; the summary every admitted prefill (re-prefills too)
    assert pc["hit_tokens"] > 0 and pc["hit_tokens"] >= int(req.cached_prompt_tokens.sum())
    if on.summary["evictions"] == 0:
        assert pc["hit_tokens"] == int(req.cached_prompt_tokens.sum())
        assert pc["query_tokens"] == int(req.prompt_tokens.sum())
    assert 0 < pc["hit_rate_tokens"] < 1 and len(pc["per_replica"]) == 2
    # cached tokens are not prefilled
    once = req[(req.evictions == 0) & req.finished]
    assert (once.prefill_tokens == once.prompt_tokens - once.cached_prompt_tokens).all()
    assert (once.cached_prompt_tokens > 0).any()
