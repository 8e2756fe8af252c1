"""conservative: reserve every request's maximum (docs/schedulers.md §2).

Every running request reserves the KV of prompt + `max_new_tokens`. A candidate is admitted only if
the reservations of the running batch plus its own fit in (1 - headroom) of capacity. Reservations
are counted in whole blocks, so with caps honoured the replica can never run out of memory: it
never evicts, and it leaves memory idle whenever real outputs are shorter than their caps.
(TensorRT-LLM's "guaranteed no evict" policy.) `reserve_output_tokens` reserves a fixed number of
output tokens instead, whatever the cap, as the Past-Future artifact did (12,000 on its server,
4,096 in its offline simulator); a request that outgrows it can then run out of memory.

With prefix caching (llmsim.prefix_cache) a cached prompt block held by several requests is
reserved once: the running batch's sum less the blocks it counts more than once
(`ReplicaView.shared_blocks`), a candidate's reserve less its cached blocks that running requests
hold already (`Candidate.shared_blocks`).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from . import _compiled
from .base import Candidate, ReplicaView, SchedulerConfig, register


class ConservativeConfig(SchedulerConfig):
    # Fraction of capacity kept out of reservations. 0: caps are a hard bound, nothing to cover.
    headroom: float = Field(0.0, ge=0.0, lt=1.0)
    # Reserve prompt + this many output tokens per request, whatever its cap. None: its cap
    # (TensorRT-LLM). The Past-Future artifact's server reserved 12,000, its offline simulator
    # 4,096. A request that outgrows a fixed reserve can run out of memory and be evicted.
    reserve_output_tokens: int | None = Field(None, ge=1)


def reserved_blocks(prompt_tokens, max_new_tokens, block_size: int):
    """Blocks a request may ever need: it peaks at prompt + cap - 1 tokens (llmsim.request)."""
    return -(-(prompt_tokens + max_new_tokens - 1) // block_size)


class _Round:
    def __init__(self, reserved: int, limit: int, block_size: int, reserve_output_tokens: int | None) -> None:
        self.reserved = reserved
        self.limit = limit
        self.block_size = block_size
        self.reserve_output_tokens = reserve_output_tokens

    def admit(self, candidate: Candidate) -> bool:
        reserve = candidate.max_new_tokens if self.reserve_output_tokens is None else self.reserve_output_tokens
        # prefix caching: its cached blocks that running requests hold are reserved already
        need = int(reserved_blocks(candidate.prompt_tokens, reserve, self.block_size)) - candidate.shared_blocks
        if self.reserved + need > self.limit:
            return False
        self.reserved += need
        return True


@register("conservative", ConservativeConfig, "reserve prompt + max_new_tokens (or a fixed output reserve) for every request; never evicts within caps")
class ConservativeScheduler:
    rounds_ahead = True  # a round reads only its view
    # A refused head stays refused until a request finishes or is evicted (free blocks only shrink
    # while decoding; reservations do not change), so the engine need not ask again in between.
    refusal_stable = True

    def __init__(self, config: ConservativeConfig, ctx) -> None:
        self.config = config
        self.decode_steps_between_rounds = config.decode_steps_between_rounds
        self.max_admissions_per_round = config.max_admissions_per_round
        self._fixed = -1 if config.reserve_output_tokens is None else config.reserve_output_tokens  # the kernel's "no fixed reserve"

    def start_round(self, view: ReplicaView) -> _Round:
        cols = view.columns
        if cols is not None:
            # one compiled pass over the table's rows; gathering the batch's arrays first cost
            # about 10 us a round, more than the rest of the round
            reserved = _compiled.reserved_blocks_sum(cols.ids, cols.prompt, cols.max_new, view.block_size, self._fixed)
        else:  # some requests are prefilling (no columns): the batch's own arrays
            run = view.running
            reserved = _compiled.reserved_blocks_sum(np.arange(len(run)), run.prompt_tokens, run.max_new_tokens, view.block_size,
                                                     self._fixed)
        limit = math.floor(view.total_blocks * (1.0 - self.config.headroom))  # (numpy's floor of a scalar costs ~1 us)
        # prefix caching: a block several running requests hold is reserved once
        return _Round(reserved - view.shared_blocks, limit, view.block_size, self.config.reserve_output_tokens)

    def record_finish(self, output_tokens: int) -> None:
        pass
