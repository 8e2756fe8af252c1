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

A strategy over the engine's public methods only: it asks how many decode steps may pass before a
decision could change (`decode_steps_before_decision`, horizon.py), prices them
(llmsim.costmodel.decode_run), counts their blocks from the batch's aggregates, lets the engine
hold the rounds due inside the run (`hold_rounds_in_run`), and applies the run through the
engine's bookkeeping (`apply_decode_steps`, `round_counter_after`, `ReplicaStats.add_step`,
`log_step`, `emit_first_token`, `start_run`, `tokens_processed`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import accumulate

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
    prefill_finished: list[int] | None = None  # requests whose last token was the prefill's (set with it)

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
    """A run of decode steps of the whole (decoding) batch starting now, or None to take a single
    step. (A run of one step is the same step as a single one; once it is priced, it is cheaper
    applied as a run than priced again as a step.) Asks the engine how far it may go
    (`decode_steps_before_decision`), prices the steps (llmsim.costmodel.decode_run) and counts
    their blocks from the batch's aggregates (llmsim.cluster.decode_batch), and lets the engine
    hold the admission rounds due inside it (`hold_rounds_in_run`). `after_prefill`: `now_s` is
    the end of a prefill step planned with the run, not a boundary that `decide` has handled."""
    bound = engine.decode_steps_before_decision(after_prefill)
    if bound is None:
        return None
    k, hold_rounds, horizon_s = bound
    k = min(k, MAX_RUN_STEPS)
    if horizon_s is None:
        # An arrival may cut the run anywhere (load-aware routing): price no more than a short
        # run. A longer one mostly ended cut, its pricing mostly in vain; one that is
        # not cut goes on in the next run (ending a run at any boundary is exact, as a cut is).
        k, horizon_s = min(k, SHORT_RUN_STEPS), math.inf
    # else a known next arrival would cut the run at the first boundary at or after it: plan no
    # further (saves pricing steps that would be thrown away, and the cut itself); one seen by the
    # end of a leading prefill (`now_s` here) is judged there, before any decode step
    if k < 1 or horizon_s <= now_s:
        return None
    n = engine.batch.size
    if engine.params.guard_max_tbt_s is None and (k <= SHORT_RUN_STEPS or horizon_s != math.inf):
        ends, durations, cum = _plan_step_by_step(engine, now_s, n, k, horizon_s)
    else:
        ends, durations, cum = _plan_long(engine, now_s, n, k)
    if hold_rounds:
        engine.hold_rounds_in_run(ends, durations, cum)
    if not ends:
        return None
    return DecodeRun(ends, durations, cum, engine.kv.used_blocks, len(engine.waiting), [],
                     engine.rounds_refuse_in_run(hold_rounds), n)


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
    finished = []
    for rid, chunk in zip(step.prefill_ids, step.prefill_chunk_tokens):
        t.prefill_left_tokens[rid] -= chunk
        t.prefill_computed_tokens[rid] += chunk
        if engine.emit_first_token(rid, end_s):
            finished.append(rid)
    run = None
    if not finished and engine.batch.blocks_next_step() <= engine.kv.free_blocks:
        run = plan_run(engine, end_s, after_prefill=True)
    if run is None:
        run = DecodeRun([], [], [], engine.kv.used_blocks, len(engine.waiting), [])
    run.prefill_end_s = end_s
    run.prefill_duration_s = step.duration_s
    run.prefill_tokens = sum(step.prefill_chunk_tokens) + len(step.prefill_ids)
    run.prefill_finished = finished
    step.run = run
    step.duration_s = run.end_s - step.start_s
    engine.start_run(run)



def finish_prefill_of_run(engine, step) -> list[int]:
    """The bookkeeping of a run's leading prefill step, as `finish_step` does it for a prefill
    step; returns the requests that finished at it (their token was emitted at planning)."""
    run = step.run
    engine.stats.add_step(run.prefill_duration_s, step.used_blocks)
    if engine.params.record_steps:
        arrived = sum(1 for a in run.arrivals_s if a <= run.prefill_end_s)
        engine.log_step(step.start_s, run.prefill_duration_s, 0, sum(step.prefill_chunk_tokens),
                        run.waiting_before + arrived, step.used_blocks)
    engine.tokens_processed(run.prefill_tokens)
    return run.prefill_finished  # found when their first token was emitted, at planning


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
    """Apply a (possibly truncated) run through the engine's bookkeeping for decode steps
    (`apply_decode_steps`); returns the ids that finished at its last step, in admission order
    (their progress is written; the others' stays lazy in the batch)."""
    k = run.num_steps
    if k == 0:
        return []
    counter = engine.round_counter_after(k, run.waiting_before, run.head_refused)
    finished = engine.apply_decode_steps(run.ends_s, run.durations_s, run.cum_new_blocks, run.used_blocks_before, counter)
    if engine.params.record_steps:
        first_start_s = step.start_s if run.prefill_end_s is None else run.prefill_end_s
        starts = [first_start_s] + run.ends_s[:-1]
        arrivals = sorted(run.arrivals_s)
        for j in range(k):
            arrived = bisect_right(arrivals, run.ends_s[j])
            engine.log_step(starts[j], run.durations_s[j], run.decoders, 0, run.waiting_before + arrived,
                            run.used_blocks_before + run.cum_new_blocks[j])
    return finished
