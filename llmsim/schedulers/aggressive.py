"""aggressive: vLLM-style admission with no look-ahead (docs/schedulers.md §2).

Admit the head of the queue if, after allocating its blocks, the free blocks stay at or above a
watermark fraction of capacity. No estimate of future growth: the batch grows until memory runs
out and the engine evicts. High utilisation, many evictions.
"""

from __future__ import annotations

import math

from pydantic import Field

from .base import Candidate, ReplicaView, SchedulerConfig, register


class AggressiveConfig(SchedulerConfig):
    # Fraction of KV blocks kept free at admission. vLLM's default is 0.01; the paper's artifact
    # server admits while use < 0.95 M, i.e. a watermark of 0.05.
    watermark: float = Field(0.01, ge=0.0, lt=1.0)


class _Round:
    def __init__(self, free_blocks: int, watermark_blocks: int) -> None:
        self.free_blocks = free_blocks
        self.watermark_blocks = watermark_blocks

    def admit(self, candidate: Candidate) -> bool:
        if self.free_blocks - candidate.blocks < self.watermark_blocks:
            return False
        self.free_blocks -= candidate.blocks
        return True


@register("aggressive", AggressiveConfig, "admit while free KV stays above a watermark (vLLM); evicts when memory runs out")
class AggressiveScheduler:
    rounds_ahead = True  # a round reads only its view
    # A refused head stays refused until a request finishes or is evicted (free blocks only shrink
    # while decoding; reservations do not change), so the engine need not ask again in between.
    refusal_stable = True

    def __init__(self, config: AggressiveConfig, ctx) -> None:
        self.config = config
        self.decode_steps_between_rounds = config.decode_steps_between_rounds
        self.max_admissions_per_round = config.max_admissions_per_round

    def start_round(self, view: ReplicaView) -> _Round:
        return _Round(view.free_blocks, math.ceil(self.config.watermark * view.total_blocks))

    def record_finish(self, output_tokens: int) -> None:
        pass
