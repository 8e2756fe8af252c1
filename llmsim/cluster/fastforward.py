"""Fast-forward: advance a replica by k decode steps in one SimPy timeout, exactly.

Between two events that can change a decision, decode steps differ only in context length
(docs/architecture.md). A run of k steps starts at a step boundary where the next step is
a pure decode step (no prefill pending, no swap, no admission made), or right after a separate-mode
prefill step that it shares a timeout with (`continue_prefill_with_run`), and ends
at the first of:

- a finish: the step at which some running request reaches its true output length;
- memory: the step before one whose new blocks would not fit (that step evicts, step by step);
- an admission round that could decide differently: with requests waiting, a policy whose refusal
  can change between finishes (past-future redraws, the oracle's peak moves) gets a round every
  `decode_steps_between_rounds` steps; a refusal by aggressive or conservative, or by the
  `max_num_seqs` or free-block checks, cannot change until a finish, an eviction or a new head of
  the queue (free blocks only shrink, reservations stay: `engine.head_refusal_stable`), so the
  rounds step-by-step mode holds meanwhile refuse and do not stop a run;
- an arrival at an empty waiting queue: the run is cut at the first step boundary at or after
  the time the arrival is seen (a closed-loop send: strictly after it, llmsim.cluster.events;
  the end of a leading prefill is a boundary), as step-by-step mode would first judge it; the
  replica process then waits for the new end (events.move_wait). Where the
  simulation knows when the next request will reach this replica (open-loop arrivals with one
  replica or round-robin routing: `engine.next_arrival_s`), the run is planned to end at that
  boundary in the first place, so no steps are priced in vain and nothing needs cutting;
- the SLA guard: with requests waiting, no run; otherwise a run stops before a step longer than
  the abort limit.

The requests of a run advance through the replica's `DecodeBatch` (decode_batch.py): a run is
planned from the batch's aggregates and applied by moving its decode clock, without touching
per-request columns. Per-step times come from the cost model's one decode-run helper
(llmsim.costmodel.decode_run), which prices each step with the formula `step_time_s` uses, and
every sum is accumulated in step order, so per-request
timestamps, max time between tokens, the summary and the per-step series are bit-identical to
step-by-step mode (tests/test_fastforward.py).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import reduce
from itertools import accumulate
from operator import add, mul

import numpy as np

from ..costmodel.decode_run import price_decode_run

MAX_RUN_STEPS = 65_536  # bounds the per-run arrays; a longer run just continues in another


@dataclass(slots=True)
class DecodeRun:
    """k consecutive decode steps of the same requests, planned at `start_s` (lists: runs are
    short, and bisect and Python floats are cheaper than numpy on a few elements)."""

    ends_s: list[float]  # end time of each step (sequential sums from start_s)
    durations_s: list[float]
    cum_new_blocks: list[int]  # blocks allocated up to and including each step
    used_blocks_before: int
    waiting_before: int
    arrivals_s: list  # times of arrivals at this replica during the run (for the step log)
    head_refused: bool = False  # requests wait and every round due inside the run refuses the head
    decoders: int = 0  # requests that emit a token at each step
    # A run that starts with a prefill step (separate mode): when it ends, and the tokens it
    # removes from the outstanding work (prompt tokens computed plus the first tokens emitted).
    prefill_end_s: float | None = None
    prefill_duration_s: float = 0.0  # as the cost model gave it (end - start can differ in the last bit)
    prefill_tokens: int = 0

    @property
    def num_steps(self) -> int:
        return len(self.ends_s)

    @property
    def end_s(self) -> float:
        return self.ends_s[-1] if self.ends_s else self.prefill_end_s

    def truncate(self, now_s: float) -> float:
        """Cut the run at the first step boundary at or after `now_s` (the end of a leading
        prefill step is one); returns its end time."""
        if self.prefill_end_s is not None and now_s <= self.prefill_end_s:
            k = 0
        else:
            k = bisect_left(self.ends_s, now_s) + 1
        if k < self.num_steps:
            del self.ends_s[k:], self.durations_s[k:], self.cum_new_blocks[k:]
        return self.end_s

    def tokens_done(self, now_s: float) -> int:
        """Outstanding tokens the run has removed by `now_s`, as step-by-step mode has then applied
        them: steps that ended strictly before it."""
        done = self.decoders * bisect_left(self.ends_s, now_s)
        if self.prefill_end_s is not None and self.prefill_end_s < now_s:
            done += self.prefill_tokens
        return done

    def tokens_total(self) -> int:
        """Outstanding tokens the whole run removes."""
        return self.decoders * len(self.ends_s) + self.prefill_tokens


def plan_run(engine, now_s: float, after_prefill: bool = False) -> DecodeRun | None:
    """A run of at least 2 decode steps of the whole (decoding) batch starting now, or None to
    take a single step. Reads only the batch's aggregates (llmsim.cluster.decode_batch), and holds
    the admission rounds due inside the run where the policy allows it (`_hold_rounds`).
    `after_prefill`: `now_s` is the end of a prefill step planned with the run, not a boundary
    that plan_step has handled."""
    p, batch = engine.params, engine.batch
    n = batch.size
    if n == 0:
        return None
    k = min(batch.steps_to_next_finish(), MAX_RUN_STEPS)
    sched = engine.scheduler
    r = sched.decode_steps_between_rounds
    horizon_s = math.inf
    hold_rounds = False
    if engine.waiting:
        if p.guard_max_queue_s is not None or p.guard_max_tbt_s is not None:
            return None
        if not engine.head_refusal_stable:
            # The head's last refusal may not hold at the next round (none judged this head yet,
            # or the policy may decide differently next time). If the policy refused it, hold the
            # rounds due inside the run now, in order, and end the run at the first that admits
            # (where the policy allows it); otherwise stop where the next round is due (the
            # counter, incremented per decode step, reaches r). Either is exact; holding pays
            # only where rounds keep refusing. A round due at a leading prefill's end (r = 0) is
            # held there, not here.
            hold_rounds = engine.round_ahead is not None or (
                engine.policy_refused_head and getattr(sched, "rounds_ahead", False) and not (after_prefill and r == 0))
            if not hold_rounds:
                k = min(k, max(r - engine.steps_since_round, 1))
    elif engine.next_arrival_s is not None:
        # The next arrival would cut the run at the first boundary at or after it: plan no further
        # (saves pricing steps that would be thrown away, and the cut itself).
        horizon_s = engine.next_arrival_s()
    else:
        # An arrival may cut the run anywhere (load-aware routing): price no more than a short
        # run. A longer one mostly ended cut, its pricing mostly in vain; one that is
        # not cut goes on in the next run (ending a run at any boundary is exact, as a cut is).
        k = min(k, SHORT_RUN_STEPS)
    if k < 2:
        return None
    if p.guard_max_tbt_s is None and (k <= SHORT_RUN_STEPS or horizon_s != math.inf):
        ends, durations, cum = _plan_step_by_step(engine, now_s, n, k, horizon_s)
    else:
        ends, durations, cum = _plan_long(engine, now_s, n, k)
    if hold_rounds:
        _hold_rounds(engine, ends, durations, cum, max(r - engine.steps_since_round, 1), max(r, 1))
    if len(ends) < 2:
        return None
    # every round due inside the run refuses the head (stably, or as held by _hold_rounds)
    refused = bool(engine.waiting) and (engine.head_refusal_stable or hold_rounds)
    return DecodeRun(ends, durations, cum, engine.kv.used_blocks, len(engine.waiting), [], refused, n)


def continue_prefill_with_run(engine, step) -> None:
    """Fast-forward a separate-mode prefill step together with the decode run after it, in
    one timeout. Nothing can change a decision at the prefill's end that is not known now:
    no admission round is due there (the counter counts decode steps, and the round just
    ran), arrivals during the prefill cut the run there (`DecodeRun.truncate`), and a request
    that finishes at its prefill or a first decode step that needs an eviction leave the run
    empty. The prefilled requests emit their first token and join the batch now (their
    token is stamped with the prefill's end, and nothing reads them before it); the
    prefill's statistics and outstanding tokens are applied when the timeout ends."""
    t = engine.table
    end_s = step.start_s + step.duration_s  # what SimPy's clock will read then
    finishes = False
    for rid, chunk in zip(step.prefill_ids, step.prefill_chunk_tokens):
        t.prefill_left_tokens[rid] -= chunk
        t.prefill_computed_tokens[rid] += chunk
        finishes |= engine._emit_first_token_after_prefill(rid, end_s)
    run = None
    if not finishes and engine.batch.blocks_next_step() <= engine.kv.free_blocks:
        run = plan_run(engine, end_s, after_prefill=True)
    if run is None:
        run = DecodeRun([], [], [], engine.kv.used_blocks, len(engine.waiting), [])
    run.prefill_end_s = end_s
    run.prefill_duration_s = step.duration_s
    run.prefill_tokens = sum(step.prefill_chunk_tokens) + len(step.prefill_ids)
    step.run = run
    step.duration_s = run.end_s - step.start_s
    engine._start_run(run)



def finish_prefill_of_run(engine, step) -> list[int]:
    """The statistics of a run's leading prefill step, as `finish_step` records a prefill
    step; returns the requests that finished at it (their token was emitted at planning)."""
    run, st = step.run, engine.stats
    prefill_s = run.prefill_duration_s
    st.kv_block_s += step.used_blocks * prefill_s
    st.peak_used_blocks = max(st.peak_used_blocks, step.used_blocks)
    st.steps += 1
    st.busy_s += prefill_s
    if engine.params.record_steps:
        arrived = sum(1 for a in run.arrivals_s if a <= run.prefill_end_s)
        st.step_log.append((step.start_s, prefill_s, 0, sum(step.prefill_chunk_tokens), len(engine.running),
                            run.waiting_before + arrived, step.used_blocks, st.evictions))
    engine._add_outstanding(-run.prefill_tokens)
    t = engine.table
    return [r for r in step.prefill_ids if t.generated_tokens[r] >= t.output_tokens[r]]



def _hold_rounds(engine, ends, durations, cum, first: int, every: int) -> None:
    """Hold the admission rounds due at the run's inner boundaries (after steps first, first +
    every, ...; the boundary at its end is plan_step's), in order, as step-by-step mode would hold
    them there; cut the run (the lists, in place) at the first that admits the head, whose round
    the engine keeps for that boundary. A stable refusal (free blocks, max_num_seqs, a stable
    policy) holds for the rest of the run, so the rounds after it refuse without being started,
    as they would then.

    Exact because a run with requests waiting is never cut short (only an arrival at an empty
    queue cuts a run), so every round held here is one that step-by-step mode holds, and because
    the policy's rounds depend only on their view and on the policy's state
    (`Scheduler.rounds_ahead`)."""
    if engine.round_ahead is not None:
        # held when a run after a prefill step was planned and cut to one step (no run): the
        # first boundary due, one step from now
        j = engine.round_ahead[0] - engine.batch.clock
        assert j == first == 1, (j, first)
        del ends[j:], durations[j:], cum[j:]
        return
    head = engine.head_ahead()
    if head == "stable":
        engine.head_refusal_stable = True
    if isinstance(head, str):
        return  # no round at any boundary of the run admits the head
    cand, own = head
    free = engine.kv.free_blocks
    steps, stable = [], False
    for j in range(first, len(ends), every):
        # at boundary j, cum[j-1] blocks are allocated and step j+1 needs cum[j] - cum[j-1] more:
        # the engine's check cand.blocks + reserved + own <= free blocks then reads
        if cand.blocks + own + cum[j] > free:
            stable = True  # and at every later boundary (free blocks only shrink)
            break
        steps.append(j)
    if steps:
        i, stable_refusal = engine.hold_rounds_ahead(steps, ends, cum, cand)
        if i < len(steps) and not stable_refusal:
            j = steps[i]
            del ends[j:], durations[j:], cum[j:]
            return
        stable |= stable_refusal
    if stable:
        engine.head_refusal_stable = True


SHORT_RUN_STEPS = 32  # up to this many steps, blocks are counted in Python (cheaper than numpy on a few)


def _plan_step_by_step(engine, now_s, n, k, horizon_s):
    """Up to k steps, priced one by one, stopping after the first step that ends at or after
    `horizon_s` and before a step whose new blocks do not fit."""
    batch = engine.batch
    # each decode token attends to its own KV as well
    ends, durations = price_decode_run(engine.cost_model, n, now_s, batch.kv_sum_tokens() + n, batch.kv_max_tokens() + 1,
                                       min(k, SHORT_RUN_STEPS), horizon_s)
    # blocks counted only for the steps priced (the horizon mostly comes first; memory rarely does)
    counts, c, _ = batch.block_classes()
    # step j allocates counts[(c - j) % block_size]: the classes c, c - 1, ..., 0, then from the
    # top, cycling (a run mostly ends before class 0)
    order = counts[c::-1]
    if len(ends) > len(order):
        order = (order + counts[:c:-1]) * (len(ends) // len(counts) + 1)
    cum = list(accumulate(order[:len(ends)]))
    if cum[-1] > engine.kv.free_blocks:
        fits = bisect_right(cum, engine.kv.free_blocks)  # cumulative counts never decrease
        del ends[fits:], durations[fits:], cum[fits:]  # memory came first
    elif k > SHORT_RUN_STEPS and len(ends) == SHORT_RUN_STEPS and ends[-1] < horizon_s:
        # a long run after all: its other steps
        more_ends, more_durations, more_cum = _plan_long(engine, ends[-1], n, k, horizon_s, skip=len(ends))
        ends += more_ends
        durations += more_durations
        cum += more_cum
    return ends, durations, cum


def _plan_long(engine, start_s, n, k, horizon_s=math.inf, skip=0):
    """Steps skip+1..k of a run, stopping after the first that ends at or after `horizon_s`,
    before a step whose new blocks do not fit (counted with numpy: a long run) and before a step
    longer than the SLA guard's abort limit. Returns (ends, durations, cumulative new blocks) as
    lists, ends summed sequentially from `start_s`."""
    p, batch = engine.params, engine.batch
    cum = batch.blocks_cumulative(k)[skip:]  # cumulative from the run's first step
    fits = int(np.searchsorted(cum, engine.kv.free_blocks, side="right"))  # steps whose blocks fit
    k = min(k, skip + fits)
    if k <= skip:
        return [], [], []
    ends, durations = price_decode_run(engine.cost_model, n, start_s, batch.kv_sum_tokens() + n + n * skip,
                                       batch.kv_max_tokens() + 1 + skip, k - skip, horizon_s)
    cum = cum[:len(ends)].tolist()
    limit_s = p.guard_max_tbt_s
    if limit_s is not None:
        engine.sync()
        ids = engine.batch.member_ids()
        if (ends[0] - engine.table.last_token_s[ids] > limit_s).any():
            return [], [], []
        over = next((j for j, d in enumerate(durations) if d > limit_s), None)
        if over is not None:
            del ends[over:], durations[over:], cum[over:]
    return ends, durations, cum


def apply_run(engine, step, run: DecodeRun) -> list[int]:
    """Apply a (possibly truncated) run; returns the ids that finished at its last step, in
    admission order (their progress is written; the others' stays lazy in the batch)."""
    st = engine.stats
    k = run.num_steps
    n = engine.batch.size
    if k == 0:
        return []
    engine.kv.allocate(run.cum_new_blocks[-1])
    engine.batch.advance(run.ends_s)
    engine._add_outstanding(-n * k)
    # summed step by step, in step order, as step-by-step mode does (float addition in the same
    # order gives the same bits): reduce(add, xs, total) is the left fold ((total + x0) + x1) + ...,
    # looped in C
    before = run.used_blocks_before
    st.kv_block_s = reduce(add, map(mul, map(before.__add__, run.cum_new_blocks), run.durations_s), st.kv_block_s)
    st.busy_s = reduce(add, run.durations_s, st.busy_s)
    st.peak_used_blocks = max(st.peak_used_blocks, before + run.cum_new_blocks[-1])
    st.steps += k
    engine.steps_since_round = _round_counter_after(engine, run, k)
    if engine.params.record_steps:
        first_start_s = step.start_s if run.prefill_end_s is None else run.prefill_end_s
        starts = [first_start_s] + run.ends_s[:-1]
        arrivals = sorted(run.arrivals_s)
        for j in range(k):
            arrived = bisect_right(arrivals, run.ends_s[j])
            st.step_log.append((starts[j], run.durations_s[j], n, 0, len(engine.running),
                                run.waiting_before + arrived, before + run.cum_new_blocks[j], st.evictions))
    return engine._in_running_order(engine.batch.finished_now())


def _round_counter_after(engine, run: DecodeRun, k: int) -> int:
    """The `steps_since_round` value step-by-step mode would have after these k decode steps.

    If no round could run during the run (nothing waiting, or a policy whose run stops at its next
    round), the counter grows by k. With requests waiting under a stable policy, step-by-step mode
    runs a (refused) round at every boundary where the counter has reached r, resetting it to 0
    before the step adds 1; the counter then cycles through 1..r.
    """
    c0 = engine.steps_since_round  # after the run's first boundary was handled by plan_step
    if run.waiting_before == 0 or not run.head_refused:
        return c0 + k
    r = engine.scheduler.decode_steps_between_rounds
    c, m = c0 + 1, k - 1  # value after the first step; transitions left
    if r <= 1:
        return 1
    if c <= r:
        return (c - 1 + m) % r + 1
    return c if m == 0 else (m - 1) % r + 1
