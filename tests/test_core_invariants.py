"""Core invariants of a simulation, through the public API (`scenario_from_dict`, `simulate`).

- KV accounting: after every engine step the block accounting agrees with the requests
  (`ReplicaEngine.check_invariants`) and the used blocks lie in [0, total]; at the end every block
  and every swap block is free again, whatever ended the requests (finish, guard drop or abort).
- Every request ends exactly once, with an end time and a terminal outcome; open-loop load makes
  exactly `num_requests` rows, closed-loop load sends every request of the stream, re-sends only
  failed attempts, at most `max_attempts` times, and each client has one request in flight.
- Finished requests generated exactly their (capped) output length.
- Fast-forward and step-by-step mode give the same results.
"""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from llmsim import scenario_from_dict, simulate
from llmsim.schedulers import SCHEDULERS

from helpers import draw_arrivals, draw_policy_knobs

TERMINAL = {"finished", "dropped", "aborted"}


def _run(sc: dict, fast: bool, progress=None):
    loaded = scenario_from_dict(sc, overrides=[f"engine.fast_forward={'true' if fast else 'false'}"])
    return simulate(loaded, progress) if progress is not None else simulate(loaded)


# ------------------------------------------------------------------------------------ the known leak
@pytest.mark.parametrize("fast_forward", [True, False])
def test_a_guard_abort_of_a_decoding_request_frees_all_its_blocks(tmp_path, fast_forward):
    """Request 0 decodes one token per 10 ms step until request 1's 1000-token prefill joins its
    batch (mixed mode, block size 1): that step takes over a second, past the guard's 0.5 s gap
    limit, so request 0 is aborted at its end. The step had allocated the block for request 0's
    next token; the abort must free it with the rest."""
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens\n0.0,10,50\n0.1,1000,5\n")
    sc = {
        "name": "guard-abort-leak", "seed": 0, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "engine": {"mode": "mixed", "block_size": 1, "max_batched_tokens": 2048, "kv_capacity_tokens": 4096,
                   "sla_guard": {"max_tbt_s": 0.5}},
        "cost_model": {"kind": "constant", "step_time_s": 0.01, "per_token_s": 0.001},
        "scheduler": {"kind": "aggressive"},
        "workload": {"trace": {"path": str(trace)}, "arrivals": {"kind": "trace"}, "max_new_tokens": "exact"},
    }
    res = _run(sc, fast_forward)
    req = res.requests.set_index("request_id")
    assert len(req) == 2
    assert req.outcome[0] == "aborted", req.outcome.tolist()
    assert 0 < req.generated_tokens[0] < 50
    assert req.outcome[1] == "finished", req.outcome.tolist()
    assert req.generated_tokens[1] == 5
    for e in res.engines:
        assert e.kv.used_blocks == 0, f"replica {e.index}: {e.kv.used_blocks} KV blocks still used after the run"
        assert e.swap.used_blocks == 0
        e.check_invariants()


# ------------------------------------------------------------------------------------ randomised
def _scenario(draw) -> dict:
    kind = draw(st.sampled_from(sorted(SCHEDULERS)))
    mode = draw(st.sampled_from(["separate", "mixed"]))
    arrivals = draw_arrivals(draw, 80.0)
    knobs = draw_policy_knobs(draw, kind)
    engine = {
        "mode": mode, "block_size": draw(st.sampled_from([1, 4, 16])), "max_model_len": 4096,
        "max_batched_tokens": draw(st.sampled_from([256, 2048, 4096])) if mode == "mixed" else 4096,
        "kv_capacity_tokens": draw(st.integers(1200, 5000)), "max_num_seqs": draw(st.integers(2, 32)),
        "preemption": draw(st.sampled_from(["recompute", "swap"])), "swap_space_gib": draw(st.sampled_from([0.001, 1.0])),
        "record_steps": True,
    }
    limits = draw(st.sampled_from([(), ("max_queue_s",), ("max_tbt_s",), ("max_queue_s", "max_tbt_s")]))
    if limits:  # the SLA guard: either limit or both
        engine["sla_guard"] = {}
        if "max_queue_s" in limits:
            engine["sla_guard"]["max_queue_s"] = draw(st.floats(0.1, 3.0))
        if "max_tbt_s" in limits:
            engine["sla_guard"]["max_tbt_s"] = draw(st.floats(0.01, 0.3))
    return {
        "name": "invariants", "seed": draw(st.integers(0, 10_000)), "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": draw(st.integers(1, 3)),
                    "router": draw(st.sampled_from(["round-robin", "random", "least-outstanding-tokens"]))},
        "engine": engine,
        "cost_model": draw(st.sampled_from([{"kind": "analytic"}, {"kind": "constant", "step_time_s": 0.01, "per_token_s": 1e-5},
                                            {"kind": "constant", "step_time_s": 0.03, "per_token_s": 1e-4}])),
        "scheduler": {"kind": kind, kind: knobs},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [4, 600], "output_tokens": [1, 500]},
            "arrivals": arrivals, "num_requests": draw(st.integers(5, 50)),
            "max_new_tokens": draw(st.sampled_from(["exact", 200, 600])),
        },
        # tight targets make closed-loop clients re-send
        "sla": {"ttft_s": draw(st.sampled_from([0.2, 0.5, 2.0])), "max_tbt_s": draw(st.sampled_from([0.05, 0.3]))},
    }


def _checked_run(sc: dict, fast: bool):
    """Run with the engine's invariants checked at the end of every step (every applied step or
    fast-forwarded run). `check_invariants` writes the lazily kept progress of decoding requests
    to the table; that is only done in this test."""
    from llmsim.cluster.engine import ReplicaEngine

    original = ReplicaEngine.finish_step
    checked = [0]

    def finish_step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        self.check_invariants()
        assert 0 <= self.kv.used_blocks <= self.kv.total_blocks, (self.index, self.kv.used_blocks, self.kv.total_blocks)
        checked[0] += 1
        return out

    ended = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ReplicaEngine, "finish_step", finish_step)
        res = _run(sc, fast, progress=lambda n, total: ended.append(n))
    assert checked[0] > 0  # the wrapper ran
    return res, ended[-1] if ended else 0


def _check_result(sc: dict, res, ended: int) -> None:
    for e in res.engines:
        assert e.kv.used_blocks == 0, f"replica {e.index}: {e.kv.used_blocks} KV blocks still used after the run"
        assert e.swap.used_blocks == 0, f"replica {e.index}: {e.swap.used_blocks} swap blocks still used after the run"
        e.check_invariants()

    req = res.requests
    n = len(req)
    assert n > 0
    assert req.request_id.tolist() == list(range(n))
    # every request ended exactly once: one end reported per row, each with an end time and an outcome
    assert ended == n, f"{ended} ends reported for {n} requests"
    bad = req[~req.outcome.isin(TERMINAL)]
    assert bad.empty, f"requests without a terminal outcome:\n{bad}"
    assert req.end_s.notna().all()
    assert (req.end_s >= req.arrival_s).all()
    assert (req.finished == (req.outcome == "finished")).all()
    assert (req.replica >= 0).all() and (req.replica < sc["cluster"]["replicas"]).all()

    fin = req[req.finished]
    assert (fin.generated_tokens == fin.output_tokens).all(), fin[fin.generated_tokens != fin.output_tokens]
    assert (req.output_tokens <= req.max_new_tokens).all()
    assert (req.generated_tokens <= req.output_tokens).all()
    unfinished = req[~req.finished]
    assert (unfinished.generated_tokens < unfinished.output_tokens).all()
    dropped = req[req.outcome == "dropped"]  # dropped before their first admission
    assert (dropped.generated_tokens == 0).all() and dropped.queue_delay_s.isna().all()
    if "sla_guard" not in sc["engine"]:
        assert req.finished.all(), req.outcome.value_counts()

    num = sc["workload"]["num_requests"]
    arr = sc["workload"]["arrivals"]
    if arr["kind"] != "closed-loop":
        assert n == num
        assert (req.attempt == 0).all()
        return
    # closed loop: the whole stream is sent, each request once plus its re-sends
    assert sorted(req.origin_id.unique().tolist()) == list(range(num))
    max_attempts = arr["max_attempts"] if arr["resend_failed"] else 1
    assert req.attempt.max() < max_attempts
    assert set(req.client.unique()) <= set(range(min(arr["clients"], num)))
    shared = arr.get("resend_to") == "shared-queue"
    if shared and (req.attempt > 0).any():
        # a failed attempt waits at the tail of the shared queue, behind every unsent request
        assert req.loc[req.attempt > 0, "arrival_s"].min() >= req.loc[req.attempt == 0, "arrival_s"].max()
    for origin, rows in req.groupby("origin_id"):
        rows = rows.sort_values("request_id")
        assert rows.attempt.tolist() == list(range(len(rows))), (origin, rows.attempt.tolist())
        assert shared or rows.client.nunique() == 1  # the same client re-sends it, or any client takes it
        failed = ~(rows.finished & rows.good)
        # a failed attempt is sent again while attempts are left; a good one never is
        assert failed.iloc[:-1].all(), rows
        assert not failed.iloc[-1] or len(rows) == max_attempts, rows
    # each client has one request in flight: its next request is sent when the previous one ends
    # (a re-send at once, a new request after the think time; from a shared queue, whatever it
    # takes next comes after the think time)
    think = arr["think_time_s"]
    for client, rows in req.groupby("client"):
        rows = rows.sort_values("request_id")
        prev_end = rows.end_s.to_numpy()[:-1]
        at_once = rows.attempt.to_numpy()[1:] > 0 if not shared else np.zeros(len(prev_end), dtype=bool)
        expected = np.where(at_once, prev_end, prev_end + think if think > 0 else prev_end)
        sent = rows.arrival_s.to_numpy()[1:]
        assert (sent == expected).all(), (client, rows[["request_id", "origin_id", "attempt", "arrival_s", "end_s"]])
        assert rows.arrival_s.iloc[0] == 0.0


@pytest.mark.slow
# No shrink phase: a failing scenario is already small, and shrinking whole simulations takes minutes.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.data())
def test_every_step_keeps_the_kv_accounting_and_every_request_ends_exactly_once(data):
    sc = _scenario(data.draw)
    note(f"scenario = {sc!r}")
    step, step_ended = _checked_run(sc, fast=False)
    _check_result(sc, step, step_ended)
    req = step.requests  # what the example exercised (pytest --hypothesis-show-statistics)
    for what, happened in [("aborted", (req.outcome == "aborted").any()), ("dropped", (req.outcome == "dropped").any()),
                           ("evicted", (req.evictions > 0).any()), ("swapped", (req.swaps > 0).any()),
                           ("re-sent", (req.attempt > 0).any())]:
        event(f"{what}: {bool(happened)}")
    fast, fast_ended = _checked_run(sc, fast=True)
    _check_result(sc, fast, fast_ended)
    assert step.requests.equals(fast.requests), "fast-forward and step-by-step requests differ"
    assert step.summary == fast.summary
    assert step.steps.equals(fast.steps)
