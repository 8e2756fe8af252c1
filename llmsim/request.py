"""Requests as data: one table of per-request arrays, indexed by request id.

Request ids are 0..n-1 in arrival order. The trace part (arrival time, prompt length, true output
length, `max_new_tokens` cap) never changes; the progress part is mutated by the replica engines
and read by the metrics. Keeping every request in a few numpy arrays, rather than one Python object
per request, lets the engine update a whole running batch with one vectorised operation.

Units: times in seconds of simulated time (`_s`), lengths in tokens.

KV accounting convention used throughout llmsim (and relied on by the schedulers' peak formula):
a request with prompt P that has generated g >= 1 tokens holds P + g - 1 tokens of KV. The prefill
writes the P prompt tokens and emits token 1; each decode step writes the KV of the last emitted
token and emits the next one. A request with output length L therefore peaks at P + L - 1 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Request status codes (int8 array `status`).
PENDING = 0  # not yet arrived at a replica
WAITING = 1  # in a replica's waiting queue (fresh, or evicted for recompute)
RUNNING = 2  # admitted: holds KV blocks (prefilling or decoding)
SWAPPED = 3  # evicted to host memory, in the waiting queue
FINISHED = 4


@dataclass
class RequestTable:
    """Per-request trace data and progress, all arrays of length `n`."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray  # true output length: engine-private, never shown to a scheduler
    max_new_tokens: np.ndarray
    # progress, filled in by the engine
    replica: np.ndarray = field(init=False)
    status: np.ndarray = field(init=False)
    generated_tokens: np.ndarray = field(init=False)
    kv_tokens: np.ndarray = field(init=False)  # KV tokens the request's blocks are sized for
    prefill_left_tokens: np.ndarray = field(init=False)  # prefill work not yet computed
    first_admit_s: np.ndarray = field(init=False)
    first_token_s: np.ndarray = field(init=False)
    last_token_s: np.ndarray = field(init=False)
    finish_s: np.ndarray = field(init=False)
    max_tbt_s: np.ndarray = field(init=False)
    evictions: np.ndarray = field(init=False)
    swaps: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        self.arrival_s = np.asarray(self.arrival_s, dtype=np.float64)
        for name in ("prompt_tokens", "output_tokens", "max_new_tokens"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        if not all(len(a) == n for a in (self.prompt_tokens, self.output_tokens, self.max_new_tokens)):
            raise ValueError("request arrays must have equal lengths")
        self.replica = np.full(n, -1, dtype=np.int64)
        self.status = np.full(n, PENDING, dtype=np.int8)
        for name in ("generated_tokens", "kv_tokens", "prefill_left_tokens", "evictions", "swaps"):
            setattr(self, name, np.zeros(n, dtype=np.int64))
        for name in ("first_admit_s", "first_token_s", "last_token_s", "finish_s"):
            setattr(self, name, np.full(n, np.nan))
        self.max_tbt_s = np.zeros(n)

    def __len__(self) -> int:
        return len(self.arrival_s)
