"""Eviction (preemption) of one replica: make room for the next decode step.

Before a step that decodes, if the decoding requests need more new blocks than are free, running
requests are evicted one at a time (newest admitted first by default, `EngineParams.victim`) until
the step fits. `recompute` frees all their blocks and re-prefills prompt + generated tokens on
re-admission; `swap` copies their blocks to bounded host memory (priced by the cost model's
`swap_time_s`) and copies them back on re-admission, falling back to recompute when the swap space
is full. An evicted request goes to the head of the waiting queue.

A mixin of ReplicaEngine: its methods read and write the engine's state. Units: tokens, blocks,
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

    def _make_room_for_decode(self) -> float:
        """Evict until the coming decode tokens fit in the free blocks; returns swap-out seconds."""
        swap_s = 0.0
        while self.batch.blocks_next_step() > self.kv.free_blocks:
            self.sync()
            swap_s += self._evict(self._pick_victim())
            if self.params.reset_round_counter_on_eviction:
                self.steps_since_round = 0
        return swap_s

    def _pick_victim(self) -> int:
        if self.params.victim == "newest" or len(self.running) == 1:
            return self.running[-1]
        t, ids = self.table, self._ids()
        key = t.max_new_tokens[ids] - t.generated_tokens[ids] if self.params.victim == "largest-remaining-cap" else t.kv_tokens[ids]
        # argmax on the reversed order picks the newest among ties
        return int(ids[len(ids) - 1 - int(np.argmax(key[::-1]))])

    def _evict(self, rid: int) -> float:
        t = self.table
        self.head_refusal_stable = False  # a new head, and memory freed
        if rid in self.batch:
            self.batch.remove([rid])
        blocks = blocks_for(int(t.kv_tokens[rid]), self.params.block_size)
        self.kv.free(blocks)
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
            return self.cost_model.swap_time_s(blocks * self.swap.block_bytes)
        # recompute: the prefill work done so far is lost and must be redone
        self._add_outstanding(int(t.prompt_tokens[rid] + t.generated_tokens[rid] - t.prefill_left_tokens[rid]))
        t.status[rid] = WAITING
        t.kv_tokens[rid] = 0
        t.prefill_left_tokens[rid] = 0
        return 0.0
