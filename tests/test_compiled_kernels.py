"""The compiled admission-round kernels (llmsim/schedulers/_compiled.py) decide exactly as the plain
numpy reference of tests/reference_policies.py, kernel by kernel on random inputs; the rounds held
ahead in one call (first_admitting_round, a speed layer) answer as rounds started one by one, and
whole simulations give bit-identical results without that layer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llmsim import scenario_from_dict, simulate
from llmsim.rng import CounterStream
from llmsim.schedulers import SCHEDULERS, _compiled
from llmsim.schedulers.base import BatchColumns, BuildContext, Candidate, ReplicaView, RunningBatch
from llmsim.schedulers.conservative import reserved_blocks
from llmsim.schedulers.peak import PeakAdmissionRound, remaining_growth_tokens
from reference_policies import ReferencePeakRound, future_peaks_of_lists, reference_round, sample_final_output_tokens
from test_fastforward import _scenario

PEAK_POLICIES = ["past-future", "oracle", "reserve-peak"]
# past-future as the paper artifact's server sampled: the cap in the support only when larger, and
# sampled lengths rounded (PastFutureConfig's knobs), through the same kernels
_VARIANTS = {"past-future-artifact": ("past-future", {"cap_in_support": "when-larger", "round_sampled_length": True})}


def _random_batch(rng, n, lists, history_len):
    history = np.sort(rng.integers(1, 500, history_len).astype(float))
    generated = rng.integers(1, 400, n)
    caps = generated + rng.integers(0, 300, n)
    prompt = rng.integers(1, 900, n)
    return history, generated, caps, prompt, prompt + generated - 1, rng.random((lists, n))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), lists=st.integers(1, 5), history_len=st.integers(0, 60),
       cap_when_larger=st.booleans(), rounded=st.booleans())
def test_sampled_growth_equals_numpy_bit_for_bit(seed, n, lists, history_len, cap_when_larger, rounded):
    history, generated, caps, prompt, kv, u = _random_batch(np.random.default_rng(seed), n, lists, history_len)
    final = sample_final_output_tokens(generated, caps, history, u, cap_when_larger, rounded)
    want = remaining_growth_tokens(prompt, final, kv)
    got = _compiled.sampled_growth(generated, caps, prompt, kv, history, u, cap_when_larger, rounded)
    assert got.dtype == np.float64 and np.array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), key=st.integers(0, 2**64 - 1), lists=st.integers(1, 5), history_len=st.integers(0, 60),
       lo=st.integers(1, 300), cap=st.integers(1, 600), prompt=st.integers(1, 900))
def test_candidate_growth_drawn_in_a_kernel_equals_numpy_bit_for_bit(seed, key, lists, history_len, lo, cap, prompt):
    """A waiting candidate's growths as _compiled._draw_candidate_growth draws and makes them, and
    as past_future._Round.admit does in numpy; the same draws consumed (none without history)."""
    rng = np.random.default_rng(seed)
    history = np.sort(rng.integers(1, 500, history_len).astype(float))
    hi, kv = max(lo, cap), prompt + lo - 1
    inside, outside = CounterStream(key), CounterStream(key)
    final = history[outside.integers(0, history_len, size=lists)] if history_len else np.full(lists, float(hi))
    want = remaining_growth_tokens(prompt, np.clip(final, lo, hi), kv)
    got = np.empty(lists)
    _compiled.draw_candidate_growth(inside.state, history, lo, hi, prompt, kv, got)
    assert np.array_equal(got, want)
    assert inside.state[0] == outside.state[0]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), lists=st.integers(1, 5))
def test_compiled_peak_round_admits_exactly_what_numpy_admits(seed, n, lists):
    """Sampled (fractional) and whole growths, one shared growth or one per list, more admissions
    than the spare columns, lists settled by their growth buckets and lists sorted from them."""
    rng = np.random.default_rng(seed)
    history, generated, caps, prompt, kv, u = _random_batch(rng, n, lists, 40)
    growth = remaining_growth_tokens(prompt, sample_final_output_tokens(generated, caps, history, u), kv)
    if rng.random() < 0.3:
        growth = np.floor(growth)  # ties in growth
    held = kv + int(rng.integers(0, 16))
    limit = float(held.sum() + growth.max(initial=0) * n // 2 + rng.integers(0, 30_000))
    reference = ReferencePeakRound(held, growth, limit)
    compiled = PeakAdmissionRound(held, growth, limit)
    for i in range(12):
        cand_held = float(rng.integers(1, 2000))
        cand_growth = rng.integers(0, 600, lists).astype(float) + (rng.random(lists) if i % 2 else 0.0)
        if i % 3 == 0:
            cand_growth = cand_growth[:1]  # one growth shared by every list (oracle, reserve-peak)
        assert compiled.try_add(cand_held, cand_growth) == reference.try_add(cand_held, cand_growth)
    assert compiled.lists() == reference.lists()


def test_the_spec_example_peaks_at_31_compiled():
    """docs/schedulers.md §2: pairs (5,4),(4,3),(5,3),(3,2),(4,2) peak at 31; the fifth fits a limit of
    31 and not of 30."""
    held, growth = np.array([5, 4, 5, 3]), np.array([4, 3, 3, 2])
    assert PeakAdmissionRound(held, growth, 31.0).try_add(4, np.array([2.0]))
    assert not PeakAdmissionRound(held, growth, 30.0).try_add(4, np.array([2.0]))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 400), n=st.integers(0, 120), block_size=st.integers(1, 64))
def test_conservative_reservations_summed_compiled_equal_numpy(seed, rows, n, block_size):
    """conservative's round start: the compiled sum over table rows equals numpy's over the gathered
    batch, and a view with the engine's columns starts the same round as one without."""
    rng = np.random.default_rng(seed)
    prompt, caps = rng.integers(1, 5000, rows), rng.integers(1, 5000, rows)
    ids = rng.choice(rows, size=min(n, rows), replace=False)
    want = int(np.sum(reserved_blocks(prompt[ids], caps[ids], block_size)))
    assert _compiled.reserved_blocks_sum(ids, prompt, caps, block_size, -1) == want
    fixed = int(rng.integers(1, 5000))
    assert _compiled.reserved_blocks_sum(ids, prompt, caps, block_size, fixed) == int(np.sum(reserved_blocks(prompt[ids], fixed, block_size)))
    zeros = np.zeros(rows, dtype=np.int64)
    cols = BatchColumns(ids, prompt, caps, zeros, zeros, zeros, 0, ids)
    run = RunningBatch(ids, prompt[ids], caps[ids], zeros[ids], zeros[ids])
    spec = SCHEDULERS["conservative"]
    sched = spec.factory(spec.config_cls(), BuildContext(0, np.random.default_rng(0), 300))
    with_columns = sched.start_round(ReplicaView(0.0, block_size, 10**6, 10**6, run, cols))
    without = sched.start_round(ReplicaView(0.0, block_size, 10**6, 10**6, run))
    assert with_columns.reserved == without.reserved == want


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 90), lists=st.integers(1, 5))
def test_quick_admission_by_total_agrees_with_the_exact_peak_at_the_edges(seed, n, lists):
    """The compiled round admits without sorting when held + growth in total fit the limit
    (_compiled._try_add). At a limit equal to that total (the bound's own edge, which its margin
    leaves to the exact check), at the exact peak and just below it, both implementations agree,
    and the peak is what future_peaks_of_lists says."""
    rng = np.random.default_rng(seed)
    held = rng.integers(0, 900, n).astype(float)
    growth = rng.integers(0, 400, (lists, n)).astype(float)
    if seed % 2:
        growth += rng.random((lists, n))  # sampled growths are fractional
    cand_held, cand_growth = float(rng.integers(0, 900)), rng.integers(0, 400, lists).astype(float)
    all_held = np.append(held, cand_held)
    all_growth = np.concatenate((growth, cand_growth[:, None]), axis=1)
    peak = float(future_peaks_of_lists(all_held, all_growth).max())
    total = float(all_held.sum() + all_growth.sum(axis=1).max())
    assert peak <= total
    for limit in (total, np.nextafter(total, 0), peak, np.nextafter(peak, 0), peak - 1, total * (1 - 1e-10)):
        reference = ReferencePeakRound(held, growth, limit)
        compiled = PeakAdmissionRound(held, growth, limit)
        assert compiled.try_add(cand_held, cand_growth) == reference.try_add(cand_held, cand_growth) == (peak <= limit)
        assert compiled.lists() == reference.lists()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), lists=st.integers(1, 5),
       spread=st.sampled_from([0.0, 1e-7, 1e-3, 1.0, 50.0, 2000.0]), base=st.sampled_from([0.0, 100.0]),
       most_held=st.sampled_from([1, 10, 900]))
def test_growth_buckets_settle_lists_exactly_at_every_point_of_the_peak(seed, n, lists, spread, base, most_held):
    """Lists near the limit are judged by growth buckets before any sort (_peak_kernels
    _bucket_bounds), and sorted from them when the bounds do not settle it. With the limit at each
    point of a list's peak and just below it (where a bound is tightest), with ties, equal and
    nearly equal growths, both implementations agree, and the verdict is the exact peak's."""
    rng = np.random.default_rng(seed)
    held = rng.integers(0, most_held, n).astype(float)  # little held: peaks inside a bucket of small growths
    growth = base + spread * rng.random((lists, n)) ** 3
    if seed % 3 == 0:
        growth = np.round(growth)  # ties
    cand_held, cand_growth = float(rng.integers(0, most_held)), base + spread * rng.random(lists)
    all_held = np.append(held, cand_held)
    all_growth = np.concatenate((growth, cand_growth[:, None]), axis=1)
    order = np.argsort(-all_growth, axis=1, kind="stable")
    points = np.cumsum(all_held[order], axis=1) + np.arange(1, n + 2) * np.take_along_axis(all_growth, order, axis=1)
    peak = float(future_peaks_of_lists(all_held, all_growth).max())
    for limit in rng.choice(points.ravel(), size=min(6, points.size), replace=False).tolist() + [peak]:
        for edge in (limit, np.nextafter(limit, 0)):
            reference = ReferencePeakRound(held, growth, edge)
            compiled = PeakAdmissionRound(held, growth, edge)
            assert compiled.try_add(cand_held, cand_growth) == reference.try_add(cand_held, cand_growth) == (peak <= edge)
            assert compiled.lists() == reference.lists()


@settings(max_examples=100, deadline=None)
@given(key=st.integers(0, 2**64 - 1), count=st.integers(0, 10**6))
def test_skipping_draws_leaves_the_stream_where_drawing_them_does(key, count):
    """CounterStream.skip (past-future's rounds refused on held tokens before the compiled call)
    moves the counter exactly as making the draws would, wrapping modulo 2**64."""
    skipped, drawn = CounterStream(key), CounterStream(key)
    skipped.skip(count)
    if count:
        drawn.random(count)
    assert skipped.state[0] == drawn.state[0] and skipped.random(3).tolist() == drawn.random(3).tolist()


_draws_kernel = None


def _draws(state, rounds, lists, n, width):
    """Past-future's draws for `rounds` rounds as the held-rounds kernel makes them, one by one
    inside numba (_compiled._next_uniform); compiled once per test session (a kernel made per
    example cost about 0.7 s each)."""
    global _draws_kernel
    if _draws_kernel is None:
        import numba

        next_uniform = _compiled.next_uniform

        @numba.njit
        def draws(state, rounds, lists, n, width):
            u, idx = np.empty((rounds, lists, n)), np.zeros((rounds, lists), dtype=np.int64)
            for r in range(rounds):
                for row in range(lists):
                    for i in range(n):
                        u[r, row, i] = next_uniform(state)
                if width:
                    for row in range(lists):
                        idx[r, row] = min(int(next_uniform(state) * width), width - 1)
            return u, idx

        _draws_kernel = draws
    return _draws_kernel(state, rounds, lists, n, width)


@settings(max_examples=100, deadline=None)
@given(key=st.integers(0, 2**64 - 1), rounds=st.integers(1, 6), lists=st.integers(1, 5), n=st.integers(0, 300),
       width=st.integers(0, 300))
def test_kernels_draw_what_the_counter_stream_draws_in_numpy(key, rounds, lists, n, width):
    """The held-rounds kernel draws past-future's uniforms and history indices one by one inside
    numba (_compiled._next_uniform); numpy draws them in blocks (CounterStream.random, .integers).
    Same numbers, same order, same state after."""
    inside, outside = CounterStream(key), CounterStream(key)
    u, idx = _draws(inside.state, rounds, lists, n, width)
    for r in range(rounds):
        assert np.array_equal(u[r], outside.random((lists, n)))
        if width:
            assert np.array_equal(idx[r], outside.integers(0, width, size=lists))
    assert inside.state[0] == outside.state[0]


def _scheduler_after(kind, seed, true_output, finished):
    """A scheduler of `kind` seeded with `seed` (the oracle knows `true_output`) that has seen the
    requests `finished` finish."""
    name, knobs = _VARIANTS.get(kind, (kind, {}))
    spec = SCHEDULERS[name]
    sched = spec.factory(spec.config_cls(**knobs), BuildContext(0, np.random.default_rng(seed), 300, true_output))
    for h in finished:
        sched.record_finish(int(h))
    return sched


def _held_rounds_case(seed, n, kind):
    """A scheduler of `kind` twice (same seed and history), a view of n running requests, a head
    candidate, and 1-8 round boundaries ahead; capacity near the batch's needs, so rounds admit
    and refuse."""
    rng = np.random.default_rng(seed)
    history, generated, caps, prompt, kv, _ = _random_batch(rng, n, 1, 40)
    true_output = np.concatenate((caps - rng.integers(0, 50, n).clip(0, caps - generated - 1), [int(rng.integers(1, 400))]))
    cand_prompt = int(rng.integers(1, 900))
    cand = Candidate(n, 0.0, cand_prompt, int(rng.integers(true_output[-1], 600)), 0, cand_prompt, -(-cand_prompt // 16))
    run = RunningBatch(np.arange(n), prompt, caps, generated, kv)
    steps = np.cumsum(rng.integers(1, 8, int(rng.integers(1, 9)))) - int(rng.random() < 0.2)  # [0, ...]: a round now
    finished = history[: int(rng.integers(0, 41))]

    def scheduler():
        return _scheduler_after(kind, seed, true_output, finished)

    def view(blocks, s=0):
        ahead = RunningBatch(run.request_ids, prompt, caps, generated + s, kv + s)
        return ReplicaView(0.0, 16, blocks, blocks // 2, ahead)

    # Mostly the smallest capacity at which the last round on its own would admit the head, so
    # that the rounds before it tend to refuse (the batch's peak falls as it nears its end).
    lo, hi = 1, int(kv.sum() + caps.sum() + cand.kv_tokens + 600) // 8
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if scheduler().start_round(view(mid, steps[-1])).admit(cand) else (mid + 1, hi)
    blocks = lo + int(rng.integers(-3, 4)) if rng.random() < 0.8 else int(rng.integers(1, 2 * lo + 2))
    return (scheduler(), scheduler()), view(max(blocks, 1)), run, steps, cand


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 90), kind=st.sampled_from(PEAK_POLICIES + list(_VARIANTS)))
def test_rounds_held_ahead_in_one_call_equal_rounds_started_one_by_one(seed, n, kind):
    """first_admitting_round (one compiled call) answers as the numpy reference round started at
    each boundary and offered the head, draws the same numbers, and hands back a round that goes
    on deciding the same."""
    (bulk, one_by_one), view, run, steps, cand = _held_rounds_case(seed, n, kind)
    found = bulk.first_admitting_round(view, steps, cand)
    index, reference = len(steps), None
    for i, s in enumerate(steps):
        ahead = RunningBatch(run.request_ids, run.prompt_tokens, run.max_new_tokens, run.generated_tokens + s, run.kv_tokens + s)
        rnd = reference_round(one_by_one, ReplicaView(0.0, 16, view.total_blocks, view.free_blocks, ahead))
        if rnd.admit(cand):
            index, reference = i, rnd
            break
    assert found[0] == index
    assert (found[1] is None) == (reference is None)
    if reference is not None:
        assert found[1].peaks.lists() == reference.peaks.lists()
        nxt = Candidate(n + 1, 0.0, 50, 300, 0, 50, 4)
        if kind == "oracle":
            nxt = Candidate(n, 0.0, 50, 300, 0, 50, 4)  # the oracle knows true lengths by id
        assert found[1].admit(nxt) == reference.admit(nxt)
    if kind.startswith("past-future"):
        assert bulk.stream.random(1) == one_by_one.stream.random(1)  # the same draws consumed


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 60), kind=st.sampled_from(PEAK_POLICIES))
def test_rounds_refused_without_sampling_draw_and_answer_as_numpy(seed, n, kind):
    """Rounds whose held tokens alone exceed the limit are refused without drawing (the kernel
    moves the counter past their draws instead), and the others mostly by the smallest-growth
    floor without sorting (_compiled._refused_by_floor): both answer, and consume draws, exactly as
    numpy's rounds at every boundary."""
    rng = np.random.default_rng(seed)
    history, generated, caps, prompt, kv, _ = _random_batch(rng, n, 1, 40)
    run = RunningBatch(np.arange(n), prompt, caps, generated, kv)
    cand = Candidate(n, 0.0, 30, 200, 0, 30, 2)
    steps = np.arange(0, 40, 4)
    held_now = int(kv.sum()) + cand.kv_tokens
    # capacity around what is held now, so that some rounds refuse on held tokens alone
    blocks = max(1, int(held_now * rng.uniform(0.7, 1.4)) // 16)
    true_output = np.concatenate((caps, [100]))
    finished = history[: int(rng.integers(0, 41))]  # drawn once: both schedulers see the same history
    bulk, one_by_one = (_scheduler_after(kind, seed, true_output, finished) for _ in range(2))
    index, _ = bulk.first_admitting_round(ReplicaView(0.0, 16, blocks, blocks, run), steps, cand)
    want = len(steps)
    for i, s in enumerate(steps):
        ahead = RunningBatch(run.request_ids, prompt, caps, generated + s, kv + s)
        if reference_round(one_by_one, ReplicaView(0.0, 16, blocks, blocks, ahead)).admit(cand):
            want = i
            break
    assert index == want
    if kind == "past-future":
        assert bulk.stream.state[0] == one_by_one.stream.state[0]  # the same draws consumed


def _run(sc: dict, rounds_at_once: bool, monkeypatch):
    if not rounds_at_once:  # the engine then starts each round itself (start_round + admit)
        for spec in SCHEDULERS.values():
            if hasattr(spec.factory, "first_admitting_round"):
                monkeypatch.delattr(spec.factory, "first_admitting_round")
    return simulate(scenario_from_dict(sc))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data(), kind=st.sampled_from(PEAK_POLICIES))
def test_simulations_are_identical_without_rounds_held_in_one_call(data, kind, monkeypatch):
    """first_admitting_round is a speed layer (the engine's rounds and fast-forward's rounds held
    ahead in one compiled call): without it a simulation gives the same results, bit for bit."""
    sc = _scenario(data.draw)
    knobs = {"decode_steps_between_rounds": data.draw(st.integers(0, 3))}
    if kind == "past-future":
        knobs["history_window"] = data.draw(st.integers(5, 50))
    sc["scheduler"] = {"kind": kind, kind: knobs}
    with monkeypatch.context() as m:
        reference = _run(sc, False, m)
    layered = _run(sc, True, monkeypatch)
    assert reference.requests.equals(layered.requests)
    assert reference.summary == layered.summary
    assert reference.steps.equals(layered.steps)


@settings(max_examples=100, deadline=None)
@given(window=st.integers(1, 60), prior=st.integers(0, 60), values=st.lists(st.integers(1, 80), max_size=300))
def test_history_kept_sorted_in_place_equals_sorting_the_window(window, prior, values):
    """Past-future's history window, once full, moves one entry per finish in place
    (_compiled.replace_in_sorted); it must equal sorting the window afresh, ties included."""
    from llmsim.schedulers.past_future import LengthHistory

    history = LengthHistory(window, 40, prior)
    for i, v in enumerate(values):
        history.append(v)
        if i % 3 == 0 or i == len(values) - 1:
            want = np.sort(np.array(list(history._fifo), dtype=np.float64))
            assert np.array_equal(history.sorted(), want)
