"""How far a replica can go on decoding before a decision could change: the engine's answers to
fast-forward (llmsim.cluster.fastforward), which plans runs of decode steps from them alone.

- `decode_steps_before_decision`: decode steps of the whole batch that may pass from a boundary
  before a finish, an admission round that could decide differently, or an arrival could change
  what the engine does; whether the rounds due meanwhile must be held ahead; the next known arrival.
- `hold_rounds_in_run`: start, now and in order, the admission rounds due at a run's inner
  boundaries, and cut the run at the first that admits the head (its round is kept for that
  boundary, `round_ahead`, decide.py).
- `round_counter_after`: the round counter step-by-step mode would have after a run.

Exactness rests on the rules in docs/architecture.md ("Fast-forward"): a run with requests
waiting is never cut short, a stable refusal cannot change before a finish, an eviction or a new
head, and a policy with `rounds_ahead` gives the same answers when its rounds are started early.

A mixin of ReplicaEngine. Units: decode steps, blocks, seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_right


class Horizon:
    """ReplicaEngine's answers to fast-forward (see the module docstring)."""

    def decode_steps_before_decision(self, after_prefill: bool = False) -> tuple[int, bool, float | None] | None:
        """(steps, hold_rounds, next_arrival_s) from this boundary (every running request decoding),
        or None if no run may start (nothing decodes, or the SLA guard is on with requests waiting).

        steps: to the next finish, and with requests waiting whose head's refusal may change, to
        the next admission round due, unless `hold_rounds` (the policy refused the head and its
        rounds may be started ahead: `hold_rounds_in_run` then cuts the run). next_arrival_s, with
        an empty queue: when the next request reaches this replica if the simulation knows it
        (`next_arrival_s`), None if one may arrive at any time; math.inf with requests waiting
        (an arrival then joins a non-empty queue and changes nothing).
        `after_prefill`: the boundary is the end of a prefill step planned with the run."""
        p, batch = self.params, self.batch
        if batch.size == 0:
            return None
        steps = batch.steps_to_next_finish()
        if not self.waiting:
            return steps, False, None if self.next_arrival_s is None else self.next_arrival_s()
        if p.guard_max_queue_s is not None or p.guard_max_tbt_s is not None:
            return None
        hold_rounds = False
        if not self.head_refusal_stable:
            # The head's last refusal may not hold at the next round (none judged this head yet,
            # or the policy may decide differently next time). If the policy refused it, hold the
            # rounds due inside the run now, in order, and end the run at the first that admits
            # (where the policy allows it); otherwise stop where the next round is due (the
            # counter, incremented per decode step, reaches r). Either is exact; holding pays
            # only where rounds keep refusing. A round due at a leading prefill's end (r = 0) is
            # held there, not here.
            r = self.scheduler.decode_steps_between_rounds
            hold_rounds = self.round_ahead is not None or (
                self.policy_refused_head and getattr(self.scheduler, "rounds_ahead", False) and not (after_prefill and r == 0)
                # with prefix caching, a separate-mode head's prefill (less its hits) can grow while
                # a run's blocks evict cached ones, and its token-budget check with it
                and not (self.prefix is not None and p.mode == "separate"))
            if not hold_rounds:
                # (at a leading prefill's end no round has run yet: with r = 0 one is due there)
                steps = min(steps, max(r - self.steps_since_round, 0 if after_prefill else 1))
        return steps, hold_rounds, math.inf

    def rounds_refuse_in_run(self, held: bool) -> bool:
        """Requests wait and every round due inside a run refuses the head: stably, or as held by
        `hold_rounds_in_run` (`held`)."""
        return bool(self.waiting) and (self.head_refusal_stable or held)

    def hold_rounds_in_run(self, ends_s: list[float], durations_s: list[float], cum_new_blocks: list[int]) -> None:
        """Hold the admission rounds due at a planned run's inner boundaries (the boundary at its
        end is `decide`'s), in order, as step-by-step mode would hold them there; cut the run (the
        lists, in place) at the first that admits the head, whose round is kept for that boundary.
        A stable refusal (free blocks, max_num_seqs, a stable policy) holds for the rest of the
        run, so the rounds after it refuse without being started, as they would then."""
        r = self.scheduler.decode_steps_between_rounds
        first, every = max(r - self.steps_since_round, 1), max(r, 1)
        if self.round_ahead is not None:
            # held when a run after a prefill step was planned and cut to one step (no run): the
            # first boundary due, one step from now
            j = self.round_ahead[0] - self.batch.clock
            assert j == first == 1, (j, first)
            del ends_s[j:], durations_s[j:], cum_new_blocks[j:]
            return
        head = self.head_ahead()
        if head == "stable":
            self.head_refusal_stable = True
        if isinstance(head, str):
            return  # no round at any boundary of the run admits the head
        cand, own = head
        steps, stable = boundaries_that_fit(first, every, cum_new_blocks, self.kv.free_blocks - cand.blocks - own)
        if steps:
            i, stable_refusal = self.hold_rounds_ahead(steps, ends_s, cum_new_blocks, cand)
            if i < len(steps) and not stable_refusal:
                j = steps[i]
                del ends_s[j:], durations_s[j:], cum_new_blocks[j:]
                return
            stable |= stable_refusal
        if stable:
            self.head_refusal_stable = True

    def round_counter_after(self, steps: int, waiting_before: int, head_refused: bool) -> int:
        """The `steps_since_round` value step-by-step mode would have after `steps` decode steps of
        a run planned with `waiting_before` requests waiting (`head_refused`: every round due
        inside it refused the head).

        If no round could run during the run (nothing waiting, or a policy whose run stops at its
        next round), the counter grows by `steps`. With requests waiting under a stable refusal,
        step-by-step mode runs a (refused) round at every boundary where the counter has reached
        r, resetting it to 0 before the step adds 1; the counter then cycles through 1..r."""
        c0 = self.steps_since_round  # after the run's first boundary was handled by decide
        if waiting_before == 0 or not head_refused:
            return c0 + steps
        r = self.scheduler.decode_steps_between_rounds
        c, m = c0 + 1, steps - 1  # value after the first step; transitions left
        if r <= 1:
            return 1
        if c <= r:
            return (c - 1 + m) % r + 1
        return c if m == 0 else (m - 1) % r + 1


def boundaries_that_fit(first: int, every: int, cum_new_blocks: list[int], room_blocks: int) -> tuple[range, bool]:
    """The inner boundaries j = first, first + every, ... (< len(cum_new_blocks)) of a run at which
    a head needing `room_blocks` fewer than the free blocks now passes the engine's block check, and
    whether the run's next boundary due after them fails it (a stable refusal).

    At boundary j, cum[j-1] blocks are allocated and step j+1 needs cum[j] - cum[j-1] more, so the
    check cand.blocks + reserved + own <= free blocks reads cum[j] <= room; cum never decreases, so
    it holds up to a boundary and fails at every later one (free blocks only shrink)."""
    steps = range(first, min(bisect_right(cum_new_blocks, room_blocks), len(cum_new_blocks)), every)
    return steps, first + len(steps) * every < len(cum_new_blocks)
