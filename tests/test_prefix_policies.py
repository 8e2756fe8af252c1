"""Admission policies and routers with prefix caching, on hand-computed examples: aggressive and
conservative count only new blocks; the future peak of past-future and the oracle counts a
shared prefix once, with its longest-lived holder (llmsim.schedulers.shared_peak); the
prefix-affinity and cache-aware routers (llmsim.cluster.cache_router)."""

from __future__ import annotations

import numpy as np
import pytest

from llmsim.cluster.cache_router import CacheAwareRouter, PrefixAffinityRouter
from llmsim.request import RUNNING
from llmsim.schedulers import ReplicaView, RunningBatch
from llmsim.schedulers.shared_peak import SharedPeakRound, common_prefix_blocks, common_prefix_matrix

from helpers import make_candidate, make_engine, make_scheduler, make_table

SHARED = (101, 102)  # two cached blocks (keys) of a common prefix


def _view(prompts, caps, generated, kv, chains, *, total_blocks, block_size=4, shared_blocks=0):
    p, c, g, k = (np.asarray(x, dtype=np.int64) for x in (prompts, caps, generated, kv))
    run = RunningBatch(np.arange(len(p), dtype=np.int64), p, c, g, k)
    used = sum(-(-int(t) // block_size) for t in k) - shared_blocks
    by_id = dict(enumerate(chains))
    return ReplicaView(0.0, block_size, total_blocks, total_blocks - used, run, None, shared_blocks, lambda rid: by_id[rid])


def test_the_peak_counts_a_shared_prefix_once_with_its_longest_lived_holder():
    # A holds 8 tokens (the 2 shared blocks) and grows 10 more; B holds the same 8 and grows 4.
    # At step 4 both run: 8 shared + 4 + 4 = 16; at step 10 only A: 8 + 10 = 18. Counted twice: 24.
    rnd = SharedPeakRound([8, 8], [10, 4], 100, [SHARED, SHARED], 4)
    assert rnd.peaks() == [18.0]
    assert SharedPeakRound([8, 8], [10, 4], 100, [SHARED, (7, 8)], 4).peaks() == [24.0]  # nothing shared
    # swapping the lengths moves the block to B: the same peak
    assert SharedPeakRound([8, 8], [4, 10], 100, [SHARED, SHARED], 4).peaks() == [18.0]
    # C (8 shared tokens, grows 12): at step 10, C and A run: 8 + 10 + 10 = 28 > 27
    rnd.limit_tokens = 27
    assert not rnd.try_add(8, [12], SHARED)
    rnd.limit_tokens = 28
    assert rnd.try_add(8, [12], SHARED) and rnd.peaks() == [28.0]


def test_common_prefix_of_key_chains():
    assert common_prefix_blocks((1, 2, 3), (1, 2, 4)) == 2
    assert common_prefix_blocks((1, 2, 3), (1, 2)) == 2
    assert common_prefix_blocks((), (1,)) == 0 and common_prefix_blocks((5, 6), (1, 2)) == 0


def test_oracle_admits_what_only_fits_with_the_shared_prefix_counted_once():
    # block size 4, capacity 9 blocks = 36 tokens, slack 0. Running: prompt 8 (the shared 2 blocks),
    # 1 token generated, true output 5 -> holds 8 tokens (kv = 8 + 1 - 1), grows 4.
    # Candidate: prompt 8 with the same prefix, true output 14 -> holds 8, grows 13.
    # Counted once: max(8 + 13 = 21, 8 + 0 + 2 * 4 = 16) = 21; counted twice: max(21, 16 + 8) = 24.
    # Capacity 6 blocks = 24 tokens, headroom 0.1: limit 21.6, so only the shared count admits it.
    true = np.array([5, 14])
    sched = make_scheduler("oracle", {"per_request_slack_tokens": 0, "headroom": 0.1}, true_output_tokens=true)
    view = _view([8], [20], [1], [8], [SHARED, SHARED], total_blocks=6)
    rnd = sched.start_round(view)
    assert rnd.admit(make_candidate(1, 8, 20)._replace(shared_blocks=2))
    no_sharing = _view([8], [20], [1], [8], [SHARED, (9, 10)], total_blocks=6)
    assert not sched.start_round(no_sharing).admit(make_candidate(1, 8, 20))  # 24 > 21.6


def test_reserve_peak_admits_what_only_fits_with_the_shared_prefix_counted_once():
    # the oracle's example with the caps as final lengths (running cap 5, candidate cap 14)
    sched = make_scheduler("reserve-peak", {"per_request_slack_tokens": 0, "headroom": 0.1})
    view = _view([8], [5], [1], [8], [SHARED, SHARED], total_blocks=6)
    assert sched.start_round(view).admit(make_candidate(1, 8, 14)._replace(shared_blocks=2))
    no_sharing = _view([8], [5], [1], [8], [SHARED, (9, 10)], total_blocks=6)
    assert not sched.start_round(no_sharing).admit(make_candidate(1, 8, 14))  # 24 > 21.6


@pytest.mark.parametrize("kind", ["oracle", "reserve-peak", "past-future"])
def test_no_compiled_round_answers_when_blocks_are_shared(kind):
    # The compiled rounds (first_admitting_round) count every request's blocks. The engine asks them
    # first, so with prefix caching they must decline, or the shared-peak rounds above never run
    # (the oracle's answered from the kernel until 2026-12-04).
    true = np.array([5, 14])
    sched = make_scheduler(kind, {"per_request_slack_tokens": 0, "headroom": 0.1} if kind != "past-future" else {},
                           true_output_tokens=true)
    view = _view([8], [5], [1], [8], [SHARED, SHARED], total_blocks=6)
    assert sched.first_admitting_round(view, np.array([0], dtype=np.int64), make_candidate(1, 8, 14)) is None


def test_past_future_with_one_history_value_counts_shared_prefixes_once():
    # history of one value (20): every final length is 20 (clipped to [o, cap]); running: prompt 8,
    # generated 1, holds 8, final 20 -> grows 19; candidate prompt 8, final 20 -> grows 19.
    # Both share 2 blocks: peak = 8 + (8 - 8) + 2 * 19 = 46 <= 0.95 * 52 = 49.4; twice: 54.
    cfg = {"prior_output_tokens": 20, "prior_count": 1, "history_window": 1, "headroom": 0.05}
    view = _view([8], [20], [1], [8], [SHARED, SHARED], total_blocks=13)
    assert make_scheduler("past-future", cfg).start_round(view).admit(make_candidate(1, 8, 20)._replace(shared_blocks=2))
    apart = _view([8], [20], [1], [8], [SHARED, (9, 10)], total_blocks=13)
    assert not make_scheduler("past-future", cfg).start_round(apart).admit(make_candidate(1, 8, 20))


def test_conservative_reserves_a_shared_block_once():
    # block size 4, prompt 8 and cap 9 reserve ceil(16 / 4) = 4 blocks each; two running requests
    # share their 2 prompt blocks: 4 + 4 - 2 = 6 reserved. A candidate sharing them needs 2 more.
    sched = make_scheduler("conservative")
    view = _view([8, 8], [9, 9], [1, 1], [8, 8], [SHARED, SHARED], total_blocks=8, shared_blocks=2)
    rnd = sched.start_round(view)
    assert rnd.reserved == 6
    assert rnd.admit(make_candidate(2, 8, 9)._replace(shared_blocks=2))  # 6 + 2 = 8 <= 8
    assert not rnd.admit(make_candidate(3, 8, 9)._replace(shared_blocks=0))  # 8 + 4 > 8


def test_the_engine_offers_only_the_new_blocks_of_a_cached_prompt():
    """Aggressive sees the candidate's blocks less those running requests hold: request 0 (prompt
    16 = 4 full blocks with hash ids, block size 4) runs; request 1 shares its first 8 tokens."""
    table = make_table([16, 12], [3, 3])
    table.block_hash_ids = [np.array([1, 2]), np.array([1, 7])]
    table.hash_block_tokens = 8
    engine = make_engine(table, "aggressive", {"watermark": 0.0}, total_blocks=10, block_size=4, prefix_caching=True)
    engine.enqueue(0, 0.0)
    engine.plan_step(0.0)
    assert table.status[0] == RUNNING and engine.kv.used_blocks == 4
    cand = engine._candidate(1)
    # 12 tokens = 3 blocks; its first 2 (hash id 1) are held by request 0: 1 new block, 8 tokens cached
    assert (cand.blocks, cand.shared_blocks, cand.cached_tokens) == (1, 2, 8)
    assert engine.cached_prompt_blocks(1) == 2 and engine.prompt_blocks(1) == 3


class _Replica:
    """What a router reads of an engine."""

    def __init__(self, cached, load, prompt_blocks=10):
        self.cached, self.load, self.blocks = cached, load, prompt_blocks

    def cached_prompt_blocks(self, rid, now_s=None):
        return self.cached

    def prompt_blocks(self, rid):
        return self.blocks

    def outstanding_tokens_at(self, now_s):
        return self.load


def test_prefix_affinity_takes_the_most_cached_blocks_then_the_least_load():
    router = PrefixAffinityRouter(np.random.default_rng(0))
    assert router.route(0, [_Replica(2, 10), _Replica(5, 900), _Replica(4, 0)]) == 1
    assert router.route(0, [_Replica(5, 10), _Replica(5, 3), _Replica(4, 0)]) == 1
    assert router.route(0, [_Replica(0, 7), _Replica(0, 7)]) == 0


def test_cache_aware_weighs_hits_against_load():
    router = CacheAwareRouter(np.random.default_rng(0))  # hit 3, load 2 (llm-d defaults)
    # replica 0: 8/10 cached, load 100 of 100 -> 2.4 + 0; replica 1: nothing cached, load 0 -> 2.0
    replicas = [_Replica(8, 100), _Replica(0, 0)]
    assert router.route(0, replicas) == 0
    router.hit_weight = 2.0  # 1.6 < 2.0
    assert router.route(0, replicas) == 1
    router.hit_weight, router.load_weight = 1.0, 0.0
    assert router.route(0, [_Replica(3, 0), _Replica(3, 5)]) == 0  # equal scores: the least load


def test_the_common_prefix_matrix_matches_pairwise_bisection():
    rng = np.random.default_rng(1)
    paths = [tuple(rng.integers(0, 3, size=rng.integers(0, 6)).tolist()) for _ in range(12)] + [(), (1,), (1,)]
    chains = [tuple(hash(p[:i + 1]) for i in range(len(p))) for p in paths]  # chained keys, as the cache makes them
    lcp = common_prefix_matrix(chains)
    for i, a in enumerate(chains):
        for j, b in enumerate(chains):
            if i != j:
                assert lcp[i, j] == common_prefix_blocks(a, b) == len(_common(paths[i], paths[j])), (paths[i], paths[j])


def _common(a: tuple, b: tuple) -> tuple:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
