"""A plain numpy reference of the future-peak policies' arithmetic, for tests only.

llmsim computes an admission round once, in numba-compiled functions (llmsim/schedulers/_compiled.py,
_peak_kernels.py), which sort incrementally, skip work by bounds and draw random numbers one at a
time. This module says the same things the obvious way (docs/schedulers.md §2):
sort every list, take the peak, draw in blocks. tests/test_compiled_kernels.py checks the kernels
against it on random inputs; test_schedulers.py checks it against hand-computed examples.
Units: tokens.
"""

from __future__ import annotations

import numpy as np

from llmsim.schedulers.peak import remaining_growth_tokens


def future_peak_tokens(held_tokens: np.ndarray, growth_tokens: np.ndarray) -> int:
    """Peak KV tokens over the future of a batch with pairs (held_tokens[i], growth_tokens[i])."""
    if len(held_tokens) == 0:
        return 0
    # A stable sort keeps the result independent of how ties in b are ordered (it is anyway:
    # tied b give the same A_k + k*b_k at the last of the tie, which dominates the others).
    order = np.argsort(-growth_tokens, kind="stable")
    b = growth_tokens[order]
    cum_a = np.cumsum(held_tokens[order])
    k = np.arange(1, len(b) + 1)
    return int((cum_a + k * b).max())


def future_peaks_of_lists(held_tokens: np.ndarray, growth_tokens: np.ndarray) -> np.ndarray:
    """Peak of each row: `held_tokens` is (n,), shared by every list; `growth_tokens` is (lists, n)."""
    lists, n = growth_tokens.shape
    if n == 0:
        return np.zeros(lists)
    order = np.argsort(-growth_tokens, axis=1, kind="stable")
    rows = np.arange(lists)[:, None]
    b = growth_tokens[rows, order]
    cum_a = np.cumsum(held_tokens[order], axis=1)
    return (cum_a + np.arange(1, n + 1) * b).max(axis=1)


def sample_final_output_tokens(generated, caps, history_sorted: np.ndarray, u: np.ndarray,
                               cap_when_larger: bool = False, rounded: bool = False) -> np.ndarray:
    """Draw final lengths for running requests that have generated `generated` tokens.

    `u` (lists, n) in [0, 1) picks a position on each request's support [o] + [h > o] + [cap]
    (the cap only when larger than the last value, with `cap_when_larger`), read as equally spaced
    quantiles and interpolated linearly (rounded half to even with `rounded`); the result is
    clipped to [o, cap].
    """
    o = np.asarray(generated, dtype=np.float64)
    cap = np.asarray(caps, dtype=np.float64)
    w = len(history_sorted)
    first = np.searchsorted(history_sorted, o, side="right")  # history values > o start here
    last = np.where(first < w, history_sorted[w - 1] if w else 0.0, o)  # the support's last value before the cap
    cap_point = np.where(cap_when_larger & (last >= cap), 0, 1)
    points = w - first + 1 + cap_point  # o, the larger history values, (cap)
    x = u * np.maximum(points - 1, 0)
    lo = np.minimum(x.astype(np.int64), np.maximum(points - 2, 0))  # x >= 0, so truncation is floor
    frac = x - lo
    # Support position p is o (p = 0), the cap (p = points - 1, if it is a point) or
    # history_sorted[first + p - 1]. The interval's lower end lo is never the cap.
    if w:
        v0 = np.where(lo == 0, o, history_sorted[np.minimum(np.maximum(first + lo - 1, 0), w - 1)])
        v1 = np.where((cap_point == 1) & (lo + 1 == points - 1), cap, history_sorted[np.minimum(first + lo, w - 1)])
    else:
        v0, v1 = o, cap
    value = v0 + frac * (v1 - v0)
    if rounded:
        value = np.rint(value)
    return np.where(points < 2, np.minimum(o, cap), np.minimum(np.maximum(value, o), cap))


class ReferencePeakRound:
    """PeakAdmissionRound the obvious way: re-sort every list and take its peak at each check."""

    def __init__(self, held_tokens, growth_tokens, limit_tokens: float) -> None:
        self.held_tokens = np.asarray(held_tokens, dtype=np.float64)
        growth = np.asarray(growth_tokens, dtype=np.float64)
        self.growth_tokens = growth if growth.ndim == 2 else growth[None, :]  # (lists, n)
        self.limit_tokens = limit_tokens

    def try_add(self, held: float, growth_per_list) -> bool:
        held_new = np.concatenate((self.held_tokens, [held]))
        column = np.empty((self.growth_tokens.shape[0], 1))
        column[:, 0] = growth_per_list  # one value per list, or one shared by all
        growth_new = np.concatenate((self.growth_tokens, column), axis=1)
        if future_peaks_of_lists(held_new, growth_new).max() > self.limit_tokens:
            return False
        self.held_tokens, self.growth_tokens = held_new, growth_new
        return True

    def lists(self) -> list[list[tuple[float, float]]]:
        """As PeakAdmissionRound.lists: each list's pairs, largest growth first (ties: smaller held)."""
        held = np.broadcast_to(self.held_tokens, self.growth_tokens.shape)
        return [sorted(zip(h.tolist(), g.tolist()), key=lambda p: (-p[1], p[0])) for h, g in zip(held, self.growth_tokens)]


class ReferencePastFutureRound:
    """past-future's round (llmsim.schedulers.past_future._Round) in numpy, drawing from the
    scheduler's own CounterStream in the same order: one row of uniforms per list for the running
    requests, then per candidate one history index per list (no draw without history)."""

    def __init__(self, sched, view) -> None:
        run = view.running
        self.sched = sched
        self.num_lists = sched.num_lists(len(run))
        hist = sched.history.sorted()
        u = sched.stream.random((self.num_lists, len(run)))
        final = sample_final_output_tokens(run.generated_tokens, run.max_new_tokens, hist, u,
                                           sched._cap_when_larger, sched._rounded)
        growth = remaining_growth_tokens(run.prompt_tokens, final, run.kv_tokens)
        self.peaks = ReferencePeakRound(run.kv_tokens + sched._slack_tokens, growth, view.capacity_tokens * sched._limit_fraction)

    def admit(self, candidate) -> bool:
        sched, hist = self.sched, self.sched.history.sorted()
        lo = candidate.generated_tokens + 1
        hi = max(lo, candidate.max_new_tokens)
        if len(hist):
            final = hist[sched.stream.integers(0, len(hist), size=self.num_lists)]
        else:
            final = np.full(self.num_lists, float(candidate.max_new_tokens))  # no history: the cap (no draw)
        growth = remaining_growth_tokens(candidate.prompt_tokens, np.clip(final, lo, hi), candidate.kv_tokens)
        return self.peaks.try_add(candidate.kv_tokens + sched._slack_tokens, growth)


class ReferenceExactRound:
    """The oracle's and reserve-peak's round in numpy: one list, final lengths known (the oracle's
    true lengths, or the caps)."""

    def __init__(self, sched, view) -> None:
        cfg = sched.config
        self.slack = view.block_size - 1 if cfg.per_request_slack_tokens is None else cfg.per_request_slack_tokens
        self.true = getattr(sched, "true_output_tokens", None)  # None: reserve-peak, the caps
        run = view.running
        final = run.max_new_tokens if self.true is None else np.asarray(self.true)[run.request_ids]
        growth = remaining_growth_tokens(run.prompt_tokens, final, run.kv_tokens)
        self.peaks = ReferencePeakRound(run.kv_tokens + self.slack, growth, view.capacity_tokens * (1.0 - cfg.headroom))

    def admit(self, candidate) -> bool:
        final = candidate.max_new_tokens if self.true is None else self.true[candidate.request_id]
        growth = remaining_growth_tokens(candidate.prompt_tokens, final, candidate.kv_tokens)
        return self.peaks.try_add(candidate.kv_tokens + self.slack, np.array([growth]))


def reference_round(sched, view):
    """The numpy reference of `sched.start_round(view)` for a future-peak policy."""
    return ReferencePastFutureRound(sched, view) if sched.kind == "past-future" else ReferenceExactRound(sched, view)
