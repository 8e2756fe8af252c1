"""Knobs that replay the Past-Future artifact's servers (issue 21): ignore_eos requests make
past-future estimate every length by its cap."""

from __future__ import annotations

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
