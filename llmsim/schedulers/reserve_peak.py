"""reserve-peak (extension, not from the paper): the future-peak admission with every request
assumed to run to its cap, b = cap - generated. LightLLM's default router when busy: as safe as
conservative when caps are honoured (in `separate` mode; see llmsim.schedulers.oracle for the
chunked-prefill caveat), but aware that requests finish at different times, so it
admits more than the plain sum of reservations.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import BuildContext, Candidate, ReplicaView, SchedulerConfig, register
from .peak import PeakAdmissionRound, first_admitting_exact_round, remaining_growth_tokens
from .shared_peak import SortedChains, future_peak_round


class ReservePeakConfig(SchedulerConfig):
    headroom: float = Field(0.0, ge=0.0, lt=1.0)
    # None: block_size - 1, so the token peak bounds the block peak (no evictions with caps honoured).
    per_request_slack_tokens: int | None = Field(None, ge=0)


class _Round:
    def __init__(self, cfg: ReservePeakConfig, view: ReplicaView, sorted_chains: SortedChains | None = None) -> None:
        self.slack = view.block_size - 1 if cfg.per_request_slack_tokens is None else cfg.per_request_slack_tokens
        run = view.running
        growth = remaining_growth_tokens(run.prompt_tokens, run.max_new_tokens, run.kv_tokens)
        limit = view.capacity_tokens * (1.0 - cfg.headroom)
        self.chain_of = view.prefix_chain  # prefix caching: shared cached blocks count once (shared_peak.py)
        self.peaks = future_peak_round(run.kv_tokens + self.slack, growth, limit, view, sorted_chains)

    @classmethod
    def resumed(cls, slack: int, peaks: PeakAdmissionRound) -> "_Round":
        self = cls.__new__(cls)
        self.slack, self.peaks, self.chain_of = slack, peaks, None
        return self

    def admit(self, candidate: Candidate) -> bool:
        growth = remaining_growth_tokens(candidate.prompt_tokens, candidate.max_new_tokens, candidate.kv_tokens)
        if self.chain_of is not None:
            return self.peaks.try_add(candidate.kv_tokens + self.slack, np.array([growth]), self.chain_of(candidate.request_id))
        return self.peaks.try_add(candidate.kv_tokens + self.slack, np.array([growth]))


@register("reserve-peak", ReservePeakConfig, "extension: future-peak admission assuming every request runs to its cap")
class ReservePeakScheduler:
    rounds_ahead = True  # a round reads only its view

    def __init__(self, config: ReservePeakConfig, ctx: BuildContext) -> None:
        self.config = config
        self.decode_steps_between_rounds = config.decode_steps_between_rounds
        self.max_admissions_per_round = config.max_admissions_per_round
        self._sorted_chains = SortedChains()  # prefix caching: the last round's chains, sorted (a cache)

    def start_round(self, view: ReplicaView) -> _Round:
        return _Round(self.config, view, self._sorted_chains)

    def first_admitting_round(self, view: ReplicaView, steps_ahead: np.ndarray, candidate: Candidate):
        """Rounds held ahead inside a fast-forwarded run, in one compiled call (see
        past_future.PastFutureScheduler.first_admitting_round). None with prefix caching: the kernel
        counts every request's blocks, so the engine starts the shared-peak rounds one by one."""
        if view.prefix_chain is not None:
            return None
        cfg = self.config
        slack = view.block_size - 1 if cfg.per_request_slack_tokens is None else cfg.per_request_slack_tokens
        found = first_admitting_exact_round(view, steps_ahead, None, candidate, candidate.max_new_tokens, slack, cfg.headroom)
        if found[1] is None:
            return found
        return found[0], _Round.resumed(slack, found[1])

    def record_finish(self, output_tokens: int) -> None:
        pass
