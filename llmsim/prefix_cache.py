"""Prefix caching in one replica's KV allocator (vLLM v1's design, counted in blocks).

Opt-in (`engine.prefix_caching: true`). The model, after vLLM v1's KVCacheManager and BlockPool
(docs.vllm.ai, "Automatic Prefix Caching" design page): every full block of a prompt has a key
that names its content and everything before it (a hash chain); a hash -> block map finds cached
blocks; each cached block has a reference count (running requests that hold it); blocks whose
count drops to 0 stay cached in a free queue in least-recently-freed order and are evicted from
its front only when a new block is needed and no never-cached free block is left.

Block keys. llmsim does not know token contents: it knows a workload's `block_hash_ids` (one id
per `hash_block_tokens` prompt tokens, e.g. Mooncake's 512-token hash ids; equal ids = equal
tokens). Engine block j of a prompt covers tokens [j*B, (j+1)*B) (B = engine block size); it is
cacheable only if it is full and inside the prompt, and inside the tokens the ids cover. Its
content id is the hash ids covering those tokens, ids[j*B // H] .. ids[((j+1)*B - 1) // H]
(H = hash_block_tokens); its key names its position j and every id up to the last covering it
(a hash chain: ids[0..i] are interned to one key per prefix), so equal keys mean equal tokens from
the prompt's start to the block's end, and equal keys at block j mean equal keys before it. B and H need not divide each other: a block that
straddles two hash blocks needs both ids equal to be shared. A workload without hash ids
(distributions, ShareGPT) has no keys: nothing is ever a hit.

Counting. `used_blocks` = private blocks (decode blocks, uncacheable prompt tail) + cached blocks
with a reference; `free_blocks` includes cached blocks with none (they are evicted on demand), as
in vLLM, so a policy's "free blocks" is what an admission can take. A hit on a block that a running
request holds costs nothing; a hit on an unreferenced cached block takes it out of the free queue
(vLLM counts both in `get_num_blocks_to_allocate`). At most (tokens - 1) // B blocks are hits:
at least one token is computed, as in vLLM; a fully cached prompt still holds its last cached block
(vLLM would compute it into a new block and keep that one uncached: one block more). So a request
holds the first min(chain length, its blocks) keys of its chain, whatever is cached. A request releases its blocks tail first, so a
block's children are evicted before it and the cache stays prefix-closed.

Units: blocks, tokens.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import compress, islice, repeat, takewhile
from operator import add, not_, sub

import numpy as np

from .kvcache import BlockAllocator


class PrefixKeys:
    """Block keys of every request's prompt, shared by all replicas of a simulation (a router
    compares them across replicas). Interned: equal (parent key, hash id) pairs get the same int,
    so keys never collide. Cached per workload request (`origin_id`)."""

    def __init__(self, block_hash_ids: list[np.ndarray] | None, hash_block_tokens: int, block_size: int) -> None:
        if hash_block_tokens <= 0:
            raise ValueError("hash_block_tokens must be positive")
        self.ids = block_hash_ids
        self.hash_block_tokens = hash_block_tokens
        self.block_size = block_size
        self._intern: dict[tuple, int] = {}
        self._chains: dict[int, tuple[int, ...]] = {}

    def chain(self, origin_id: int, prompt_tokens: int) -> tuple[int, ...]:
        """Keys of the cacheable blocks of a prompt, block 0 first (empty without hash ids).
        Kept per workload request: every attempt of it has the same prompt."""
        found = self._chains.get(origin_id)
        if found is not None:
            return found
        chain: tuple[int, ...] = ()
        if self.ids is not None and 0 <= origin_id < len(self.ids):
            chain = self._build(np.asarray(self.ids[origin_id]).tolist(), prompt_tokens)
        self._chains[origin_id] = chain
        return chain

    def _build(self, ids: list[int], prompt_tokens: int) -> tuple[int, ...]:
        B, H = self.block_size, self.hash_block_tokens
        covered_tokens = min(prompt_tokens, len(ids) * H)
        n = covered_tokens // B
        if n == 0:
            return ()
        # one interned key per hash-id prefix: equal keys <=> equal ids[0..i]
        prefix_keys, parent, intern = [], -1, self._intern
        setdefault, append, size = intern.setdefault, prefix_keys.append, len(intern)
        for x in islice(ids, ((n * B) - 1) // H + 1):
            parent = setdefault((parent, x), size)
            if parent == size:  # a new prefix: values are 0 .. size - 1, so only a new one equals size
                size += 1
            append(parent)
        # engine block j's tokens depend on ids[0..last id covering it] and on j: its key is the
        # pair (that id prefix's key, j), packed into one int
        j = np.arange(n, dtype=np.int64)
        last = ((j + 1) * B - 1) // H
        return tuple((np.asarray(prefix_keys, dtype=np.int64)[last] * _MAX_BLOCKS + j).tolist())


_MAX_BLOCKS = 1 << 32  # blocks per prompt, far above any context length


def max_hit_blocks(chain_len: int, tokens: int, block_size: int) -> int:
    """Blocks of a prefill of `tokens` tokens that may be hits: full, cacheable, and leaving at
    least one token to compute."""
    return min(chain_len, (tokens - 1) // block_size) if tokens > 0 else 0


def cached_run(refs, chain, limit: int) -> int:
    """How many leading keys of `chain` (at most `limit`) `refs(key)` finds cached (not None)."""
    h = 0
    while h < limit and refs(chain[h]) is not None:
        h += 1
    return h


def run_in(keys, chain, limit: int) -> int:
    """How many leading keys of `chain` (at most `limit`) are in `keys` (a dict or set): cached_run
    with a membership test, all in C (a chain has hundreds of keys, asked at every admission)."""
    return len(list(takewhile(keys.__contains__, chain[:limit])))


def drain(iterable) -> None:
    """Run an iterator of side effects to its end, in C."""
    deque(iterable, maxlen=0)


class PrefixCachingAllocator(BlockAllocator):
    """GPU KV blocks of one replica with a prefix cache (see the module docstring)."""

    def __init__(self, total_blocks: int, block_size: int) -> None:
        super().__init__(total_blocks, block_size)
        self.refs: dict[int, int] = {}  # key -> running requests holding it, for every cached block
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; least recently freed first
        self.held: dict[int, tuple[int, ...]] = {}  # request id -> keys it holds (a prefix of its chain)
        self.ref_sum = 0  # sum of reference counts: minus referenced blocks, the blocks shared more than once
        self.evicted_blocks = 0  # cached blocks evicted to make room

    @property
    def empty_blocks(self) -> int:
        """Free blocks that hold no cached block (taken before any cached block is evicted)."""
        return self.free_blocks - len(self.evictable)

    def duplicate_blocks(self) -> int:
        """Blocks that per-request counts would count more than once (held by several requests)."""
        return self.ref_sum - (len(self.refs) - len(self.evictable))

    def allocate(self, blocks: int) -> None:
        short = blocks - self.empty_blocks
        if short > 0:
            n = min(short, len(self.evictable))  # the base class raises if even that is too few
            gone = list(islice(self.evictable, n))  # the free queue's front
            drain(map(self.evictable.__delitem__, gone))
            drain(map(self.refs.__delitem__, gone))
            self.evicted_blocks += n
        super().allocate(blocks)

    def cached_blocks(self, chain, evicted: int = 0) -> int:
        """Leading blocks of `chain` cached here (held or not), after the next `evicted`
        evictions from the free queue's front: routers read this."""
        present = run_in(self.refs, chain, len(chain))  # refs holds counts, never None
        if not evicted or not present:
            return present
        gone = set(islice(self.evictable, evicted))
        return next(compress(range(present), map(gone.__contains__, chain[:present])), present)

    def admit(self, rid: int, chain, total_blocks: int, max_hit: int) -> tuple[int, int]:
        """A request sized `total_blocks` blocks whose cacheable blocks are `chain` is admitted: it
        holds the cached blocks of its chain (the first `max_hit` are hits, not computed), new
        blocks for the rest, and registers its new cacheable blocks. Returns (hit blocks, cached
        blocks it holds that others held already)."""
        refs = self.refs
        end = min(len(chain), total_blocks)
        present = run_in(refs, chain, end)
        # each held key's count + 1; those at 0 leave the free queue (keys of a chain are distinct,
        # so key by key or all at once is the same; maps keep it in C)
        keys = chain[:present]
        counts = list(map(refs.__getitem__, keys))
        revived_keys = list(compress(keys, map(not_, counts)))
        drain(map(self.evictable.__delitem__, revived_keys))
        refs.update(zip(keys, map(add, counts, repeat(1))))
        revived = len(revived_keys)
        super().allocate(revived)  # they leave the free queue
        self.allocate(total_blocks - present)  # may evict unreferenced blocks, never those just held
        refs.update(dict.fromkeys(chain[present:end], 1))
        self.held[rid] = tuple(chain[:end])
        self.ref_sum += end
        return min(present, max_hit), present - revived

    def release(self, rid: int, blocks: int) -> None:
        """Free a request's `blocks` blocks: private ones at once, cached ones to the free queue
        once unreferenced (tail first, so children are evicted before their parents)."""
        keys = self.held.pop(rid, ())
        self.free(blocks - len(keys))
        refs = self.refs
        tail_first = keys[::-1]
        counts = list(map(sub, map(refs.__getitem__, tail_first), repeat(1)))
        refs.update(zip(tail_first, counts))
        unreferenced = list(compress(tail_first, map(not_, counts)))  # tail first: the queue's order
        self.evictable.update(dict.fromkeys(unreferenced))
        self.free(len(unreferenced))
        self.ref_sum -= len(keys)

    def check(self, private_blocks: int) -> None:
        """AssertionError unless the counts agree: `private_blocks` = the running requests' blocks
        minus the cached blocks they hold."""
        referenced = len(self.refs) - len(self.evictable)
        assert private_blocks + referenced == self.used_blocks, (private_blocks, referenced, self.used_blocks)
        assert all((c == 0) == (k in self.evictable) for k, c in self.refs.items())
        assert sum(len(v) for v in self.held.values()) == self.ref_sum == sum(self.refs.values())
        assert 0 <= self.used_blocks <= self.total_blocks
