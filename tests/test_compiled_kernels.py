"""The compiled admission-round kernels (llmsim/schedulers/_compiled.py) decide exactly as the numpy
reference: kernel by kernel on random inputs, and whole simulations of every future-peak policy
give bit-identical results either way. numba is in the test extras, so these run in CI."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llmsim import scenario_from_dict, simulate
from llmsim.schedulers import _compiled
from llmsim.schedulers.past_future import sample_final_output_tokens
from llmsim.schedulers.peak import PeakAdmissionRound, remaining_growth_tokens
from test_fastforward import _scenario

pytest.importorskip("numba", reason="numba is in the test extras; install with pip install -e '.[test]'")

PEAK_POLICIES = ["past-future", "oracle", "reserve-peak"]


def _random_batch(rng, n, lists, history_len):
    history = np.sort(rng.integers(1, 500, history_len).astype(float))
    generated = rng.integers(1, 400, n)
    caps = generated + rng.integers(0, 300, n)
    prompt = rng.integers(1, 900, n)
    return history, generated, caps, prompt, prompt + generated - 1, rng.random((lists, n))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), lists=st.integers(1, 5), history_len=st.integers(0, 60))
def test_sampled_growth_equals_numpy_bit_for_bit(seed, n, lists, history_len):
    history, generated, caps, prompt, kv, u = _random_batch(np.random.default_rng(seed), n, lists, history_len)
    want = remaining_growth_tokens(prompt, sample_final_output_tokens(generated, caps, history, u), kv)
    got = _compiled.sampled_growth(generated, caps, prompt, kv, history, u)
    assert got.dtype == np.float64 and np.array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lists=st.integers(1, 5), history_len=st.integers(1, 60),
       lo=st.integers(1, 300), cap=st.integers(1, 600), prompt=st.integers(1, 900))
def test_drawn_growth_equals_numpy_bit_for_bit(seed, lists, history_len, lo, cap, prompt):
    rng = np.random.default_rng(seed)
    history = np.sort(rng.integers(1, 500, history_len).astype(float))
    index = rng.integers(0, history_len, lists)
    hi, kv = max(lo, cap), prompt + lo - 1
    want = remaining_growth_tokens(prompt, np.clip(history[index], lo, hi), kv)
    assert np.array_equal(_compiled.drawn_growth(history, index, lo, hi, prompt, kv), want)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), lists=st.integers(1, 5))
def test_compiled_peak_round_admits_exactly_what_numpy_admits(seed, n, lists):
    """Sampled (fractional) and whole growths, one shared growth or one per list, more admissions
    than the spare columns, batches on both sides of the insertion-sort cut-off (64)."""
    rng = np.random.default_rng(seed)
    history, generated, caps, prompt, kv, u = _random_batch(rng, n, lists, 40)
    growth = remaining_growth_tokens(prompt, sample_final_output_tokens(generated, caps, history, u), kv)
    if rng.random() < 0.3:
        growth = np.floor(growth)  # ties in growth
    held = kv + int(rng.integers(0, 16))
    limit = float(held.sum() + growth.max(initial=0) * n // 2 + rng.integers(0, 30_000))
    reference = PeakAdmissionRound(held, growth, limit, compiled=False)
    compiled = PeakAdmissionRound(held, growth, limit, compiled=True)
    for i in range(12):
        cand_held = float(rng.integers(1, 2000))
        cand_growth = rng.integers(0, 600, lists).astype(float) + (rng.random(lists) if i % 2 else 0.0)
        if i % 3 == 0:
            cand_growth = cand_growth[:1]  # one growth shared by every list (oracle, reserve-peak)
        assert compiled.try_add(cand_held, cand_growth) == reference.try_add(cand_held, cand_growth)
    assert compiled.lists() == reference.lists()


def test_the_spec_example_peaks_at_31_compiled():
    """SCHEDULERS.md: pairs (5,4),(4,3),(5,3),(3,2),(4,2) peak at 31; the fifth fits a limit of
    31 and not of 30."""
    held, growth = np.array([5, 4, 5, 3]), np.array([4, 3, 3, 2])
    assert PeakAdmissionRound(held, growth, 31.0, compiled=True).try_add(4, np.array([2.0]))
    assert not PeakAdmissionRound(held, growth, 30.0, compiled=True).try_add(4, np.array([2.0]))


def _run(sc: dict, compiled: bool, monkeypatch):
    monkeypatch.setattr(_compiled, "_available", compiled)
    return simulate(scenario_from_dict(sc))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data(), kind=st.sampled_from(PEAK_POLICIES))
def test_simulations_are_identical_with_and_without_the_kernels(data, kind, monkeypatch):
    sc = _scenario(data.draw)
    knobs = {"decode_steps_between_rounds": data.draw(st.integers(0, 3))}
    if kind == "past-future":
        knobs["history_window"] = data.draw(st.integers(5, 50))
    sc["scheduler"] = {"kind": kind, kind: knobs}
    reference, compiled = _run(sc, False, monkeypatch), _run(sc, True, monkeypatch)
    assert reference.requests.equals(compiled.requests)
    assert reference.summary == compiled.summary
    assert reference.steps.equals(compiled.steps)


def test_pure_numpy_can_be_forced_by_environment(monkeypatch):
    monkeypatch.setattr(_compiled, "_available", None)
    monkeypatch.setenv("LLMSIM_PURE_NUMPY", "1")
    assert _compiled.available() is False
    monkeypatch.setattr(_compiled, "_available", None)
    monkeypatch.setenv("LLMSIM_PURE_NUMPY", "0")
    assert _compiled.available() is True
