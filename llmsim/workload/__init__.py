"""Workloads: materialise the scenario's request stream before the run.

The whole stream (arrival times, prompt and true output lengths, caps) is drawn once from the
scenario seed, so every scheduler in a comparison sees the identical requests. Filters and caps
are reported in `Workload.notes`; nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import WorkloadConfig
from ..errors import LlmsimError
from ..rng import stream
from .tables import read_length_table

# Past-future's history prior when caps are exact (no constant cap to start from): LightLLM PR.
EXACT_MODE_PRIOR_OUTPUT_TOKENS = 1024


@dataclass
class Workload:
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray  # true lengths after the cap
    max_new_tokens: np.ndarray
    cap_mode: str  # "exact" or "cap=N"
    default_prior_output_tokens: int
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrival_s)


def build_workload(cfg: WorkloadConfig, seed: int) -> Workload:
    notes: list[str] = []
    arrivals = _arrivals(cfg, stream(seed, "workload/arrivals"))
    n = len(arrivals)
    prompt, output = _lengths(cfg, n, stream(seed, "workload/lengths"), notes)
    if cfg.max_new_tokens == "exact":
        caps = output.copy()
        cap_mode, prior = "exact", EXACT_MODE_PRIOR_OUTPUT_TOKENS
    else:
        cap = int(cfg.max_new_tokens)
        cut = int(np.count_nonzero(output > cap))
        if cut:
            notes.append(f"{cut} of {n} outputs were longer than max_new_tokens={cap} and stop at the cap")
        output = np.minimum(output, cap)
        caps = np.full(n, cap, dtype=np.int64)
        cap_mode, prior = f"cap={cap}", cap
    return Workload(arrivals, prompt, output, caps, cap_mode, prior, notes)


def _arrivals(cfg: WorkloadConfig, rng: np.random.Generator) -> np.ndarray:
    a = cfg.arrivals
    if a.kind == "all-at-once":
        return np.zeros(cfg.num_requests)
    if a.kind == "poisson":
        if cfg.num_requests is not None:
            gaps = rng.exponential(1.0 / a.rate_per_s, cfg.num_requests)
            return np.concatenate([[0.0], np.cumsum(gaps[:-1])])
        # duration: the first arrival at 0, then exponential gaps, drawn in chunks until past the end
        chunk = max(16, int(a.rate_per_s * cfg.duration_s * 1.1) + 16)
        parts = [np.zeros(1)]
        while parts[-1][-1] < cfg.duration_s:
            parts.append(parts[-1][-1] + np.cumsum(rng.exponential(1.0 / a.rate_per_s, chunk)))
        times = np.concatenate(parts)
        return times[times < cfg.duration_s]
    raise LlmsimError(f"workload.arrivals.kind {a.kind!r} is not supported")


def _lengths(cfg: WorkloadConfig, n: int, rng: np.random.Generator, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    src = cfg.lengths
    if src.kind == "fixed":
        return np.full(n, src.input_tokens, dtype=np.int64), np.full(n, src.output_tokens, dtype=np.int64)
    if src.kind == "uniform":
        lo_i, hi_i = src.input_tokens
        lo_o, hi_o = src.output_tokens
        return rng.integers(lo_i, hi_i + 1, n), rng.integers(lo_o, hi_o + 1, n)
    prompt, output = read_length_table(src.path, src.input_column, src.output_column)
    keep = _filter_mask(cfg, prompt, output)
    if not keep.all():
        notes.append(f"filter kept {int(keep.sum())} of {len(keep)} rows of {src.path}")
    prompt, output = prompt[keep], output[keep]
    if len(prompt) == 0:
        raise LlmsimError(f"workload.filter: no row of {src.path} passes the filter")
    if src.replacement:
        idx = rng.integers(0, len(prompt), n)
    else:
        if n > len(prompt):
            raise LlmsimError(f"workload: {n} requests asked without replacement but {src.path} has {len(prompt)} usable rows; set workload.lengths.replacement: true or ask for fewer")
        idx = rng.permutation(len(prompt))[:n]
    return prompt[idx], output[idx]


def _filter_mask(cfg: WorkloadConfig, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
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
