"""Workloads: materialise the scenario's request stream before the run.

The whole stream (prompt and true output lengths, caps, and for open-loop load the arrival times)
is drawn once from the scenario seed, so every scheduler in a comparison sees the identical
requests. Closed-loop load keeps the stream's order; its send times come from the simulation.
Filters, caps and skipped rows are reported in `Workload.notes`; nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import WorkloadConfig
from ..errors import LlmsimError
from ..rng import stream
from .arrivals import gamma_arrivals, poisson_arrivals, rescale_to_rate, spread_ties
from .lengths import lognormal_lengths, sample_rows, uniform_lengths
from .readers import Trace, read_trace
from .sessions import SessionPlan, assemble, draw_think_s, draw_turns

# Past-future's history prior when caps are exact (no constant cap to start from): LightLLM PR.
EXACT_MODE_PRIOR_OUTPUT_TOKENS = 1024


@dataclass
class Workload:
    arrival_s: np.ndarray | None  # None for closed-loop load
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray  # true lengths after the cap
    max_new_tokens: np.ndarray
    cap_mode: str  # "exact" or "cap=N"
    default_prior_output_tokens: int
    notes: list[str] = field(default_factory=list)
    # Mooncake: per request, the ids of its 512-token prompt blocks (shared ids = shared prefix),
    # kept for a prefix-cache model; None when the source has none.
    block_hash_ids: list[np.ndarray] | None = None
    # prompt tokens each hash id covers (Mooncake: 512); read by the prefix cache (llmsim.prefix_cache)
    hash_block_tokens: int = 512
    sessions: SessionPlan | None = None  # multi-turn sessions: the requests are their turns (sessions.py)

    def __len__(self) -> int:
        return len(self.prompt_tokens)


def build_workload(cfg: WorkloadConfig, seed: int, max_total_tokens: int | None = None) -> Workload:
    """The scenario's requests. `max_total_tokens` (the longest request a replica can run) ends
    sessions whose next turn would be longer; other workloads ignore it (check_requests refuses them)."""
    notes: list[str] = []
    if cfg.sessions is not None:
        return _session_workload(cfg, seed, max_total_tokens, notes)
    arr_rng, len_rng = stream(seed, "workload/arrivals"), stream(seed, "workload/lengths")
    hash_ids = None
    if cfg.trace is not None:
        prompt, output, arrival, hash_ids = _replay(cfg, arr_rng, notes)
    else:
        arrival = _generated_arrivals(cfg, arr_rng)
        n = len(arrival) if arrival is not None else cfg.num_requests
        if n is None:  # closed loop bounded by duration: draw a stream longer than can be sent
            n = _closed_loop_stream_length(cfg)
        prompt, output = _lengths(cfg, n, len_rng, notes)
    output, caps, cap_mode, prior = _apply_cap(cfg, output, notes, "outputs")
    return Workload(arrival, prompt.astype(np.int64), output.astype(np.int64), caps, cap_mode, prior, notes, hash_ids)


def _apply_cap(cfg: WorkloadConfig, output: np.ndarray, notes: list[str], what: str):
    """(outputs after the cap, caps, cap mode, past-future's prior) for workload.max_new_tokens."""
    if cfg.max_new_tokens == "exact":
        return output, output.copy(), "exact", EXACT_MODE_PRIOR_OUTPUT_TOKENS
    cap = int(cfg.max_new_tokens)
    cut = int(np.count_nonzero(output > cap))
    if cut:
        notes.append(f"{cut} of {len(output)} {what} are longer than max_new_tokens={cap} and stop at the cap")
    return np.minimum(output, cap), np.full(len(output), cap, dtype=np.int64), f"cap={cap}", cap


def _session_workload(cfg: WorkloadConfig, seed: int, max_total_tokens: int | None, notes: list[str]) -> Workload:
    """Multi-turn sessions (sessions.py): turns, per-turn lengths, think times and starts, each from
    its own named stream of the seed, then prompts and hash ids."""
    spec, a = cfg.sessions, cfg.arrivals
    turns = draw_turns(spec.turns, stream(seed, "workload/session-turns"), spec.count)
    inputs, answers = _lengths(cfg, int(turns.sum()), stream(seed, "workload/lengths"), notes)
    answers, _caps, cap_mode, prior = _apply_cap(cfg, answers, notes, "answers")
    think_s = draw_think_s(spec.think_time, stream(seed, "workload/session-think"), int(turns.sum()))
    rng = stream(seed, "workload/arrivals")
    start_s = {"closed-loop": lambda: None, "all-at-once": lambda: np.zeros(spec.count),
               "poisson": lambda: poisson_arrivals(rng, a.rate_per_s, spec.count),
               "gamma": lambda: gamma_arrivals(rng, a.rate_per_s, a.cv, spec.count)}[a.kind]()
    prompt, output, hash_ids, plan = assemble(spec, turns, inputs, answers, think_s, start_s, max_total_tokens)
    caps = output.copy() if cfg.max_new_tokens == "exact" else np.full(len(output), int(cfg.max_new_tokens), dtype=np.int64)
    if plan.cut_by_length:
        empty = int(np.count_nonzero(plan.turns == 0))
        notes.append(f"{plan.cut_by_length:,} of {spec.count:,} sessions end early: their next turn (prompt + answer) would be longer "
                     f"than the longest request a replica runs ({max_total_tokens:,} tokens); {empty:,} of them send no turn; "
                     f"{int(plan.drawn_turns.sum() - plan.turns.sum()):,} turns drawn are not sent")
    return Workload(None, prompt, output, caps, cap_mode, prior, notes, hash_ids, spec.hash_block_tokens, plan)


def _closed_loop_stream_length(cfg: WorkloadConfig) -> int:
    # Clients send at most one request per (very short) service; a stream of this length cannot run
    # out within duration_s for any realistic step time, and it costs only two int arrays.
    return max(10_000, int(cfg.arrivals.clients * cfg.duration_s * 20))


def _generated_arrivals(cfg: WorkloadConfig, rng: np.random.Generator) -> np.ndarray | None:
    a = cfg.arrivals
    if a.kind == "closed-loop":
        return None
    if a.kind == "all-at-once":
        return np.zeros(cfg.num_requests)
    if a.kind == "poisson":
        return poisson_arrivals(rng, a.rate_per_s, cfg.num_requests, cfg.duration_s)
    if a.kind == "gamma":
        return gamma_arrivals(rng, a.rate_per_s, a.cv, cfg.num_requests, cfg.duration_s)
    raise LlmsimError(f"workload.arrivals.kind {a.kind!r} needs workload.trace")


def _read(path, fmt, on_bad_row, notes: list[str]) -> Trace:
    trace = read_trace(path, fmt, on_bad_row)
    if trace.skipped_rows:
        notes.append(f"skipped {trace.skipped_rows} malformed rows of {path} (on_bad_row: skip), e.g. {trace.skipped_examples[0]}")
    return trace


def _replay(cfg: WorkloadConfig, rng: np.random.Generator, notes: list[str]):
    """A trace in file order: filter, then take the first num_requests (or those inside duration_s)."""
    src = cfg.trace
    trace = _read(src.path, src.format, src.on_bad_row, notes)
    keep = filter_mask(cfg, trace.prompt_tokens, trace.output_tokens)
    if not keep.all():
        notes.append(f"filter kept {int(keep.sum()):,} of {len(keep):,} requests of {src.path}")
    prompt, output = trace.prompt_tokens[keep], trace.output_tokens[keep]
    hashes = [h for h, k in zip(trace.hash_ids, keep) if k] if trace.hash_ids is not None else None
    if len(prompt) == 0:
        raise LlmsimError(f"workload.filter: no request of {src.path} passes the filter")
    a = cfg.arrivals
    if a.kind == "trace":
        if trace.arrival_s is None:
            raise LlmsimError(f"workload.arrivals.kind is 'trace' but {src.path} is a length table with no timestamps; use poisson or gamma arrivals")
        arrival = trace.arrival_s[keep]
        arrival = arrival - arrival[0]
        if a.spread_ties_s is not None:
            arrival = spread_ties(rng, arrival, a.spread_ties_s)
        if a.rate_per_s is not None:
            arrival = rescale_to_rate(arrival, a.rate_per_s)
        n = len(arrival)
        if cfg.duration_s is not None:
            n = int(np.searchsorted(arrival, cfg.duration_s, side="left"))
        if cfg.num_requests is not None:
            if cfg.num_requests > n:
                raise LlmsimError(f"workload.num_requests={cfg.num_requests} but {src.path} has {n:,} requests (after filter and duration); ask for fewer")
            n = cfg.num_requests
        return prompt[:n], output[:n], arrival[:n], (hashes[:n] if hashes is not None else None)
    arrival = _generated_arrivals(cfg, rng)
    n = len(arrival) if arrival is not None else (cfg.num_requests or len(prompt))
    if n > len(prompt):
        raise LlmsimError(f"workload: {n:,} requests needed but {src.path} has {len(prompt):,} (after the filter); ask for fewer or sample with workload.lengths kind: table")
    return prompt[:n], output[:n], arrival, (hashes[:n] if hashes is not None else None)


def _lengths(cfg: WorkloadConfig, n: int, rng: np.random.Generator, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    src = cfg.lengths
    if src.kind == "fixed":
        return np.full(n, src.input_tokens, dtype=np.int64), np.full(n, src.output_tokens, dtype=np.int64)
    if src.kind == "uniform":
        return uniform_lengths(rng, n, *src.input_tokens), uniform_lengths(rng, n, *src.output_tokens)
    if src.kind == "lognormal":
        i, o = src.input_tokens, src.output_tokens
        return lognormal_lengths(rng, n, i.median, i.sigma, i.min, i.max), lognormal_lengths(rng, n, o.median, o.sigma, o.min, o.max)
    trace = _read(src.path, src.format, src.on_bad_row, notes)
    keep = filter_mask(cfg, trace.prompt_tokens, trace.output_tokens)
    if not keep.all():
        notes.append(f"filter kept {int(keep.sum()):,} of {len(keep):,} rows of {src.path}")
    prompt, output = trace.prompt_tokens[keep], trace.output_tokens[keep]
    if len(prompt) == 0:
        raise LlmsimError(f"workload.filter: no row of {src.path} passes the filter")
    if not src.replacement and n > len(prompt):
        raise LlmsimError(f"workload: {n:,} requests asked without replacement but {src.path} has {len(prompt):,} usable rows; set workload.lengths.replacement: true or ask for fewer")
    idx = sample_rows(rng, len(prompt), n, src.replacement)
    return prompt[idx], output[idx]


def filter_mask(cfg: WorkloadConfig, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    f = cfg.filter
    keep = np.ones(len(prompt), dtype=bool)
    for bound, values, op in (
        (f.min_input_tokens, prompt, np.greater_equal),
        (f.max_input_tokens, prompt, np.less_equal),
        (f.min_output_tokens, output, np.greater_equal),
        (f.max_output_tokens, output, np.less_equal),
        (f.max_total_tokens, prompt + output, np.less_equal),
    ):
        if bound is not None:
            keep &= op(values, bound)
    return keep
