"""Requests as data: one table of per-request arrays, indexed by request id.

Request ids are 0..n-1 in creation order (arrival order for open-loop load; closed-loop clients
append rows as they send). The trace part (arrival time, prompt length, true output length,
`max_new_tokens` cap, client, attempt) never changes once written; the progress part is mutated by
the replica engines and read by the metrics. Keeping every request in a few numpy arrays, rather
than one Python object per request, lets the engine update a whole running batch with one
vectorised operation. The progress of a decoding request is written lazily (see
llmsim.cluster.decode_batch): between the engine's writes it can lag behind; the engine brings it
up to date (`ReplicaEngine.sync`) before anything reads it, and at the end of a simulation. Arrays are allocated with spare capacity and grow by doubling; code must
read them through the table (`table.kv_tokens[...]`) rather than keep a reference across steps.

Units: times in seconds of simulated time (`_s`), lengths in tokens.

KV accounting convention used throughout llmsim (and relied on by the schedulers' peak formula):
a request with prompt P that has generated g >= 1 tokens holds P + g - 1 tokens of KV. The prefill
writes the P prompt tokens and emits token 1; each decode step writes the KV of the last emitted
token and emits the next one. A request with output length L therefore peaks at P + L - 1 tokens.
"""

from __future__ import annotations

import numpy as np

# Request status codes (int8 array `status`).
PENDING = 0  # not yet arrived at a replica
WAITING = 1  # in a replica's waiting queue (fresh, or evicted for recompute)
RUNNING = 2  # admitted: holds KV blocks (prefilling or decoding)
SWAPPED = 3  # evicted to host memory, in the waiting queue
FINISHED = 4
DROPPED = 5  # SLA guard: waited too long for admission
ABORTED = 6  # SLA guard: a gap between tokens exceeded the limit
OUTCOMES = {FINISHED: "finished", DROPPED: "dropped", ABORTED: "aborted"}

# name -> (dtype, fill value) of every column
_COLUMNS = {
    "arrival_s": (np.float64, np.nan),
    "prompt_tokens": (np.int64, 0),
    "output_tokens": (np.int64, 0),  # true output length: engine-private, never shown to a scheduler
    "max_new_tokens": (np.int64, 0),
    "client": (np.int64, -1),  # closed-loop client, -1 for open-loop arrivals
    "origin_id": (np.int64, -1),  # index in the workload stream (attempts of one request share it)
    "attempt": (np.int64, 0),
    "replica": (np.int64, -1),
    "status": (np.int8, PENDING),
    "generated_tokens": (np.int64, 0),
    "kv_tokens": (np.int64, 0),  # KV tokens the request's blocks are sized for
    "prefill_left_tokens": (np.int64, 0),  # prefill work not yet computed
    "prefill_computed_tokens": (np.int64, 0),  # prefill tokens computed so far, re-prefills after evictions included
    "first_admit_s": (np.float64, np.nan),
    "first_token_s": (np.float64, np.nan),
    "last_token_s": (np.float64, np.nan),
    "finish_s": (np.float64, np.nan),
    "end_s": (np.float64, np.nan),  # when it finished, was dropped or aborted
    "max_tbt_s": (np.float64, 0.0),
    "clock_base": (np.int64, 0),  # engine-private: decode clock at the last write of progress (cluster/decode_batch.py)
    "evictions": (np.int64, 0),
    "swaps": (np.int64, 0),
    "cached_prompt_tokens": (np.int64, 0),  # prompt tokens found in the prefix cache at its first admission
}


class RequestTable:
    """Per-request trace data and progress: one numpy array per column (see `_COLUMNS`)."""

    def __init__(self, arrival_s=(), prompt_tokens=(), output_tokens=(), max_new_tokens=(), capacity: int = 0) -> None:
        n = len(arrival_s)
        if not (len(prompt_tokens) == len(output_tokens) == len(max_new_tokens) == n):
            raise ValueError("request arrays must have equal lengths")
        self._capacity = max(n, capacity, 1)
        for name, (dtype, fill) in _COLUMNS.items():
            setattr(self, name, np.full(self._capacity, fill, dtype=dtype))
        self.n = n
        self.arrival_s[:n] = arrival_s
        self.prompt_tokens[:n] = prompt_tokens
        self.output_tokens[:n] = output_tokens
        self.max_new_tokens[:n] = max_new_tokens
        self.origin_id[:n] = np.arange(n)
        # Per workload request (index = origin_id): prompt block hash ids, for a prefix-cache model.
        self.block_hash_ids: list[np.ndarray] | None = None
        self.hash_block_tokens = 512  # prompt tokens per hash id (the workload's)
        self.prefix_keys = None  # llmsim.prefix_cache.PrefixKeys, made by the first engine that caches

    def __len__(self) -> int:
        return self.n

    def append(self, arrival_s: float, prompt_tokens: int, output_tokens: int, max_new_tokens: int,
               client: int = -1, origin_id: int = -1, attempt: int = 0) -> int:
        """Add one request; returns its id."""
        if self.n == self._capacity:
            self._grow(2 * self._capacity)
        rid = self.n
        self.arrival_s[rid] = arrival_s
        self.prompt_tokens[rid] = prompt_tokens
        self.output_tokens[rid] = output_tokens
        self.max_new_tokens[rid] = max_new_tokens
        self.client[rid] = client
        self.origin_id[rid] = origin_id
        self.attempt[rid] = attempt
        self.n += 1
        return rid

    def _grow(self, capacity: int) -> None:
        for name, (dtype, fill) in _COLUMNS.items():
            new = np.full(capacity, fill, dtype=dtype)
            new[: self._capacity] = getattr(self, name)
            setattr(self, name, new)
        self._capacity = capacity

    def column(self, name: str) -> np.ndarray:
        """The first n entries of a column (a view)."""
        return getattr(self, name)[: self.n]


class TrueOutputLengths:
    """Read-only access to the true output lengths, handed to the oracle alone."""

    def __init__(self, table: RequestTable) -> None:
        self._table = table

    def __getitem__(self, ids):
        return self._table.output_tokens[ids]

    def column(self) -> np.ndarray:
        """The whole column, by request id, read-only (the compiled oracle gathers from it)."""
        view = self._table.output_tokens.view()
        view.flags.writeable = False
        return view
