"""The analytic model's run loop (llmsim.costmodel.roofline_run): interpreted and compiled give the
same bits, and switching from one to the other mid-simulation changes no result."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import check_run_pricer

from llmsim import load_scenario, simulate
from llmsim.costmodel import roofline_run
from llmsim.costmodel import AnalyticCostModel, BatchShape, load_model, load_profile
from llmsim.costmodel.roofline import smooth_max, smooth_max_2
from llmsim.costmodel.roofline_run import RunPricers, compiled_loop, roofline_decode_run


def test_the_compiled_loop_gives_the_interpreted_loops_bits_on_random_runs():
    rng = np.random.default_rng(3)
    loop = compiled_loop()
    ends_a, durations_a = np.empty(600), np.empty(600)
    ends_l, durations_l = [0.0] * 600, [0.0] * 600
    for _ in range(300):
        seqs = int(rng.integers(1, 512))
        consts = (float(rng.uniform(1e-3, 5e-2)), float(rng.integers(1, 128)), float(seqs), float(rng.integers(1, 64) * 512),
                  float(rng.uniform(1e13, 2e15)), float(rng.integers(1, 64) * 1024), float(seqs * rng.integers(1, 64) * 512),
                  float(rng.uniform(5e11, 8e12)), float(rng.uniform(0, 1e-5)), float(rng.choice([0.0, 2e-6, 5e-4])))
        start_s, ctx_sum = float(rng.uniform(0, 1e5)), int(seqs * rng.integers(1, 4096))
        steps = int(rng.integers(0, 600))
        horizon_s = math.inf if rng.random() < 0.5 else start_s + float(rng.uniform(0, 3))
        k = roofline_decode_run(consts, start_s, ctx_sum, steps, horizon_s, ends_l, durations_l)
        assert loop(np.array(consts), start_s, ctx_sum, steps, horizon_s, ends_a, durations_a) == k
        assert ends_a[:k].tolist() == ends_l[:k] and durations_a[:k].tolist() == durations_l[:k]
        assert k == steps or ends_l[k - 1] >= horizon_s
        c, m = ctx_sum * consts[3] / consts[4], (ctx_sum * consts[5] + consts[6]) / consts[7]
        assert smooth_max_2(c, m) == pytest.approx(math.hypot(c, m), rel=1e-15)  # within an ulp or two of hypot
    assert smooth_max(3.0, 4.0, 2.0) == smooth_max_2(3.0, 4.0) == 5.0


@pytest.mark.parametrize("after,after_if_loaded,numba_loaded,switches", [
    (None, None, True, False), (0, None, False, True), (25, None, False, True),
    (None, 25, True, True), (None, 25, False, False), (400, 25, False, True)])
def test_a_run_is_priced_as_its_steps_one_by_one_before_during_and_after_the_switch(
        monkeypatch, after, after_if_loaded, numba_loaded, switches):
    monkeypatch.setattr(roofline_run, "COMPILE_AFTER_STEPS", after)
    monkeypatch.setattr(roofline_run, "COMPILE_AFTER_STEPS_IF_LOADED", after_if_loaded)
    monkeypatch.setattr(roofline_run, "numba_imported", lambda: numba_loaded)
    cm = AnalyticCostModel(load_model("llama-2-7b"), load_profile("h100-80g-sxm"))
    pricers = cm._run_pricers
    assert pricers.compiled == (after == 0)
    # the last run is longer than the buffers the loop writes into at first: they grow
    for seqs, ctx_sum, ctx_max, steps in ((1, 5, 5, 50), (37, 37 * 800, 1500, 300), (256, 10**6, 9000, 7), (9, 900, 100, 3000)):
        scalar = [cm.step_time_s(BatchShape((), (), seqs, ctx_sum + j * seqs, ctx_max + j)) for j in range(steps)]
        check_run_pricer(cm, seqs, ctx_sum, ctx_max, scalar)  # bit for bit: fast-forward relies on it
    assert pricers.compiled == switches


def test_a_simulation_that_switches_to_the_compiled_loop_gives_the_same_results(monkeypatch):
    sc = load_scenario("scenarios/sharegpt.yaml", ["workload.num_requests=400", "cluster.replicas=2",
                                                   "cluster.router=least-outstanding-tokens", "workload.arrivals.rate_per_s=8.4"],
                       scheduler="aggressive")
    results, switches = [], []
    switch = RunPricers._switch

    def recorded_switch(self):
        switches.append(case)
        switch(self)

    monkeypatch.setattr(RunPricers, "_switch", recorded_switch)
    monkeypatch.setattr(roofline_run, "numba_imported", lambda: True)  # the second count applies
    for case in ((None, None), (2_000, None), (0, None), (None, 1_000)):
        monkeypatch.setattr(roofline_run, "COMPILE_AFTER_STEPS", case[0])
        monkeypatch.setattr(roofline_run, "COMPILE_AFTER_STEPS_IF_LOADED", case[1])
        r = simulate(sc)
        results.append(r.requests)
        # the switches at 1,000 and 2,000 steps come early: most of the run is priced compiled
        assert sum(r.derived["replica_steps"]) > 3 * 2_000
    assert switches == [(2_000, None), (0, None), (None, 1_000)]  # once each: mid-run, before the first run, mid-run
    for other in results[1:]:
        assert results[0].equals(other)
