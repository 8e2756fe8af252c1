"""The future-peak policies' list arithmetic, compiled by numba: the kernels shared by
every future-peak policy (peak.py, past_future.py) and the oracle / reserve-peak rounds ahead.

Plain Python functions: _compiled.py compiles them (numba, `cache=True`) on first use, after
putting the compiled kernels they call in this module under their private names (numba resolves
globals when it compiles), and re-exports them; use them through `_compiled`. How they are checked:
see _compiled.py.

Units: tokens (float64 arrays holding integers).
"""

from __future__ import annotations

import numpy as np

# Lists of (held, growth) pairs, laid out as pairs[0, list, i] = held, pairs[1, list, i] = growth,
# with free columns after the first n for admissions. A list's future peak, max over k of
# A_k + k * b_k, needs it sorted by growth (largest first), but never exceeds the list's total
# held plus total growth (b_k <= each of b_1..b_k, all b >= 0). Most rounds admit their candidate
# with every list's total well inside the limit, so lists start unsorted and `_try_add` judges
# only the lists whose total does not fit, one at a time (by growth buckets, and sorted in place
# when those do not settle it, below), stopping at the first whose exact peak does not fit. The
# bound only admits what the exact check admits: the margin covers the rounding of the sums
# (relative error below 1e-12 for any plausible batch).
_QUICK_ADMIT_MARGIN = 1.0 - 1e-9


def _lay_out(held_tokens, growth_tokens, spare):
    """Unsorted lists (see above) of the requests with `held_tokens` (n,), the same in every list,
    and `growth_tokens` (lists, n), with `spare` free columns."""
    lists, n = growth_tokens.shape
    pairs = np.empty((2, lists, n + spare))
    for row in range(lists):
        for i in range(n):
            pairs[0, row, i] = held_tokens[i]
            pairs[1, row, i] = growth_tokens[row, i]
    return pairs


# Lists whose total does not fit are judged through growth buckets first: the pairs (and the
# candidate) go to _BUCKETS equal ranges of growth between the list's smallest and largest, and a
# bucket's pairs come, in the list's sorted order, after every pair of the buckets above it. So at
# the point k that ends bucket j, the peak's formula reads exactly H + C * (j's smallest growth),
# with H and C the held tokens and the count of buckets >= j (held tokens are whole numbers, so H
# is the same sum in any order, and these are _peak_fits's own operands: a refusal here is its
# refusal); and every point inside bucket j is at most H + C * (j's largest growth) (rounding is
# monotone). Most lists near the limit are settled by these bounds, without sorting (2026-12-05:
# past-future's compiled rounds 16.2 -> 13.6 us a call, on 25,072 calls captured from a 20k run),
# and the rest are sorted from their buckets (a counting sort, then insertion within buckets).
_BUCKETS = 64


def _bucket_bounds(pairs, row, n, held, g, least_growth, limit_tokens, buckets):
    """For list `row` of n unsorted pairs with the candidate (held, g) added, whose smallest growth
    is `least_growth`: 1 if its peak certainly fits `limit_tokens`, 0 if it certainly does not,
    -1 if only sorting tells (each pair's bucket is then in `buckets`, for _sort_row)."""
    largest = g
    for i in range(n):
        largest = max(largest, pairs[1, row, i])
    span = largest - least_growth
    scale = _BUCKETS / span if span > 1e-9 else 0.0  # (equal growths: one bucket)
    count = np.zeros(_BUCKETS, dtype=np.int64)
    held_sum = np.zeros(_BUCKETS)
    most = np.full(_BUCKETS, -np.inf)
    least = np.full(_BUCKETS, np.inf)
    for i in range(n + 1):
        gi = pairs[1, row, i] if i < n else g
        j = min(int((gi - least_growth) * scale), _BUCKETS - 1)  # monotone in gi
        if i < n:
            buckets[i] = j
        count[j] += 1
        held_sum[j] += pairs[0, row, i] if i < n else held
        most[j] = max(most[j], gi)
        least[j] = min(least[j], gi)
    cum_held = 0.0
    k = 0
    verdict = 1
    for j in range(_BUCKETS - 1, -1, -1):
        if count[j]:
            cum_held += held_sum[j]
            k += count[j]
            if cum_held + k * least[j] > limit_tokens:
                return 0
            if cum_held + k * most[j] > limit_tokens:
                verdict = -1
    return verdict


def _sort_row(pairs, row, n, buckets):
    """Sort the first n pairs of list `row` by growth, largest first (ties in any order: the peak
    does not depend on it, peak.py), given each pair's growth bucket (_bucket_bounds): placed by
    bucket, largest first (a counting sort), then an insertion sort (moves only within buckets)."""
    start = np.zeros(_BUCKETS + 1, dtype=np.int64)
    for i in range(n):
        start[_BUCKETS - buckets[i]] += 1
    for j in range(_BUCKETS):
        start[j + 1] += start[j]
    held = np.empty(n)
    growth = np.empty(n)
    for i in range(n):
        j = _BUCKETS - 1 - buckets[i]
        held[start[j]] = pairs[0, row, i]
        growth[start[j]] = pairs[1, row, i]
        start[j] += 1
    for i in range(n):
        h = held[i]
        g = growth[i]
        pos = i
        while pos > 0 and growth[pos - 1] < g:
            held[pos] = held[pos - 1]
            growth[pos] = growth[pos - 1]
            pos -= 1
        held[pos] = h
        growth[pos] = g
    for i in range(n):
        pairs[0, row, i] = held[i]
        pairs[1, row, i] = growth[i]


def _peak_fits(pairs, row, n, held, g, limit_tokens):
    """Whether sorted list `row` of n pairs, with (held, g) added in its place, peaks at most
    `limit_tokens`."""
    cum_held = 0.0
    k = 0
    placed = False
    for i in range(n):
        b = pairs[1, row, i]
        if not placed and b < g:
            placed = True
            k += 1
            cum_held += held
            if cum_held + k * g > limit_tokens:
                return False
        k += 1
        cum_held += pairs[0, row, i]
        if cum_held + k * b > limit_tokens:
            return False
    if not placed:
        k += 1
        cum_held += held
        if cum_held + k * g > limit_tokens:
            return False
    return True


def _refused_by_floor(total_held, count, least_growth, limit_tokens):
    """Whether a list of `count` pairs holding `total_held` in all, whose smallest growth is
    `least_growth`, certainly peaks above `limit_tokens`, without sorting it. The last point of
    the peak (k = count: every request has grown by the smallest growth) is total_held + count *
    least_growth, and _peak_fits computes that point with the same operands (the held sum is a sum
    of whole tokens, exact in any order): if it exceeds the limit, _peak_fits refuses too.
    In a round near a full replica most refusals are decided here (97 % of them in a 100k-request
    past-future run), and then no list is sorted."""
    return total_held + count * least_growth > limit_tokens


def _try_add(pairs, n, is_sorted, held, growth_per_list, limit_tokens):
    """Add a request (held, one growth per list, or one for all) to the lists `pairs` of n pairs
    (see above; `is_sorted`: all sorted, else any may not be) if every list's future peak stays
    at most `limit_tokens`. Returns 1 if added to sorted lists (kept sorted), 2 if added to lists
    that may be unsorted, 0 if refused by sorted lists, 3 if refused by lists that may not all be
    sorted. The caller guarantees a free column."""
    lists = pairs.shape[1]
    shared = growth_per_list.shape[0] == 1
    if is_sorted:
        for row in range(lists):
            if not _peak_fits(pairs, row, n, held, growth_per_list[0] if shared else growth_per_list[row], limit_tokens):
                return 0
        for row in range(lists):
            g = growth_per_list[0] if shared else growth_per_list[row]
            pos = n
            while pos > 0 and pairs[1, row, pos - 1] < g:  # shift smaller growths right
                pairs[0, row, pos] = pairs[0, row, pos - 1]
                pairs[1, row, pos] = pairs[1, row, pos - 1]
                pos -= 1
            pairs[0, row, pos] = held
            pairs[1, row, pos] = g
        return 1
    total_held = held
    for i in range(n):
        total_held += pairs[0, 0, i]  # the same held values in every list
    total_growth = np.zeros(lists)
    least_growth = np.full(lists, np.inf)
    for row in range(lists):
        for i in range(n):
            g = pairs[1, row, i]
            total_growth[row] += g
            least_growth[row] = min(least_growth[row], g)
    return 2 if _add_to_unsorted(pairs, n, total_held, total_growth, least_growth, held, growth_per_list, limit_tokens) else 3


def _add_to_unsorted(pairs, n, total_held, total_growth, least_growth, held, growth_per_list, limit_tokens):
    """_try_add on lists that may be unsorted, given their sums: `total_held` (the n requests' held
    tokens plus the candidate's `held`), and per list the n requests' total and smallest growth.
    A list whose total fits needs no peak (see above); one that does not is refused by
    _refused_by_floor if it can be, else judged by its growth buckets, else sorted and checked
    exactly. Adds the candidate (True) or not (False)."""
    lists = pairs.shape[1]
    shared = growth_per_list.shape[0] == 1
    quick_limit = limit_tokens * _QUICK_ADMIT_MARGIN
    buckets = np.empty(n, dtype=np.int64)
    for row in range(lists):
        g = growth_per_list[0] if shared else growth_per_list[row]
        if total_held + total_growth[row] + g > quick_limit:
            least = min(least_growth[row], g)
            if _refused_by_floor(total_held, n + 1, least, limit_tokens):
                return False
            verdict = _bucket_bounds(pairs, row, n, held, g, least, limit_tokens, buckets)
            if verdict == 0:
                return False
            if verdict == -1:
                _sort_row(pairs, row, n, buckets)
                if not _peak_fits(pairs, row, n, held, g, limit_tokens):
                    return False
    for row in range(lists):  # appended: a list sorted above may no longer be
        pairs[0, row, n] = held
        pairs[1, row, n] = growth_per_list[0] if shared else growth_per_list[row]
    return True


# Rounds held ahead inside a fast-forwarded run: see _compiled.py (the same interface as
# _past_future_rounds_ahead there).


def _exact_rounds_ahead(ids, final_col, prompt_col, kv_col, clock_base, clock, slack_tokens, limit_tokens, steps, cand_growth,
                        cand_held):
    """One list with known final lengths `final_col` by request id (oracle: the true ones;
    reserve-peak: the caps): growth = max(0, prompt + final - 1 - held now), as
    remaining_growth_tokens, written straight into the list with its sums made on the way
    (as _lay_out and _try_add on an unsorted list)."""
    n = ids.shape[0]
    base = np.empty(n, dtype=np.int64)  # prompt + final - 1 - held now
    kv_tokens = np.empty(n, dtype=np.int64)
    for i in range(n):
        r = ids[i]
        kv_tokens[i] = kv_col[r] + clock - clock_base[r]
        base[i] = prompt_col[r] + final_col[r] - 1 - kv_tokens[i]
    pairs = np.empty((2, 1, n + 4))
    total_growth = np.empty(1)
    least_growth = np.empty(1)
    growth = np.full(1, cand_growth)
    for index in range(steps.shape[0]):
        s = steps[index]
        total_held = cand_held
        total_growth[0] = 0.0
        least_growth[0] = np.inf
        for i in range(n):
            g = float(max(0, base[i] - s))
            h = float(kv_tokens[i] + s + slack_tokens)
            pairs[0, 0, i] = h
            pairs[1, 0, i] = g
            total_held += h
            total_growth[0] += g
            least_growth[0] = min(least_growth[0], g)
        if _add_to_unsorted(pairs, n, total_held, total_growth, least_growth, cand_held, growth, limit_tokens):
            return index, pairs, False
    return steps.shape[0], np.empty((2, 1, 0)), False
