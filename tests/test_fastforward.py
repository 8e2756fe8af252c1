"""Fast-forward and step-by-step mode give identical per-request results (every column, bit for
bit) and identical summaries, on randomised scenarios for every scheduler and both engine modes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llmsim import scenario_from_dict, simulate
from llmsim.schedulers import SCHEDULERS


def _scenario(draw) -> dict:
    kind = draw(st.sampled_from(sorted(SCHEDULERS)))
    mode = draw(st.sampled_from(["separate", "mixed"]))
    block = draw(st.sampled_from([1, 4, 16]))
    closed = draw(st.booleans())
    replicas = draw(st.integers(1, 3))
    arrivals = (
        {"kind": "closed-loop", "clients": draw(st.integers(1, 24))}
        if closed
        else {"kind": "poisson", "rate_per_s": draw(st.floats(0.5, 40.0))}
    )
    knobs = {"decode_steps_between_rounds": draw(st.integers(0, 3))}
    if draw(st.booleans()):
        knobs["max_admissions_per_round"] = draw(st.integers(1, 3))
    if kind == "past-future":
        knobs["history_window"] = draw(st.integers(5, 50))
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
    (3, "least-outstanding-tokens", False),  # not known: one event loop, runs cut by arrivals
    (3, "random", False),
])
def test_open_loop_fast_forward_runs_without_simpy(monkeypatch, replicas, router, known):
    """With open-loop arrivals, fast-forward takes no SimPy event. Where each request's replica is
    known in advance, every replica runs on its own, its runs planned to end at its next arrival
    (nothing is cut); otherwise all run in one plain event loop and arrivals cut runs. The results
    are those of step-by-step mode either way, and those of fast-forward on SimPy's processes
    (runs planned blind to the next arrival, cut by moving SimPy events)."""
    from llmsim.cluster import simulation
    from llmsim.cluster.fastforward import DecodeRun

    cuts, waits = [], []
    move, timeout_at = simulation._Environment.move_earlier, simulation._Environment.timeout_at
    monkeypatch.setattr(simulation._Environment, "move_earlier", lambda env, ev, at: cuts.append(at) or move(env, ev, at))
    monkeypatch.setattr(simulation._Environment, "timeout_at", lambda env, at: waits.append(at) or timeout_at(env, at))
    shortened = []  # runs an arrival ended earlier than planned
    truncate = DecodeRun.truncate

    def watch(run, at):
        before = run.end_s
        end = truncate(run, at)
        shortened.extend([end] if end != before else [])
        return end

    monkeypatch.setattr(DecodeRun, "truncate", watch)
    sc = {
        "name": "horizon", "seed": 3, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": replicas, "router": router},
        "engine": {"max_model_len": 4096, "kv_capacity_tokens": 60000, "record_steps": True},
        "scheduler": {"kind": "aggressive"},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [32, 256], "output_tokens": [100, 400]},
                     "arrivals": {"kind": "poisson", "rate_per_s": 6.0 * replicas}, "num_requests": 150, "max_new_tokens": "exact"},
    }
    fast = _run(sc, True)
    fast_cuts, fast_waits, fast_shortened = len(cuts), len(waits), len(shortened)
    cycles = sum(fast.derived["replica_timeouts"])  # plan/apply cycles
    cuts.clear(), waits.clear(), shortened.clear()
    monkeypatch.setattr(simulation, "PLAIN_LOOP", False)
    on_simpy = _run(sc, True)  # fast-forward on SimPy's processes, blind to the next arrival
    assert fast_waits == fast_cuts == 0  # no SimPy event
    assert len(waits) == sum(on_simpy.derived["replica_timeouts"]) + len(cuts)  # there, every cycle waits, a cut adds an event
    assert fast.requests.equals(on_simpy.requests)
    assert fast.steps.equals(on_simpy.steps)
    assert fast.requests.equals(_run(sc, False).requests)
    if known:
        assert fast_shortened == 0 and len(shortened) > 0
    else:
        assert fast_shortened > 0 and len(shortened) == len(cuts) == fast_shortened  # the same cuts
        assert cycles == sum(on_simpy.derived["replica_timeouts"])


def test_arrival_clock_times_are_simpys_to_the_bit():
    """The clock at each open-loop arrival, which replicas running apart see, is the one SimPy's
    arrivals process reaches (now + (arrival - now), which can differ from the arrival time in the
    last bit when times span magnitudes)."""
    import numpy as np
    import simpy

    from llmsim.cluster.simulation import arrival_clock_s

    rng = np.random.default_rng(7)
    differ = 0
    for _ in range(50):
        arrival = np.sort(rng.uniform(0, 1, 40) * 10.0 ** rng.uniform(-3, 3, 40))
        arrival[5:8] = arrival[5]  # ties
        env, seen = simpy.Environment(), []

        def arrivals():
            for a in arrival:
                delay = float(a) - env.now
                if delay > 0:
                    yield env.timeout(delay)
                seen.append(env.now)

        env.process(arrivals())
        env.run()
        clock = arrival_clock_s(arrival)
        assert clock.tolist() == seen
        differ += int((clock != arrival).sum())
    assert differ > 0  # the case the function exists for did occur
