"""past-future: the Past-Future scheduler (Gong et al., ASPLOS 2025; LightLLM), docs/schedulers.md §2.

Future: admit a candidate only if the peak KV use of the running batch plus the candidate, over the
batch's whole future (llmsim.schedulers.peak), stays below (1 - headroom) of capacity.

Past: the remaining lengths that the peak needs are not known, so they are drawn from the history
of output lengths of requests that finished on this replica:

- a running request that has generated o tokens (cap L_max) takes the support points
  [o] + [history values > o, ascending] + [L_max] as equally spaced quantiles of its final length
  (the cap point only when larger than the last value, with `cap_in_support: when-larger`),
  draws u uniformly over the index range, interpolates (rounding to a whole token with
  `round_sampled_length`), and clips to [o, L_max];
- a waiting candidate draws one history value uniformly, clipped to its cap (and to at least one
  more token than it generated before an eviction, so its growth is never negative);
- several independent lists of such draws are made per round (min(max_lists,
  floor(samples_per_list / running) + 1)); the candidate is admitted if the largest of the lists'
  peaks fits, and its sampled pairs stay in the lists for the rest of the round.

With prefix caching (llmsim.prefix_cache), a cached prompt block held by several requests counts
once in each list's peak, with its longest-lived holder (shared_peak.py).

KV convention (llmsim.request): a request holds a tokens and will end at prompt + L - 1, so its
growth is b = prompt + L - 1 - a. The LightLLM source writes a = prompt + generated and
b = L - generated - 1; both give the same sum a + b and the same peak.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np
from pydantic import Field

from ..rng import CounterStream
from . import _compiled
from ._compiled import python_function
from .base import BuildContext, Candidate, ReplicaView, SchedulerConfig, register
from .peak import PeakAdmissionRound, copy_round, first_admitting_exact_round
from .shared_peak import SortedChains, future_peak_round
# ignore_eos requests: every final length is its cap, as reserve-peak assumes (one list, no draws)
from .reserve_peak import ReservePeakConfig
from .reserve_peak import _Round as _CapRound

_round_draws = python_function("round_draws")  # draws of one round, as the compiled rounds count them


class PastFutureConfig(SchedulerConfig):
    # FIFO window of finished output lengths. 200: LightLLM PR (2024) and its 2025 revision;
    # the paper's artifact server used 40 and its offline simulator 1000.
    history_window: int = Field(200, ge=1)
    # Value the window starts with. None: the workload's constant max_new_tokens cap, or 1024
    # (LightLLM PR) when caps are exact. The artifact server used 6000, its simulator 512.
    prior_output_tokens: int | None = Field(None, ge=1)
    # How many prior entries the window starts with. None: half the window (docs/schedulers.md §4;
    # LightLLM PR: 100 of 200). The artifact server used 20, its simulator 500.
    prior_count: int | None = Field(None, ge=0)
    # Lists per round = min(max_lists, floor(samples_per_list / running) + 1): LightLLM (all sources).
    max_lists: int = Field(5, ge=1)
    samples_per_list: int = Field(200, ge=1)
    # Admit if the sampled peak <= capacity * (1 - headroom). 0.05: LightLLM PR and artifact server;
    # the artifact simulator used 0.03; the 2025 PR uses 0 with +16 tokens per request (below).
    headroom: float = Field(0.05, ge=0.0, lt=1.0)
    # Tokens added to what each request holds, for block rounding (2025 PR: 16 with headroom 0).
    per_request_slack_tokens: int = Field(0, ge=0)
    # Lists drawn when nothing runs: None = max_lists (LightLLM's rule gives max_lists for 0
    # running); the paper's artifact server drew 1.
    empty_batch_lists: int | None = Field(None, ge=1)
    # Record the output length of a request aborted by the SLA guard in the history, as of its
    # abort, as the paper's artifact server did; false: only finished requests are recorded.
    record_aborted_lengths: bool = False
    # A running request's support ends with its cap "always" (LightLLM's PastFutureQueue, 2025), or
    # only "when-larger" than the last history value above o (the paper artifact's server,
    # FuturePastReqQueue: a support whose history reaches the cap gets no extra cap point).
    cap_in_support: Literal["always", "when-larger"] = "always"
    # Round each sampled final length to a whole token, half to even, as LightLLM's round() does in
    # every version; false keeps the interpolated value (llmsim's default before this knob).
    round_sampled_length: bool = False


class LengthHistory:
    """FIFO window of finished output lengths, with a sorted copy for quantile lookups."""

    def __init__(self, window: int, prior_tokens: int, prior_count: int) -> None:
        self._fifo: deque[int] = deque([prior_tokens] * min(prior_count, window), maxlen=window)
        self._sorted: np.ndarray | None = None

    def append(self, output_tokens: int) -> None:
        fifo = self._fifo
        if self._sorted is not None and len(fifo) == fifo.maxlen:
            # a full window swaps its oldest value for the new one: move one entry, in place
            # (a finish happens about once per round, and re-sorting 200 values cost 3 us)
            _compiled.replace_in_sorted(self._sorted, float(fifo[0]), float(output_tokens))
        else:
            self._sorted = None
        fifo.append(output_tokens)

    def sorted(self) -> np.ndarray:
        """The window's values, ascending (float64). Updated in place by `append`: read it again
        after a finish rather than keeping it."""
        if self._sorted is None:
            self._sorted = np.sort(np.fromiter(self._fifo, dtype=np.float64, count=len(self._fifo)))
        return self._sorted


class _Round:
    def __init__(self, sched: "PastFutureScheduler", view: ReplicaView) -> None:
        run = view.running
        n = len(run)
        self.sched = sched
        self.num_lists = sched.num_lists(n)
        hist = sched.history.sorted()
        # Draw order (kept stable for reproducibility): one row per list, running requests in
        # admission order; then, per candidate, one history draw per list.
        u = sched.stream.random((self.num_lists, n))
        growth = _compiled.sampled_growth(run.generated_tokens, run.max_new_tokens, run.prompt_tokens, run.kv_tokens, hist, u,
                                          sched._cap_when_larger, sched._rounded)
        held = run.kv_tokens + sched._slack_tokens
        limit = view.capacity_tokens * sched._limit_fraction
        self.chain_of = view.prefix_chain  # prefix caching: shared cached blocks count once (shared_peak.py)
        self.peaks = future_peak_round(held, growth, limit, view, sched._sorted_chains)

    @classmethod
    def resumed(cls, sched: "PastFutureScheduler", num_lists: int, peaks: PeakAdmissionRound) -> "_Round":
        """A round whose draws and first admission were made by the rounds-ahead kernel."""
        self = cls.__new__(cls)
        self.sched, self.num_lists, self.peaks, self.chain_of = sched, num_lists, peaks, None
        return self

    __deepcopy__ = copy_round

    def admit(self, candidate: Candidate) -> bool:
        sched = self.sched
        hist = sched.history.sorted()
        lo = candidate.generated_tokens + 1
        hi = max(lo, candidate.max_new_tokens)
        held = candidate.kv_tokens + sched._slack_tokens
        if self.chain_of is not None:  # the same draws, then the peak with shared blocks counted once
            growth = np.empty(self.num_lists)
            _compiled.draw_candidate_growth(sched.stream.state, hist, lo, hi, candidate.prompt_tokens, candidate.kv_tokens, growth)
            return self.peaks.try_add(float(held), growth, self.chain_of(candidate.request_id))
        # one history value drawn per list (none without history: the cap), clipped to [lo, hi],
        # its growth added to each list if every peak still fits (_compiled.past_future_admit)
        return self.peaks.try_add_by(_compiled.past_future_admit, sched.stream.state, hist, lo, hi,
                                     candidate.prompt_tokens, candidate.kv_tokens, float(held))


@register("past-future", PastFutureConfig, "admit while the sampled future peak of KV use fits (Gong et al., ASPLOS 2025)")
class PastFutureScheduler:
    # A round reads its view, the history (changed only by finishes) and draws from this replica's
    # own stream, so rounds may be started ahead of time in their order (base.Scheduler).
    rounds_ahead = True

    def __init__(self, config: PastFutureConfig, ctx: BuildContext) -> None:
        self.config = config
        self.decode_steps_between_rounds = config.decode_steps_between_rounds
        self.max_admissions_per_round = config.max_admissions_per_round
        # this replica's draws, from the scenario seed; a counter-based stream, so that compiled
        # rounds draw the same numbers at no cost (llmsim.rng.CounterStream)
        self.stream = CounterStream.from_generator(ctx.rng)
        prior = config.prior_output_tokens or ctx.default_prior_output_tokens
        count = config.history_window // 2 if config.prior_count is None else config.prior_count
        self.history = LengthHistory(config.history_window, prior, count)
        # read at every round (about one per request): plain attributes, not the config's
        self._max_lists, self._samples_per_list = config.max_lists, config.samples_per_list
        self._limit_fraction = 1.0 - config.headroom  # of capacity
        self._slack_tokens = config.per_request_slack_tokens
        # every request sent with ignore_eos: LightLLM estimates its length by its cap (get_tuple_tokens)
        self._caps_as_lengths = ctx.ignore_eos
        self._cap_config = ReservePeakConfig(headroom=config.headroom, per_request_slack_tokens=config.per_request_slack_tokens)
        self._empty_lists = config.max_lists if config.empty_batch_lists is None else config.empty_batch_lists
        self.records_aborted = config.record_aborted_lengths  # read by the engine's guard (guard.py)
        self._cap_when_larger = config.cap_in_support == "when-larger"
        self._rounded = config.round_sampled_length
        self._sorted_chains = SortedChains()  # prefix caching: the last round's chains, sorted (a cache)

    def num_lists(self, running: int) -> int:
        """Lists of draws in a round with `running` requests running (LightLLM's rule)."""
        return min(self._max_lists, self._samples_per_list // running + 1) if running else self._empty_lists

    def start_round(self, view: ReplicaView) -> _Round | _CapRound:
        return _CapRound(self._cap_config, view, self._sorted_chains) if self._caps_as_lengths else _Round(self, view)

    def first_admitting_round(self, view: ReplicaView, steps_ahead: np.ndarray, candidate: Candidate):
        """The rounds due `steps_ahead[i]` decode steps after `view` (each running request one
        token further per step; [0]: one round now), started in order and each offered
        `candidate` first, in one compiled call: (index of the first that admits it, that round)
        or (len(steps_ahead), None). The same draws and answers as `start_round` and `admit` at
        each boundary. None with prefix caching (the engine then starts the rounds one by one)."""
        if view.prefix_chain is not None:
            return None
        if self._caps_as_lengths:
            found = first_admitting_exact_round(view, steps_ahead, None, candidate, candidate.max_new_tokens,
                                                self._slack_tokens, self.config.headroom)
            return found if found[1] is None else (found[0], _CapRound.resumed(self._slack_tokens, found[1]))
        limit = view.capacity_tokens * self._limit_fraction
        slack = self._slack_tokens
        held = view.kv_held
        if held is not None and self._refused_on_held_tokens(held, steps_ahead, candidate, limit):
            return len(steps_ahead), None
        cols = view.batch_columns()
        n = len(cols.ids)
        num_lists = self.num_lists(n)
        lo = candidate.generated_tokens + 1
        index, pairs, is_sorted = _compiled.past_future_rounds_ahead(
            self.stream.state, self.history.sorted(), cols.ids, cols.prompt, cols.max_new, cols.generated, cols.kv,
            cols.clock_base, cols.clock, slack, num_lists, limit, steps_ahead, lo, max(lo, candidate.max_new_tokens),
            candidate.prompt_tokens, candidate.kv_tokens, float(candidate.kv_tokens + slack), self._cap_when_larger, self._rounded)
        if index == len(steps_ahead):
            return index, None
        return index, _Round.resumed(self, num_lists, PeakAdmissionRound.resumed(pairs, n + 1, is_sorted, limit))

    def _refused_on_held_tokens(self, kv_held: tuple[int, int], steps_ahead: np.ndarray, candidate: Candidate, limit: float) -> bool:
        """The compiled rounds' first refusal (_compiled.past_future_rounds_ahead), decided before
        the call: if what the running requests and the candidate hold at the first round already
        exceeds the limit, every peak does, at that round and at each later one (held tokens only
        grow), whatever is drawn. Then move the stream past the rounds' draws, as the kernel does,
        and return True: near a full replica most rounds held inside runs end so (4,200 of 6,282
        calls in a 20k-request run), and the call's fixed cost is most of theirs. The same sum
        as the kernel's: whole tokens, exact in any order. (The draws are counted by the kernel's
        own `round_draws`, run by Python here: a compiled call from Python costs more than it.)"""
        n, kv_sum = kv_held
        slack = self._slack_tokens
        if float(candidate.kv_tokens + slack) + (kv_sum + n * (steps_ahead.item(0) + slack)) <= limit:
            return False
        self.stream.skip(len(steps_ahead) * _round_draws(self.num_lists(n), n, len(self.history.sorted())))
        return True

    def record_finish(self, output_tokens: int) -> None:
        self.history.append(output_tokens)
