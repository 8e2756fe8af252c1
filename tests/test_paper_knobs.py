"""Knobs that replay the Past-Future artifact's servers (issue 21): ignore_eos requests make
past-future estimate every length by its cap."""

from __future__ import annotations

import pytest

from llmsim import scenario_from_dict, simulate

SCENARIO = {
    "name": "ignore-eos", "seed": 4, "model": "llama-2-7b", "hardware": "a100-80g-sxm",
    "engine": {"max_model_len": 4096, "kv_capacity_tokens": 30000},
    "scheduler": {"kind": "past-future",
                  "past-future": {"headroom": 0.05, "per_request_slack_tokens": 0, "decode_steps_between_rounds": 2},
                  "reserve-peak": {"headroom": 0.05, "per_request_slack_tokens": 0, "decode_steps_between_rounds": 2}},
    "workload": {"lengths": {"kind": "uniform", "input_tokens": [32, 1500], "output_tokens": [100, 1500]},
                 "arrivals": {"kind": "closed-loop", "clients": 24}, "num_requests": 200, "max_new_tokens": "exact"},
}


def test_past_future_with_ignore_eos_requests_decides_as_the_future_peak_of_the_caps():
    """With every request sent with ignore_eos, past-future's estimate of a length is its cap
    (LightLLM), so it admits exactly as reserve-peak with the same headroom and slack."""
    eos = {**SCENARIO, "workload": {**SCENARIO["workload"], "ignore_eos": True}}
    past_future = simulate(scenario_from_dict(eos))
    reserve_peak = simulate(scenario_from_dict(eos, scheduler="reserve-peak"))
    assert past_future.requests.equals(reserve_peak.requests)
    sampled = simulate(scenario_from_dict(SCENARIO))  # the premise: without the flag it samples lengths
    assert not sampled.requests.equals(past_future.requests)
    step_by_step = simulate(scenario_from_dict(eos, overrides=["engine.fast_forward=false"]))
    assert step_by_step.requests.equals(past_future.requests)


def _closed(resend_to: str, max_attempts, **sla) -> dict:
    return {
        "name": "retries", "seed": 2, "model": "llama-2-7b", "hardware": "a100-80g-sxm",
        # the artifact's guard and SLA (1.49 s, 10 s / 1.5 s), a KV cache that holds about 12 requests:
        # some attempts fail, and (with a shared queue) all succeed in the end
        "engine": {"max_model_len": 4096, "kv_capacity_tokens": 16000, "sla_guard": {"max_tbt_s": 1.49}},
        "scheduler": {"kind": "aggressive"},
        "sla": sla or {"ttft_s": 10.0, "max_tbt_s": 1.5},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [200, 1500], "output_tokens": [100, 800]},
                     "arrivals": {"kind": "closed-loop", "clients": 32, "resend_failed": True, "max_attempts": max_attempts,
                                  "resend_to": resend_to},
                     "num_requests": 150, "max_new_tokens": "exact"},
    }


def test_a_shared_queue_retries_failed_requests_after_every_unsent_one_until_each_succeeds():
    r = simulate(scenario_from_dict(_closed("shared-queue", None)))
    df = r.requests
    retries = df[df["attempt"] > 0]
    assert len(retries) > 0  # the premise: attempts failed
    # a retry waits at the queue's tail: it is sent only once every request was sent once
    assert retries["arrival_s"].min() >= df.loc[df["attempt"] == 0, "arrival_s"].max()
    assert df.groupby("origin_id")["good"].any().all()  # no cap: every request succeeded once
    assert (df.groupby("origin_id")["good"].sum() == 1).all()  # and was not sent again after
    assert "abandoned" not in r.summary
    step_by_step = simulate(scenario_from_dict(_closed("shared-queue", None), overrides=["engine.fast_forward=false"]))
    assert step_by_step.requests.equals(df)


def test_a_cap_on_attempts_abandons_requests_and_says_so():
    r = simulate(scenario_from_dict(_closed("same-client", 2)))
    df = r.requests
    last = df.groupby("origin_id").agg(good=("good", "any"), attempts=("attempt", "max"))
    abandoned = int(((~last["good"]) & (last["attempts"] == 1)).sum())
    assert abandoned > 0 and r.summary["abandoned"] == abandoned
    assert any(f"{abandoned:,} requests were abandoned after 2 failed attempts" in n for n in r.notes)


def test_unbounded_retries_of_a_request_that_can_never_succeed_stop_with_a_clear_error():
    import pytest

    from llmsim.errors import LlmsimError

    sc = _closed("shared-queue", None, ttft_s=1e-9)  # no first token comes that fast
    sc["workload"]["num_requests"] = 2
    sc["workload"]["arrivals"]["clients"] = 2
    sc["workload"]["lengths"] = {"kind": "fixed", "input_tokens": 8, "output_tokens": 2}
    sc["cost_model"] = {"kind": "constant", "step_time_s": 0.001}
    with pytest.raises(LlmsimError, match="failed 10,000 attempts: it cannot meet the SLA"):
        simulate(scenario_from_dict(sc))


# ----------------------------------------------------------------------------- engine knobs
def _dropped_at(**params) -> float:
    """When request 1 (too large to be admitted beside request 0) is dropped by the queue limit."""
    from helpers import drive, make_engine, make_table

    from llmsim.request import DROPPED

    table = make_table([4, 40], [30, 5])  # request 1 needs 11 of the 8 blocks while request 0 runs
    engine = make_engine(table, "aggressive", {"decode_steps_between_rounds": 4, "watermark": 0.0}, total_blocks=8,
                         block_size=4, guard_max_queue_s=0.05, **params)
    drive(engine)
    assert table.status[1] == DROPPED
    return float(table.end_s[1])


def test_the_queue_limit_checked_at_admission_rounds_drops_at_the_next_round():
    every_step = _dropped_at()
    at_rounds = _dropped_at(guard_queue_at_rounds_only=True)
    assert every_step == pytest.approx(0.06)  # the first planning after 0.05 s: 6 steps of 0.01 s
    assert at_rounds == pytest.approx(0.09)  # the next round: prefill, then rounds every 4 decode steps (0.05, 0.09)


def _evicted_and_aborted(abort_waiting: bool):
    """Two requests that outgrow 5 blocks: the newer is evicted, waits while the older decodes
    longer than the gap limit, and is aborted."""
    from helpers import drive, make_engine, make_table

    table = make_table([8, 8], [12, 12])
    engine = make_engine(table, "aggressive", {"watermark": 0.0}, total_blocks=6, block_size=4, guard_max_tbt_s=0.035,
                         guard_abort_waiting=abort_waiting)
    records = drive(engine)
    return table, records


def test_an_evicted_request_is_aborted_while_waiting_or_only_after_its_re_prefill():
    from llmsim.request import ABORTED

    waiting, _ = _evicted_and_aborted(True)
    after, records = _evicted_and_aborted(False)
    assert waiting.evictions[1] == after.evictions[1] == 1
    assert waiting.status[1] == after.status[1] == ABORTED
    # while waiting: aborted before it runs again (request 0 still decoding until 0.12 s)
    assert waiting.end_s[1] == pytest.approx(0.09) and waiting.end_s[1] < waiting.end_s[0]
    # only once it runs again: re-admitted when request 0 finished, aborted at the end of its
    # re-prefill step (the guard removed it from that step: its token is not counted)
    assert records[-1].start_s == after.end_s[0] == pytest.approx(0.12)
    assert after.end_s[1] == records[-1].end_s == pytest.approx(0.13)
    assert after.generated_tokens[1] == waiting.generated_tokens[1] == 5
    assert after.prefill_computed_tokens[1] == 8 + 13  # its prompt, then the re-prefill of prompt + 5 generated


def test_aborted_lengths_join_past_future_history_when_asked():
    """The evict-then-abort example above under past-future (a prior of 1 token lets both in): request 1 is aborted with 5 tokens,
    request 0 finishes with 12; the history holds the aborted length only when asked."""
    from helpers import drive, make_engine, make_table

    from llmsim.request import ABORTED

    histories = {}
    for record in (False, True):
        table = make_table([8, 8], [12, 12])
        engine = make_engine(table, "past-future", {"record_aborted_lengths": record, "prior_output_tokens": 1, "prior_count": 1, "headroom": 0.0},
                             total_blocks=6, block_size=4, guard_max_tbt_s=0.035)
        drive(engine)
        assert table.status[1] == ABORTED and table.generated_tokens[1] == 5
        histories[record] = list(engine.scheduler.history._fifo)
    assert histories == {False: [1, 12], True: [1, 5, 12]}  # after the prior of 1 that lets both in


def test_one_list_for_an_empty_batch_when_asked():
    from helpers import make_scheduler

    sched = make_scheduler("past-future", {"empty_batch_lists": 1})
    assert sched.num_lists(0) == 1 and sched.num_lists(10) == 5
    assert make_scheduler("past-future").num_lists(0) == 5
