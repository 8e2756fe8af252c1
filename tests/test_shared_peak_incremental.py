"""The incremental shared-peak round (llmsim.schedulers.shared_peak) against the definition: each
request's blocks held by an earlier request of its list's order are its largest common prefix
with any of them, and a list's peak is max over k of (A_k + k * b_k) with those blocks left out.
Random chains from a small tree (many shared prefixes), several rounds through one SortedChains
(chains leaving and coming, one tuple held by two requests), candidates tried one by one."""

from __future__ import annotations

import numpy as np

from llmsim.schedulers.shared_peak import SharedPeakRound, SortedChains, _sort_chains

BLOCK = 4


def _chain(rng) -> tuple:
    path = (7,) + tuple(rng.integers(0, 3, size=int(rng.integers(0, 6))).tolist())
    return tuple(hash(path[:i + 1]) for i in range(int(rng.integers(0, len(path) + 1))))


def _common(a: tuple, b: tuple) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _peaks_by_definition(held, growth, chains) -> list[float]:
    out = []
    for g in growth:
        order = np.argsort(-g, kind="stable")
        a = [held[i] - BLOCK * max([_common(chains[i], chains[j]) for j in order[:p]], default=0)
             for p, i in enumerate(order)]
        out.append(float(np.max(np.cumsum(a) + np.arange(1, len(order) + 1) * g[order])))
    return out


def test_incremental_rounds_match_the_definition():
    rng = np.random.default_rng(3)
    index, pool = SortedChains(), [_chain(rng) for _ in range(12)]
    for _ in range(60):
        chains = [pool[int(i)] for i in rng.integers(0, len(pool), int(rng.integers(1, 9)))]
        pool[int(rng.integers(0, len(pool)))] = _chain(rng)  # a chain leaves, another comes
        lists, n = int(rng.integers(1, 4)), len(chains)
        held = rng.integers(0, 30, n) + rng.random(n)
        growth = rng.integers(0, 5, (lists, n)) + 0.5 * (rng.random((lists, n)) < 0.3)  # ties kept
        by_chain, adjacent, ordered = index.update(chains)
        fresh_order, fresh_adjacent = _sort_chains(chains)
        assert ordered == [chains[i] for i in by_chain] == [chains[i] for i in fresh_order]
        assert adjacent.tolist() == fresh_adjacent.tolist()
        rnd = SharedPeakRound(held, growth, 1e9, chains, BLOCK, index)
        for _ in range(4):
            chain, h, g = _chain(rng), float(rng.integers(0, 30)), rng.integers(0, 5, lists).astype(float)
            want = _peaks_by_definition(np.append(rnd.held, h), np.concatenate((rnd.growth, g[:, None]), axis=1),
                                        rnd.chains + [chain])
            rnd.limit_tokens = float(np.median(want))  # some tries fit, some do not
            assert rnd.try_add(h, g, chain) == (max(want) <= rnd.limit_tokens)
            assert rnd.peaks() == _peaks_by_definition(rnd.held, rnd.growth, rnd.chains)
