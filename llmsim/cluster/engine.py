"""One replica's engine loop: iteration-level continuous batching over a paged KV cache.

Plain Python, no SimPy: the replica process (llmsim.cluster.simulation) calls `plan_step(now)`,
waits the step's duration, then calls `finish_step(step, end)`. Tests drive the same two calls by
hand. SCHEDULERS.md §1 is the reference for what happens in a step:

- An admission round runs when requests wait and either nothing runs or the scheduler's
  `decode_steps_between_rounds` decode steps have passed since the last round. The waiting queue is
  walked in order (evicted requests first); each head is offered while the engine limits hold
  (`max_num_seqs`, token budget, free blocks) and stops at the first refusal. An empty replica
  always admits its head request, otherwise a request the policy finds too large would never run.
- `separate` mode: a step is either the prefill of the requests just admitted, or one decode token
  for every running request. `mixed` mode (chunked prefill): one step carries a decode token for
  every decoding request and then prefill chunks, oldest admission first, within
  `max_batched_tokens`.
- Admission leaves free the blocks the running batch needs for its next decode step (vLLM v1
  schedules running requests before waiting ones).
- Before a step that decodes, if the decoding requests need more new blocks than are free, running
  requests are evicted one at a time (newest admitted first by default) until the step fits:
  `recompute` frees all their blocks and re-prefills prompt + generated tokens on re-admission;
  `swap` copies their blocks to bounded host memory (priced by the host link) and copies them back
  on re-admission, falling back to recompute when the swap space is full.

Decoding requests advance together: their progress columns in the request table are written
lazily by a `DecodeBatch` (decode_batch.py); `sync()` writes them before anything reads them.

Blocks for a whole prefill (prompt + tokens generated before an eviction) are allocated at
admission in both modes, so a policy sees the same memory either way (LightLLM allocates this way;
vLLM v1 allocates chunk by chunk).

Units: seconds of simulated time, tokens, blocks.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..costmodel.base import BatchShape, CostModel
from ..kvcache import BlockAllocator, SwapSpace, blocks_for
from ..request import ABORTED, DROPPED, FINISHED, RUNNING, SWAPPED, WAITING, RequestTable
from ..schedulers.base import BatchColumns, Candidate, ReplicaView, RunningBatch, Scheduler
from .decode_batch import DecodeBatch
from .fastforward import DecodeRun, apply_run, plan_run

VICTIM_ORDERS = ("newest", "largest-remaining-cap", "longest-context")
_NO_IDS = np.empty(0, dtype=np.int64)


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


@dataclass(slots=True)
class Step:
    """One planned iteration."""

    start_s: float
    duration_s: float
    decode_ids: np.ndarray  # requests that emit a decode token (empty for a run: its `decoders` are the batch)
    prefill_ids: list[int]
    prefill_chunk_tokens: list[int]
    used_blocks: int
    swap_s: float = 0.0
    run: DecodeRun | None = None  # set when this is a fast-forwarded run of decode steps


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
    step_log: list[tuple] = field(default_factory=list)


_NOW = np.zeros(1, dtype=np.int64)  # a round now, zero steps ahead (Scheduler.first_admitting_round)


class ReplicaEngine:
    """The state and step logic of one model replica."""

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
        self.cost_model = cost_model
        self.params = params
        self.kv = BlockAllocator(params.total_blocks, params.block_size)
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
        self._add_outstanding(int(t.prompt_tokens[rid] + t.max_new_tokens[rid]))
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
        """Decide the next iteration at `now_s`; None if there is nothing to run."""
        swap_s = 0.0
        admitted: list[int] = []
        if self.params.guard_max_queue_s is not None and self.waiting:
            self._drop_stale(now_s)
        if self.waiting and (not self.running or self.steps_since_round >= self.scheduler.decode_steps_between_rounds):
            admitted, swap_s = self._admission_round(now_s)
            self.steps_since_round = 0
        if not self.running:
            return None
        t = self.table
        if self.params.mode == "separate":
            prefill_ids = [r for r in admitted if t.prefill_left_tokens[r] > 0]
            if prefill_ids:
                chunks = [int(t.prefill_left_tokens[r]) for r in prefill_ids]
                shape = BatchShape(tuple(chunks), (0,) * len(chunks))
                step = self._step(now_s, shape, _NO_IDS, prefill_ids, chunks, swap_s)
                p = self.params
                if p.fast_forward and swap_s == 0.0 and p.guard_max_queue_s is None and p.guard_max_tbt_s is None:
                    self._continue_prefill_with_run(step)
                return step
        swap_s += self._make_room_for_decode()
        if self.params.fast_forward and swap_s == 0.0 and self.batch.size == len(self.running):
            run = plan_run(self, now_s)
            if run is not None:
                self._start_run(run)
                return Step(now_s, run.ends_s[-1] - now_s, _NO_IDS, [], [], self.kv.used_blocks, 0.0, run)
        decode_ids = self._decoding_ids()
        batch = self.batch
        self.kv.allocate(batch.blocks_next_step())
        prefill_ids, chunks = self._prefill_chunks(batch.size) if self.params.mode == "mixed" else ([], [])
        shape = BatchShape(
            tuple(chunks),
            tuple(int(t.kv_tokens[r] - t.prefill_left_tokens[r]) for r in prefill_ids),
            batch.size,
            # each decode token attends to its own KV as well
            batch.kv_sum_tokens() + batch.size,
            batch.kv_max_tokens() + 1 if batch.size else 0,
        )
        return self._step(now_s, shape, decode_ids, prefill_ids, chunks, swap_s)

    def _continue_prefill_with_run(self, step: Step) -> None:
        """Fast-forward a separate-mode prefill step together with the decode run after it, in
        one timeout. Nothing can change a decision at the prefill's end that is not known now:
        no admission round is due there (the counter counts decode steps, and the round just
        ran), arrivals during the prefill cut the run there (`DecodeRun.truncate`), and a request
        that finishes at its prefill or a first decode step that needs an eviction leave the run
        empty. The prefilled requests emit their first token and join the batch now (their
        token is stamped with the prefill's end, and nothing reads them before it); the
        prefill's statistics and outstanding tokens are applied when the timeout ends."""
        t = self.table
        end_s = step.start_s + step.duration_s  # what SimPy's clock will read then
        finishes = False
        for rid, chunk in zip(step.prefill_ids, step.prefill_chunk_tokens):
            t.prefill_left_tokens[rid] -= chunk
            finishes |= self._emit_first_token_after_prefill(rid, end_s)
        run = None
        if not finishes and self.batch.blocks_next_step() <= self.kv.free_blocks:
            run = plan_run(self, end_s, after_prefill=True)
        if run is None:
            run = DecodeRun([], [], [], self.kv.used_blocks, len(self.waiting), [])
        run.prefill_end_s = end_s
        run.prefill_duration_s = step.duration_s
        run.prefill_tokens = sum(step.prefill_chunk_tokens) + len(step.prefill_ids)
        step.run = run
        step.duration_s = run.end_s - step.start_s
        self._start_run(run)

    def _start_run(self, run: DecodeRun) -> None:
        self.active_run = run
        self.load_changed()  # a load-aware router now reads the run's range of loads

    def _finish_prefill_of_run(self, step: Step) -> list[int]:
        """The statistics of a run's leading prefill step, as `finish_step` records a prefill
        step; returns the requests that finished at it (their token was emitted at planning)."""
        run, st = step.run, self.stats
        prefill_s = run.prefill_duration_s
        st.kv_block_s += step.used_blocks * prefill_s
        st.peak_used_blocks = max(st.peak_used_blocks, step.used_blocks)
        st.steps += 1
        st.busy_s += prefill_s
        if self.params.record_steps:
            arrived = sum(1 for a in run.arrivals_s if a <= run.prefill_end_s)
            st.step_log.append((step.start_s, prefill_s, 0, sum(step.prefill_chunk_tokens), len(self.running),
                                run.waiting_before + arrived, step.used_blocks, st.evictions))
        self._add_outstanding(-run.prefill_tokens)
        t = self.table
        return [r for r in step.prefill_ids if t.generated_tokens[r] >= t.output_tokens[r]]

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

    # ---------------------------------------------------------------- admission
    def _admission_round(self, now_s: float) -> tuple[list[int], float]:
        t, p = self.table, self.params
        rnd = None  # created when a candidate first passes the engine limits (no draws otherwise)
        if p.mode == "separate":
            budget = p.max_batched_tokens
        else:
            budget = p.max_batched_tokens - self.batch.size - int(t.prefill_left_tokens[self._ids()].sum())
        # Blocks the running batch takes at its next decode step stay out of admission, as vLLM v1
        # schedules running requests before waiting ones; otherwise a request could be admitted
        # into blocks this very step needs and be evicted before computing anything.
        reserved = self.batch.blocks_next_step()
        limit = self.scheduler.max_admissions_per_round
        at_once = self._rounds_at_once
        admitted: list[int] = []
        swap_s = 0.0
        self.head_refusal_stable = self.policy_refused_head = False
        while self.waiting:
            if limit is not None and len(admitted) >= limit:
                break
            # From here on a break means the head was refused by a check that cannot change before
            # a finish or an eviction (max_num_seqs, free blocks, a stable policy's refusal), unless
            # reset below: fast-forward relies on it.
            self.head_refusal_stable = True
            if len(self.running) >= p.max_num_seqs:
                break
            cand = self._candidate(self.waiting[0])
            swapped = t.status[cand.request_id] == SWAPPED
            prefill = 0 if swapped else cand.kv_tokens
            # a swapped-in request decodes in this step: its own next token may need a block too
            own = int(swapped and cand.kv_tokens % p.block_size == 0)
            refusal = self._engine_refusal(cand, prefill, own, budget, reserved, self.kv.free_blocks)
            if refusal is not None:
                self.head_refusal_stable = refusal == "blocks"
                break
            forced = not self.running  # an empty replica always runs its head request
            if rnd is None and self.round_ahead is not None:  # fast-forward already held this round
                rnd, accepted = self._take_round_ahead(cand), True
            elif rnd is None:
                view = self._view(now_s)
                # the round's start and its first answer in one call, where the policy offers it
                found = None if at_once is None else at_once(view, _NOW, cand)
                if found is None:
                    rnd = self.scheduler.start_round(view)
                    accepted = rnd.admit(cand)
                else:
                    rnd = found[1]
                    accepted = rnd is not None
            else:
                accepted = rnd.admit(cand)
            if not accepted and not forced:
                if not self._refusal_stable:
                    self.head_refusal_stable = False
                    self.policy_refused_head = True
                break
            self.head_refusal_stable = False
            self.waiting.popleft()
            swap_s += self._admit(cand, swapped, now_s)
            admitted.append(cand.request_id)
            budget -= prefill if prefill else int(p.mode == "mixed")  # a swap-in adds a decode token
            reserved += own
            if not accepted:
                break  # forced: the round did not count this request, so it cannot judge the next one
        return admitted, swap_s

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
        if self._over_budget(0 if swapped else cand.kv_tokens, budget):
            return "budget"
        return cand, int(swapped and cand.kv_tokens % p.block_size == 0)

    def hold_rounds_ahead(self, steps: list[int], ends_s: list[float], cum_new_blocks: list[int], cand: Candidate) -> tuple[int, bool]:
        """Start, ahead of time, the policy's rounds due `steps[i]` decode steps from now inside a
        fast-forwarded run (a boundary after step j is at `ends_s[j-1]`, with `cum_new_blocks[j-1]`
        fewer blocks free than now: the run's lists), in order, each offered
        the head `cand` first (it has passed the engine limits there). Returns (i, stable): the
        first round that admits it (len(steps) if none) and whether a refusal is the policy's
        stable one. An admitting round is kept, with its draws, for `_admission_round` at that
        boundary (`round_ahead`).

        Exact for a policy whose rounds depend only on their view and its own state
        (`Scheduler.rounds_ahead`): the rounds are started in step-by-step mode's order, only
        earlier in wall time. A policy may answer for all the rounds at once
        (`first_admitting_round`, given the view now; compiled past-future and oracle do)."""
        sched = self.scheduler
        at_once = self._rounds_at_once
        found = None if at_once is None else at_once(self._view(ends_s[steps[0] - 1]), np.asarray(steps, dtype=np.int64), cand)
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

    def _take_round_ahead(self, cand: Candidate):
        clock, rid, rnd = self.round_ahead
        if clock != self.batch.clock or rid != cand.request_id:
            raise AssertionError(f"internal: a round held ahead for request {rid} at decode step {clock} "
                                 f"was not used there (request {cand.request_id} at step {self.batch.clock})")
        self.round_ahead = None
        return rnd

    def _admit(self, cand: Candidate, swapped: bool, now_s: float) -> float:
        t, rid = self.table, cand.request_id
        self.kv.allocate(cand.blocks)
        t.status[rid] = RUNNING
        if math.isnan(t.first_admit_s[rid]):
            t.first_admit_s[rid] = now_s
        self.running.append(rid)
        self._running_ids = None
        if swapped:
            self.swap.take(cand.blocks)
            self.batch.join(rid)  # its prefill was done before the swap-out: it decodes next
            return self.cost_model.swap_time_s(cand.blocks * self.swap.block_bytes)
        t.kv_tokens[rid] = cand.kv_tokens
        t.prefill_left_tokens[rid] = cand.kv_tokens
        return 0.0

    def _candidate(self, rid: int) -> Candidate:
        t = self.table
        g = int(t.generated_tokens[rid])
        prompt = int(t.prompt_tokens[rid])
        if t.status[rid] == SWAPPED:
            kv = int(t.kv_tokens[rid])
        else:
            kv = prompt + g  # recompute: prefill prompt + generated tokens
        return Candidate(rid, float(t.arrival_s[rid]), prompt, int(t.max_new_tokens[rid]), g, kv, blocks_for(kv, self.params.block_size))

    def _view(self, now_s: float, steps_ahead: int = 0, free_blocks: int | None = None) -> ReplicaView:
        """The replica as a policy sees it now, or `steps_ahead` decode steps of the whole running
        batch from now (fast-forward, with every running request decoding)."""
        def running() -> RunningBatch:  # built only if the policy looks at it
            t, ids = self.table, self._ids()

            def progress():
                if self.batch.size == len(ids):  # all decoding: read the clock, write nothing
                    generated, kv = self.batch.current_progress(ids)
                    return (generated + steps_ahead, kv + steps_ahead) if steps_ahead else (generated, kv)
                self.sync()
                return t.generated_tokens[ids], t.kv_tokens[ids]

            return RunningBatch(ids, t.prompt_tokens[ids], t.max_new_tokens[ids], progress=progress)

        def columns() -> BatchColumns | None:  # built only if a compiled policy asks
            if self.batch.size != len(self.running):
                return None  # some are prefilling: their progress does not follow the decode clock
            t, ids = self.table, self._ids()
            return BatchColumns(ids, t.prompt_tokens, t.max_new_tokens, t.generated_tokens, t.kv_tokens, t.clock_base,
                                self.batch.clock + steps_ahead, ids)

        free = self.kv.free_blocks if free_blocks is None else free_blocks
        return ReplicaView(now_s, self.params.block_size, self.kv.total_blocks, free, running, columns)

    # ---------------------------------------------------------------- eviction
    def _ids(self) -> np.ndarray:
        if self._running_ids is None:
            self._running_ids = np.array(self.running)
        return self._running_ids

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
                finished = self._finish_prefill_of_run(step)
                if finished:
                    self._finish(finished, run.prefill_end_s)
            done = apply_run(self, step, run)
            if done:
                self._finish(done, run.ends_s[-1])
            return finished + done
        if self.params.guard_max_tbt_s is not None:
            self.sync()
            self._abort_stalled(step, end_s)
        finished = []
        if len(step.decode_ids):
            self.batch.advance(end_s)  # every decoding request emitted a token
            finished = self._in_running_order(self.batch.finished_now())
        done_prefill = []
        for rid, chunk in zip(step.prefill_ids, step.prefill_chunk_tokens):
            t.prefill_left_tokens[rid] -= chunk
            if t.prefill_left_tokens[rid] == 0:
                done_prefill.append(rid)
        self._add_outstanding(-sum(step.prefill_chunk_tokens))
        st = self.stats
        st.kv_block_s += step.used_blocks * step.duration_s
        st.peak_used_blocks = max(st.peak_used_blocks, step.used_blocks)
        st.steps += 1
        st.busy_s += step.duration_s
        if len(step.decode_ids) or self.params.mode == "mixed":
            self.steps_since_round += 1
        if self.params.record_steps:
            st.step_log.append((step.start_s, step.duration_s, len(step.decode_ids), sum(step.prefill_chunk_tokens),
                                len(self.running), len(self.waiting), step.used_blocks, self.stats.evictions))
        self._add_outstanding(-len(step.decode_ids) - len(done_prefill))
        for rid in done_prefill:
            if self._emit_first_token_after_prefill(rid, end_s):
                finished.append(rid)
        if finished:
            self._finish(finished, end_s)
        return finished

    def _in_running_order(self, ids: list[int]) -> list[int]:
        return sorted(ids, key=self.running.index) if len(ids) > 1 else ids

    def _emit_first_token_after_prefill(self, rid: int, end_s: float) -> bool:
        """A prefill (or re-prefill after an eviction) ended: the request emits a token and joins
        the decoding batch, or finishes (returns True; the caller finishes it)."""
        t = self.table
        gen = int(t.generated_tokens[rid]) + 1
        t.generated_tokens[rid] = gen
        if gen == 1:
            t.first_token_s[rid] = end_s
        else:
            t.max_tbt_s[rid] = max(t.max_tbt_s[rid], end_s - t.last_token_s[rid])
        t.last_token_s[rid] = end_s
        if gen >= t.output_tokens[rid]:
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
        for rid in self._in_running_order(finished):
            self.kv.free(blocks_for(int(t.kv_tokens[rid]), bs))
            t.status[rid] = FINISHED
            t.finish_s[rid] = end_s
            t.end_s[rid] = end_s
            self._add_outstanding(-int(t.max_new_tokens[rid] - t.generated_tokens[rid]))
            self.scheduler.record_finish(int(t.generated_tokens[rid]))
        for rid in finished:
            self.running.remove(rid)
        self._running_ids = None
        self.ended += finished

    # ---------------------------------------------------------------- SLA guard
    def _drop_stale(self, now_s: float) -> None:
        """Drop never-admitted requests that waited longer than guard_max_queue_s. Fresh requests
        sit in the queue in arrival order (evicted ones, already admitted once, go to the head),
        so the scan stops at the first fresh request still inside the limit."""
        t, limit = self.table, self.params.guard_max_queue_s
        stale = []
        for rid in self.waiting:
            if not math.isnan(t.first_admit_s[rid]):
                continue
            if now_s - t.arrival_s[rid] <= limit:
                break
            stale.append(rid)
        if stale:
            for rid in stale:
                self._end_unfinished(rid, DROPPED, now_s)
            self.stats.dropped += len(stale)
            self.ended += stale

    def _abort_stalled(self, step: Step, end_s: float) -> None:
        """Abort requests whose gap since their last token exceeds guard_max_tbt_s at this step's
        end (the server would have aborted them when the gap passed the limit, so a token they
        would emit now is not counted)."""
        t, limit = self.table, self.params.guard_max_tbt_s
        candidates = list(self.running) + [r for r in self.waiting if t.generated_tokens[r] > 0]
        stalled = [r for r in candidates if t.generated_tokens[r] > 0 and end_s - t.last_token_s[r] > limit]
        if not stalled:
            return
        gone = set(stalled)
        if len(step.decode_ids):
            # This step allocated the block its decode token would start; the token is not
            # emitted, so that block is freed with the rest (it leaked before).
            in_step = step.decode_ids[np.isin(step.decode_ids, stalled)]
            self.kv.free(int(np.count_nonzero(t.kv_tokens[in_step] % self.params.block_size == 0)))
            step.decode_ids = step.decode_ids[~np.isin(step.decode_ids, stalled)]
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
            self.kv.free(blocks_for(int(t.kv_tokens[rid]), bs))
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
        t.status[rid] = outcome
        t.end_s[rid] = now_s

    # ---------------------------------------------------------------- checks
    def check_invariants(self) -> None:
        """Raise AssertionError if block accounting disagrees with the requests (used by tests)."""
        self.batch.check()
        t, bs = self.table, self.params.block_size
        held = sum(blocks_for(int(t.kv_tokens[r]), bs) for r in self.running)
        assert held == self.kv.used_blocks, (held, self.kv.used_blocks)
        assert 0 <= self.kv.used_blocks <= self.kv.total_blocks
        swapped = sum(blocks_for(int(t.kv_tokens[r]), bs) for r in self.waiting if t.status[r] == SWAPPED)
        assert swapped == self.swap.used_blocks, (swapped, self.swap.used_blocks)
        for r in self.running:
            if t.prefill_left_tokens[r] == 0:
                assert t.kv_tokens[r] == t.prompt_tokens[r] + t.generated_tokens[r] - 1, r
            assert (r in self.batch) == (t.prefill_left_tokens[r] == 0 and t.status[r] == RUNNING), r
