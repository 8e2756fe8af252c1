"""Admission rounds of one replica: first come, first served, with head-of-line blocking.

A round runs when requests wait and either nothing runs or the policy's
`decode_steps_between_rounds` decode steps have passed since the last round
(`ReplicaEngine.decide`). The waiting queue is walked in order (evicted requests first); each
head must first pass the engine's limits (`max_num_seqs`, the round's token budget, free blocks
beside those the running batch's next decode step needs: vLLM v1 schedules running requests
before waiting ones), and then the policy's round (llmsim.schedulers); the walk stops at the
first refusal. An empty replica always admits its head request, otherwise a request the policy
finds too large would never run. The policy's round is started only when a head first passes the
engine's limits, so a refused round draws nothing. The walk is decided without writing anything
(`Decide._decide_round`, decide.py) and written by `_admit` when the decision is applied (begin.py).

Fast-forward (llmsim.cluster.fastforward) may start, ahead of time, the rounds due inside a run
(`head_ahead`, `hold_rounds_ahead`); the round that admits is kept for its boundary.

A mixin of ReplicaEngine: `_admit` writes the engine's state; the rest only reads it (except
`hold_rounds_ahead`, which keeps a round in `round_ahead`). Units: tokens, blocks,
seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np

from ..kvcache import blocks_for
from ..prefix_cache import max_hit_blocks
from ..prefix_plan import CachePlan
from ..request import RUNNING, SWAPPED
from ..schedulers.base import Candidate, ReplicaView
from .view import EngineView

_NOW = np.zeros(1, dtype=np.int64)  # a round now, zero steps ahead (Scheduler.first_admitting_round)


class Admission:
    """ReplicaEngine's admission rounds (see the module docstring)."""

    def _start_policy_round(self, cand: Candidate, d):
        """The policy's round for the decision `d` (decide.py) and its answer to the first
        candidate that passed the engine's limits: the round fast-forward held for this boundary,
        or a new one (started and asked in one call where the policy offers it)."""
        if self.round_ahead is not None:
            d.took_round_ahead = True
            return self._held_round(cand), True
        view = self._view(d.now_s)
        found = None if self._rounds_at_once is None else self._rounds_at_once(view, _NOW, cand)
        if found is None:
            rnd = self.scheduler.start_round(view)
            return rnd, rnd.admit(cand)
        return found[1], found[1] is not None

    def _over_budget(self, prefill: int, budget: int) -> bool:
        """A prefill of `prefill` tokens does not fit a round's remaining token `budget`."""
        return bool(prefill) and (prefill > budget if self.params.mode == "separate" else budget <= 0)

    def _engine_refusal(self, cand: Candidate, prefill: int, own: int, budget: int, reserved: int, free_blocks: int) -> str | None:
        """The engine limit a candidate fails before its policy is asked, or None: "budget" if its
        prefill does not fit this round's token budget (the next round has the budget anew),
        "blocks" if its blocks do not fit beside the `reserved` blocks the running batch's next step
        needs (cannot change before a finish or an eviction: free blocks only shrink meanwhile)."""
        if self._over_budget(prefill, budget):
            return "budget"
        if cand.blocks + reserved + own > free_blocks:
            return "blocks"
        return None

    def head_ahead(self) -> tuple[Candidate, int] | str:
        """For the rounds fast-forward holds inside a run (every running request decoding, the
        queue's head unchanged): the head as a Candidate and the block its own first decode step
        needs (a swapped-out head), or the verdict of a limit that holds for the whole run:
        "stable" (max_num_seqs) or "budget" (no round is started: the prefill exceeds a round's
        token budget, which is the same at every boundary of the run)."""
        t, p = self.table, self.params
        if len(self.running) >= p.max_num_seqs:
            return "stable"
        cand = self._candidate(self.waiting[0])
        swapped = t.status[cand.request_id] == SWAPPED
        # a round's whole budget (no admissions yet); in mixed mode less the decode tokens (every
        # running request decodes during a run, none has prefill left)
        budget = p.max_batched_tokens if p.mode == "separate" else p.max_batched_tokens - self.batch.size
        if self._over_budget(0 if swapped else cand.kv_tokens - cand.cached_tokens, budget):
            return "budget"
        return cand, int(swapped and cand.kv_tokens % p.block_size == 0)

    def hold_rounds_ahead(self, steps: range, ends_s: list[float], cum_new_blocks: list[int], cand: Candidate) -> tuple[int, bool]:
        """Start, ahead of time, the policy's rounds due `steps[i]` decode steps from now inside a
        fast-forwarded run (a boundary after step j is at `ends_s[j-1]`, with `cum_new_blocks[j-1]`
        fewer blocks free than now: the run's lists), in order, each offered
        the head `cand` first (it has passed the engine limits there). Returns (i, stable): the
        first round that admits it (len(steps) if none) and whether a refusal is the policy's
        stable one. An admitting round is kept, with its draws, for the round decided at that
        boundary (`round_ahead`, decide.py).

        Exact for a policy whose rounds depend only on their view and its own state
        (`Scheduler.rounds_ahead`): the rounds are started in step-by-step mode's order, only
        earlier in wall time. A policy may answer for all the rounds at once
        (`first_admitting_round`, given the view now; compiled past-future and oracle do)."""
        sched = self.scheduler
        at_once = self._rounds_at_once
        found = None if at_once is None else at_once(self._view(ends_s[steps[0] - 1]),
                                                      np.arange(steps.start, steps.stop, steps.step, dtype=np.int64), cand)
        if found is None:
            for i, j in enumerate(steps):
                rnd = sched.start_round(self._view(ends_s[j - 1], j, self.kv.free_blocks - cum_new_blocks[j - 1]))
                if rnd.admit(cand):
                    found = i, rnd
                    break
                if self._refusal_stable:
                    return i, True
            else:
                found = len(steps), None
        i, rnd = found
        if rnd is not None:
            self.round_ahead = (self.batch.clock + steps[i], cand.request_id, rnd)
        return i, False

    def _held_round(self, cand: Candidate):
        """The round held ahead for this boundary (it admits `cand`); `begin` clears it."""
        clock, rid, rnd = self.round_ahead
        if clock != self.batch.clock or rid != cand.request_id:
            raise AssertionError(f"internal: a round held ahead for request {rid} at decode step {clock} "
                                 f"was not used there (request {cand.request_id} at step {self.batch.clock})")
        return rnd

    def _admit(self, cand: Candidate, swapped: bool, now_s: float) -> None:
        """Write an admission decided by `decide` (its swap-in time is the decision's)."""
        t, rid = self.table, cand.request_id
        if self.prefix is None or swapped:
            self.kv.allocate(cand.blocks)
        else:
            self._admit_cached(cand)
        t.status[rid] = RUNNING
        if math.isnan(t.first_admit_s[rid]):
            t.first_admit_s[rid] = now_s
            t.cached_prompt_tokens[rid] = cand.cached_tokens
        self.running.append(rid)
        self._running_ids = None
        if swapped:
            self.swap.take(cand.blocks)
            self.batch.join(rid)  # its prefill was done before the swap-out: it decodes next
            return
        t.kv_tokens[rid] = cand.kv_tokens
        t.prefill_left_tokens[rid] = cand.kv_tokens - cand.cached_tokens  # cached tokens are not computed

    def _admit_cached(self, cand: Candidate) -> None:
        """Prefix caching: hold the candidate's cached prefix and allocate the rest (as planned)."""
        rid, bs, stats = cand.request_id, self.params.block_size, self.stats
        chain = self._chain(rid)
        hits, shared = self.kv.admit(rid, chain, blocks_for(cand.kv_tokens, bs), max_hit_blocks(len(chain), cand.kv_tokens, bs))
        if hits * bs != cand.cached_tokens or shared != blocks_for(cand.kv_tokens, bs) - cand.blocks:
            raise AssertionError(f"internal: request {rid} hit {hits} cached blocks ({shared} held), not as decided: {cand}")
        stats.prefix_query_tokens += cand.kv_tokens
        stats.prefix_hit_tokens += cand.cached_tokens
        stats.prefix_query_blocks += cand.kv_tokens // bs
        stats.prefix_hit_blocks += hits
        self._add_outstanding(-cand.cached_tokens)

    def _chain(self, rid: int) -> tuple:
        """The keys of request `rid`'s cacheable prompt blocks (prefix caching)."""
        t = self.table
        return self.prefix.chain(int(t.origin_id[rid]), int(t.prompt_tokens[rid]))

    def _candidate(self, rid: int, plan=None) -> Candidate:
        """Request `rid` offered for admission now; with prefix caching, after the admissions
        `plan` (llmsim.prefix_plan) holds."""
        t, bs = self.table, self.params.block_size
        # column.item(rid): a Python scalar in one call (half the cost of int(column[rid]))
        g = t.generated_tokens.item(rid)
        prompt = t.prompt_tokens.item(rid)
        swapped = t.status.item(rid) == SWAPPED
        kv = t.kv_tokens.item(rid) if swapped else prompt + g  # recompute: prefill prompt + generated tokens
        # Candidate(...) with every field given, built as its tuple (a NamedTuple's constructor is a
        # Python-level function: about 0.15 us more, once per admission offer)
        cand = tuple.__new__(Candidate, (rid, t.arrival_s.item(rid), prompt, t.max_new_tokens.item(rid), g, kv,
                                           blocks_for(kv, bs), 0, 0))
        if self.prefix is None or swapped:
            return cand
        chain = self._chain(rid)
        hits, shared = (plan or CachePlan(self.kv)).peek(chain, cand.blocks, max_hit_blocks(len(chain), kv, bs))
        return cand._replace(blocks=cand.blocks - shared, cached_tokens=hits * bs, shared_blocks=shared)

    def cached_prompt_blocks(self, rid: int, now_s: float | None = None) -> int:
        """For routers: leading blocks of request `rid`'s prompt cached on this replica (held or
        not) at `now_s`, as step-by-step mode has it then: during a fast-forwarded run, less the
        cached blocks that the run's steps ended before `now_s` evicted (its blocks are allocated
        when it is applied); 0 without prefix caching."""
        if self.prefix is None:
            return 0
        run, evicted = self.active_run, 0
        if run is not None and now_s is not None:
            done = bisect_left(run.ends_s, now_s)  # steps ended strictly before now_s (outstanding_tokens_at's rule)
            if done:
                evicted = max(0, run.cum_new_blocks[done - 1] - self.kv.empty_blocks)
        return self.kv.cached_blocks(self._chain(rid), evicted)

    def prompt_blocks(self, rid: int) -> int:
        """For routers: cacheable blocks of request `rid`'s prompt (0 without prefix caching or hash ids)."""
        return 0 if self.prefix is None else len(self._chain(rid))

    def prefix_chain_fn(self):
        """For a policy's view: request id -> the keys of the cached blocks it holds (running), or
        would hold if admitted now (its whole chain: a chain covers the prompt only, so it fits its
        blocks); None without caching. A swapped-out or swapped-in request holds none."""
        if self.prefix is None:
            return None
        t, held = self.table, self.kv.held

        def chain_of(rid: int) -> tuple:
            keys = held.get(rid)
            if keys is not None:
                return keys
            return () if t.status[rid] in (RUNNING, SWAPPED) else self._chain(rid)

        return chain_of

    def progress_now(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(generated tokens, KV tokens) of running requests `ids` now, without writing the table:
        decode-batch members' through the batch's clock, the others' from the table."""
        t, batch = self.table, self.batch
        generated, kv = t.generated_tokens[ids], t.kv_tokens[ids]  # copies (fancy indexing)
        members = np.fromiter((int(r) in batch for r in ids), dtype=bool, count=len(ids))
        if members.any():
            generated[members], kv[members] = batch.current_progress(ids[members])
        return generated, kv

    def _view(self, now_s: float, steps_ahead: int = 0, free_blocks: int | None = None) -> ReplicaView:
        """The replica as a policy sees it now, or `steps_ahead` decode steps of the whole running
        batch from now (fast-forward, with every running request decoding): view.py."""
        return EngineView(self, now_s, steps_ahead, self.kv.free_blocks if free_blocks is None else free_blocks)
