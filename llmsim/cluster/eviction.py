"""Eviction (preemption) of one replica: make room for the next decode step.

Before a step that decodes, if the decoding requests need more new blocks than are free, running
requests are evicted one at a time (newest admitted first by default, `EngineParams.victim`; or the
latest to arrive, LightLLM's `Fcfs` pause order, among others) until
the step fits. `recompute` frees all their blocks and re-prefills prompt + generated tokens on
re-admission; `swap` copies their blocks to bounded host memory (priced by the cost model's
`swap_time_s`) and copies them back on re-admission, falling back to recompute when the swap space
is full. An evicted request goes to the head of the waiting queue. With prefix caching, a victim
releases its cached prompt blocks into the cache (recompute then finds them again if no one evicted
them meanwhile); a swapped-out request copies all its blocks and comes back holding them all
privately, sharing none (the simplest correct choice: swap space is counted per request).

Victims are chosen without writing anything (`_choose_victims`, for `ReplicaEngine.decide`) and
evicted when the decision is applied (`_evict`, begin.py). A mixin of ReplicaEngine. Units: tokens, blocks,
seconds.
"""

from __future__ import annotations

import numpy as np

from ..kvcache import blocks_for
from ..request import SWAPPED, WAITING


class Eviction:
    """ReplicaEngine's eviction (see the module docstring)."""

    def _decoding_ids(self) -> np.ndarray:
        ids = self._ids()
        if self.params.mode == "separate":
            return ids
        return ids[self.table.prefill_left_tokens[ids] == 0]

    def _choose_victims(self, admitted: list, swapped_in: list[bool], need: int, free: int, plan=None) -> tuple[list[int], float]:
        """The requests to evict, in order, until the next decode step's `need` new blocks fit in
        `free` blocks (both counted after the round's `admitted` Candidates, which join the running
        requests), and the swap-out seconds: the choices `_evict` would make one at a time,
        made on local counts without writing anything (decide.py). With prefix caching, `plan`
        (llmsim.prefix_plan) says what each victim frees: its cached blocks only if no one else holds them."""
        t, p = self.table, self.params
        bs = p.block_size
        ids = np.asarray(list(self.running) + [c.request_id for c in admitted], dtype=np.int64)
        members = np.fromiter((int(r) in self.batch for r in ids), dtype=bool, count=len(ids))
        generated, kv = self.progress_now(ids)
        prefill_left = t.prefill_left_tokens[ids]
        base = len(self.running)
        for i, (cand, swapped) in enumerate(zip(admitted, swapped_in), base):
            kv[i] = cand.kv_tokens
            members[i] = swapped  # a swap-in joins the batch; a recompute prefills first
            prefill_left[i] = 0 if swapped else cand.kv_tokens - cand.cached_tokens
        swap_used = self.swap.used_blocks - sum(c.blocks for c, s in zip(admitted, swapped_in) if s)
        victims, swap_s = [], 0.0
        while need > free:
            i = self._victim_index(ids, generated, kv)
            blocks = blocks_for(int(kv[i]), bs)
            free += blocks if plan is None else plan.release(int(ids[i]), blocks)
            need -= int(members[i] and kv[i] % bs == 0)  # it no longer starts a block next step
            victims.append(int(ids[i]))
            if p.preemption == "swap" and prefill_left[i] == 0 and swap_used + blocks <= self.swap.capacity_blocks:
                swap_used += blocks
                swap_s += self.cost_model.swap_time_s(blocks * self.swap.block_bytes)
            ids, generated, kv, members, prefill_left = (np.delete(a, i) for a in (ids, generated, kv, members, prefill_left))
        return victims, swap_s

    def _victim_index(self, ids: np.ndarray, generated: np.ndarray, kv: np.ndarray) -> int:
        """The position in `ids` (admission order) of the next victim, by `EngineParams.victim`."""
        if self.params.victim == "newest" or len(ids) == 1:
            return len(ids) - 1
        victim = self.params.victim
        if victim == "latest-arrival":
            key = self.table.arrival_s[ids]
        else:
            key = self.table.max_new_tokens[ids] - generated if victim == "largest-remaining-cap" else kv
        # argmax on the reversed order picks the newest admitted among ties
        return len(ids) - 1 - int(np.argmax(key[::-1]))

    def _evict(self, rid: int) -> None:
        """Write an eviction decided by `_choose_victims` (swap or recompute, as it chose)."""
        t = self.table
        self.head_refusal_stable = False  # a new head, and memory freed
        if rid in self.batch:
            self.batch.remove([rid])
        blocks = blocks_for(int(t.kv_tokens[rid]), self.params.block_size)
        self.kv.release(rid, blocks)  # with prefix caching a swapped-out request holds no cached block
        self.running.remove(rid)
        self._running_ids = None
        t.evictions[rid] += 1
        self.stats.evictions += 1
        self.waiting.appendleft(rid)
        if self.params.preemption == "swap" and t.prefill_left_tokens[rid] == 0 and self.swap.fits(blocks):
            self.swap.put(blocks)
            t.status[rid] = SWAPPED
            t.swaps[rid] += 1
            self.stats.swap_outs += 1
            return
        # recompute: the prefill work done so far is lost and must be redone
        self._add_outstanding(int(t.prompt_tokens[rid] + t.generated_tokens[rid] - t.prefill_left_tokens[rid]))
        t.status[rid] = WAITING
        t.kv_tokens[rid] = 0
        t.prefill_left_tokens[rid] = 0
