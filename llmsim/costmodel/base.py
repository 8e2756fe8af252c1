"""The narrow interface between the simulation engine and a cost model.

The engine describes one iteration (one forward pass of a replica) as a `BatchShape`: token and
sequence counts only, no request identities, so a cost model can cache on it. A `CostModel` turns
a shape into wall time in seconds. All times are seconds, all sizes tokens or bytes, as the names
say.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class BatchShape:
    """Shape of one engine iteration (no request identities).

    `prefill_prefix_tokens` may be left empty, which means every prefill chunk starts a fresh
    prompt (prefix 0); otherwise it has one entry per entry of `prefill_chunk_tokens`. No
    validation happens here: shapes are built once per simulated step and must stay cheap.
    """

    prefill_chunk_tokens: tuple[int, ...] = ()  # new tokens computed per prefilling sequence this step
    prefill_prefix_tokens: tuple[int, ...] = ()  # tokens already in KV for each of those sequences
    decode_seqs: int = 0  # sequences emitting one decode token
    decode_context_sum_tokens: int = 0  # sum over decode sequences of context attended (incl. new token)
    decode_context_max_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        """New tokens computed in the step: prefill chunks plus one per decoding sequence."""
        return sum(self.prefill_chunk_tokens) + self.decode_seqs

    @property
    def num_seqs(self) -> int:
        """Sequences in the step (each prefill chunk counts once, as does each decode)."""
        return len(self.prefill_chunk_tokens) + self.decode_seqs


@runtime_checkable
class CostModel(Protocol):
    """What the engine needs from a cost model: step time, batched decode times, swap time."""

    def step_time_s(self, shape: BatchShape) -> float:
        """Wall time of one iteration with this shape, in seconds (0.0 for an empty shape)."""
        ...

    def decode_step_s(self, decode_seqs: int, context_sum_tokens: int, context_max_tokens: int) -> float:
        """Wall time of one decode-only step: equals `step_time_s` of that shape bit for bit, without
        building a shape."""
        ...

    def decode_run_pricer(self, decode_seqs: int) -> Callable[[float, int, int, int, float], tuple[list[float], list[float]]]:
        """A function run(start_s, context_sum, context_max, num_steps, horizon_s) -> (ends, durations)
        that prices up to `num_steps` consecutive decode-only steps of `decode_seqs` sequences one by
        one (step j has context sum `context_sum + j * decode_seqs` and max `context_max + j`), each
        equal to `decode_step_s` bit for bit, with ends summed sequentially from `start_s`; it stops
        after the first step that ends at or after `horizon_s`. Fast-forward prices short runs with
        it (Python lists: cheaper than numpy on a few steps)."""
        ...

    def decode_steps_s(
        self, decode_seqs: int, context_sum_tokens: int, context_max_tokens: int, num_steps: int
    ) -> np.ndarray:
        """Times of `num_steps` consecutive decode-only steps of the same `decode_seqs` sequences.

        Step j (0-based) has context sum `context_sum_tokens + j * decode_seqs` and max
        `context_max_tokens + j`. Equals `[step_time_s(...) for each j]` to
        the bit (fast-forward relies on it), but vectorised (numpy, no Python loop over j).
        """
        ...

    def swap_time_s(self, num_bytes_per_gpu: float) -> float:
        """Host<->device copy of KV blocks: bytes per GPU / host link bandwidth, in seconds."""
        ...
