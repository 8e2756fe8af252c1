"""Fast-forward and step-by-step mode give identical per-request results (every column, bit for
bit) and identical summaries, on randomised scenarios for every scheduler and both engine modes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llmsim import scenario_from_dict, simulate
from llmsim.schedulers import SCHEDULERS

from helpers import draw_arrivals, draw_policy_knobs


def _scenario(draw) -> dict:
    kind = draw(st.sampled_from(sorted(SCHEDULERS)))
    mode = draw(st.sampled_from(["separate", "mixed"]))
    block = draw(st.sampled_from([1, 4, 16]))
    replicas = draw(st.integers(1, 3))
    arrivals = draw_arrivals(draw, 40.0)
    knobs = draw_policy_knobs(draw, kind)
    engine = {
        "mode": mode, "block_size": block, "max_model_len": 4096, "max_batched_tokens": draw(st.sampled_from([256, 2048, 4096])),
        "kv_capacity_tokens": draw(st.integers(1200, 12000)), "max_num_seqs": draw(st.integers(2, 64)),
        "preemption": draw(st.sampled_from(["recompute", "swap"])), "swap_space_gib": draw(st.sampled_from([0.001, 1.0])),
        "record_steps": True,
    }
    if draw(st.booleans()):
        engine["sla_guard"] = {"max_queue_s": draw(st.floats(0.5, 5.0)), "max_tbt_s": draw(st.floats(0.05, 1.0))}
    if mode == "separate":
        engine["max_batched_tokens"] = 4096
    return {
        "name": "ff", "seed": draw(st.integers(0, 10_000)), "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": replicas, "router": draw(st.sampled_from(["round-robin", "random", "least-outstanding-tokens"]))},
        "engine": engine,
        "cost_model": draw(st.sampled_from([{"kind": "analytic"}, {"kind": "constant", "step_time_s": 0.01, "per_token_s": 1e-5}])),
        "scheduler": {"kind": kind, kind: knobs},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [4, 600], "output_tokens": [1, 500]},
            "arrivals": arrivals, "num_requests": draw(st.integers(5, 120)),
            "max_new_tokens": draw(st.sampled_from(["exact", 300, 600])),
        },
        "sla": {"ttft_s": 2.0, "max_tbt_s": 0.3},
    }


def _run(sc: dict, fast: bool):
    return simulate(scenario_from_dict(sc, overrides=[f"engine.fast_forward={'true' if fast else 'false'}"]))


@pytest.mark.slow
# No shrink phase: a failing scenario is already small, and shrinking whole simulations takes minutes.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.data())
def test_fast_forward_gives_the_same_results_as_step_by_step(data):
    sc = _scenario(data.draw)
    step, fast = _run(sc, False), _run(sc, True)
    assert step.requests.equals(fast.requests)
    assert step.summary == fast.summary
    assert step.steps.equals(fast.steps)  # the per-step series too, row for row


def test_fast_forward_takes_far_fewer_simpy_timeouts_on_a_decode_heavy_run():
    sc = {
        "name": "ff", "seed": 1, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "engine": {"max_model_len": 8192, "kv_capacity_tokens": 120000},
        "scheduler": {"kind": "aggressive"},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [32, 512], "output_tokens": [500, 1000]},
                     "arrivals": {"kind": "poisson", "rate_per_s": 2.0}, "num_requests": 100, "max_new_tokens": "exact"},
    }
    step, fast = _run(sc, False), _run(sc, True)
    assert step.requests.equals(fast.requests)
    assert fast.derived["replica_steps"] == step.derived["replica_steps"]
    assert step.derived["replica_timeouts"] == step.derived["replica_steps"]
    assert fast.derived["replica_timeouts"][0] < step.derived["replica_steps"][0] / 5


@pytest.mark.parametrize("kind", ["past-future", "aggressive"])
def test_a_closed_loop_request_sent_exactly_at_another_replicas_step_end_is_seen_there_next_step(kind):
    """Found by the randomised test above. Requests 0 and 2 have the same prompt on replicas 0 and
    2, so both replicas' steps end at the same times; request 2 finishes at one of them, and its
    client's next request (3) goes to replica 0, which is inside a fast-forwarded run. Step-by-step
    mode handled replica 0's step end before the client's event at that time, so request 3 waits
    for the following step end; a run must be cut there too, not at the end equal to its arrival."""
    sc = {
        "name": "ff", "seed": 2040, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": 3, "router": "round-robin"},
        "engine": {"block_size": 1, "max_model_len": 4096, "kv_capacity_tokens": 2214, "max_num_seqs": 21, "record_steps": True},
        "scheduler": {"kind": kind, kind: {"decode_steps_between_rounds": 2}},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [4, 600], "output_tokens": [1, 500]},
                     "arrivals": {"kind": "closed-loop", "clients": 3}, "num_requests": 21, "max_new_tokens": "exact"},
    }
    step, fast = _run(sc, False), _run(sc, True)
    req = step.requests
    assert req.prompt_tokens[0] == req.prompt_tokens[2] and req.arrival_s[3] == req.end_s[2]  # the tie
    ends_0 = step.steps[step.steps.replica == 0].eval("start_s + duration_s")
    assert (ends_0 == req.arrival_s[3]).any()  # is a step end of replica 0
    assert step.requests.equals(fast.requests)
    assert step.steps.equals(fast.steps)


@pytest.mark.parametrize("replicas,router,known", [
    (1, "least-outstanding-tokens", True),  # one replica: every request comes here
    (3, "round-robin", True),  # each request's replica is known in advance
    (3, "least-outstanding-tokens", False),  # not known: arrivals cut runs
    (3, "random", False),
])
def test_open_loop_runs_end_at_the_next_known_arrival_and_are_cut_otherwise(monkeypatch, replicas, router, known):
    """Where each open-loop request's replica is known in advance, fast-forward plans each run to
    end at the replica's next arrival, so no arrival cuts a run; otherwise arrivals
    cut runs (events.move_wait). The results are step-by-step mode's either way."""
    from llmsim.cluster.engine import ReplicaEngine

    cuts = []
    cut_run = ReplicaEngine.cut_run
    monkeypatch.setattr(ReplicaEngine, "cut_run", lambda eng, at: cut_run(eng, at) and not cuts.append(at))
    sc = {
        "name": "horizon", "seed": 3, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": replicas, "router": router},
        "engine": {"max_model_len": 4096, "kv_capacity_tokens": 60000, "record_steps": True},
        "scheduler": {"kind": "aggressive"},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [32, 256], "output_tokens": [100, 400]},
                     "arrivals": {"kind": "poisson", "rate_per_s": 6.0 * replicas}, "num_requests": 150, "max_new_tokens": "exact"},
    }
    fast = _run(sc, True)
    fast_cuts = len(cuts)
    step = _run(sc, False)
    assert fast.requests.equals(step.requests)
    assert fast.steps.equals(step.steps)
    assert sum(fast.derived["replica_timeouts"]) < sum(step.derived["replica_timeouts"]) / 5
    if known:
        assert fast_cuts == 0
    else:
        assert fast_cuts > 0


def test_delay_to_lands_on_the_exact_time_or_just_past_it():
    """SimPy adds a delay to its clock; `delay_to` finds one that lands on a given time, and where
    none does (the clock's spacing skips it), the smallest one that passes it."""
    import math

    import numpy as np
    import simpy

    from llmsim.cluster.events import delay_to

    rng = np.random.default_rng(7)
    missed = 0
    for _ in range(2000):
        env = simpy.Environment(initial_time=float(rng.uniform(0, 1) * 10.0 ** rng.uniform(-3, 3)))
        at = env.now + float(rng.uniform(0, 1) * 10.0 ** rng.uniform(-3, 4))
        d = delay_to(env, at)
        landed = env.now + d
        assert landed >= at
        if landed != at:
            missed += 1
            assert env.now + math.nextafter(d, -math.inf) < at  # the smallest delay that passes it
            assert not any(env.now + x == at for x in (d, math.nextafter(d, -math.inf)))
    assert missed < 2000 * 0.2


def test_closed_loop_sends_are_ordered_by_client_whatever_order_replicas_end_them():
    """Found by the randomised test: with think time and re-sends, the sends due at one instant
    go out in client order (one event), so fast-forward, whose run ends are created in another
    order than step-by-step mode's step ends, sends the same requests to the same replicas."""
    sc = {
        "name": "ff", "seed": 11, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": 3, "router": "least-outstanding-tokens"},
        "engine": {"block_size": 4, "max_model_len": 4096, "kv_capacity_tokens": 1500, "max_num_seqs": 8, "record_steps": True,
                   "sla_guard": {"max_queue_s": 1.0, "max_tbt_s": 0.2}},
        "cost_model": {"kind": "constant", "step_time_s": 0.01, "per_token_s": 1e-5},
        "scheduler": {"kind": "past-future"},
        "workload": {"lengths": {"kind": "fixed", "input_tokens": 100, "output_tokens": 50},
                     "arrivals": {"kind": "closed-loop", "clients": 60, "think_time_s": 0.05, "resend_failed": True, "max_attempts": 3},
                     "num_requests": 60, "max_new_tokens": "exact"},
        "sla": {"ttft_s": 0.03, "max_tbt_s": 0.3},
    }
    step, fast = _run(sc, False), _run(sc, True)
    req = step.requests
    assert (req.attempt > 0).any() and (req.outcome == "dropped").any()  # re-sends and guard drops happened
    assert req.duplicated(["arrival_s"]).any()  # sends at one instant
    assert step.requests.equals(fast.requests)
    assert step.steps.equals(fast.steps)


@pytest.mark.parametrize("think_time_s", [0.25, 1.0])
@pytest.mark.parametrize("resend_failed", [False, True])
def test_closed_loop_sends_that_tie_with_step_ends_give_the_same_results_in_both_modes(think_time_s, resend_failed):
    """Step times and think times that are exact in binary make sends tie with step ends. Before
    the one event loop, a think timeout created before a replica's step end at the same time was
    processed first in step-by-step mode, while fast-forward assumed every send comes after the
    step ends at its time, and re-sends went out in the order replicas ended the requests: both
    modes differed on every one of these scenarios (commit 91c1e79). Now a send is always after
    the step ends at its time and sends at one time go out in client order (events.py)."""
    sc = {"name": "tie", "seed": 1, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
          "cluster": {"replicas": 2, "router": "round-robin"},
          "engine": {"block_size": 4, "max_model_len": 4096, "kv_capacity_tokens": 4000, "max_num_seqs": 4, "record_steps": True},
          "cost_model": {"kind": "constant", "step_time_s": 0.25, "per_token_s": 0.0},
          "scheduler": {"kind": "aggressive"},
          "workload": {"lengths": {"kind": "uniform", "input_tokens": [10, 100], "output_tokens": [3, 12]},
                       "arrivals": {"kind": "closed-loop", "clients": 5, "think_time_s": think_time_s,
                                    "resend_failed": resend_failed, "max_attempts": 3},
                       "num_requests": 30, "max_new_tokens": "exact"},
          "sla": {"ttft_s": 0.6, "max_tbt_s": 0.3}}
    step, fast = _run(sc, False), _run(sc, True)
    ends = set((step.steps.start_s + step.steps.duration_s).tolist())
    assert any(a in ends for a in step.requests.arrival_s[step.requests.arrival_s > 0])  # sends tie with step ends
    assert (step.requests.attempt > 0).any() == resend_failed
    assert step.requests.equals(fast.requests)
    assert step.steps.equals(fast.steps)


def test_fast_forward_uses_only_the_engines_public_methods():
    """fastforward.py is a strategy over the engine's public API (docs/architecture.md): no
    underscore attribute of the engine is read or written there."""
    import ast
    from pathlib import Path

    import llmsim.cluster.fastforward as ff

    tree = ast.parse(Path(ff.__file__).read_text())
    private = [(node.lineno, node.attr) for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr.startswith("_")
               and isinstance(node.value, ast.Name) and node.value.id == "engine"]
    assert private == []
    assert any(isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "engine"
               for node in ast.walk(tree))  # the walk sees the engine's attributes at all


@settings(max_examples=300, deadline=None)
@given(first=st.integers(1, 6), every=st.integers(1, 4), steps=st.integers(0, 40), room=st.integers(-3, 60),
       new_blocks=st.lists(st.integers(0, 3), min_size=40, max_size=40))
def test_boundaries_that_fit_equal_checking_each_boundary(first, every, steps, room, new_blocks):
    """The rounds held inside a run are asked at the boundaries whose blocks fit (found by
    bisection, horizon.boundaries_that_fit): the same boundaries, and the same stable refusal, as
    checking each boundary due in turn until one fails."""
    from itertools import accumulate

    from llmsim.cluster.horizon import boundaries_that_fit

    cum = list(accumulate(new_blocks[:steps]))
    want, stable = [], False
    for j in range(first, len(cum), every):
        if cum[j] > room:
            stable = True
            break
        want.append(j)
    got, got_stable = boundaries_that_fit(first, every, cum, room)
    assert list(got) == want and got_stable == stable
