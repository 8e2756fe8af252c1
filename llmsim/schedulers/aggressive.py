"""aggressive: vLLM-style admission with no look-ahead (docs/schedulers.md §2).

Admit the head of the queue if, after allocating its blocks, the free blocks stay at or above a
watermark fraction of capacity. No estimate of future growth: the batch grows until memory runs
out and the engine evicts. High utilisation, many evictions.

`rule: artifact-server` is the Past-Future artifact's aggressive server instead (LightLLM-based,
as read from its source): admit while the KV tokens in use are below `use_limit` x M before the
admission and in use + prompt + 1 < M, M being the KV capacity in tokens.
"""

from __future__ import annotations

import math

from typing import Literal

from pydantic import Field

from .base import Candidate, ReplicaView, SchedulerConfig, register


class AggressiveConfig(SchedulerConfig):
    # Fraction of KV blocks kept free at admission. vLLM's default is 0.01; the paper's artifact
    # server admits while use < 0.95 M, i.e. a watermark of 0.05.
    watermark: float = Field(0.01, ge=0.0, lt=1.0)
    # "watermark": vLLM's check above; "artifact-server": the Past-Future artifact's server rule.
    rule: Literal["watermark", "artifact-server"] = "watermark"
    # artifact-server only: the share of M in use above which nothing is admitted. 0.95 in the
    # artifact's server code; its figure legend says 99%.
    use_limit: float = Field(0.95, gt=0.0, le=1.0)


class _Round:
    def __init__(self, free_blocks: int, watermark_blocks: int) -> None:
        self.free_blocks = free_blocks
        self.watermark_blocks = watermark_blocks

    def admit(self, candidate: Candidate) -> bool:
        if self.free_blocks - candidate.blocks < self.watermark_blocks:
            return False
        self.free_blocks -= candidate.blocks
        return True


class _ArtifactServerRound:
    """The artifact server's check, in tokens (blocks x block size)."""

    def __init__(self, used_tokens: int, capacity_tokens: int, use_limit: float, block_size: int) -> None:
        self.used_tokens = used_tokens
        self.capacity_tokens = capacity_tokens
        self.use_limit_tokens = use_limit * capacity_tokens
        self.block_size = block_size

    def admit(self, candidate: Candidate) -> bool:
        if self.used_tokens >= self.use_limit_tokens or self.used_tokens + candidate.kv_tokens + 1 >= self.capacity_tokens:
            return False
        self.used_tokens += candidate.blocks * self.block_size
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

    def start_round(self, view: ReplicaView) -> _Round | _ArtifactServerRound:
        if self.config.rule == "artifact-server":
            used_tokens = (view.total_blocks - view.free_blocks) * view.block_size
            return _ArtifactServerRound(used_tokens, view.capacity_tokens, self.config.use_limit, view.block_size)
        return _Round(view.free_blocks, math.ceil(self.config.watermark * view.total_blocks))

    def record_finish(self, output_tokens: int) -> None:
        pass
