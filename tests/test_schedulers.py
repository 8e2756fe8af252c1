"""Exact unit tests of each admission policy on hand-made ReplicaViews and Candidates (docs/schedulers.md
§2), without the engine or SimPy. Block size 4 unless a test says otherwise."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from helpers import make_candidate, make_scheduler, make_view

from llmsim.rng import CounterStream
from llmsim.schedulers import SCHEDULERS, BuildContext, build_scheduler
from reference_policies import future_peak_tokens, future_peaks_of_lists, sample_final_output_tokens


def decisions(sched, view, candidates):
    """Offer candidates in order, stopping at the first refusal (as the engine does)."""
    rnd, out = sched.start_round(view), []
    for c in candidates:
        out.append(rnd.admit(c))
        if not out[-1]:
            break
    return out


# ------------------------------------------------------------------ future peak
def test_future_peak_of_the_spec_example_is_31():
    held = np.array([5, 4, 5, 3, 4])
    growth = np.array([4, 3, 3, 2, 2])
    assert future_peak_tokens(held, growth) == 31  # terms 9, 15, 23, 25, 31
    assert future_peak_tokens(held[::-1].copy(), growth[::-1].copy()) == 31  # input order does not matter
    assert future_peak_tokens(np.array([], dtype=int), np.array([], dtype=int)) == 0


def simulated_peak(held, growth):
    """Occupancy step by step: request i holds held[i] + t for t <= growth[i], then is freed."""
    return max(sum(a + t for a, b in zip(held, growth) if b >= t) for t in range(max(growth) + 1))


pairs = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 15)), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_future_peak_equals_step_by_step_occupancy_maximum(batch):
    held, growth = (np.array(x) for x in zip(*batch))
    assert future_peak_tokens(held, growth) == simulated_peak(held.tolist(), growth.tolist())


@settings(max_examples=100, deadline=None)
@given(st.lists(pairs, min_size=1, max_size=4))
def test_future_peaks_of_lists_equal_peak_of_each_list(lists):
    n = min(len(x) for x in lists)
    held = np.array([a for a, _ in lists[0][:n]])
    growth = np.array([[b for _, b in x[:n]] for x in lists])
    expected = [future_peak_tokens(held, row) for row in growth]
    assert future_peaks_of_lists(held, growth).tolist() == expected


# ------------------------------------------------------------------ aggressive
def test_aggressive_admits_down_to_the_watermark_and_refuses_one_block_below():
    sched = make_scheduler("aggressive", {"watermark": 0.05})  # ceil(0.05 * 100) = 5 blocks
    view = make_view(total_blocks=100, free_blocks=20)
    assert decisions(sched, view, [make_candidate(0, 60, 100), make_candidate(1, 4, 100)]) == [True, False]  # 15 -> 5 free; 1 -> 4
    assert decisions(sched, view, [make_candidate(0, 64, 100)]) == [False]  # 16 blocks would leave 4 < 5
    assert decisions(sched, view, [make_candidate(0, 57, 100)]) == [True]  # ceil(57/4) = 15 blocks


def test_aggressive_watermark_is_rounded_up_to_whole_blocks():
    sched = make_scheduler("aggressive", {"watermark": 0.01})  # ceil(1.5) = 2 blocks
    view = make_view(total_blocks=150, free_blocks=10)
    assert decisions(sched, view, [make_candidate(0, 32, 100)]) == [True]  # leaves 2
    assert decisions(sched, view, [make_candidate(0, 33, 100)]) == [False]  # 9 blocks leave 1


def test_aggressive_artifact_server_rule_admits_below_the_use_limit_while_prompt_plus_one_fits():
    # the Past-Future artifact's server: use < 0.95 M before admitting, use + prompt + 1 < M
    sched = make_scheduler("aggressive", {"rule": "artifact-server", "use_limit": 0.95})
    view = make_view(total_blocks=100, block_size=1, free_blocks=10)  # M = 100 tokens, 90 in use
    cand = lambda rid, prompt: make_candidate(rid, prompt, 50, block_size=1)  # noqa: E731
    assert decisions(sched, view, [cand(0, 8), cand(1, 1)]) == [True, False]  # 90+8+1 = 99 < 100; then 98 >= 95
    assert decisions(sched, view, [cand(0, 9)]) == [False]  # 90+9+1 = 100
    assert decisions(sched, make_view(total_blocks=100, block_size=1, free_blocks=5), [cand(0, 1)]) == [False]  # 95 in use
    assert decisions(sched, make_view(total_blocks=100, block_size=1, free_blocks=6), [cand(0, 1)]) == [True]  # 94 in use


# ------------------------------------------------------------------ conservative
def test_conservative_reserves_prompt_plus_cap_minus_one_in_blocks_up_to_the_headroom_limit():
    sched = make_scheduler("conservative", {"headroom": 0.1})  # limit floor(20 * 0.9) = 18 blocks
    # running reservations: 5+4-1 = 8 -> 2 blocks, 6+7-1 = 12 -> 3 blocks: 5 reserved
    view = make_view([5, 6], [4, 7], [1, 1], total_blocks=20)
    c10 = make_candidate(0, 10, 11)  # 20 tokens -> 5 blocks (10)
    c18 = make_candidate(1, 9, 24)  # 32 tokens -> 8 blocks (18 = limit)
    assert decisions(sched, view, [c10, c18, make_candidate(2, 1, 1)]) == [True, True, False]  # 19 > 18
    assert decisions(sched, view, [c10, make_candidate(1, 9, 25)]) == [True, False]  # 33 tokens -> 9 blocks: 19


def test_conservative_without_headroom_fills_every_block_and_not_one_more():
    sched = make_scheduler("conservative", {"headroom": 0.0})
    view = make_view([5, 6], [4, 7], [1, 1], total_blocks=20)
    cands = [make_candidate(0, 10, 11), make_candidate(1, 9, 24), make_candidate(2, 1, 1), make_candidate(3, 2, 3), make_candidate(4, 1, 1)]
    assert decisions(sched, view, cands) == [True, True, True, True, False]  # 5+5+8+1+1 = 20


def test_conservative_with_a_fixed_output_reserve_ignores_the_caps():
    # the Past-Future artifact's conservative server: prompt + a fixed reserve whatever the cap
    sched = make_scheduler("conservative", {"headroom": 0.0, "reserve_output_tokens": 9})
    # running: 5+9-1 = 13 -> 4 blocks, 6+9-1 = 14 -> 4 blocks: 8 reserved (caps 4 and 7 ignored)
    view = make_view([5, 6], [4, 7], [1, 1], total_blocks=20)
    c8 = make_candidate(0, 24, 1000)  # 24+9-1 = 32 -> 8 blocks (16): a cap of 1000 does not count
    assert decisions(sched, view, [c8, make_candidate(1, 8, 1), make_candidate(2, 9, 1)]) == [True, True, False]  # 8+8+4 = 20 blocks; then 5 more


# ------------------------------------------------------------------ past-future
class FixedRng:
    """Stands in for past-future's stream (llmsim.rng.CounterStream): every uniform draw is `u`,
    every index draw is `index`."""

    def __init__(self, u=0.5, index=0):
        self.u, self.index = u, index
        # compiled admissions draw a candidate's history indices inside the kernel, from a counter
        # state: the tests that use this have a single-valued history, where every index reads
        # the same value
        self.state = CounterStream(0).state

    def random(self, size):
        return np.full(size, self.u)

    def integers(self, low, high, size):
        return np.full(size, self.index)


def pf(config=None, rng=None, **kw):
    cfg = {"history_window": 10, "prior_output_tokens": 6, "prior_count": 10, **(config or {})}
    sched = make_scheduler("past-future", cfg, **kw)
    if rng is not None:
        sched.stream = rng
    return sched


def test_past_future_candidates_with_a_single_valued_history_get_exact_decisions():
    # History = ten 6s: every candidate's final length is min(6, cap), so a fresh candidate holds P
    # and grows 5 tokens, whatever the seed. Empty batch, limit 40 * 0.95 = 38 tokens. (A running
    # request's estimate stays random: it interpolates over [o, 6] and [6, cap]; see FixedRng below.)
    view = make_view()
    c0, c1 = make_candidate(0, 10, 100), make_candidate(1, 12, 100)
    # peaks: (10,5) -> 15; + (12,5) -> 22 + 2*5 = 32; then (1,5) -> 23 + 15 = 38 <= 38, or (2,5) -> 39 > 38
    assert decisions(pf(), view, [c0, c1, make_candidate(2, 1, 100)]) == [True, True, True]
    assert decisions(pf(), view, [c0, c1, make_candidate(2, 2, 100)]) == [True, True, False]
    # the third alone fits easily: it is refused only because the first two stay in the lists
    assert decisions(pf(), view, [make_candidate(2, 2, 100)]) == [True]
    # cap 3 < 6: final 3, growth 2: peaks 15, 32, 24 + 3*2 = 30
    assert decisions(pf(), view, [c0, c1, make_candidate(2, 2, 3)]) == [True, True, True]


def test_past_future_evicted_candidate_grows_from_its_recomputed_prefill():
    # generated 4, prompt 20: holds 24 after the re-prefill, ends at 20 + 6 - 1 = 25: growth 1.
    # With (24, 1) alone the peak is 25; with a first candidate (10, 5): peaks 15, 34 + 2 = 36.
    sched = pf({"headroom": 0.0})
    rnd = sched.start_round(make_view())
    assert rnd.admit(make_candidate(0, 10, 100)) and rnd.admit(make_candidate(1, 20, 100, generated=4))
    assert rnd.peaks.lists()[0] == [(10, 5), (24, 1)]
    # generated 7 >= history value 6: the estimate is clipped to one more token than generated
    rnd = sched.start_round(make_view())
    assert rnd.admit(make_candidate(0, 5, 100, generated=7))
    assert rnd.peaks.lists() == [[(12, 0)]] * 5  # 5 + 8 - 1 - 12


def test_past_future_running_growth_is_sampled_from_history_above_generated():
    # history [6]*4; running request P=10, o=2 (kv 11), cap 20: support [2, 6, 6, 6, 6, 20].
    # u=0.5 -> x=2.5 -> 6 -> growth 4;  u=0.9 -> x=4.5 -> 6 + 0.5*14 = 13 -> growth 11.
    view = make_view([10], [20], [2], total_blocks=10)
    cfg = {"history_window": 4, "prior_count": 4, "headroom": 0.0}
    r_mid = pf(cfg, rng=FixedRng(0.5)).start_round(view)
    r_high = pf(cfg, rng=FixedRng(0.9)).start_round(view)
    assert r_mid.peaks.lists() == [[(11, 4.0)]] * 5
    assert r_high.peaks.lists() == [[(11, 11.0)]] * 5
    # a fresh candidate grows 5 (final 6).  P=20: u=0.5: (20,5),(11,4) -> 25, 31 + 8 = 39 <= 40;
    # u=0.9: (11,11),(20,5) -> 22, 31 + 10 = 41 > 40
    assert r_high.admit(make_candidate(0, 20, 100)) is False
    assert r_mid.admit(make_candidate(0, 20, 100)) is True
    assert r_mid.peaks.lists() == [[(20, 5), (11, 4)]] * 5
    r_mid = pf(cfg, rng=FixedRng(0.5)).start_round(view)
    assert r_mid.admit(make_candidate(0, 14, 100)) is True  # (14,5),(11,4): 19, 25 + 8 = 33
    assert r_mid.admit(make_candidate(1, 3, 100)) is True  # (14,5),(3,5),(11,4): 19, 27, 28 + 12 = 40
    assert r_mid.admit(make_candidate(2, 1, 100)) is False  # ... (1,5) ...: 18 + 15 = 33, 29 + 16 = 45


def test_past_future_number_of_lists_is_min_of_max_lists_and_samples_over_running_plus_one():
    for n, expected in [(0, 5), (1, 5), (50, 5), (67, 3), (100, 3), (150, 2), (201, 1)]:
        view = make_view([1] * n, [2] * n, [1] * n, total_blocks=1000)
        rnd = pf().start_round(view)
        assert (rnd.num_lists, rnd.peaks.num_lists) == (expected, expected), n
    view = make_view([1] * 4, [2] * 4, [1] * 4, total_blocks=1000)
    assert pf({"samples_per_list": 10, "max_lists": 8}).start_round(view).num_lists == 3  # 10 // 4 + 1


def test_past_future_history_starts_with_the_prior_and_is_a_fifo_window():
    sched = pf({"history_window": 3, "prior_output_tokens": 100, "prior_count": 2})
    assert sched.history.sorted().tolist() == [100, 100]
    sched.record_finish(5)
    assert sched.history.sorted().tolist() == [5, 100, 100]
    sched.record_finish(7)  # the oldest prior entry leaves
    assert sched.history.sorted().tolist() == [5, 7, 100]
    sched.record_finish(9)
    sched.record_finish(11)
    assert sched.history.sorted().tolist() == [7, 9, 11]
    default = make_scheduler("past-future", {"history_window": 8}, prior=512)  # half the window, workload prior
    assert default.history.sorted().tolist() == [512] * 4


def test_sample_final_output_tokens_interpolates_between_hand_computed_support_points():
    hist = np.array([10.0, 20.0, 30.0, 40.0])
    # o = 15, cap 100: support [15, 20, 30, 40, 100], x = u * 4
    got = sample_final_output_tokens([15] * 5, [100] * 5, hist, np.array([0.0, 0.1, 0.5, 0.6, 0.9]))
    assert got.tolist() == pytest.approx([15, 17, 30, 34, 76])
    # o equal to a history value keeps only the larger ones: [20, 30, 40, 100], u=0.5 -> x=1.5 -> 35
    assert sample_final_output_tokens([20], [100], hist, np.array([0.5])).tolist() == pytest.approx([35])
    # o above the whole history: [50, 100];  cap below history values: clipped to the cap
    assert sample_final_output_tokens([50], [100], hist, np.array([0.25])).tolist() == pytest.approx([62.5])
    assert sample_final_output_tokens([5], [25], hist, np.array([0.7])).tolist() == [25]  # 35 -> 25
    assert sample_final_output_tokens([5], [25], np.array([]), np.array([0.5])).tolist() == [15]  # [5, 25]


def test_cap_in_support_when_larger_and_rounding_follow_the_artifact_server():
    hist = np.array([10.0, 20.0, 30.0, 40.0])
    # cap 35 is not larger than the last history value (40): support [15, 20, 30, 40] without the
    # cap; u = 0.6 -> x = 1.8 -> 20 + 0.8 * 10 = 28. "always": [15, 20, 30, 40, 35], x = 2.4 -> 34.
    assert sample_final_output_tokens([15], [35], hist, np.array([0.6]), cap_when_larger=True).tolist() == pytest.approx([28])
    assert sample_final_output_tokens([15], [35], hist, np.array([0.6])).tolist() == pytest.approx([34])
    # u = 0.9: x = 2.7 -> 37, clipped to the cap 35
    assert sample_final_output_tokens([15], [35], hist, np.array([0.9]), cap_when_larger=True).tolist() == [35]
    # cap 100 larger than 40: the same support either way ([15, 20, 30, 40, 100])
    for flag in (False, True):
        assert sample_final_output_tokens([15], [100], hist, np.array([0.9]), cap_when_larger=flag).tolist() == pytest.approx([76])
    # o above the history and below the cap: [o, cap] either way
    assert sample_final_output_tokens([50], [100], hist, np.array([0.25]), cap_when_larger=True).tolist() == [62.5]
    # rounding, half to even as Python's round(): 17.0, 62.5 -> 62, 34.0; 0.1 * 4 = 0.4 -> 15 + 0.4 * 5 = 17
    assert sample_final_output_tokens([15, 50], [100, 100], hist, np.array([0.1, 0.25]), rounded=True).tolist() == [17, 62]
    assert sample_final_output_tokens([15], [100], hist, np.array([0.15]), rounded=True).tolist() == [18]  # 18.0


def test_past_future_knobs_reach_the_kernels():
    sched = make_scheduler("past-future", {"cap_in_support": "when-larger", "round_sampled_length": True}, prior=512)
    assert sched._cap_when_larger and sched._rounded
    default = make_scheduler("past-future", {}, prior=512)
    assert not default._cap_when_larger and not default._rounded


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=0, max_size=12), st.integers(0, 50), st.integers(0, 30),
       st.floats(0, 1, exclude_max=True))
def test_sample_final_output_tokens_stays_within_generated_and_cap(history, o, extra, u):
    got = sample_final_output_tokens([o], [o + extra], np.sort(np.array(history, float)), np.array([u]))
    assert o <= got[0] <= o + extra


def test_past_future_same_seed_gives_the_same_decisions():
    def run(seed):
        sched = make_scheduler("past-future", {"history_window": 20, "prior_count": 5}, seed=seed, prior=30)
        rng = np.random.default_rng(99)  # the workload, shared by both runs
        out = []
        for _ in range(40):
            n = int(rng.integers(0, 5))
            gen = rng.integers(1, 10, n)
            view = make_view(rng.integers(1, 20, n), gen + rng.integers(0, 30, n), gen, total_blocks=40)
            out += decisions(sched, view, [make_candidate(i, int(p), 40) for i, p in enumerate(rng.integers(1, 30, 4))])
            sched.record_finish(int(rng.integers(1, 40)))
        return out

    first = run(7)
    assert first == run(7)
    assert 0 < sum(first) < len(first)  # the sequence exercises both answers


# ------------------------------------------------------------------ oracle
TRUE = np.array([6, 5, 3, 3, 2])


def test_oracle_admits_on_the_true_remaining_lengths_with_block_size_minus_one_slack():
    sched = make_scheduler("oracle", true_output_tokens=TRUE)
    # running: P=10, o=2, kv 11, true 6 -> growth 4, held 11 + 3.  Caps (100) are ignored.
    view = make_view([10], [100], [2], total_blocks=10)  # limit 40 tokens
    cands = [make_candidate(1, 8, 100), make_candidate(2, 2, 100), make_candidate(3, 3, 100), make_candidate(4, 1, 100)]
    # (14,4),(11,4): 18, 25 + 8 = 33; + (5,2): 30 + 6 = 36; candidate 3: P=3, true 3 -> growth 2,
    # held 6: (14,4),(11,4),(5,2),(6,2): 18, 33, 36, 36 + 8 = 44 > 40
    assert decisions(sched, view, cands) == [True, True, False]
    exact = make_scheduler("oracle", {"per_request_slack_tokens": 0}, true_output_tokens=TRUE)
    # without slack: (11,4),(8,4),(2,2),(3,2),(1,1): 15, 27, 27, 32, 30 -> 32 <= 40
    assert decisions(exact, view, cands) == [True, True, True, True]


def test_oracle_refuses_exactly_above_the_limit():
    sched = make_scheduler("oracle", true_output_tokens=np.array([6, 5, 1]))
    view = make_view([10], [100], [2], total_blocks=10)
    # (14,4),(11,4) -> 33; candidate 2 (true length 1) grows 0 and holds P + 3: 25 + P + 3
    assert decisions(sched, view, [make_candidate(1, 8, 100), make_candidate(2, 12, 100)]) == [True, True]  # 40
    assert decisions(sched, view, [make_candidate(1, 8, 100), make_candidate(2, 13, 100)]) == [True, False]  # 41


def test_build_scheduler_gives_true_lengths_to_the_oracle_only(monkeypatch):
    seen = {}
    for kind, spec in list(SCHEDULERS.items()):
        def spy(config, ctx, kind=kind, spec=spec):
            seen[kind] = ctx
            return spec.factory(config, ctx)
        monkeypatch.setitem(SCHEDULERS, kind, dataclasses.replace(spec, factory=spy))
    rng = np.random.default_rng(0)
    ctx = BuildContext(3, rng, 77, TRUE)
    for kind in SCHEDULERS:
        build_scheduler(kind, SCHEDULERS[kind].config_cls(), ctx)
        got = seen[kind]
        assert (got.replica_index, got.rng, got.default_prior_output_tokens) == (3, rng, 77)
        assert (got.true_output_tokens is TRUE) == (kind == "oracle"), kind
    assert set(seen) == set(SCHEDULERS) >= {"aggressive", "conservative", "past-future", "oracle", "reserve-peak"}
    with pytest.raises(ValueError):
        build_scheduler("oracle", SCHEDULERS["oracle"].config_cls(), BuildContext(0, rng, 1, None))


# ------------------------------------------------------------------ reserve-peak
def test_reserve_peak_assumes_every_request_runs_to_its_cap():
    sched = make_scheduler("reserve-peak")
    view = make_view([10], [6], [2], total_blocks=10)  # growth 10+6-1-11 = 4, held 14
    cands = [make_candidate(0, 8, 5), make_candidate(1, 8, 2), make_candidate(2, 1, 1), make_candidate(3, 1, 1)]
    # (14,4),(11,4) -> 33; + (11,1) -> 36 + 3 = 39; + (4,0) -> 40; + (4,0) -> 44 > 40
    assert decisions(sched, view, cands) == [True, True, True, False]
    rnd = sched.start_round(view)
    assert rnd.admit(cands[0])
    assert rnd.peaks.lists() == [[(11, 4), (14, 4)]]
    # alone with the running request: cap 30 -> (11, 29): 40 fits; cap 31 -> (11, 30): 41 does not
    assert decisions(sched, view, [make_candidate(0, 8, 30)]) == [True]
    assert decisions(sched, view, [make_candidate(0, 8, 31)]) == [False]
