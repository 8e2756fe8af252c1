"""Synthetic (prompt, output) length distributions, in tokens.

- uniform: independent integers in [lo, hi] (the Past-Future paper's three mixes);
- fixed: constants;
- lognormal: round(median * exp(sigma * N(0, 1))), clipped to [min, max] (a long right tail, like
  real chat lengths);
- table: rows of any supported trace file drawn jointly, with or without replacement (the
  empirical distribution; see llmsim.workload.readers).
"""

from __future__ import annotations

import numpy as np


def uniform_lengths(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    return rng.integers(lo, hi + 1, n)


def lognormal_lengths(rng: np.random.Generator, n: int, median: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    values = np.rint(median * np.exp(sigma * rng.standard_normal(n)))
    return np.clip(values, lo, hi).astype(np.int64)


def sample_rows(rng: np.random.Generator, num_rows: int, n: int, replacement: bool) -> np.ndarray:
    """Row indices: n draws with replacement, or the first n of a permutation."""
    if replacement:
        return rng.integers(0, num_rows, n)
    return rng.permutation(num_rows)[:n]
