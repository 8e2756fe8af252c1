"""One replica's engine: iteration-level continuous batching over a paged KV cache.

Plain Python, no SimPy: the replica process (llmsim.cluster.replica) calls `plan_step(now_s)`,
waits the step's duration, then calls `finish_step(step, end_s)`. docs/architecture.md shows one
request's path through these calls and the event order around them.

- `plan_step` = `begin(decide(now_s))`: `decide` (decide.py) says, writing nothing, which requests
  the SLA guard drops (guard.py), what an admission round due admits (admission.py) and which
  requests are evicted (eviction.py); `begin` (begin.py) writes that and builds either the
  prefill of the requests just admitted (`separate` mode), or, after the evictions, one decode
  token for every decoding request plus, in `mixed` mode (chunked prefill), prefill chunks oldest
  admission first within `max_batched_tokens`. With fast-forward on, a run of decode steps that
  no decision can interrupt is planned as one step (fastforward.py, from the engine's answers in
  horizon.py, applied through `apply_decode_steps`).
- `finish_step`: a decode step's new blocks are allocated; the guard aborts stalled requests;
  tokens are emitted; requests that reach their true output length finish and free their
  blocks; statistics are recorded.

Decoding requests advance together: their progress columns in the request table are written
lazily by a `DecodeBatch` (decode_batch.py); `sync()` writes them before anything reads them.
With `prefix_caching`, the allocator is llmsim.prefix_cache's: cached prompt blocks are shared,
their tokens not prefilled. Blocks for a whole prefill (prompt + tokens generated before an
eviction) are allocated at admission in both modes, so a policy sees the same memory either way
(LightLLM allocates this way; vLLM v1 allocates chunk by chunk).

Units: seconds of simulated time, tokens, blocks.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..costmodel.base import CostModel
from ..kvcache import BlockAllocator, SwapSpace, blocks_for
from ..prefix_cache import PrefixCachingAllocator, PrefixKeys
from ..request import FINISHED, RUNNING, SWAPPED, WAITING, RequestTable
from ..schedulers.base import Scheduler
from .admission import Admission
from .begin import Begin, Step
from .decide import Decide, stream_state
from .decode_batch import DecodeBatch
from .eviction import Eviction
from .fastforward import DecodeRun, apply_run, finish_prefill_of_run
from .guard import Guard
from .horizon import Horizon

VICTIM_ORDERS = ("newest", "latest-arrival", "largest-remaining-cap", "longest-context")


@dataclass(frozen=True)
class EngineParams:
    """Engine limits of one replica, already resolved (no YAML here)."""

    total_blocks: int
    block_size: int = 16
    mode: str = "separate"  # "separate" | "mixed"
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    preemption: str = "recompute"  # "recompute" | "swap"
    victim: str = "newest"
    swap_space_bytes: float = 0.0  # per GPU
    kv_bytes_per_token_per_gpu: float = 0.0  # prices swap transfers
    record_steps: bool = False
    fast_forward: bool = True  # advance runs of decode steps in one timeout (exact; see fastforward.py)
    # Server-side SLA guard (the paper's artifact servers): drop a request that waited longer than
    # this for its first admission; abort one whose gap since its last token exceeds this.
    guard_max_queue_s: float | None = None
    guard_max_tbt_s: float | None = None
    # Take each request's largest gap between tokens in batches, after it leaves the decoding
    # batch (decode_batch.py): only where nothing reads max_tbt_s before `sync()`.
    defer_max_tbt: bool = False
    guard_queue_at_rounds_only: bool = False  # check the queue limit only when an admission round is due
    guard_abort_waiting: bool = True  # false: an evicted request is aborted only once it runs again
    reset_round_counter_on_eviction: bool = False
    prefix_caching: bool = False  # share cached full prompt blocks (llmsim.prefix_cache)


@dataclass
class ReplicaStats:
    kv_block_s: float = 0.0  # integral of used blocks over time
    peak_used_blocks: int = 0
    evictions: int = 0
    swap_outs: int = 0
    steps: int = 0
    timeouts: int = 0  # plan/finish cycles: one per step, or one per fast-forwarded run
    busy_s: float = 0.0
    dropped: int = 0
    aborted: int = 0
    # prefix cache, over every (re-)prefill admitted: tokens and full prompt blocks asked, found cached
    prefix_query_tokens: int = 0
    prefix_hit_tokens: int = 0
    prefix_query_blocks: int = 0
    prefix_hit_blocks: int = 0
    step_log: list[tuple] = field(default_factory=list)

    def add_step(self, duration_s: float, used_blocks: int) -> None:
        """One step of `duration_s` with `used_blocks` blocks in use."""
        self.kv_block_s += used_blocks * duration_s
        self.peak_used_blocks = max(self.peak_used_blocks, used_blocks)
        self.steps += 1
        self.busy_s += duration_s

    def add_steps(self, durations_s: list[float], used_before: int, cum_new_blocks: list[int]) -> None:
        """Consecutive steps, step j using `used_before + cum_new_blocks[j]` blocks: the sums of
        `add_step` one step at a time, in step order (float addition in the same order gives the
        same bits). One plain loop for both sums: about twice as fast as the two
        reduce(add, map(...)) folds it replaced, for runs of 2 to 200 steps (2026-12-05)."""
        kv_block_s, busy_s = self.kv_block_s, self.busy_s
        for new_blocks, duration_s in zip(cum_new_blocks, durations_s):
            kv_block_s += (used_before + new_blocks) * duration_s
            busy_s += duration_s
        self.kv_block_s, self.busy_s = kv_block_s, busy_s
        self.peak_used_blocks = max(self.peak_used_blocks, used_before + cum_new_blocks[-1])
        self.steps += len(durations_s)


class ReplicaEngine(Decide, Begin, Horizon, Admission, Eviction, Guard):
    """The state and step logic of one model replica (deciding and starting a step, the answers
    to fast-forward, admission, eviction and the SLA guard are mixins in their own modules)."""

    def __init__(self, index: int, table: RequestTable, scheduler: Scheduler, cost_model: CostModel, params: EngineParams) -> None:
        if params.mode not in ("separate", "mixed"):
            raise ValueError(f"unknown engine mode {params.mode!r}")
        if params.victim not in VICTIM_ORDERS:
            raise ValueError(f"unknown victim order {params.victim!r}")
        self.index = index
        self.table = table
        self.scheduler = scheduler
        # the policy's optional parts (base.Scheduler), looked up once: a round runs about once a request
        self._rounds_at_once = getattr(scheduler, "first_admitting_round", None)
        self._refusal_stable = getattr(scheduler, "refusal_stable", False)
        self._stream_state = stream_state(scheduler)  # its random draws' counter (decide.py)
        self.cost_model = cost_model
        self.params = params
        self.kv = (PrefixCachingAllocator if params.prefix_caching else BlockAllocator)(params.total_blocks, params.block_size)
        self.prefix = prefix_keys(table, params.block_size) if params.prefix_caching else None
        block_bytes = params.block_size * params.kv_bytes_per_token_per_gpu
        self.swap = SwapSpace(params.swap_space_bytes if params.preemption == "swap" else 0.0, block_bytes)
        self.waiting: deque[int] = deque()
        # admission order, oldest first; an array of int64 (list-like) that numpy copies in one call
        self.running: array = array("q")
        self._running_ids: np.ndarray | None = None  # a numpy copy, made when asked for
        # the running requests whose prefill is done
        self.batch = DecodeBatch(table, params.block_size, defer_max_tbt=params.defer_max_tbt)
        self.steps_since_round = 0
        self.load_board = None  # a load-aware router's LoadBoard (router.py), see publish_load
        self._load_posted = False  # on the board's list of replicas whose bounds are out of date
        self._outstanding = 0  # prefill + output tokens still to process (outputs counted at their cap)
        self.stats = ReplicaStats()
        self.enqueued = 0  # requests that reached this replica so far
        self.ended: list[int] = []  # requests that finished, were dropped or aborted, not yet taken
        self.active_run: DecodeRun | None = None  # the fast-forward run planned and not yet applied
        # () -> the earliest time a new request can reach this replica, when the simulation knows
        # it in advance (open-loop arrivals, one replica or round-robin); runs plan no further
        self.next_arrival_s = None
        # The last round ended on a refusal of the head that cannot change before a finish, an
        # eviction, or a new head (max_num_seqs, free blocks, a stable policy): fast-forward lets
        # the rounds that step-by-step mode would hold meanwhile refuse inside a run.
        self.head_refusal_stable = False
        # (decode clock, request id, round): an admission round that fast-forward held ahead of
        # time and that admits that request at that boundary (`hold_rounds_ahead`)
        self.round_ahead = None
        # The last round ended on a refusal by a policy that may decide differently next round:
        # fast-forward then holds the next rounds inside a run (after a token-budget or
        # admissions-per-round stop the next round mostly admits, and a run would be priced in vain)
        self.policy_refused_head = False

    # ---------------------------------------------------------------- arrivals
    def enqueue(self, rid: int, now_s: float) -> bool:
        """A request reaches this replica; `now_s` is its time as ordered against step ends (just
        after the clock for a closed-loop send, llmsim.cluster.events). Returns True if it is the
        new head of an empty queue during a fast-forwarded run: the run must then end at the first
        boundary at or after `now_s` (`cut_run`), where step-by-step mode would first judge it."""
        t = self.table
        t.replica[rid] = self.index
        t.status[rid] = WAITING
        self.enqueued += 1
        was_empty = not self.waiting
        if was_empty:
            self.head_refusal_stable = False  # a new head: no round has judged it
        self.waiting.append(rid)
        self._add_outstanding(t.prompt_tokens.item(rid) + t.max_new_tokens.item(rid))
        run = self.active_run
        if run is None:
            return False
        run.arrivals_s.append(now_s)  # for the step log's queue lengths
        return was_empty

    def cut_run(self, seen_s: float) -> bool:
        """End the active run at the first step boundary at or after `seen_s`; True if its end
        moved earlier."""
        run = self.active_run
        before = run.end_s
        if run.truncate(seen_s) == before:
            return False
        self.load_changed()
        return True

    def take_ended(self) -> list[int]:
        """The requests that ended since the last call (finished, dropped or aborted)."""
        ended, self.ended = self.ended, []
        return ended

    def _add_outstanding(self, delta_tokens: int) -> None:
        self._outstanding += delta_tokens
        if self.load_board is not None and not self._load_posted:
            self.load_changed()

    def load_changed(self) -> None:
        """Tell a load-aware router that this replica's load bounds changed; it asks for them
        (`publish_load`) when it next routes, so a replica that changes several times between
        two arrivals publishes once."""
        if self.load_board is not None and not self._load_posted:
            self._load_posted = True
            self.load_board.changed.append(self)

    def publish_load(self) -> None:
        """Write, on the router's board, the range this replica's outstanding tokens lie in until
        the next change: exact without a run; during a run, from the run's start to its end value."""
        board = self.load_board
        board.upper[self.index] = self._outstanding
        run = self.active_run
        board.lower[self.index] = self._outstanding - (run.tokens_total() if run is not None else 0)
        self._load_posted = False

    def outstanding_tokens_at(self, now_s: float) -> int:
        """Outstanding tokens as step-by-step mode would have them at `now_s` (routers use this)."""
        run = self.active_run
        if run is None:
            return self._outstanding
        return self._outstanding - run.tokens_done(now_s)

    def sync(self) -> None:
        """Write the progress of every decoding request to the request table, and the deferred
        maxima of requests that left the batch (see decode_batch.py)."""
        self.batch.materialize_all()

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    # ---------------------------------------------------------------- planning
    def plan_step(self, now_s: float) -> Step | None:
        """Decide the next iteration at `now_s` (writing nothing) and start it; None if there is
        nothing to run."""
        return self.begin(self.decide(now_s))

    def _ids(self) -> np.ndarray:
        if self._running_ids is None:
            self._running_ids = np.array(self.running, dtype=np.int64)  # a dtype given: half the cost of inferring it
        return self._running_ids

    # ---------------------------------------------------------------- completion
    def finish_step(self, step: Step, end_s: float) -> list[int]:
        """Apply a step that ended at `end_s`; returns the ids of requests that finished."""
        t = self.table
        self.stats.timeouts += 1
        run = step.run
        if run is not None:
            self.active_run = None
            finished = []
            if run.prefill_end_s is not None:
                finished = finish_prefill_of_run(self, step)
                if finished:
                    self._finish(finished, run.prefill_end_s)
            done = apply_run(self, step, run)
            if done:
                self._finish(done, run.ends_s[-1])
            return finished + done
        if step.new_blocks:
            self.kv.allocate(step.new_blocks)  # the decode tokens' new blocks (raises if decide evicted too few)
        if self.params.guard_max_tbt_s is not None:
            self.sync()
            self._abort_stalled(step, end_s)
        finished = []
        if len(step.decode_ids):
            self.batch.advance(end_s)  # every decoding request emitted a token
            finished = self.in_running_order(self.batch.finished_now())
        done_prefill = []
        for rid, chunk in zip(step.prefill_ids, step.prefill_chunk_tokens):
            t.prefill_left_tokens[rid] -= chunk
            t.prefill_computed_tokens[rid] += chunk
            if t.prefill_left_tokens[rid] == 0:
                done_prefill.append(rid)
        self._add_outstanding(-sum(step.prefill_chunk_tokens))
        self.stats.add_step(step.duration_s, step.used_blocks)
        if len(step.decode_ids) or self.params.mode == "mixed":
            self.steps_since_round += 1
        if self.params.record_steps:
            self.log_step(step.start_s, step.duration_s, len(step.decode_ids), sum(step.prefill_chunk_tokens),
                          len(self.waiting), step.used_blocks)
        self._add_outstanding(-len(step.decode_ids) - len(done_prefill))
        for rid in done_prefill:
            if self.emit_first_token(rid, end_s):
                finished.append(rid)
        if finished:
            self._finish(finished, end_s)
        return finished

    def apply_decode_steps(self, ends_s: list[float], durations_s: list[float], cum_new_blocks: list[int],
                           used_before: int, round_counter: int) -> list[int]:
        """Every decoding request emits a token at each of these consecutive steps (fast-forward's
        runs), step j allocating up to `cum_new_blocks[j]` new blocks in all; `round_counter` is
        the round counter after them (`round_counter_after`). Returns the requests that finished
        at the last step, in admission order (the caller finishes them)."""
        self.kv.allocate(cum_new_blocks[-1])
        self.batch.advance(ends_s)
        self._add_outstanding(-self.batch.size * len(ends_s))
        self.stats.add_steps(durations_s, used_before, cum_new_blocks)
        self.steps_since_round = round_counter
        return self.in_running_order(self.batch.finished_now())

    def tokens_processed(self, tokens: int) -> None:
        """Prefill or output tokens processed outside `finish_step` (a run's leading prefill)."""
        self._add_outstanding(-tokens)

    def log_step(self, start_s: float, duration_s: float, decoders: int, prefill_tokens: int, waiting: int, used_blocks: int) -> None:
        """A row of the per-step series (`record_steps`); running requests and evictions as now."""
        self.stats.step_log.append((start_s, duration_s, decoders, prefill_tokens, len(self.running), waiting,
                                    used_blocks, self.stats.evictions))

    def in_running_order(self, ids: list[int]) -> list[int]:
        return sorted(ids, key=self.running.index) if len(ids) > 1 else ids

    def emit_first_token(self, rid: int, end_s: float) -> bool:
        """A prefill (or re-prefill after an eviction) ended: the request emits a token and joins
        the decoding batch, or finishes (returns True; the caller finishes it)."""
        t = self.table
        gen = t.generated_tokens.item(rid) + 1
        t.generated_tokens[rid] = gen
        if gen == 1:
            t.first_token_s[rid] = end_s
        else:
            t.max_tbt_s[rid] = max(t.max_tbt_s[rid], end_s - t.last_token_s[rid])
        t.last_token_s[rid] = end_s
        if gen >= t.output_tokens.item(rid):
            return True
        self.batch.join(rid)
        return False

    def _finish(self, finished: list[int], end_s: float) -> None:
        """Free and record requests that emitted their last token at `end_s` (decoders that were in
        the batch first, in admission order, then those that finished at their prefill)."""
        t, bs = self.table, self.params.block_size
        self.head_refusal_stable = False  # memory and the running set change
        members = [r for r in finished if r in self.batch]
        if members:
            self.batch.remove(members)
        for rid in self.in_running_order(finished):
            self.kv.release(rid, blocks_for(t.kv_tokens.item(rid), bs))
            t.status[rid] = FINISHED
            t.finish_s[rid] = end_s
            t.end_s[rid] = end_s
            generated = t.generated_tokens.item(rid)  # Python ints (.item): numpy scalar arithmetic costs more
            self._add_outstanding(generated - t.max_new_tokens.item(rid))
            self.scheduler.record_finish(generated)
        for rid in finished:
            self.running.remove(rid)
        self._running_ids = None
        self.ended += finished

    # ---------------------------------------------------------------- checks
    def check_invariants(self) -> None:
        """Raise AssertionError if block accounting disagrees with the requests (used by tests)."""
        self.batch.check()
        t, bs = self.table, self.params.block_size
        held = sum(blocks_for(int(t.kv_tokens[r]), bs) for r in self.running)
        if self.prefix is not None:
            assert set(self.kv.held) <= set(self.running), "a request that does not run holds cached blocks"
            self.kv.check(held - self.kv.ref_sum)
        else:
            assert held == self.kv.used_blocks, (held, self.kv.used_blocks)
        assert 0 <= self.kv.used_blocks <= self.kv.total_blocks
        swapped = sum(blocks_for(int(t.kv_tokens[r]), bs) for r in self.waiting if t.status[r] == SWAPPED)
        assert swapped == self.swap.used_blocks, (swapped, self.swap.used_blocks)
        for r in self.running:
            if t.prefill_left_tokens[r] == 0:
                assert t.kv_tokens[r] == t.prompt_tokens[r] + t.generated_tokens[r] - 1, r
            assert (r in self.batch) == (t.prefill_left_tokens[r] == 0 and t.status[r] == RUNNING), r


def prefix_keys(table: RequestTable, block_size: int) -> PrefixKeys:
    """The block keys of the table's requests, one set for all replicas (made on first use)."""
    if table.prefix_keys is None or table.prefix_keys.block_size != block_size:
        table.prefix_keys = PrefixKeys(table.block_hash_ids, table.hash_block_tokens, block_size)
    return table.prefix_keys
