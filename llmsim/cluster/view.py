"""The replica as an admission policy sees it: a ReplicaView that reads the engine on demand.

A round mostly reads a few numbers (aggressive: free and total blocks). The running batch, its
columns and the KV the batch holds are built only when a policy asks for them, from the engine's
state at the view's boundary: now, or `steps_ahead` decode steps of the whole running batch from
now (the rounds fast-forward holds inside a run; every running request then decodes). Building
nothing up front matters because a view is made at every admission round: one closure per lazy
field, as this used to do, cost more than most rounds read. Nothing is written to the engine.

Units: blocks, tokens, seconds.
"""

from __future__ import annotations

from ..schedulers.base import BatchColumns, ReplicaView, RunningBatch

_UNSET = object()  # a lazy field not built yet (None is a value: "no columns", "not all decoding")


class EngineView(ReplicaView):
    """ReplicaView of a ReplicaEngine `engine` at `now_s`, `steps_ahead` decode steps from its
    batch's present, with `free_blocks` free; `running`, `columns` and `kv_held` as ReplicaView
    documents them, computed on first access."""

    __slots__ = ("_engine", "_steps_ahead", "_kv_held")

    def __init__(self, engine, now_s: float, steps_ahead: int, free_blocks: int) -> None:
        self.now_s = now_s
        self.block_size = engine.params.block_size
        self.total_blocks = engine.kv.total_blocks
        self.free_blocks = free_blocks
        self._engine = engine
        self._steps_ahead = steps_ahead
        self._running = self._columns = self._kv_held = _UNSET
        if engine.prefix is None:
            self.shared_blocks, self.prefix_chain = 0, None
        else:
            self.shared_blocks, self.prefix_chain = engine.kv.duplicate_blocks(), engine.prefix_chain_fn()

    @property
    def running(self) -> RunningBatch:
        if self._running is _UNSET:
            e, ahead = self._engine, self._steps_ahead
            t, ids = e.table, e._ids()

            def progress():
                if e.batch.size == len(ids):  # all decoding: read the clock, write nothing
                    generated, kv = e.batch.current_progress(ids)
                    return (generated + ahead, kv + ahead) if ahead else (generated, kv)
                return e.progress_now(ids)

            self._running = RunningBatch(ids, t.prompt_tokens[ids], t.max_new_tokens[ids], progress=progress)
        return self._running

    @property
    def columns(self) -> BatchColumns | None:
        if self._columns is _UNSET:
            e = self._engine
            if e.batch.size != len(e.running):
                self._columns = None  # some are prefilling: their progress does not follow the decode clock
            else:
                t, ids = e.table, e._ids()
                # BatchColumns(...) with every field given, built as its tuple (about 0.2 us less than
                # the NamedTuple's Python-level constructor; a compiled policy's round reads it)
                self._columns = tuple.__new__(BatchColumns, (ids, t.prompt_tokens, t.max_new_tokens, t.generated_tokens,
                                                             t.kv_tokens, t.clock_base, e.batch.clock + self._steps_ahead, ids, False))
        return self._columns

    @property
    def kv_held(self) -> tuple[int, int] | None:
        if self._kv_held is _UNSET:
            e = self._engine
            n = e.batch.size
            # all decoding, no prefix caching: the batch's aggregate is what they hold (a compiled
            # policy's early verdict); with caching, shared blocks make the sum count some twice
            held = n == len(e.running) and e.prefix is None
            self._kv_held = (n, e.batch.kv_sum_tokens() + n * self._steps_ahead) if held else None
        return self._kv_held
