"""oracle: the future-peak admission with the exact (true) remaining lengths: not a scheduler anyone
can deploy, and not an upper bound on goodput either (exact lengths make admission eviction-free,
not optimal: aggressive admission beats it where evictions are cheap, e.g. prefill-heavy mixes).
Results of an oracle run are labelled "exact lengths".

With `per_request_slack_tokens` = block_size - 1 (the default) the token peak bounds the block
peak, since a request holding t tokens uses at most t + block_size - 1 tokens of blocks; with
headroom 0 the oracle then never evicts in `separate` engine mode, and it admits as much as any
eviction-free FCFS policy. In `mixed` mode (chunked prefill) a candidate's growth starts only
when its last chunk is done, while the running requests keep decoding; the peak formula does not
model that delay, so rare evictions remain possible there. With prefix caching, a cached prompt
block held by several requests counts once, with its longest-lived holder (shared_peak.py): exact
with the true lengths, so eviction-freedom is kept.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import BuildContext, Candidate, ReplicaView, SchedulerConfig, register
from .peak import PeakAdmissionRound, copy_round, first_admitting_exact_round, remaining_growth_tokens
from .shared_peak import SortedChains, future_peak_round


class OracleConfig(SchedulerConfig):
    headroom: float = Field(0.0, ge=0.0, lt=1.0)
    # None: block_size - 1, which makes the oracle eviction-free (see module docstring).
    per_request_slack_tokens: int | None = Field(None, ge=0)


class _Round:
    def __init__(self, sched: "OracleScheduler", view: ReplicaView) -> None:
        cfg = sched.config
        self.slack = view.block_size - 1 if cfg.per_request_slack_tokens is None else cfg.per_request_slack_tokens
        self.true_output = sched.true_output_tokens
        run = view.running
        growth = remaining_growth_tokens(run.prompt_tokens, self.true_output[run.request_ids], run.kv_tokens)
        limit = view.capacity_tokens * (1.0 - cfg.headroom)
        self.chain_of = view.prefix_chain  # prefix caching: shared cached blocks count once (shared_peak.py)
        self.peaks = future_peak_round(run.kv_tokens + self.slack, growth, limit, view, sched._sorted_chains)

    @classmethod
    def resumed(cls, slack: int, true_output, peaks: PeakAdmissionRound) -> "_Round":
        self = cls.__new__(cls)
        self.slack, self.true_output, self.peaks, self.chain_of = slack, true_output, peaks, None
        return self

    __deepcopy__ = copy_round

    def admit(self, candidate: Candidate) -> bool:
        final = self.true_output[candidate.request_id]
        growth = remaining_growth_tokens(candidate.prompt_tokens, final, candidate.kv_tokens)
        if self.chain_of is not None:
            return self.peaks.try_add(candidate.kv_tokens + self.slack, np.array([growth]), self.chain_of(candidate.request_id))
        return self.peaks.try_add(candidate.kv_tokens + self.slack, np.array([growth]))


@register("oracle", OracleConfig, "future-peak admission with the exact (true) output lengths: not deployable, not an upper bound", is_oracle=True)
class OracleScheduler:
    rounds_ahead = True  # a round reads only its view and the true lengths

    def __init__(self, config: OracleConfig, ctx: BuildContext) -> None:
        if ctx.true_output_tokens is None:
            raise ValueError("the oracle needs the true output lengths")
        self.config = config
        self.decode_steps_between_rounds = config.decode_steps_between_rounds
        self.max_admissions_per_round = config.max_admissions_per_round
        self.true_output_tokens = ctx.true_output_tokens
        # The true lengths as a column by request id, for the compiled rounds: the simulation hands
        # a TrueOutputLengths (fetch its column per round: the table may grow), tests an array.
        true = ctx.true_output_tokens
        self._true_column = true.column if hasattr(true, "column") else (lambda: np.asarray(true))
        self._sorted_chains = SortedChains()  # prefix caching: the last round's chains, sorted (a cache)

    def start_round(self, view: ReplicaView) -> _Round:
        return _Round(self, view)

    def first_admitting_round(self, view: ReplicaView, steps_ahead: np.ndarray, candidate: Candidate):
        """Rounds held ahead inside a fast-forwarded run, in one compiled call (see
        past_future.PastFutureScheduler.first_admitting_round). None with prefix caching: the kernel
        counts every request's blocks, so the engine starts the shared-peak rounds one by one."""
        if view.prefix_chain is not None:
            return None
        cfg = self.config
        slack = view.block_size - 1 if cfg.per_request_slack_tokens is None else cfg.per_request_slack_tokens
        found = first_admitting_exact_round(view, steps_ahead, self._true_column(), candidate,
                                            int(self.true_output_tokens[candidate.request_id]), slack, cfg.headroom)
        if found[1] is None:
            return found
        return found[0], _Round.resumed(slack, self.true_output_tokens, found[1])

    def record_finish(self, output_tokens: int) -> None:
        pass
