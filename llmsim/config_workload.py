"""The workload section of the scenario schema (lengths, arrivals, traces, filters), split from
llmsim.config, which imports these classes and remains the scenario module users import.
Units are in the key names: `_s` seconds, `_tokens` tokens, `_per_s` per second.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from .config_base import Strict
from .errors import did_you_mean


TRACE_FORMATS = Literal["azure", "mooncake", "length-table", "llmsim"]


class TraceSource(Strict):
    """Replay a recorded trace in order: its lengths, and its timestamps if it has them."""

    path: str
    format: TRACE_FORMATS | None = None  # None: detected from the file
    on_bad_row: Literal["error", "skip"] = "error"  # skip: malformed rows are counted and reported


class TableLengths(Strict):
    """(prompt, output) pairs drawn jointly from the rows of any trace file (the empirical
    distribution), e.g. the ShareGPT and arXiv length tables."""

    kind: Literal["table"]
    path: str
    format: TRACE_FORMATS | None = None
    on_bad_row: Literal["error", "skip"] = "error"
    replacement: bool = True  # sample rows with replacement


class UniformLengths(Strict):
    """Independent uniform integers in [lo, hi] for prompt and output (the paper's mixes)."""

    kind: Literal["uniform"]
    input_tokens: tuple[int, int]
    output_tokens: tuple[int, int]

    @model_validator(mode="after")
    def _ordered(self):
        for name in ("input_tokens", "output_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be [lo, hi] with 1 <= lo <= hi, got [{lo}, {hi}]")
        return self


class FixedLengths(Strict):
    kind: Literal["fixed"]
    input_tokens: int = Field(ge=1)
    output_tokens: int = Field(ge=1)


class LognormalSpec(Strict):
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)
    min: int = Field(1, ge=1)
    max: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be above max ({self.max})")
        return self


class LognormalLengths(Strict):
    """round(median x exp(sigma x N(0,1))), clipped to [min, max], for prompt and output."""

    kind: Literal["lognormal"]
    input_tokens: LognormalSpec
    output_tokens: LognormalSpec


Lengths = Annotated[Union[TableLengths, UniformLengths, FixedLengths, LognormalLengths], Field(discriminator="kind")]


class PoissonArrivals(Strict):
    kind: Literal["poisson"]
    rate_per_s: float = Field(gt=0.0)


class GammaArrivals(Strict):
    """Gamma inter-arrival gaps with coefficient of variation `cv` (vLLM --burstiness = 1/cv^2)."""

    kind: Literal["gamma"]
    rate_per_s: float = Field(gt=0.0)
    # Gap shape 1 / cv^2: beyond [1e-3, 1e3] numpy's Gamma draws no longer keep the mean gap
    # (shapes above 1e6 or below 1e-6 round to constant or zero gaps).
    cv: float = Field(ge=1e-3, le=1e3)


class TraceArrivals(Strict):
    """The trace's own timestamps: as recorded, or rescaled to a mean `rate_per_s` (keeping their
    burstiness); requests sharing a timestamp can be spread over `spread_ties_s` seconds."""

    kind: Literal["trace"]
    rate_per_s: float | None = Field(None, gt=0.0)
    spread_ties_s: float | None = Field(None, gt=0.0)


class AllAtOnceArrivals(Strict):
    """Every request arrives at time 0 (an offline batch, as in the paper's artifact simulator)."""

    kind: Literal["all-at-once"]


class ClosedLoopArrivals(Strict):
    """N clients, each sending its next request when its previous one ends (the paper's benchmark)."""

    kind: Literal["closed-loop"]
    clients: int = Field(ge=1)
    think_time_s: float = Field(0.0, ge=0.0)
    resend_failed: bool = False  # re-send a request that missed the SLA until it succeeds...
    max_attempts: int | None = Field(20, ge=1)  # ...or this many attempts were made (null: no cap)
    # where a failed attempt goes: "same-client" re-sends it at once; "shared-queue" puts it at the
    # tail of the queue every client takes from (the Past-Future artifact's clients)
    resend_to: Literal["same-client", "shared-queue"] = "same-client"


Arrivals = Annotated[
    Union[PoissonArrivals, GammaArrivals, TraceArrivals, AllAtOnceArrivals, ClosedLoopArrivals], Field(discriminator="kind")
]


class FixedTurns(Strict):
    kind: Literal["fixed"]
    turns: int = Field(ge=1)


class UniformTurns(Strict):
    """Turns per session uniform in [min, max]."""

    kind: Literal["uniform"]
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be above max ({self.max})")
        return self


class GeometricTurns(Strict):
    """Turns per session geometric on 1, 2, ... with this mean (each turn is the last with
    probability 1 / mean: many short sessions, a few long ones), clipped to `max`."""

    kind: Literal["geometric"]
    mean: float = Field(ge=1.0)
    max: int = Field(1000, ge=1)


Turns = Annotated[Union[FixedTurns, UniformTurns, GeometricTurns], Field(discriminator="kind")]


class FixedThink(Strict):
    kind: Literal["fixed"]
    value_s: float = Field(ge=0.0)


class ExponentialThink(Strict):
    kind: Literal["exponential"]
    mean_s: float = Field(gt=0.0)
    max_s: float | None = Field(None, ge=0.0)  # None: no clip


class LognormalThink(Strict):
    """median_s x exp(sigma x N(0,1)) seconds, clipped to [min_s, max_s]."""

    kind: Literal["lognormal"]
    median_s: float = Field(gt=0.0)
    sigma: float = Field(ge=0.0)
    min_s: float = Field(0.0, ge=0.0)
    max_s: float | None = Field(None, ge=0.0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.max_s is not None and self.min_s > self.max_s:
            raise ValueError(f"min_s ({self.min_s}) must not be above max_s ({self.max_s})")
        return self


ThinkTime = Annotated[Union[FixedThink, ExponentialThink, LognormalThink], Field(discriminator="kind")]


class SessionsConfig(Strict):
    """Multi-turn conversations (llmsim.workload.sessions): turn k's prompt is turn k-1's prompt,
    its answer and a new user input. `workload.lengths` gives each turn's (new input, answer)
    lengths; `workload.arrivals` starts the sessions (closed-loop: `clients` sessions at a time)."""

    count: int = Field(ge=1)  # sessions drawn
    turns: Turns
    think_time: ThinkTime = FixedThink(kind="fixed", value_s=0.0)  # from a turn's end to the next turn's send
    system_prompt_tokens: int = Field(0, ge=0)  # the same leading tokens in every session's prompts
    # prompt tokens per block hash id: the engine's default block size, so the prefix cache can share every
    # full engine block a later turn repeats (with 512, as Mooncake, a turn's partial last 512 tokens never hit)
    hash_block_tokens: int = Field(16, ge=1)


class LengthFilter(Strict):
    """Keep only requests inside these bounds (applied to the trace or table before sampling).
    vLLM's ShareGPT filter: min_input_tokens 4, max_input_tokens 1024, min_output_tokens 4,
    max_total_tokens 2048."""

    min_input_tokens: int | None = Field(None, ge=1)
    max_input_tokens: int | None = Field(None, ge=1)
    min_output_tokens: int | None = Field(None, ge=1)
    max_output_tokens: int | None = Field(None, ge=1)
    max_total_tokens: int | None = Field(None, ge=2)


class WorkloadConfig(Strict):
    trace: TraceSource | None = None  # replay a trace in order ...
    lengths: Lengths | None = None  # ... or draw lengths from a distribution
    arrivals: Arrivals
    num_requests: int | None = Field(None, ge=1)  # with sessions: the most turns sent (requests are turns)
    duration_s: float | None = Field(None, gt=0.0)  # arrivals (or, closed loop, sends) stop here
    # A constant cap on generated tokens (outputs longer than it stop at it), or "exact": each
    # request's cap is its true output length (the paper's benchmark, sent with ignore_eos).
    max_new_tokens: int | Literal["exact"] = Field(...)
    # Every request is sent with ignore_eos (the Past-Future artifact's clients): a policy that
    # estimates lengths (past-future) then takes each request's cap as its final length, as
    # LightLLM does for such requests (its get_tuple_tokens returns the cap).
    ignore_eos: bool = False
    filter: LengthFilter = LengthFilter()
    sessions: SessionsConfig | None = None  # multi-turn conversations instead of independent requests

    @field_validator("max_new_tokens", mode="before")
    @classmethod
    def _cap_or_exact(cls, v):
        """One plain line for a bad cap (pydantic would report each member of the union)."""
        if v == "exact" or (type(v) is int and v >= 1):
            return v
        if type(v) is float and v.is_integer() and v >= 1:
            return int(v)
        hint = did_you_mean(v, ["exact"]) if isinstance(v, str) else ""
        raise ValueError(f"must be a whole number of tokens >= 1 or 'exact', got {v!r}{hint}")

    @model_validator(mode="after")
    def _consistent(self):
        if self.sessions is not None:
            return self._sessions_consistent()
        if (self.trace is None) == (self.lengths is None):
            raise ValueError("set exactly one of trace (replay a trace in order) and lengths (draw lengths)")
        kind = self.arrivals.kind
        if self.trace is None and self.num_requests is None and self.duration_s is None:
            raise ValueError("set num_requests or duration_s")
        if kind in ("poisson", "gamma") and (self.num_requests is None) == (self.duration_s is None) and self.trace is None:
            raise ValueError("set exactly one of num_requests and duration_s")
        if kind == "all-at-once" and self.duration_s is not None:
            raise ValueError("all-at-once arrivals need num_requests, not duration_s")
        if kind == "trace" and self.trace is None:
            raise ValueError("arrivals.kind 'trace' replays a trace's timestamps: set workload.trace")
        if isinstance(self.max_new_tokens, int) and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be a positive integer or 'exact'")
        return self

    def _sessions_consistent(self):
        if self.trace is not None:
            raise ValueError("sessions draw each turn's new input and answer from workload.lengths; "
                             "they cannot replay workload.trace (remove one of the two)")
        if self.lengths is None:
            raise ValueError("sessions need workload.lengths: the new input (input_tokens) and answer (output_tokens) of each turn")
        kind = self.arrivals.kind
        if kind == "trace":
            raise ValueError("sessions start by poisson, gamma, all-at-once or closed-loop arrivals, not 'trace'")
        if kind == "closed-loop" and self.arrivals.resend_failed:
            raise ValueError("sessions do not re-send failed turns (a failed turn ends its session): set resend_failed: false")
        return self
