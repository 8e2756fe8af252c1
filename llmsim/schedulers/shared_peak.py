"""The future peak (peak.py) when requests share cached prompt blocks (engine.prefix_caching).

A block that several requests hold (a shared prefix, llmsim.prefix_cache) is in memory once, and
it stays there while any of them runs: until the one that finishes last finishes. So in each list
of (held a, growth b) pairs, a shared block is counted with the request that holds it and has the
largest growth b (it outlives the others; ties: the earlier in the list's order); the others'
held tokens leave it out. peak.py's formula, max over k of (A_k + k * b_k) with the requests
sorted by b (largest first), then counts it at b_k exactly while one of its holders is alive: at
step b_k the first k requests are alive, and the block's owner is among them as soon as any of
its holders is.

Prefixes are compared through their block keys: two requests share exactly the common prefix of
their key chains (equal keys mean equal tokens from the prompt's start), whose length is their
longest common prefix (LCP, found by bisection: keys are chained, so equal keys at a depth mean
equal keys before it; for a whole batch, from the chains sorted in order: `common_prefix_matrix`).
In the sorted order, request i's blocks held by an earlier (longer-lived)
request are its first max over earlier j of LCP(i, j) blocks.

Plain numpy, not compiled: used only with prefix caching on (past-future.py and oracle.py pick it
when the view has `prefix_chain`). Units: tokens (block counts times the block size).
"""

from __future__ import annotations

import numpy as np


def common_prefix_blocks(a: tuple, b: tuple) -> int:
    """Length of the common prefix of two key chains (bisection: chained keys agree on a prefix)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # invariant: a[:lo] == b[:lo]
        mid = (lo + hi + 1) // 2
        if a[mid - 1] == b[mid - 1]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def shared_peak_tokens(held: np.ndarray, growth: np.ndarray, lcp: np.ndarray, block_size: int) -> float:
    """The future peak of one list: `held` and `growth` per request, `lcp[i, j]` the blocks
    requests i and j share. Each shared block counts once, with its longest-lived holder."""
    n = len(held)
    if n == 0:
        return 0.0
    order = np.argsort(-growth, kind="stable")
    shared = lcp[np.ix_(order, order)]
    # blocks of each request already held by a request earlier in the order (strict lower triangle)
    earlier = np.tril(shared, -1).max(axis=1) if n > 1 else np.zeros(1, dtype=np.int64)
    a = held[order] - block_size * earlier
    b = growth[order]
    return float(np.max(np.cumsum(a) + np.arange(1, n + 1) * b))


def common_prefix_matrix(chains: list[tuple]) -> np.ndarray:
    """lcp[i, j] = common prefix blocks of chains i and j (0 on the diagonal, unused). Sorted
    lexicographically, the common prefix of two chains is the smallest of the adjacent ones
    between them: n - 1 bisections instead of n^2 / 2."""
    n = len(chains)
    lcp = np.zeros((n, n), dtype=np.int64)
    if n < 2:
        return lcp
    order = sorted(range(n), key=chains.__getitem__)
    adjacent = np.array([common_prefix_blocks(chains[a], chains[b]) for a, b in zip(order, order[1:])], dtype=np.int64)
    pos = np.asarray(order)
    for p in range(n - 1):
        row = np.minimum.accumulate(adjacent[p:])  # sorted positions p+1, p+2, ...
        lcp[pos[p], pos[p + 1:]] = row
        lcp[pos[p + 1:], pos[p]] = row
    return lcp


class SharedPeakRound:
    """A future-peak admission round with shared prefixes counted once (see the module docstring);
    the same answers as peak.PeakAdmissionRound when nothing is shared."""

    def __init__(self, held_tokens, growth_tokens, limit_tokens: float, chains: list[tuple], block_size: int) -> None:
        self.held = np.asarray(held_tokens, dtype=np.float64)
        growth = np.asarray(growth_tokens, dtype=np.float64)
        self.growth = growth if growth.ndim == 2 else growth[None, :]  # (lists, n)
        self.limit_tokens = limit_tokens
        self.block_size = block_size
        self.chains = list(chains)
        self.lcp = common_prefix_matrix(self.chains)

    @property
    def num_lists(self) -> int:
        return self.growth.shape[0]

    def peaks(self) -> list[float]:
        """The peak of each list (tests and inspection)."""
        return [shared_peak_tokens(self.held, g, self.lcp, self.block_size) for g in self.growth]

    def try_add(self, held: float, growth_per_list, chain: tuple) -> bool:
        """Admit a candidate holding `held` tokens, growing by `growth_per_list` (one per list or
        one for all), holding the cached blocks `chain`, if every list's peak with it fits."""
        growth = np.broadcast_to(np.asarray(growth_per_list, dtype=np.float64).reshape(-1), (self.num_lists,))
        row = np.array([common_prefix_blocks(chain, c) if chain and c and c[0] == chain[0] else 0 for c in self.chains],
                       dtype=np.int64)
        n = len(self.chains)
        lcp = np.zeros((n + 1, n + 1), dtype=np.int64)
        lcp[:n, :n], lcp[n, :n], lcp[:n, n] = self.lcp, row, row
        held_all = np.append(self.held, held)
        growth_all = np.concatenate((self.growth, growth[:, None]), axis=1)
        if any(shared_peak_tokens(held_all, g, lcp, self.block_size) > self.limit_tokens for g in growth_all):
            return False
        self.held, self.growth, self.lcp = held_all, growth_all, lcp
        self.chains.append(chain)
        return True
