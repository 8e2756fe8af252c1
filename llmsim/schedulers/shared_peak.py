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
equal keys before it; for all pairs at once, from the chains sorted: `common_prefix_matrix`).
In the sorted order, request i's blocks held by an earlier (longer-lived)
request are its first max over earlier j of LCP(i, j) blocks.

Speed (the same integers and the same sums in the same order, so the same peaks bit for bit):
- sorted chains: the LCP of two chains is the smallest adjacent LCP between them in lexicographic
  order, so a round keeps the chains sorted with their adjacent LCPs (`SortedChains`: carried
  from the replica's last round, only the chains that left or came are removed or inserted), and
  a candidate's LCP with every request is two bisections and two running minima away;
- a round's start: with m the smallest adjacent LCP, chains of different groups (split where the
  adjacent LCP is m) share exactly m blocks, so only groups of two or more are compared pairwise
  (`_earlier_per_list`), not all n x n pairs;
- a try: the candidate is the last index, so in each list's stable order it follows every request
  of growth >= its own and raises only the earlier-held blocks of those after it, by its LCP
  with them: O(n) numpy for all lists at once instead of rebuilding n x n matrices per list.

Plain numpy, not compiled: used only with prefix caching on (past-future.py and oracle.py pick it
when the view has `prefix_chain`). Units: tokens (block counts times the block size).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter

import numpy as np

from .peak import PeakAdmissionRound


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
    if len(held) == 0:
        return 0.0
    order = np.argsort(-growth, kind="stable")
    return _peak(held, growth, order, _earlier_blocks(lcp, order), block_size)


def _earlier_blocks(lcp: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per request (by index), the most blocks it shares with a request before it in `order`."""
    n = len(order)
    rank = np.empty(n, dtype=np.intp)
    rank[order] = np.arange(n)
    return np.max(lcp, axis=1, initial=0, where=rank[None, :] < rank[:, None])


def _peak(held: np.ndarray, growth: np.ndarray, order: np.ndarray, earlier: np.ndarray, block_size: int) -> float:
    """max over k of (A_k + k * b_k) in `order`, a request's held tokens less its earlier-held blocks."""
    a = held[order] - block_size * earlier[order]
    return float(np.max(np.cumsum(a) + np.arange(1, len(order) + 1) * growth[order]))


def _peaks(held: np.ndarray, growth: np.ndarray, order: np.ndarray, earlier: np.ndarray, block_size: int) -> np.ndarray:
    """`_peak` of every list at once (rows of `growth`, `order`, `earlier`): the same elementwise
    operations, and cumsum along a row adds in the same order, so the same floats."""
    a = held[order] - block_size * np.take_along_axis(earlier, order, axis=1)
    ranks = np.arange(1, order.shape[1] + 1)
    return np.max(np.cumsum(a, axis=1) + ranks * np.take_along_axis(growth, order, axis=1), axis=1)


def _earlier_per_list(by_chain: list[int], adjacent: np.ndarray, growth: np.ndarray) -> np.ndarray:
    """`_earlier_blocks` for each list (row of `growth`), in index order, from the chains' sorted
    order `by_chain` and adjacent LCPs. With m the smallest adjacent LCP, the sorted positions whose
    adjacent LCP is m split the chains into groups: two chains of different groups share exactly m
    blocks, two of one group at least m. So a request's earlier-held blocks are m (0 if first in its
    list), or more from an earlier request of its group: an n x n comparison only among the
    requests of groups of two or more (few: chat sessions share only their system prompt)."""
    lists, n = growth.shape
    m = int(adjacent.min())
    order = np.argsort(-growth, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), (lists, n)), axis=1)
    earlier = np.where(rank > 0, m, 0).astype(np.int64)
    above = adjacent > m
    grouped = np.zeros(n, dtype=bool)
    grouped[:-1] |= above
    grouped[1:] |= above
    pos = np.flatnonzero(grouped)  # sorted positions in groups of two or more
    if len(pos):
        # LCP of consecutive ones among them: the smallest adjacent LCP in between
        sub = _sorted_lcp(np.minimum.reduceat(adjacent[:pos[-1]], pos[:-1]))
        idx = np.asarray(by_chain)[pos]
        sub_rank = rank[:, idx]
        before = sub_rank[:, None, :] < sub_rank[:, :, None]  # [l, i, j]: j comes before i in list l
        found = np.max(np.broadcast_to(sub, (lists, len(pos), len(pos))), axis=2, initial=0, where=before)
        earlier[:, idx] = np.maximum(earlier[:, idx], found)
    return earlier


def _sorted_lcp(adjacent: np.ndarray) -> np.ndarray:
    """s[p, q] = common prefix of the chains at sorted positions p and q: the smallest adjacent
    LCP between them (0 on the diagonal), as running minima along each row."""
    n = len(adjacent) + 1
    top = np.iinfo(np.int64).max
    x = np.broadcast_to(np.concatenate(([top], adjacent)), (n, n)).copy()  # x[p, q] = adjacent[q - 1]
    below = np.arange(n)[None, :] <= np.arange(n)[:, None]
    x[below] = top  # before position p + 1: no effect on the minima
    np.minimum.accumulate(x, axis=1, out=x)
    x[below] = 0
    return x + x.T


def common_prefix_matrix(chains: list[tuple]) -> np.ndarray:
    """lcp[i, j] = common prefix blocks of chains i and j (0 on the diagonal, unused). Sorted
    lexicographically, the common prefix of two chains is the smallest of the adjacent ones
    between them: n - 1 bisections instead of n^2 / 2."""
    order, adjacent = _sort_chains(chains)
    return _lcp_in_index_order(order, adjacent)


def _sort_chains(chains: list[tuple]) -> tuple[list[int], np.ndarray]:
    """(indices of `chains` in lexicographic order, LCP of each adjacent pair in that order)."""
    order = sorted(range(len(chains)), key=chains.__getitem__)
    adjacent = [common_prefix_blocks(chains[a], chains[b]) for a, b in zip(order, order[1:])]
    return order, np.array(adjacent, dtype=np.int64)


def _lcp_in_index_order(order: list[int], adjacent: np.ndarray) -> np.ndarray:
    n = len(order)
    lcp = np.zeros((n, n), dtype=np.int64)
    if n > 1 and adjacent.any():
        pos = np.asarray(order)
        lcp[pos[:, None], pos[None, :]] = _sorted_lcp(adjacent)
    return lcp


class SortedChains:
    """The chains of a replica's last round in lexicographic order with their adjacent LCPs, kept
    by its scheduler from round to round: the running requests barely change between rounds, so a
    round removes the chains that left and inserts the new ones (found by identity: a running
    request's chain is the same tuple every round) instead of sorting them all again. A cache
    only: any list of chains gets the same sorted chains and adjacent LCPs as `_sort_chains`."""

    def __init__(self) -> None:
        self.sorted: list[tuple] = []
        self.adjacent: list[int] = []

    def update(self, chains: list[tuple]) -> tuple[list[int], np.ndarray, list[tuple]]:
        """(indices of `chains` in sorted order, adjacent LCPs, the sorted chains (a copy))."""
        want = Counter(map(id, chains))
        srt, adj, run = [], [], 0
        last = len(self.sorted) - 1
        for k, chain in enumerate(self.sorted):  # keep those still there; LCP across a removed one: the minimum
            if want[id(chain)] > 0:
                want[id(chain)] -= 1
                if srt:
                    adj.append(run)
                srt.append(chain)
                run = None
            if k < last and srt:
                run = self.adjacent[k] if run is None else min(run, self.adjacent[k])
        for chain in chains:
            if want[id(chain)] > 0:
                want[id(chain)] -= 1
                pos = bisect_right(srt, chain)
                pieces = ([common_prefix_blocks(srt[pos - 1], chain)] if pos > 0 else []) + \
                         ([common_prefix_blocks(chain, srt[pos])] if pos < len(srt) else [])
                adj[max(pos - 1, 0):pos] = pieces
                srt.insert(pos, chain)
        self.sorted, self.adjacent = srt, adj
        where: dict[int, list[int]] = {}
        for i, chain in enumerate(chains):
            where.setdefault(id(chain), []).append(i)
        return [where[id(c)].pop() for c in srt], np.array(adj, dtype=np.int64), list(srt)


class SharedPeakRound:
    """A future-peak admission round with shared prefixes counted once (see the module docstring);
    the same answers as peak.PeakAdmissionRound when nothing is shared."""

    def __init__(self, held_tokens, growth_tokens, limit_tokens: float, chains: list[tuple], block_size: int,
                 index: SortedChains | None = None) -> None:
        held = np.asarray(held_tokens, dtype=np.float64)
        growth = np.asarray(growth_tokens, dtype=np.float64)
        growth = growth if growth.ndim == 2 else growth[None, :]  # (lists, n)
        self.limit_tokens = limit_tokens
        self.block_size = block_size
        self.chains = list(chains)
        n = len(self.chains)
        if index is None:
            self._by_chain, self._adjacent = _sort_chains(self.chains)  # indices in chain order, adjacent LCPs
            self._sorted = [self.chains[i] for i in self._by_chain]
        else:
            self._by_chain, self._adjacent, self._sorted = index.update(self.chains)
        self._lcp = None  # built if asked (peaks)
        self.held, self.growth = held, growth
        # per list (rows): each request's blocks held by a request before it in the list's order
        self._earlier = _earlier_per_list(self._by_chain, self._adjacent, growth) if n > 1 and self._adjacent.any() \
            else np.zeros(growth.shape, dtype=np.int64)

    @property
    def lcp(self) -> np.ndarray:
        """lcp[i, j] = blocks requests i and j share (index order: running, then admitted)."""
        if self._lcp is None:
            self._lcp = _lcp_in_index_order(self._by_chain, self._adjacent)
        return self._lcp

    @property
    def num_lists(self) -> int:
        return self.growth.shape[0]

    def peaks(self) -> list[float]:
        """The peak of each list (tests and inspection)."""
        return [shared_peak_tokens(self.held, g, self.lcp, self.block_size) for g in self.growth]

    def _row(self, chain: tuple) -> tuple[int, np.ndarray]:
        """(sorted position of `chain`, its LCP with each request by index)."""
        n, srt, adj = len(self.chains), self._sorted, self._adjacent
        pos = bisect_right(srt, chain)
        left = common_prefix_blocks(chain, srt[pos - 1]) if pos > 0 else 0
        right = common_prefix_blocks(chain, srt[pos]) if pos < n else 0
        by_sorted = np.empty(n, dtype=np.int64)
        # to the left: min(left, adjacent[k .. pos-2]); to the right: min(right, adjacent[pos .. k-1])
        by_sorted[:pos] = np.minimum.accumulate(np.concatenate(([left], adj[:max(pos - 1, 0)][::-1])))[::-1][:pos]
        by_sorted[pos:] = np.minimum.accumulate(np.concatenate(([right], adj[pos:])))[:n - pos]
        row = np.empty(n, dtype=np.int64)
        row[self._by_chain] = by_sorted
        return pos, row

    def try_add(self, held: float, growth_per_list, chain: tuple) -> bool:
        """Admit a candidate holding `held` tokens, growing by `growth_per_list` (one per list or
        one for all), holding the cached blocks `chain`, if every list's peak with it fits."""
        growth = np.broadcast_to(np.asarray(growth_per_list, dtype=np.float64).reshape(-1), (self.num_lists,))
        pos, row = self._row(chain)
        n = len(self.chains)
        held_all = np.append(self.held, held)
        growth_all = np.concatenate((self.growth, growth[:, None]), axis=1)
        # the candidate is the last index: in each list's stable order it comes after every request
        # of growth >= its own, so it raises the earlier-held blocks of those with less growth only
        after = self.growth < growth[:, None]
        earlier = np.empty(growth_all.shape, dtype=np.int64)
        earlier[:, :n] = np.where(after, np.maximum(self._earlier, row), self._earlier)
        earlier[:, n] = np.max(np.where(after, 0, row), axis=1, initial=0)
        order = np.argsort(-growth_all, axis=1, kind="stable")
        if (_peaks(held_all, growth_all, order, earlier, self.block_size) > self.limit_tokens).any():
            return False
        self.held, self.growth, self._earlier = held_all, growth_all, earlier
        self._insert(chain, pos, row)
        return True

    def _insert(self, chain: tuple, pos: int, row: np.ndarray) -> None:
        """Add an admitted chain at its sorted position `pos` (LCPs with the others: `row`)."""
        n = len(self.chains)
        self._lcp = None  # rebuilt if asked (peaks)
        # adjacent LCPs left | right replace the one across the chain's place
        srt, adj, by_chain = self._sorted, self._adjacent, self._by_chain
        pieces = ([row[by_chain[pos - 1]]] if pos > 0 else []) + ([row[by_chain[pos]]] if pos < n else [])
        self._adjacent = np.concatenate((adj[:max(pos - 1, 0)], np.array(pieces, dtype=np.int64), adj[pos:]))
        srt.insert(pos, chain)
        by_chain.insert(pos, n)
        self.chains.append(chain)


def future_peak_round(held_tokens, growth_tokens, limit_tokens: float, view, sorted_chains: SortedChains | None = None):
    """The peak tracker of one admission round over `view`'s running batch: peak.PeakAdmissionRound,
    or with prefix caching (`view.prefix_chain`) a SharedPeakRound over the requests' key chains.
    One place for the choice that past-future, the oracle and reserve-peak make alike."""
    if view.prefix_chain is None:
        return PeakAdmissionRound(held_tokens, growth_tokens, limit_tokens)
    chains = [view.prefix_chain(int(r)) for r in view.running.request_ids]
    return SharedPeakRound(held_tokens, growth_tokens, limit_tokens, chains, view.block_size, sorted_chains)
