"""The least-outstanding-tokens router prunes with published load bounds; it must pick exactly what
a scan of every replica's exact load would pick, including while replicas are in fast-forwarded runs."""

from __future__ import annotations

import pytest

from llmsim import scenario_from_dict, simulate
from llmsim.cluster.router import LeastOutstandingTokensRouter


@pytest.mark.parametrize("kind", ["aggressive", "past-future"])
def test_least_outstanding_tokens_picks_what_a_full_scan_picks(monkeypatch, kind):
    choices = []
    route = LeastOutstandingTokensRouter.route

    def checked_route(self, rid, replicas, now_s=0.0):
        choice = route(self, rid, replicas, now_s)
        loads = [r.outstanding_tokens_at(now_s) for r in replicas]
        in_run = sum(r.active_run is not None for r in replicas)
        choices.append((choice, loads.index(min(loads)), in_run))
        return choice

    monkeypatch.setattr(LeastOutstandingTokensRouter, "route", checked_route)
    sc = {
        "name": "lot", "seed": 5, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cluster": {"replicas": 6, "router": "least-outstanding-tokens"},
        "engine": {"max_model_len": 4096, "kv_capacity_tokens": 30000},
        "scheduler": {"kind": kind},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [16, 400], "output_tokens": [20, 600]},
                     "arrivals": {"kind": "poisson", "rate_per_s": 30.0}, "num_requests": 400, "max_new_tokens": 800},
    }
    simulate(scenario_from_dict(sc))
    assert len(choices) == 400
    assert [c for c, _, _ in choices] == [full for _, full, _ in choices]
    assert sum(in_run for _, _, in_run in choices) > 400  # the bounds were ranges, not exact values, most of the time
