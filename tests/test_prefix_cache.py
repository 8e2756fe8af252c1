"""Prefix caching (llmsim.prefix_cache, llmsim.prefix_plan): the allocator on hand-computed
examples (sharing, reference counts, LRU eviction order, hits on a fully cached prompt), the
planned admissions and releases against the allocator itself, and the block keys' mapping from
a trace's hash ids to engine blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.prefix_cache import PrefixCachingAllocator, PrefixKeys, max_hit_blocks
from llmsim.prefix_plan import CachePlan


def test_a_shared_prefix_is_counted_once_and_freed_only_when_its_last_holder_leaves():
    kv = PrefixCachingAllocator(10, 4)
    # request 0: 14 tokens = 4 blocks, 3 of them full cacheable prompt blocks (keys 1, 2, 3)
    assert kv.admit(0, (1, 2, 3), 4, max_hit_blocks(3, 14, 4)) == (0, 0)
    assert kv.used_blocks == 4 and kv.refs == {1: 1, 2: 1, 3: 1}
    # request 1 shares keys 1, 2 then differs (key 4): 12 tokens = 3 blocks, 2 hits held by request 0
    assert kv.admit(1, (1, 2, 4), 3, max_hit_blocks(3, 12, 4)) == (2, 2)
    assert kv.used_blocks == 5  # 4 + one new block: the shared two are counted once
    assert kv.duplicate_blocks() == 2
    kv.check(private_blocks=4 + 3 - 6)
    kv.release(0, 4)  # its private block is freed, key 3 goes to the free queue, keys 1, 2 stay held
    assert kv.used_blocks == 3 and kv.refs == {1: 1, 2: 1, 3: 0, 4: 1}
    assert list(kv.evictable) == [3]
    kv.release(1, 3)  # tail first: 4, then 2, then 1
    assert kv.used_blocks == 0 and kv.free_blocks == 10
    assert list(kv.evictable) == [3, 4, 2, 1]
    assert kv.empty_blocks == 6
    kv.check(private_blocks=0)


def test_cached_blocks_are_evicted_least_recently_freed_first_and_only_when_needed():
    kv = PrefixCachingAllocator(10, 4)
    kv.admit(0, (1, 2, 3), 4, 3)
    kv.admit(1, (1, 2, 4), 3, 2)
    kv.release(0, 4)
    kv.release(1, 3)  # free queue: 3, 4, 2, 1; 6 never-cached blocks
    kv.allocate(6)
    assert kv.evicted_blocks == 0 and len(kv.evictable) == 4  # the never-cached blocks went first
    kv.allocate(2)
    assert kv.evicted_blocks == 2 and list(kv.evictable) == [2, 1]  # 3 and 4 were the least recently freed
    assert kv.cached_blocks((1, 2, 3)) == 2
    assert kv.cached_blocks((1, 2, 3), evicted=1) == 1  # after the next eviction (key 2) only key 1 is left
    with pytest.raises(RuntimeError):
        kv.allocate(3)  # 2 free blocks, both cached: over-allocation still raises


def test_a_fully_cached_prompt_computes_its_last_block_and_revives_unreferenced_blocks():
    kv = PrefixCachingAllocator(4, 4)
    kv.admit(0, (1, 2), 2, max_hit_blocks(2, 8, 4))
    kv.release(0, 2)
    assert kv.free_blocks == 4 and list(kv.evictable) == [2, 1]
    # the same 8-token prompt: both blocks are cached, but at most (8 - 1) // 4 = 1 is a hit
    hits, shared = kv.admit(1, (1, 2), 2, max_hit_blocks(2, 8, 4))
    assert (hits, shared) == (1, 0)  # nobody held them: both leave the free queue
    assert kv.used_blocks == 2 and not kv.evictable and kv.held[1] == (1, 2)


def test_block_keys_follow_the_hash_ids_covering_each_engine_block():
    ids = [np.array([10, 11, 12]), np.array([10, 11, 99]), np.array([10, 98, 12])]
    keys = PrefixKeys(ids, hash_block_tokens=8, block_size=4)
    a, b, c = (keys.chain(i, 24) for i in range(3))
    assert len(a) == 6  # 24 tokens, 4 per block, all covered by the 3 ids of 8 tokens
    assert a[:4] == b[:4] and a[4] != b[4]  # hash block 2 differs: engine blocks 4, 5
    assert a[:2] == c[:2] and a[2] != c[2] and a[4] != c[4]  # a later equal id does not make a shared block
    assert PrefixKeys(ids, 8, 4).chain(0, 22) == a[:5]  # the last block is not full: not cacheable
    straddle = PrefixKeys(ids, hash_block_tokens=8, block_size=6)
    s0, s1 = straddle.chain(0, 24), straddle.chain(1, 24)
    assert len(s0) == 4 and s0[:2] == s1[:2] and s0[2] != s1[2]  # block 2 covers tokens 12..17: ids 11 and 12
    assert PrefixKeys(None, 512, 16).chain(0, 4096) == ()  # no hash ids: nothing is cacheable


_KEYS = st.lists(st.integers(1, 6), min_size=0, max_size=5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _KEYS, st.integers(0, 3)), min_size=1, max_size=25), st.integers(8, 20))
def test_planned_admissions_and_releases_match_the_allocator(ops, total_blocks):
    """Random admissions and releases: a plan made before a batch of admissions then releases
    predicts each one's hits, shared blocks and freed blocks, and the free blocks after."""
    kv = PrefixCachingAllocator(total_blocks, 4)
    running: dict[int, int] = {}
    for rid, (admit, path, extra) in enumerate(ops):
        chain = _tree_chain(path)
        plan = CachePlan(kv)
        if admit:
            blocks = len(chain) + extra
            if blocks == 0 or blocks > kv.free_blocks:
                continue
            tokens = blocks * 4
            predicted = plan.peek(chain, blocks, max_hit_blocks(len(chain), tokens, 4))
            plan.admit(rid, chain, blocks)
            assert kv.admit(rid, chain, blocks, max_hit_blocks(len(chain), tokens, 4)) == predicted
            running[rid] = blocks
        elif running:
            victim = sorted(running)[extra % len(running)]
            before = kv.free_blocks
            freed = plan.release(victim, running[victim])
            kv.release(victim, running.pop(victim))
            assert kv.free_blocks - before == freed
        assert plan.free == kv.free_blocks
        kv.check(sum(running.values()) - kv.ref_sum)
    for rid, blocks in list(running.items()):
        kv.release(rid, blocks)
    assert kv.used_blocks == 0 and kv.ref_sum == 0 and not kv.held


def _tree_chain(path: list[int]) -> tuple[int, ...]:
    """Keys of a path in a small tree: key = the path so far (chained, as PrefixKeys makes them)."""
    return tuple(hash(tuple(path[:i + 1])) for i in range(len(path)))
