"""Starting one replica's next iteration: `ReplicaEngine.begin(decision)`.

`ReplicaEngine.plan_step(now_s)` is `begin(decide(now_s))`: `decide` (decide.py) says what happens
at the boundary and writes nothing; `begin` writes it at the step's start, in the order step-by-step
planning always had, and builds the `Step`:

1. the guard's drops (`Guard._drop`);
2. the round: the refusal flags, the policy stream's counter, the held round cleared, each
   admission (`Admission._admit`: blocks, status, prefill), the round counter reset;
3. separate mode, if the round admitted requests with prefill left: a step of their prefill alone
   (with fast-forward, possibly followed by a decode run in the same timeout:
   `continue_prefill_with_run`);
4. otherwise the evictions (`Eviction._evict`), then a fast-forwarded run (`plan_run`) or one decode
   step, with mixed mode's prefill chunks; the decode tokens' new blocks are allocated when the
   step is applied (`finish_step`), as a run's are (`apply_run`).

`finish_step` (engine.py) applies the step at its end. docs/architecture.md lists what of this
could move to the step's end and what may not.

A mixin of ReplicaEngine. Units: seconds, tokens, blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..costmodel.base import BatchShape
from .fastforward import DecodeRun, continue_prefill_with_run, plan_run

_NO_IDS = np.empty(0, dtype=np.int64)


@dataclass(slots=True)
class Step:
    """One planned iteration."""

    start_s: float
    duration_s: float
    decode_ids: np.ndarray  # requests that emit a decode token (empty for a run: its `decoders` are the batch)
    prefill_ids: list[int]
    prefill_chunk_tokens: list[int]
    used_blocks: int  # during the step (its decode tokens' new blocks included)
    swap_s: float = 0.0
    run: DecodeRun | None = None  # set when this is a fast-forwarded run of decode steps
    new_blocks: int = 0  # blocks its decode tokens start, allocated when it is applied (as a run's)


class Begin:
    """ReplicaEngine's start of a step (see the module docstring)."""

    def begin(self, d) -> Step | None:
        """Apply the decision `d` (from `decide` at `d.now_s`, nothing changed since) and return
        the Step it starts, or None if nothing runs."""
        now_s = d.now_s
        if d.dropped:
            self._drop(d.dropped, now_s)
        if d.round_ran:
            self._apply_round(d)
        if not self.running:
            return None
        p = self.params
        swap_s = d.swap_in_s
        if p.mode == "separate" and d.admitted:
            # each chunk is the whole prefill `_admit` wrote (its KV less its cached tokens), after the
            # cached tokens: read from the candidates, not the table (once a request, per admission)
            ids, chunks, cached = [], [], []
            for c, swapped in zip(d.admitted, d.swapped_in):
                if not swapped:
                    ids.append(c.request_id)
                    chunks.append(c.kv_tokens - c.cached_tokens)
                    cached.append(c.cached_tokens)
            if ids:
                step = self._step(now_s, BatchShape(tuple(chunks), tuple(cached)), _NO_IDS, ids, chunks, swap_s)
                if p.fast_forward and swap_s == 0.0 and p.guard_max_queue_s is None and p.guard_max_tbt_s is None:
                    continue_prefill_with_run(self, step)
                return step
        for rid in d.victims:
            self._evict(rid)
            if p.reset_round_counter_on_eviction:
                self.steps_since_round = 0
        swap_s += d.swap_out_s  # (the step's new blocks fit now: finish_step's allocation checks it)
        if p.fast_forward and swap_s == 0.0 and self.batch.size == len(self.running):
            run = plan_run(self, now_s)
            if run is not None:
                self.start_run(run)
                return Step(now_s, run.ends_s[-1] - now_s, _NO_IDS, [], [], self.kv.used_blocks, 0.0, run)
        return self._decode_step(now_s, swap_s)

    def _apply_round(self, d) -> None:
        """Write the admission round of decision `d`."""
        self.head_refusal_stable, self.policy_refused_head = d.head_refusal_stable, d.policy_refused_head
        if d.took_round_ahead:
            self.round_ahead = None
        if d.stream_after is not None:
            self._stream_state[0] = d.stream_after  # the draws the round made
        for cand, swapped in zip(d.admitted, d.swapped_in):
            self.waiting.popleft()  # the round admits from the head of the queue, in order
            self._admit(cand, swapped, d.now_s)
        self.steps_since_round = 0

    def _decode_step(self, now_s: float, swap_s: float) -> Step:
        """One decode step of the batch, with mixed mode's chunks; its new blocks are allocated when
    it is applied (`finish_step`)."""
        t, batch = self.table, self.batch
        decode_ids = self._decoding_ids()
        prefill_ids, chunks = self._prefill_chunks(batch.size) if self.params.mode == "mixed" else ([], [])
        shape = BatchShape(
            tuple(chunks),
            tuple(int(t.kv_tokens[r] - t.prefill_left_tokens[r]) for r in prefill_ids),
            batch.size,
            # each decode token attends to its own KV as well
            batch.kv_sum_tokens() + batch.size,
            batch.kv_max_tokens() + 1 if batch.size else 0,
        )
        step = self._step(now_s, shape, decode_ids, prefill_ids, chunks, swap_s)
        step.new_blocks = batch.blocks_next_step()  # they fit: decide evicted until they did
        step.used_blocks += step.new_blocks
        return step

    def start_run(self, run: DecodeRun) -> None:
        """Make `run` the active run (read by `enqueue`, `cut_run` and routers until it is applied)."""
        self.active_run = run
        self.load_changed()  # a load-aware router now reads the run's range of loads

    def _step(self, now_s, shape, decode_ids, prefill_ids, chunks, swap_s) -> Step:
        duration = self.cost_model.step_time_s(shape) + swap_s
        return Step(now_s, duration, decode_ids, prefill_ids, chunks, self.kv.used_blocks, swap_s)

    def _prefill_chunks(self, num_decode: int) -> tuple[list[int], list[int]]:
        """Mixed mode: prefill chunks after the decode tokens, oldest admission first."""
        budget = self.params.max_batched_tokens - num_decode
        ids, chunks = [], []
        left = self.table.prefill_left_tokens
        for rid in self.running:
            if budget <= 0:
                break
            if left[rid] > 0:
                c = int(min(left[rid], budget))
                ids.append(rid)
                chunks.append(c)
                budget -= c
        return ids, chunks
