"""The admission-round arithmetic of the future-peak policies and conservative, compiled by numba.

An admission round works on a few dozen requests and a handful of lists, so written in numpy its
cost was the fixed cost of each call (about a microsecond), not arithmetic: past-future spent most
of a simulation there, 3.6x slower over a whole run than with these functions compiled
(docs/performance.md). So the policies (peak.py, past_future.py, oracle.py, reserve_peak.py,
conservative.py) do their per-request arithmetic here, once: plain Python functions over arrays
and scalars, each compiled by numba's `njit` on first use (or loaded from numba's on-disk cache,
`cache=True`), so runs that never start a future-peak round pay nothing. With numba's own switch
NUMBA_DISABLE_JIT=1 the very same functions run interpreted (slowly), for debugging.

numba is a dependency of llmsim. No fast-math: every value is computed by the same IEEE operations
in the same order as written (numba does not contract a*b + c into a fused multiply-add without
it). tests/test_compiled_kernels.py checks the kernels against a plain numpy reference of the
policies (tests/reference_policies.py) on random inputs.

The kernels live in two modules: _peak_kernels.py holds the list arithmetic every future-peak
policy shares (laying out, sorting and checking the lists, adding a candidate) and the oracle /
reserve-peak rounds ahead; this module holds past-future's sampling (the history window, sampled
final lengths, CounterStream draws), its admission and rounds ahead, and conservative's reserved
blocks, and is the one entry point: every kernel by its public name (compiled on first access),
whichever module defines it.

Units: tokens (float64 arrays holding integers, except sampled final lengths, which interpolate).
"""

from __future__ import annotations

import numpy as np

from ..rng import _GAMMA, _MIX1, _MIX2, _TWO_POW_MINUS_53
from ._peak_kernels import (
    _QUICK_ADMIT_MARGIN,  # noqa: F401 (re-exported, as before the split)
    _add_to_unsorted,
    _bucket_bounds,
    _exact_rounds_ahead,
    _lay_out,
    _peak_fits,
    _refused_by_floor,
    _sort_row,
    _try_add,
)

def _replace_in_sorted(values, old, new):
    """Replace one entry equal to `old` in the ascending array `values` by `new`, in place, keeping
    it ascending (past-future's history window when its oldest value leaves)."""
    n = values.shape[0]
    i = np.searchsorted(values, old)  # the first entry equal to old
    while i + 1 < n and values[i + 1] < new:
        values[i] = values[i + 1]
        i += 1
    while i > 0 and values[i - 1] > new:
        values[i] = values[i - 1]
        i -= 1
    values[i] = new


def _support_points(history_sorted, first, o, cap, cap_when_larger):
    """(points, cap_point) of a running request's support [o] + history_sorted[first:] (+ [cap]):
    the cap ends the support always (LightLLM 2025), or only when larger than the support's last
    value (`cap_when_larger`: the paper artifact's server, FuturePastReqQueue)."""
    w = history_sorted.shape[0]
    last = history_sorted[w - 1] if first < w else o
    cap_point = 1 if (not cap_when_larger or last < cap) else 0
    return w - first + 1 + cap_point, cap_point


def _interpolated_final(history_sorted, first, points, o, cap, u, cap_point, rounded):
    """One sampled final length, as sample_final_output_tokens in past_future.py makes it: position
    u in [0, 1) on the support [o] + history_sorted[first:] (+ [cap] when `cap_point`; `points`
    points, read as equally spaced quantiles), interpolated linearly, rounded half to even when
    `rounded` (LightLLM's round()), and clipped to [o, cap]."""
    w = history_sorted.shape[0]
    if points < 2:
        return min(o, cap)  # the support is o alone
    x = u * (points - 1)
    lo = min(int(x), points - 2)
    frac = x - lo
    v0 = o if lo == 0 else history_sorted[min(max(first + lo - 1, 0), w - 1)]
    if cap_point == 1 and lo + 1 == points - 1:
        v1 = cap
    else:
        v1 = history_sorted[min(first + lo, w - 1)]
    value = v0 + frac * (v1 - v0)
    if rounded:
        value = np.rint(value)
    return min(max(value, o), cap)


def _sampled_growth(generated, caps, prompt_tokens, kv_tokens, history_sorted, u, cap_when_larger, rounded):
    """remaining_growth_tokens(prompt, sample_final_output_tokens(generated, caps, history, u), kv)
    of past_future.py, element by element with the same operations."""
    lists, n = u.shape
    out = np.empty((lists, n))
    for i in range(n):
        o = float(generated[i])
        cap = float(caps[i])
        first = np.searchsorted(history_sorted, o, side="right")  # history values > o start here
        points, cap_point = _support_points(history_sorted, first, o, cap, cap_when_larger)
        for row in range(lists):
            final = _interpolated_final(history_sorted, first, points, o, cap, u[row, i], cap_point, rounded)
            out[row, i] = max(0.0, prompt_tokens[i] + final - 1 - kv_tokens[i])
    return out


def _past_future_admit(pairs, n, is_sorted, state, history_sorted, cand_lo, cand_hi, cand_prompt, cand_kv, cand_held,
                       limit_tokens):
    """past_future._Round.admit in one call: the candidate's history draws from the scheduler's
    CounterStream (`state`; none without history: the cap) and its growth per list
    (_draw_candidate_growth), then _try_add (same returns)."""
    growth = np.empty(pairs.shape[1])
    _draw_candidate_growth(state, history_sorted, cand_lo, cand_hi, cand_prompt, cand_kv, growth)
    return _try_add(pairs, n, is_sorted, cand_held, growth, limit_tokens)


def _draw_candidate_growth(state, history_sorted, cand_lo, cand_hi, cand_prompt, cand_kv, growth):
    """A waiting candidate's growth per list, into `growth`: one history value drawn per list from
    the CounterStream `state` (as CounterStream.integers; no draw without history: the cap),
    clipped to [lo, hi], through remaining_growth_tokens (as past_future._Round.admit in numpy)."""
    w = history_sorted.shape[0]
    for row in range(growth.shape[0]):
        final = cand_hi
        if w:
            final = history_sorted[min(int(_next_uniform(state) * w), w - 1)]
        final = min(max(final, cand_lo), cand_hi)
        growth[row] = max(0.0, cand_prompt + final - 1 - cand_kv)


def _next_uniform(state):
    """The next draw of a CounterStream (llmsim.rng) whose `state` array this advances: the same
    integer operations and conversion to a double as CounterStream.random."""
    u = _uniform_at(state[0], 1)
    state[0] = state[0] + _GAMMA
    return u


# Rounds held ahead inside a fast-forwarded run (llmsim.cluster.fastforward): the rounds due
# `steps[0]`, `steps[1]`, ... decode steps from now, in order, each offered the same head of the
# queue first ([0]: one round now). The running batch comes as columns by request id
# (base.BatchColumns: ids, the columns, clock_base, clock); every running request gains one
# generated and one held token per step. Each returns the index of the first round that admits
# the candidate (len(steps) if none), that round's lists with the candidate in them (for the
# rest of the round) and whether they are sorted. The oracle's and reserve-peak's twin,
# _exact_rounds_ahead, is in _peak_kernels.py.


def _search_right(values, x):
    """np.searchsorted(values, x, side="right") for a scalar x: a plain binary search (about 28 ns
    a search in a 200-value history against 32 ns for numba's searchsorted, on captured rounds)."""
    lo = 0
    hi = values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _uniform_at(key, k):
    """Draw k (counting from 1) of a CounterStream whose state was `key`, without advancing it:
    the counter makes draws addressable, so a kernel can make them in any loop order."""
    s = key + np.uint64(k) * _GAMMA
    z = (s ^ (s >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z ^= z >> np.uint64(31)
    return float(z >> np.uint64(11)) * _TWO_POW_MINUS_53


def _round_draws(lists, n, history_len):
    """The draws one past-future round makes (what a refused round's counter moves past): a
    uniform per running request and list, then one history index per list for the head (none
    without history)."""
    return lists * n + (lists if history_len else 0)


def _past_future_rounds_ahead(state, history_sorted, ids, prompt_col, cap_col, generated_col, kv_col, clock_base, clock,
                              slack_tokens, lists, limit_tokens, steps, cand_lo, cand_hi, cand_prompt, cand_kv, cand_held,
                              cap_when_larger, rounded):
    """past_future._Round at each boundary: the same draws from the scheduler's CounterStream
    (`state`: uniforms for the running requests, list by list, then the head's history indices,
    as CounterStream.random and .integers make them) and the same values as _sampled_growth,
    _draw_candidate_growth and _try_add, fused: each sampled growth goes straight into the lists, and
    each list's sums for _add_to_unsorted are made on the way."""
    n = ids.shape[0]
    w = history_sorted.shape[0]
    generated = np.empty(n, dtype=np.int64)
    kv_tokens = np.empty(n, dtype=np.int64)
    prompt_tokens = np.empty(n, dtype=np.int64)
    caps = np.empty(n)
    for i in range(n):
        r = ids[i]
        behind = clock - clock_base[r]
        generated[i] = generated_col[r] + behind
        kv_tokens[i] = kv_col[r] + behind
        prompt_tokens[i] = prompt_col[r]
        caps[i] = float(cap_col[r])
    pairs = np.empty((2, lists, n + 4))  # _lay_out's layout; a few free columns for the rest of the round
    total_growth = np.empty(lists)
    least_growth = np.empty(lists)
    growth = np.empty(lists)
    for index in range(steps.shape[0]):
        s = steps[index]
        key = state[0]
        total_held = cand_held
        for i in range(n):
            total_held += float(kv_tokens[i] + s + slack_tokens)
        if total_held > limit_tokens:
            # What the lists hold already exceeds the limit, so every list's peak does (growths are
            # >= 0; see _refused_by_floor): the round refuses whatever it draws. Skip its draws by
            # moving the counter past them (the running requests', then the head's).
            state[0] = key + np.uint64(_round_draws(lists, n, w)) * _GAMMA
            continue
        total_growth[:] = 0.0
        least_growth[:] = np.inf
        for i in range(n):
            kv_now = kv_tokens[i] + s
            held = float(kv_now + slack_tokens)
            o = float(generated[i] + s)
            cap = caps[i]
            first = _search_right(history_sorted, o)  # history values > o start here
            points, cap_point = _support_points(history_sorted, first, o, cap, cap_when_larger)
            for row in range(lists):
                final = _interpolated_final(history_sorted, first, points, o, cap, _uniform_at(key, row * n + i + 1),
                                            cap_point, rounded)
                g = max(0.0, prompt_tokens[i] + final - 1 - kv_now)
                pairs[0, row, i] = held
                pairs[1, row, i] = g
                total_growth[row] += g
                least_growth[row] = min(least_growth[row], g)
        state[0] = key + np.uint64(lists * n) * _GAMMA
        _draw_candidate_growth(state, history_sorted, cand_lo, cand_hi, cand_prompt, cand_kv, growth)
        if _add_to_unsorted(pairs, n, total_held, total_growth, least_growth, cand_held, growth, limit_tokens):
            return index, pairs, False
    return steps.shape[0], np.empty((2, lists, 0)), False


def _reserved_blocks_sum(ids, prompt_col, cap_col, block_size, fixed_output_tokens):
    """conservative.reserved_blocks summed over the running requests `ids` (rows of the request
    table's columns): sum of ceil((prompt + reserve - 1) / block_size), in integers, where the
    reserve is each request's cap, or `fixed_output_tokens` when that is >= 0."""
    total = 0
    for i in range(ids.shape[0]):
        r = ids[i]
        reserve = cap_col[r] if fixed_output_tokens < 0 else fixed_output_tokens
        total += -(-(prompt_col[r] + reserve - 1) // block_size)
    return total


_KERNELS = {"reserved_blocks_sum": _reserved_blocks_sum, "replace_in_sorted": _replace_in_sorted, "lay_out": _lay_out, "sort_row": _sort_row, "bucket_bounds": _bucket_bounds, "peak_fits": _peak_fits, "try_add": _try_add, "sampled_growth": _sampled_growth,
            "next_uniform": _next_uniform, "past_future_admit": _past_future_admit, "uniform_at": _uniform_at, "search_right": _search_right, "refused_by_floor": _refused_by_floor, "add_to_unsorted": _add_to_unsorted, "interpolated_final": _interpolated_final, "support_points": _support_points, "draw_candidate_growth": _draw_candidate_growth, "past_future_rounds_ahead": _past_future_rounds_ahead,
            "round_draws": _round_draws, "exact_rounds_ahead": _exact_rounds_ahead}
_CALLS = {"try_add": ("add_to_unsorted", "peak_fits"),
          "add_to_unsorted": ("sort_row", "bucket_bounds", "peak_fits", "refused_by_floor"),
          "past_future_admit": ("draw_candidate_growth", "try_add"),
          "draw_candidate_growth": ("next_uniform",),
          "next_uniform": ("uniform_at",),
          "past_future_rounds_ahead": ("add_to_unsorted", "draw_candidate_growth", "uniform_at", "search_right",
                                       "interpolated_final", "support_points", "round_draws"),
          "sampled_growth": ("interpolated_final", "support_points"),
          "exact_rounds_ahead": ("add_to_unsorted",)}


def python_function(name: str):
    """Kernel `name` as the plain Python function it is compiled from (for a small one that Python
    code calls too: a compiled call from Python costs about 0.3 us, more than such a function)."""
    return _KERNELS[name]


def __getattr__(name: str):
    """Compile a kernel on first access (PEP 562); later accesses find it in this module, whichever
    module defines it. A kernel that calls others finds them compiled
    under their private names in its own module (numba resolves globals when it compiles, in the
    module that defines the function)."""
    if name not in _KERNELS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from numba import njit

    function = _KERNELS[name]
    for callee in _CALLS.get(name, ()):
        function.__globals__["_" + callee] = globals().get(callee) or __getattr__(callee)
    kernel = njit(cache=True, nogil=True)(function)
    globals()[name] = kernel
    return kernel
