"""The narrow interface between the simulation engine and a cost model.

The engine describes one iteration (one forward pass of a replica) as a `BatchShape`: token and
sequence counts only, no request identities, so a cost model can cache on it. A `CostModel` turns
a shape into wall time in seconds. All times are seconds, all sizes tokens or bytes, as the names
say.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable


class BatchShape(NamedTuple):
    """Shape of one engine iteration (no request identities).

    `prefill_prefix_tokens` may be left empty, which means every prefill chunk starts a fresh
    prompt (prefix 0); otherwise it has one entry per entry of `prefill_chunk_tokens`. No
    validation happens here: shapes are built once per simulated step and must stay cheap
    (immutable; a NamedTuple because a frozen dataclass cost 2.5x as much to build, 2026-12-05).
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
    """What the engine needs from a cost model: the time of one step, and of a swap.

    A run of decode steps is priced by `llmsim.costmodel.decode_run` from the same per-step cost
    (a model may offer its decode-only formula there as `decode_step_fn(decode_seqs)`, the one its
    `step_time_s` uses), so there is no second way to price a step."""

    def step_time_s(self, shape: BatchShape) -> float:
        """Wall time of one iteration with this shape, in seconds (0.0 for an empty shape)."""
        ...

    def swap_time_s(self, num_bytes_per_gpu: float) -> float:
        """Host<->device copy of KV blocks: bytes per GPU / host link bandwidth, in seconds."""
        ...
