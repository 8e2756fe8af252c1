"""What a batch scheduler sees and must answer, and the registry of schedulers.

A scheduler is an admission policy. Once per admission round the replica engine shows it a
`ReplicaView` (memory state and the running batch) and then offers waiting requests one at a time,
in queue order, as `Candidate`s; the round answers admit or refuse, and the engine stops at the
first refusal (first come, first served with head-of-line blocking). Evictions, block allocation
and the engine limits (`max_num_seqs`, token budget, free blocks) are the engine's job, shared by
every policy.

Neither view carries a request's true output length: a scheduler cannot see it, by construction.
The oracle alone is handed the true lengths when it is built (`is_oracle = True`), and results of
an oracle run are labelled "exact lengths" (not an upper bound on goodput).

Units: tokens, blocks, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class RunningBatch:
    """The running requests of one replica, oldest admission first (arrays of equal length).

    `progress`, if given instead of `generated_tokens` and `kv_tokens`, is a zero-argument function
    returning those two arrays; it is called on first access (the engine writes decoding requests'
    progress lazily, and most policies never read it)."""

    __slots__ = ("request_ids", "prompt_tokens", "max_new_tokens", "_generated_tokens", "_kv_tokens", "_progress")

    def __init__(self, request_ids: np.ndarray, prompt_tokens: np.ndarray, max_new_tokens: np.ndarray,
                 generated_tokens: np.ndarray | None = None, kv_tokens: np.ndarray | None = None,
                 progress: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        if (generated_tokens is None or kv_tokens is None) and progress is None:
            raise ValueError("RunningBatch needs generated_tokens and kv_tokens, or progress")
        self.request_ids = request_ids
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self._generated_tokens = generated_tokens
        self._kv_tokens = kv_tokens  # KV tokens held now (a prefilling request counts its whole prefill)
        self._progress = progress

    def _load_progress(self) -> None:
        self._generated_tokens, self._kv_tokens = self._progress()

    @property
    def generated_tokens(self) -> np.ndarray:
        if self._generated_tokens is None:
            self._load_progress()
        return self._generated_tokens

    @property
    def kv_tokens(self) -> np.ndarray:
        if self._kv_tokens is None:
            self._load_progress()
        return self._kv_tokens

    def __len__(self) -> int:
        return len(self.request_ids)


class BatchColumns(NamedTuple):
    """The running batch as columns, for compiled policies that gather what they need in one call
    instead of reading RunningBatch's arrays (building those costs more than a compiled round).
    Running request i reads row ids[i] of every column: prompt[ids[i]] prompt tokens, cap
    max_new[ids[i]], generated[ids[i]] + clock - clock_base[ids[i]] tokens generated and
    kv[ids[i]] + clock - clock_base[ids[i]] KV tokens held: the same values as RunningBatch's
    arrays. The engine's columns are the request table's (ids are request ids); `of` makes
    columns of a RunningBatch (ids are positions in it, `by_position`)."""

    ids: np.ndarray
    prompt: np.ndarray
    max_new: np.ndarray
    generated: np.ndarray
    kv: np.ndarray
    clock_base: np.ndarray
    clock: int
    request_ids: np.ndarray  # running request i is request_ids[i]
    by_position: bool = False

    @classmethod
    def of(cls, run: RunningBatch) -> "BatchColumns":
        n = len(run)
        return cls(np.arange(n), run.prompt_tokens, run.max_new_tokens, run.generated_tokens, run.kv_tokens,
                   np.zeros(n, dtype=np.int64), 0, run.request_ids, True)

    def rows_of(self, column: np.ndarray) -> np.ndarray:
        """A per-request column (indexed by request id, like the request table's) made readable
        the way these columns are: through `ids`."""
        return column[self.request_ids] if self.by_position else column


class ReplicaView:
    """Memory state of a replica at the start of an admission round.

    `running` may be given as a zero-argument function: the batch is then built on first access
    (writing a batch's progress costs time, and aggressive never looks at it). `columns`, if the
    engine gives it (also possibly as a function, returning None when it has none), holds the
    same batch as BatchColumns. `kv_held`, if the engine gives it, is (running requests, KV tokens
    they hold), known without building either."""

    __slots__ = ("now_s", "block_size", "total_blocks", "free_blocks", "_running", "_columns", "shared_blocks", "prefix_chain",
                 "kv_held")

    def __init__(self, now_s: float, block_size: int, total_blocks: int, free_blocks: int,
                 running: RunningBatch | Callable[[], RunningBatch],
                 columns: BatchColumns | Callable[[], BatchColumns | None] | None = None,
                 shared_blocks: int = 0, prefix_chain: Callable[[int], tuple] | None = None,
                 kv_held: tuple[int, int] | None = None) -> None:
        self.now_s = now_s
        self.block_size = block_size
        self.total_blocks = total_blocks
        self.free_blocks = free_blocks
        self._running = running
        self._columns = columns
        self.kv_held = kv_held
        # Prefix caching (llmsim.prefix_cache): blocks that per-request counts of the running batch
        # count more than once (held by several requests), and prefix_chain(request id) -> the keys
        # of the cached blocks it holds (running) or would hold (a candidate); None without caching.
        self.shared_blocks = shared_blocks
        self.prefix_chain = prefix_chain

    @property
    def running(self) -> RunningBatch:
        if not isinstance(self._running, RunningBatch):
            self._running = self._running()
        return self._running

    @property
    def columns(self) -> BatchColumns | None:
        """The engine's columns of the running batch, or None."""
        if callable(self._columns):
            self._columns = self._columns()
        return self._columns

    def batch_columns(self) -> BatchColumns:
        """The running batch as columns: the engine's, or built from `running`."""
        columns = self.columns
        return columns if columns is not None else BatchColumns.of(self.running)

    @property
    def capacity_tokens(self) -> int:
        return self.total_blocks * self.block_size


class Candidate(NamedTuple):
    """A waiting request offered for admission (immutable; a NamedTuple because one is built per
    admission offer, and a frozen dataclass costs three times as much to build)."""

    request_id: int
    arrival_s: float
    prompt_tokens: int
    max_new_tokens: int
    generated_tokens: int  # tokens generated before an eviction (0 for a fresh request)
    kv_tokens: int  # KV tokens it holds right after admission
    blocks: int  # blocks its admission takes from the free ones (prefix caching: less its hits that running requests hold)
    # prefix caching (llmsim.prefix_cache), 0 without: prompt tokens found cached (not prefilled),
    # and its cached blocks already held by running requests (not new memory)
    cached_tokens: int = 0
    shared_blocks: int = 0


class AdmissionRound(Protocol):
    def admit(self, candidate: Candidate) -> bool:
        """True to admit `candidate` (the round then counts it as running), False to stop."""


class Scheduler(Protocol):
    kind: ClassVar[str]
    is_oracle: ClassVar[bool]
    # Optional: True if a refused candidate stays refused until a request finishes or is evicted,
    # which lets the engine fast-forward decode steps while requests wait (llmsim.cluster.fastforward).
    refusal_stable: ClassVar[bool]
    # Optional: True if a round's answers depend only on its view and on the policy's own state
    # (changed by `record_finish` and by its earlier rounds, e.g. their random draws from this
    # replica's stream). Fast-forward may then start the rounds due inside a run when it plans the
    # run, in step-by-step mode's order but earlier in wall time (llmsim.cluster.fastforward).
    rounds_ahead: ClassVar[bool]
    decode_steps_between_rounds: int
    max_admissions_per_round: int | None

    def start_round(self, view: ReplicaView) -> AdmissionRound: ...

    # Optional, a speed-up that must not change a decision:
    # first_admitting_round(view, steps_ahead, candidate) -> (i, round) | None. The rounds due
    # steps_ahead[i] decode steps after `view` (every running request one token further per step;
    # [0] is one round now), started in order, each offered `candidate` first: i is the first that
    # admits it (its round, holding it, goes on with the next candidates), or len(steps_ahead) and
    # None. Exactly the answers, and the draws, of start_round + admit at each of them; reads only
    # the view's running batch (or the same as `view.batch_columns()`), capacity and block size;
    # None to let the engine make those calls.

    def record_finish(self, output_tokens: int) -> None:
        """A request finished on this replica with `output_tokens` tokens (history for estimators)."""


class SchedulerConfig(BaseModel):
    """Knobs every scheduler has; each policy's config extends this."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no .inf or .nan knob

    # Decode steps between two admission rounds. 1 = a round before every step that follows a
    # decode step (default, docs/schedulers.md §4); the paper's artifact uses 2; 0 = a round before every
    # step, so queued prefills run back to back (vLLM v0's prefill-first loop).
    decode_steps_between_rounds: int = Field(1, ge=0)
    # Admissions per round; None = unlimited (LightLLM PR 2024). The paper's artifact admits 1.
    max_admissions_per_round: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class BuildContext:
    """What a scheduler factory may use. `true_output_tokens` is given to the oracle only."""

    replica_index: int
    rng: np.random.Generator
    default_prior_output_tokens: int  # the workload's constant cap, or a documented fallback
    # indexable by request id: the simulation's llmsim.request.TrueOutputLengths, or an array
    true_output_tokens: np.ndarray | None = None
    # every request was sent with ignore_eos: estimating policies take the cap as its final length
    ignore_eos: bool = False


@dataclass(frozen=True)
class SchedulerSpec:
    kind: str
    config_cls: type[SchedulerConfig]
    factory: Callable[[SchedulerConfig, BuildContext], Scheduler]
    is_oracle: bool
    summary: str


SCHEDULERS: dict[str, SchedulerSpec] = {}


def register(kind: str, config_cls: type[SchedulerConfig], summary: str, is_oracle: bool = False):
    """Class decorator: make a scheduler available under its YAML `kind`."""

    def wrap(cls):
        cls.kind = kind
        cls.is_oracle = is_oracle
        SCHEDULERS[kind] = SchedulerSpec(kind, config_cls, cls, is_oracle, summary)
        return cls

    return wrap


def build_scheduler(kind: str, config: SchedulerConfig, ctx: BuildContext) -> Scheduler:
    spec = SCHEDULERS[kind]
    if not spec.is_oracle:
        # Enforced here, not by convention: only the oracle ever receives the true lengths.
        ctx = BuildContext(ctx.replica_index, ctx.rng, ctx.default_prior_output_tokens, None, ctx.ignore_eos)
    return spec.factory(config, ctx)
