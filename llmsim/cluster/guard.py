"""The server-side SLA guard of one replica (the Past-Future paper's artifact servers).

- Queue limit (`guard_max_queue_s`): at each planning, a request still waiting for its first
  admission longer than the limit is dropped.
- Gap limit (`guard_max_tbt_s`): at each step's end, a request whose gap since its last token
  exceeds the limit is aborted; a token it would emit at that step is not counted, and every block
  it holds is freed, the block the step allocated for that token included. An evicted request
  waiting for its re-prefill is checked too, unless `guard_abort_waiting` is off (the artifact's
  server): it is then checked once it runs again, at the end of its re-prefill step.
- `guard_queue_at_rounds_only`: the queue limit is checked only when an admission round is due.

Dropped and aborted requests end (`ReplicaEngine.ended`), as finished ones do.

Drops are decided by `_stale` (for `ReplicaEngine.decide`, writing nothing) and applied by `_drop`.
A mixin of ReplicaEngine. Units: seconds, blocks.
"""

from __future__ import annotations

import math

import numpy as np

from ..kvcache import blocks_for
from ..request import ABORTED, DROPPED, RUNNING, SWAPPED


class Guard:
    """ReplicaEngine's SLA guard (see the module docstring)."""

    def _stale(self, now_s: float) -> list[int]:
        """Never-admitted requests that waited longer than guard_max_queue_s (writes nothing).
        Fresh requests sit in the queue in arrival order (evicted ones, already admitted once, go
        to the head), so the scan stops at the first fresh request still inside the limit."""
        t, limit = self.table, self.params.guard_max_queue_s
        stale = []
        for rid in self.waiting:
            if not math.isnan(t.first_admit_s[rid]):
                continue
            if now_s - t.arrival_s[rid] <= limit:
                break
            stale.append(rid)
        return stale

    def _drop(self, stale: list[int], now_s: float) -> None:
        """Drop the requests `_stale` found (the decision's drops)."""
        for rid in stale:
            self._end_unfinished(rid, DROPPED, now_s)
        self.stats.dropped += len(stale)
        self.ended += stale

    def _abort_stalled(self, step, end_s: float) -> None:
        """Abort requests whose gap since their last token exceeds guard_max_tbt_s at this step's
        end (the server would have aborted them when the gap passed the limit, so a token they
        would emit now is not counted)."""
        t, limit = self.table, self.params.guard_max_tbt_s
        candidates = list(self.running)
        if self.params.guard_abort_waiting:
            # evicted requests waiting for their re-prefill too; otherwise one is checked only once
            # it runs again: at the end of its re-prefill step (separate mode), its work then spent
            candidates += [r for r in self.waiting if t.generated_tokens[r] > 0]
        stalled = [r for r in candidates if t.generated_tokens[r] > 0 and end_s - t.last_token_s[r] > limit]
        if not stalled:
            return
        gone = set(stalled)
        if len(step.decode_ids):
            # This step allocated the block its decode token would start; the token is not
            # emitted, so that block is freed with the rest (it leaked before).
            stalled_here = np.isin(step.decode_ids, stalled)
            in_step = step.decode_ids[stalled_here]
            self.kv.free(int(np.count_nonzero(t.kv_tokens[in_step] % self.params.block_size == 0)))
            step.decode_ids = step.decode_ids[~stalled_here]
        for rid, chunk in zip(step.prefill_ids, step.prefill_chunk_tokens):
            if rid in gone:  # the step computed it (its time is spent), then the server aborts it: wasted work
                t.prefill_computed_tokens[rid] += chunk
        keep = [i for i, r in enumerate(step.prefill_ids) if r not in gone]
        step.prefill_ids = [step.prefill_ids[i] for i in keep]
        step.prefill_chunk_tokens = [step.prefill_chunk_tokens[i] for i in keep]
        for rid in stalled:
            self._end_unfinished(rid, ABORTED, end_s)
        self.stats.aborted += len(stalled)
        self.ended += stalled

    def _end_unfinished(self, rid: int, outcome: int, now_s: float) -> None:
        """Remove a request that will not finish (dropped or aborted), freeing what it holds."""
        t, bs = self.table, self.params.block_size
        status = t.status[rid]
        g = int(t.generated_tokens[rid])
        self.head_refusal_stable = False
        if status == RUNNING:
            if rid in self.batch:
                self.batch.remove([rid])
            self.kv.release(rid, blocks_for(int(t.kv_tokens[rid]), bs))
            self.running.remove(rid)
            self._running_ids = None
            pending_prefill = int(t.prefill_left_tokens[rid])
        else:
            self.waiting.remove(rid)
            if status == SWAPPED:
                self.swap.take(blocks_for(int(t.kv_tokens[rid]), bs))
                pending_prefill = 0
            else:
                pending_prefill = int(t.prompt_tokens[rid]) + g
        self._add_outstanding(-(pending_prefill + int(t.max_new_tokens[rid]) - g))
        if outcome == ABORTED and getattr(self.scheduler, "records_aborted", False):
            self.scheduler.record_finish(g)  # its length so far joins the policy's history
        t.status[rid] = outcome
        t.end_s[rid] = now_s
