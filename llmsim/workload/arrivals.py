"""Arrival processes for open-loop load: times in seconds from the start of the run.

- `poisson_arrivals`: exponential gaps at a rate.
- `gamma_arrivals`: Gamma gaps with a coefficient of variation `cv` (vLLM's `--burstiness b`
  is shape b, so b = 1 / cv^2; cv = 1 is Poisson, cv > 1 is burstier).
- `rescale_to_rate`: stretch recorded trace timestamps to a target mean rate, keeping their shape
  (the coefficient of variation of the gaps is unchanged by a constant scale).
- `spread_ties`: requests that share a timestamp (Mooncake groups arrivals into ~3 s slots) are
  spread uniformly over [t, t + slot_s), keeping their file order.

All draws come from the generator passed in (the scenario's `workload/arrivals` stream). The first
arrival of a generated process is at 0.
"""

from __future__ import annotations

import numpy as np

from ..errors import LlmsimError


def _from_gaps(draw, n: int | None, duration_s: float | None, mean_gap_s: float) -> np.ndarray:
    """Cumulative arrival times starting at 0, either n of them or all before duration_s."""
    if n is not None:
        gaps = draw(max(n - 1, 0))
        return np.concatenate([[0.0], np.cumsum(gaps)])
    chunk = max(16, int(duration_s / mean_gap_s * 1.1) + 16)
    parts = [np.zeros(1)]
    while parts[-1][-1] < duration_s:
        parts.append(parts[-1][-1] + np.cumsum(draw(chunk)))
    times = np.concatenate(parts)
    return times[times < duration_s]


def poisson_arrivals(rng: np.random.Generator, rate_per_s: float, n: int | None = None, duration_s: float | None = None) -> np.ndarray:
    return _from_gaps(lambda k: rng.exponential(1.0 / rate_per_s, k), n, duration_s, 1.0 / rate_per_s)


def gamma_arrivals(rng: np.random.Generator, rate_per_s: float, cv: float, n: int | None = None, duration_s: float | None = None) -> np.ndarray:
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate_per_s * shape)  # mean gap = shape * scale = 1 / rate
    return _from_gaps(lambda k: rng.gamma(shape, scale, k), n, duration_s, 1.0 / rate_per_s)


def mean_rate_per_s(arrival_s: np.ndarray) -> float:
    """Requests per second over the trace's span: (n - 1) gaps over first-to-last."""
    span = float(arrival_s[-1] - arrival_s[0]) if len(arrival_s) > 1 else 0.0
    if span <= 0:
        raise LlmsimError("the trace's arrivals span no time, so it has no rate to rescale")
    return (len(arrival_s) - 1) / span


def rescale_to_rate(arrival_s: np.ndarray, rate_per_s: float) -> np.ndarray:
    """Scale times (relative to the first) so the mean rate is `rate_per_s`."""
    rel = arrival_s - arrival_s[0]
    return rel * (mean_rate_per_s(arrival_s) / rate_per_s)


def spread_ties(rng: np.random.Generator, arrival_s: np.ndarray, slot_s: float) -> np.ndarray:
    """Spread each group of equal timestamps uniformly over [t, t + slot_s), file order kept."""
    out = arrival_s.astype(np.float64).copy()
    if len(out) == 0:
        return out
    starts = np.flatnonzero(np.concatenate([[True], np.diff(out) != 0]))
    ends = np.append(starts[1:], len(out))
    for s, e in zip(starts, ends):
        if e - s > 1:
            out[s:e] = out[s] + np.sort(rng.uniform(0.0, slot_s, e - s))
    # Spreading can push a slot past the next recorded time; keep the stream ordered.
    return np.maximum.accumulate(out)


def gap_cv(arrival_s: np.ndarray) -> float:
    """Coefficient of variation of inter-arrival gaps (burstiness; 1 for Poisson)."""
    gaps = np.diff(arrival_s)
    if len(gaps) < 2 or gaps.mean() == 0:
        return float("nan")
    return float(gaps.std() / gaps.mean())
