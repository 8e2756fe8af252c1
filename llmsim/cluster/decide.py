"""Deciding one replica's next iteration without changing anything: `ReplicaEngine.decide(now_s)`.

A `Decision` is what the engine does at a step boundary before it builds the step: the requests
the SLA guard drops, the admission round's outcome (the requests admitted, in queue order, and the
refusal that ended the round), and the requests evicted so that the next decode step's new blocks
fit. `decide` reads the engine, the request table and the policy and writes none of them:

- the admission walk and the eviction loop run on counts (running requests, free blocks, swap
  blocks, the decode batch's next-step blocks) that they update locally, as the writes would;
- a policy's round draws from the replica's counter stream (`scheduler.stream`, a
  llmsim.rng.CounterStream): decide puts the counter back where it found it and keeps the value
  the round left it at, for `begin` to commit; draws are addressable, so the same draws follow;
- a round that fast-forward held ahead (`engine.round_ahead`) answers the head without being
  asked again; it is copied before it is offered a second candidate (offers change a round);
- progress is read through the decode batch's clock (`DecodeBatch.current_progress`), never
  written to the table.

So deciding twice gives equal decisions, and the state is the same after as before
(tests/test_decide.py). `begin(decision)` (llmsim.cluster.begin) applies it at the step's start.

A mixin of ReplicaEngine. Units: seconds, tokens, blocks.
"""

from __future__ import annotations

import copy

from ..kvcache import blocks_for
from ..prefix_plan import CachePlan
from ..request import SWAPPED

_NONE: tuple = ()  # shared empty default (a Decision is made at every step boundary)


class Decision:
    """What `begin` applies at `now_s`, in this order: drops, the round's admissions, evictions.
    (A plain class whose defaults are class attributes: one is made at every step boundary, and
    setting only what a boundary decides costs less than a dataclass's full __init__.)"""

    dropped: list[int] | tuple = _NONE  # guard drops, queue order
    round_ran: bool = False  # an admission round ran (it resets the round counter and the flags below)
    admitted: list | tuple = _NONE  # Candidates admitted, queue order
    swapped_in: list[bool] | tuple = _NONE  # per admission: a swapped-out request copied back
    swap_in_s: float = 0.0  # swap-in seconds, summed in admission order
    head_refusal_stable: bool = False  # the round's verdicts (ReplicaEngine's flags of these names)
    policy_refused_head: bool = False
    took_round_ahead: bool = False  # the round was the one fast-forward held for this boundary
    stream_after: int | None = None  # the policy stream's counter after the round's draws
    victims: list[int] | tuple = _NONE  # evicted, in eviction order
    swap_out_s: float = 0.0  # swap-out seconds of the victims, summed in eviction order
    plan = None  # prefix caching: the round's planned cache changes (llmsim.prefix_plan), not compared

    FIELDS = ("now_s", "dropped", "round_ran", "admitted", "swapped_in", "swap_in_s", "head_refusal_stable",
              "policy_refused_head", "took_round_ahead", "stream_after", "victims", "swap_out_s")

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and self._values() == other._values()

    __hash__ = None  # mutable while it is being decided

    def __repr__(self) -> str:
        return "Decision(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.FIELDS) + ")"


class Decide:
    """ReplicaEngine's pure decision half (see the module docstring)."""

    def decide(self, now_s: float) -> Decision:
        """What happens at the boundary `now_s`, before the step is built; writes nothing."""
        p, waiting = self.params, self.waiting
        d = Decision(now_s)
        round_due = not self.running or self.steps_since_round >= self.scheduler.decode_steps_between_rounds
        if waiting:
            if p.guard_max_queue_s is not None and (round_due or not p.guard_queue_at_rounds_only):
                d.dropped = self._stale(now_s)
            if round_due and len(waiting) > len(d.dropped):
                self._decide_round(d)
        if not d.admitted:
            if self.running and self.batch.blocks_next_step() > self.kv.free_blocks:
                self._decide_victims(d)
        # a separate-mode step that prefills what the round admitted does not decode: no eviction
        elif p.mode == "mixed" or all(d.swapped_in):
            self._decide_victims(d)
        return d

    def _decide_round(self, d: Decision) -> None:
        """The admission round (admission.py's rules), walked on local counts."""
        t, p = self.table, self.params
        d.round_ran = True
        if p.mode == "separate":
            budget = p.max_batched_tokens
        else:
            budget = p.max_batched_tokens - self.batch.size - int(t.prefill_left_tokens[self._ids()].sum())
        # Blocks the running batch takes at its next decode step stay out of admission (admission.py)
        reserved = self.batch.blocks_next_step()
        limit = self.scheduler.max_admissions_per_round
        free, running = self.kv.free_blocks, len(self.running)
        dropped = set(d.dropped) if d.dropped else None
        admitted, swapped_in = [], []
        stream = self._stream_state
        counter = None if stream is None else stream.item(0)  # a Python int (.item: one call)
        rnd = None  # started when a candidate first passes the engine limits (no draws otherwise)
        stable = refused = False
        for rid in self.waiting:
            if dropped and rid in dropped:
                continue
            if limit is not None and len(admitted) >= limit:
                break
            stable = True  # a break from here on is a stable refusal unless reset (admission.py)
            if running >= p.max_num_seqs:
                break
            cand = self._candidate(rid, None if self.prefix is None else self._plan_with(d, admitted))
            swapped = t.status.item(rid) == SWAPPED
            prefill = 0 if swapped else cand.kv_tokens - cand.cached_tokens
            own = int(swapped and cand.kv_tokens % p.block_size == 0)
            refusal = self._engine_refusal(cand, prefill, own, budget, reserved, free)
            if refusal is not None:
                stable = refusal == "blocks"
                break
            if rnd is None:
                rnd, accepted = self._start_policy_round(cand, d)
            else:
                if d.took_round_ahead and rnd is self.round_ahead[2]:
                    rnd = copy.deepcopy(rnd, {id(self.scheduler): self.scheduler})  # leave the held one as it is
                accepted = rnd.admit(cand)
            if not accepted and running:  # an empty replica always runs its head request
                if not self._refusal_stable:
                    stable, refused = False, True
                break
            stable = False
            admitted.append(cand)
            swapped_in.append(swapped)
            if swapped:
                d.swap_in_s += self.cost_model.swap_time_s(cand.blocks * self.swap.block_bytes)
            free -= cand.blocks
            running += 1
            budget -= prefill if prefill else int(p.mode == "mixed")  # a swap-in adds a decode token
            reserved += own
            if not accepted:
                break  # forced: the round did not count this request, so it cannot judge the next one
        if counter is not None and (after := stream.item(0)) != counter:
            d.stream_after, stream[0] = after, counter
        d.admitted, d.swapped_in = admitted, swapped_in
        d.head_refusal_stable, d.policy_refused_head = stable, refused

    def _decide_victims(self, d: Decision) -> None:
        """The requests to evict before the next decode step, if its new blocks do not fit."""
        bs = self.params.block_size
        need, free = self.batch.blocks_next_step(), self.kv.free_blocks
        for cand, swapped in zip(d.admitted, d.swapped_in):
            free -= cand.blocks
            if swapped and cand.kv_tokens % bs == 0:
                need += 1  # it joins the batch and its next token starts a block
        if need > free:
            d.victims, d.swap_out_s = self._choose_victims(d.admitted, d.swapped_in, need, free, self._plan_with(d, d.admitted))

    def _plan_with(self, d: Decision, admitted: list) -> CachePlan | None:
        """Prefix caching: the cache as `begin` will leave it after the admissions `admitted` (a
        CachePlan kept in `d.plan`, brought up to date), for the next candidates and the victims;
        None without prefix caching."""
        if self.prefix is None:
            return None
        plan = d.plan
        if plan is None:
            plan = d.plan = CachePlan(self.kv)
        bs = self.params.block_size
        for cand in admitted[plan.admissions:]:
            if self.table.status[cand.request_id] == SWAPPED:  # (nothing is written while deciding)
                plan.allocate(cand.blocks)
            else:
                plan.admit(cand.request_id, self._chain(cand.request_id), blocks_for(cand.kv_tokens, bs))
            plan.admissions += 1
        return plan


def stream_state(scheduler):
    """The policy's counter-stream state array (llmsim.rng.CounterStream), or None."""
    state = getattr(getattr(scheduler, "stream", None), "state", None)
    return state if state is not None and len(state) == 1 else None

