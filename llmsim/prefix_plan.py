"""A prefix cache's admissions and releases worked out without writing the cache.

`ReplicaEngine.decide` writes nothing (llmsim.cluster.decide): with prefix caching on, an
admission round must still know what each candidate would hit after the candidates admitted
before it in the round (they register blocks, and their new blocks may evict unreferenced cached
blocks), and an eviction what each victim would free after the victims before it. A `CachePlan`
keeps those changes beside the real `PrefixCachingAllocator` (llmsim.prefix_cache) and answers
as the allocator would after them, by the same rules in the same order; `begin` then applies the
decision to the allocator itself. Releases are planned after every allocation of a decision
(victims follow admissions), so a planned release never has to reorder the free queue.

Units: blocks.
"""

from __future__ import annotations

from itertools import compress, filterfalse, islice, repeat
from operator import add, not_

from .prefix_cache import PrefixCachingAllocator, run_in


class CachePlan:
    """Planned changes to a `PrefixCachingAllocator` (see the module docstring)."""

    def __init__(self, kv: PrefixCachingAllocator) -> None:
        self.kv = kv
        self.delta: dict[int, int] = {}  # key -> planned change of its reference count (new keys: the count)
        self.new: set[int] = set()  # keys registered by planned admissions
        self.evicted: set[int] = set()  # cached keys evicted by planned allocations
        self.revived: set[int] = set()  # unreferenced keys a planned admission holds again
        self._lru = iter(kv.evictable)  # the free queue, least recently freed first
        self.evictable = len(kv.evictable)
        self.free = kv.free_blocks
        self.held: dict[int, tuple[int, ...]] = {}  # planned admissions: request id -> keys held
        self.released = False
        self.admissions = 0  # a decision's admissions planned so far (decide.py)

    def refs(self, key: int) -> int | None:
        """The key's reference count after the planned changes; None if not cached."""
        if key in self.new:
            return self.delta[key]
        if key in self.evicted:
            return None
        base = self.kv.refs.get(key)
        return None if base is None else base + self.delta.get(key, 0)

    def present(self, chain, limit: int) -> int:
        """How many leading keys of `chain` (at most `limit`) are cached after the planned changes
        (`refs` not None): runs of keys the allocator has and no planned eviction took, alternating
        with runs of keys planned admissions registered, each run found in C."""
        base, new, evicted = self.kv.refs, self.new, self.evicted
        i = 0
        while i < limit:
            rest = chain[i:limit]
            r = run_in(base, rest, len(rest))
            if evicted and r:  # up to the first key a planned allocation evicted
                r = next(compress(range(r), map(evicted.__contains__, rest[:r])), r)
            i += r
            j = run_in(new, chain[i:limit], limit - i)
            if not j:
                break
            i += j
        return i

    def counts(self, keys) -> list[int]:
        """`refs` of keys that `present` found cached, in C when nothing is registered or evicted."""
        delta = self.delta
        if self.new or self.evicted:
            return [self.refs(k) for k in keys]
        base = self.kv.refs
        if not delta:
            return list(map(base.__getitem__, keys))
        return list(map(add, map(base.__getitem__, keys), map(delta.get, keys, repeat(0))))

    def peek(self, chain, total_blocks: int, max_hit: int) -> tuple[int, int]:
        """(hit blocks, cached blocks held by running requests) of an admission now, as
        `PrefixCachingAllocator.admit` would find them."""
        present = self.present(chain, min(len(chain), total_blocks))
        shared = sum(map(bool, self.counts(chain[:present])))  # counts are >= 0
        return min(present, max_hit), shared

    def admit(self, rid: int, chain, total_blocks: int) -> None:
        """Plan `PrefixCachingAllocator.admit`."""
        assert not self.released, "internal: an allocation planned after a release"
        end = min(len(chain), total_blocks)
        present = self.present(chain, end)
        keys = chain[:present]
        counts = self.counts(keys)
        revived = list(compress(keys, map(not_, counts)))
        self.revived.update(revived)
        self.evictable -= len(revived)
        shared = present - len(revived)
        delta = self.delta
        delta.update(zip(keys, map(add, map(delta.get, keys, repeat(0)), repeat(1))))  # distinct keys
        self.free -= present - shared
        self.allocate(total_blocks - present)
        fresh = chain[present:end]
        self.new.update(fresh)
        delta.update(dict.fromkeys(fresh, 1))
        self.held[rid] = tuple(chain[:end])

    def allocate(self, blocks: int) -> None:
        """Plan `PrefixCachingAllocator.allocate`: never-cached blocks first, then the free queue's front."""
        assert not self.released, "internal: an allocation planned after a release"
        short = blocks - (self.free - self.evictable)
        while short > 0 and self.evictable > 0:
            # the queue's next keys, skipping those a planned admission holds again; a chunk of at
            # most `short` keys never takes more than key-by-key would (a skipped one leaves short > 0)
            chunk = list(islice(self._lru, min(short, self.evictable)))
            if not chunk:
                raise AssertionError("internal: the plan counts more unreferenced cached blocks than the free queue has")
            fresh = list(filterfalse(self.revived.__contains__, chunk))
            self.evicted.update(fresh)
            self.evictable -= len(fresh)
            short -= len(fresh)
        self.free -= blocks

    def release(self, rid: int, blocks: int) -> int:
        """Plan `PrefixCachingAllocator.release`; returns the blocks it frees (private ones, and
        cached ones no other request holds)."""
        self.released = True
        keys = self.held.pop(rid, None)
        if keys is None:
            keys = self.kv.held.get(rid, ())
        freed = blocks - len(keys)
        for key in keys:
            self.delta[key] = self.delta.get(key, 0) - 1
            if self.refs(key) == 0:
                freed += 1
                self.evictable += 1
        self.free += freed
        return freed
