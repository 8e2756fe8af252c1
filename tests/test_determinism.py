"""Determinism: one seed fixes the whole run (docs/architecture.md, "Invariants and where they are
checked").

The same scenario and seed give identical per-request tables twice in one process and in separate
processes (with different PYTHONHASHSEED values, so nothing may depend on Python's salted str
hashes); a different seed gives a different table.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmsim.cluster.simulation import simulate
from llmsim.config import load_scenario, scenario_from_dict
from llmsim.schedulers import SCHEDULERS

REPO = Path(__file__).resolve().parents[1]
SCHEDULER_KINDS = ("aggressive", "conservative", "past-future", "oracle", "reserve-peak")


def busy_scenario(kind: str, seed: int = 7, replicas: int = 1, router: str = "round-robin") -> dict:
    """A replica with a small KV cache under heavy load: queues build, aggressive and past-future
    evict, and past-future samples from its history many times."""
    return {
        "name": "determinism",
        "seed": seed,
        "model": "llama-2-7b",
        "hardware": "h100-80g-sxm",
        "cluster": {"replicas": replicas, "router": router},
        "engine": {"mode": "separate", "block_size": 16, "max_num_seqs": 32, "kv_capacity_tokens": 3000, "preemption": "swap", "swap_space_gib": 0.05},
        "cost_model": {"kind": "analytic"},
        "scheduler": {"kind": kind, "past-future": {"history_window": 20}},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [16, 400], "output_tokens": [8, 300]},
            "arrivals": {"kind": "poisson", "rate_per_s": 40.0},
            "num_requests": 150,
            "max_new_tokens": 512,
        },
    }


def run(data: dict) -> pd.DataFrame:
    return simulate(scenario_from_dict(data, REPO)).requests


def table_digest(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()).hexdigest()


def test_every_scheduler_is_covered():
    assert set(SCHEDULER_KINDS) == set(SCHEDULERS)


@pytest.mark.parametrize("kind", SCHEDULER_KINDS)
def test_same_scenario_and_seed_give_identical_request_tables_in_one_process(kind):
    first = simulate(scenario_from_dict(busy_scenario(kind), REPO))
    second = simulate(scenario_from_dict(busy_scenario(kind), REPO))
    pd.testing.assert_frame_equal(first.requests, second.requests, check_exact=True)
    assert first.summary == second.summary
    assert first.requests["finished"].all()
    assert len(first.requests) == 150


def test_past_future_run_exercises_its_sampler_and_evicts():
    """The determinism case above is not vacuous: past-future is under memory pressure here."""
    result = simulate(scenario_from_dict(busy_scenario("past-future"), REPO))
    assert result.summary["evictions"] > 0
    assert result.summary["queue_delay_s"]["max"] > 0


def test_random_router_with_three_replicas_is_reproducible_and_spreads_requests():
    data = busy_scenario("past-future", replicas=3, router="random")
    first, second = run(data), run(data)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    counts = first["replica"].value_counts()
    assert sorted(counts.index) == [0, 1, 2]
    assert counts.min() >= 30  # 150 requests, uniformly random over 3 replicas
    # not round-robin in disguise
    assert (first["replica"].to_numpy() != first["request_id"].to_numpy() % 3).any()


@pytest.mark.parametrize("kind", ["past-future", "aggressive"])
def test_a_different_seed_gives_a_different_request_table(kind):
    a = run(busy_scenario(kind, seed=7))
    b = run(busy_scenario(kind, seed=8))
    assert table_digest(a) != table_digest(b)
    assert not a["arrival_s"].equals(b["arrival_s"])
    assert not a["prompt_tokens"].equals(b["prompt_tokens"])
    assert not a["e2e_s"].equals(b["e2e_s"])


def test_random_router_choices_change_with_the_seed():
    a = run(busy_scenario("past-future", seed=7, replicas=3, router="random"))
    b = run(busy_scenario("past-future", seed=8, replicas=3, router="random"))
    assert not a["replica"].equals(b["replica"])


# Runs in a fresh interpreter: the ShareGPT scenario (length table sampled with the seed, analytic
# cost model), past-future in mixed mode, three replicas behind the random router, swap preemption.
_CHILD = """
import hashlib, sys
import pandas as pd
from llmsim.config import load_scenario
from llmsim.cluster.simulation import simulate
overrides = sys.argv[1:]
df = simulate(load_scenario("scenarios/sharegpt.yaml", overrides)).requests
print(hashlib.sha256(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes()).hexdigest())
"""
_OVERRIDES = [
    "workload.num_requests=120",
    "workload.arrivals.rate_per_s=30",
    "cluster.replicas=3",
    "cluster.router=random",
    "engine.mode=mixed",
    "engine.kv_capacity_tokens=6000",
    "engine.preemption=swap",
    "engine.swap_space_gib=0.5",  # 64 blocks of 8 MiB: some victims are swapped, some recomputed
    "scheduler.past-future.prior_output_tokens=200",  # a low prior: past-future admits more and evicts
]


def _child_digest(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run([sys.executable, "-c", _CHILD, *_OVERRIDES], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.slow
def test_same_scenario_and_seed_give_identical_request_tables_across_processes():
    in_process = simulate(load_scenario(f"{REPO}/scenarios/sharegpt.yaml", _OVERRIDES))
    # the run exercises eviction, both preemption paths and the sampler
    assert 0 < in_process.summary["swaps"] < in_process.summary["evictions"]
    assert set(in_process.requests["replica"]) == {0, 1, 2}
    expected = table_digest(in_process.requests)
    assert _child_digest("1") == expected
    assert _child_digest("2") == expected


def test_counter_stream_is_splitmix64_and_uniform():
    """Past-future's stream (llmsim.rng.CounterStream) is SplitMix64: its first outputs from key 0
    are the published ones (0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4), drawn in blocks or one by
    one alike, and its doubles and indices are uniform."""
    import numpy as np

    from llmsim.rng import CounterStream

    first = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    assert CounterStream(0).random(2).tolist() == [(z >> 11) / 2**53 for z in first]
    blocks, singles = CounterStream(12345), CounterStream(12345)
    assert blocks.random((3, 4)).ravel().tolist() == [singles.random(1)[0] for _ in range(12)]
    assert blocks.state[0] == singles.state[0]
    u = CounterStream.from_generator(np.random.default_rng(5)).random(200_000)
    assert 0.0 <= u.min() and u.max() < 1.0
    # mean and the fraction in each tenth within 5 standard errors of uniform
    assert abs(u.mean() - 0.5) < 5 * (1 / 12 / len(u)) ** 0.5
    tenths = np.bincount((u * 10).astype(int), minlength=10) / len(u)
    assert np.all(np.abs(tenths - 0.1) < 5 * (0.09 / len(u)) ** 0.5)
    idx = CounterStream(7).integers(3, 10, 70_000)
    assert set(np.unique(idx).tolist()) == set(range(3, 10))
    assert np.all(np.abs(np.bincount(idx - 3) / len(idx) - 1 / 7) < 5 * ((1 / 7) * (6 / 7) / len(idx)) ** 0.5)
