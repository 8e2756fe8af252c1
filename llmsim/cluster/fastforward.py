"""Fast-forward: advance a replica by k decode steps in one SimPy timeout, exactly.

Between two events that can change a decision, decode steps differ only in context length
(ARCHITECTURE.md, Performance). A run of k steps starts at a step boundary where the next step is
a pure decode step (no prefill pending, no swap, no admission made), or right after a separate-mode
prefill step that it shares a timeout with (`ReplicaEngine._continue_prefill_with_run`), and ends
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
  the arrival (the end of a leading prefill is one; arrivals at a boundary are seen there, as in
  step-by-step mode), by moving its end event earlier (`_Environment.move_earlier`);
- the SLA guard: with requests waiting, no run; otherwise a run stops before a step longer than
  the abort limit.

The requests of a run advance through the replica's `DecodeBatch` (decode_batch.py): a run is
planned from the batch's aggregates and applied by moving its decode clock, without touching
per-request columns. Per-step times come from `CostModel.decode_steps_s`, which equals the
single-step call bit for bit, and every sum is accumulated in step order, so per-request
timestamps, max time between tokens, the summary and the per-step series are bit-identical to
step-by-step mode (tests/test_fastforward.py).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

MAX_RUN_STEPS = 65_536  # bounds the per-run arrays; a longer run just continues in another


@dataclass(slots=True)
class DecodeRun:
    """k consecutive decode steps of the same requests, planned at `start_s`."""

    ends_s: np.ndarray  # end time of each step (sequential sums from start_s)
    durations_s: np.ndarray
    cum_new_blocks: np.ndarray  # blocks allocated up to and including each step
    used_blocks_before: int
    waiting_before: int
    arrivals_s: list  # times of arrivals at this replica during the run (for the step log)
    head_refused: bool = False  # the head's refusal is stable: rounds during the run refuse too
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
        return float(self.ends_s[-1]) if len(self.ends_s) else self.prefill_end_s

    def truncate(self, now_s: float) -> float:
        """Cut the run at the first step boundary at or after `now_s` (the end of a leading
        prefill step is one); returns its end time."""
        if self.prefill_end_s is not None and now_s <= self.prefill_end_s:
            k = 0
        else:
            k = bisect_left(self.ends_s, now_s) + 1
        if k < self.num_steps:
            self.ends_s = self.ends_s[:k]
            self.durations_s = self.durations_s[:k]
            self.cum_new_blocks = self.cum_new_blocks[:k]
        return self.end_s

    def tokens_done(self, now_s: float) -> int:
        """Outstanding tokens the run has removed by `now_s`, as step-by-step mode has then applied
        them: steps that ended strictly before it (bisect: runs are short, cheaper than numpy)."""
        done = self.decoders * bisect_left(self.ends_s, now_s)
        if self.prefill_end_s is not None and self.prefill_end_s < now_s:
            done += self.prefill_tokens
        return done

    def tokens_total(self) -> int:
        """Outstanding tokens the whole run removes."""
        return self.decoders * len(self.ends_s) + self.prefill_tokens


def plan_run(engine, now_s: float) -> DecodeRun | None:
    """A run of at least 2 decode steps of the whole (decoding) batch starting now, or None to
    take a single step. Reads only the batch's aggregates (llmsim.cluster.decode_batch)."""
    p, batch = engine.params, engine.batch
    n = batch.size
    if n == 0:
        return None
    k = min(batch.steps_to_next_finish(), MAX_RUN_STEPS)
    sched = engine.scheduler
    if engine.waiting:
        if p.guard_max_queue_s is not None or p.guard_max_tbt_s is not None:
            return None
        if not engine.head_refusal_stable:
            # The head's last refusal may not hold at the next round (none judged this head yet,
            # or the policy may decide differently next time): stop where the next round is due,
            # i.e. when the counter (incremented per decode step) reaches r.
            k = min(k, max(sched.decode_steps_between_rounds - engine.steps_since_round, 1))
    if k < 2:
        return None
    cum = batch.blocks_cumulative(k)
    fits = int(np.searchsorted(cum, engine.kv.free_blocks, side="right"))  # steps whose blocks fit
    k = min(k, fits)
    if k < 2:
        return None
    durations = engine.cost_model.decode_steps_s(n, batch.kv_sum_tokens() + n, batch.kv_max_tokens() + 1, k)
    if p.guard_max_tbt_s is not None:
        engine.sync()
        ids = engine.batch.member_ids()
        gap0 = now_s + durations[0] - engine.table.last_token_s[ids]
        if (gap0 > p.guard_max_tbt_s).any():
            return None
        over = np.flatnonzero(durations > p.guard_max_tbt_s)
        if len(over):
            k = int(over[0])
            if k < 2:
                return None
            durations, cum = durations[:k], cum[:k]
    ends = np.add.accumulate(np.concatenate(([now_s], durations)))[1:]
    refused = bool(engine.waiting) and engine.head_refusal_stable
    return DecodeRun(ends, durations, cum[:k], engine.kv.used_blocks, len(engine.waiting), [], refused, n)


def apply_run(engine, step, run: DecodeRun) -> list[int]:
    """Apply a (possibly truncated) run; returns the ids that finished at its last step, in
    admission order (their progress is written; the others' stays lazy in the batch)."""
    st = engine.stats
    k = run.num_steps
    n = engine.batch.size
    if k == 0:
        return []
    engine.kv.allocate(int(run.cum_new_blocks[-1]))
    engine.batch.advance(run.ends_s)
    engine._add_outstanding(-n * k)
    used = run.used_blocks_before + run.cum_new_blocks
    # summed step by step, in step order, as step-by-step mode does (runs are short: a loop is
    # cheaper than numpy here, and float addition in order gives the same bits)
    kv_block_s, busy_s = st.kv_block_s, st.busy_s
    for u, d in zip(used.tolist(), run.durations_s.tolist()):
        kv_block_s += u * d
        busy_s += d
    st.kv_block_s, st.busy_s = kv_block_s, busy_s
    st.peak_used_blocks = max(st.peak_used_blocks, int(used[-1]))
    st.steps += k
    engine.steps_since_round = _round_counter_after(engine, run, k)
    if engine.params.record_steps:
        first_start_s = step.start_s if run.prefill_end_s is None else run.prefill_end_s
        starts = np.concatenate(([first_start_s], run.ends_s[:-1]))
        arrived = np.searchsorted(np.asarray(run.arrivals_s, dtype=np.float64), run.ends_s, side="right")
        for j in range(k):
            st.step_log.append((float(starts[j]), float(run.durations_s[j]), n, 0, len(engine.running),
                                run.waiting_before + int(arrived[j]), int(used[j]), st.evictions))
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
