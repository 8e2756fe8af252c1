"""Numeric helpers shared by profile fitting (fit.py) and the table cost model (tables.py).

numpy only (scipy is not a dependency): non-negative least squares (Lawson-Hanson), isotonic
regression (pool adjacent violators), relative-error summaries, and `TimeCurve`, the one
interpolation convention used for every measured "time vs size" table (GEMM time vs tokens,
elementwise time vs bytes, all-reduce time vs bytes). Sizes are tokens or bytes, times seconds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """x >= 0 minimising ||a x - b||_2 (Lawson and Hanson's active-set algorithm).

    Columns are scaled to unit norm first so features of very different magnitudes (seconds per
    FLOP next to a launch constant) do not upset the tolerance tests; x is unscaled on return.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = a.shape
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    a_s = a / norms
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    tol = 10 * np.finfo(float).eps * max(m, n) * max(1.0, np.abs(a_s).sum(axis=0).max())
    max_iter = 3 * n if max_iter is None else max_iter
    w = a_s.T @ (b - a_s @ x)
    for _ in range(max_iter):
        if passive.all() or w[~passive].max() <= tol:
            break
        candidates = np.where(~passive, w, -np.inf)
        passive[int(np.argmax(candidates))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a_s[:, passive], b, rcond=None)[0]
            if z[passive].min() > 0:
                break
            # Step back towards x until the first passive coefficient hits zero, drop it.
            blocked = passive & (z <= 0)
            alpha = np.min(x[blocked] / (x[blocked] - z[blocked]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        x = z
        w = a_s.T @ (b - a_s @ x)
    return x / norms


def relative_nnls(features: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """NNLS minimising relative (not absolute) residuals: each row divided by its measured time.

    Measured times span orders of magnitude; an absolute fit would ignore the short ones.
    """
    seconds = np.asarray(seconds, dtype=np.float64)
    return nnls(np.asarray(features, dtype=np.float64) / seconds[:, None], np.ones_like(seconds))


def isotonic_non_decreasing(values: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """Least-squares non-decreasing fit of `values` (pool adjacent violators)."""
    y = np.asarray(values, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    means: list[float] = []
    wsum: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(y, w, strict=True):
        means.append(float(yi))
        wsum.append(float(wi))
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, c2 = means.pop(), wsum.pop(), counts.pop()
            total = wsum[-1] + w2
            means[-1] = (means[-1] * wsum[-1] + m2 * w2) / total
            wsum[-1] = total
            counts[-1] += c2
    return np.repeat(np.asarray(means), counts)


def rel_errors(predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> np.ndarray:
    """|predicted - measured| / measured, element-wise."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    return np.abs(p - m) / m


def error_summary(predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> tuple[int, float, float]:
    """(points, median relative error, worst relative error); (0, 0, 0) without points."""
    err = rel_errors(predicted, measured)
    if err.size == 0:
        return 0, 0.0, 0.0
    return int(err.size), float(np.median(err)), float(err.max())


def group_median(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique x and the median y of the repeated measurements at each."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    ux = np.unique(x)
    return ux, np.array([np.median(y[x == v]) for v in ux])


class TimeCurve:
    """Time vs size from a measured table, interpolated linearly in log-log space.

    Below the smallest measured size the time stays at the first point's (kernels are flat while
    launch- or latency-bound); above the largest it grows in proportion to the size from the last
    point (constant achieved rate: compute- or bandwidth-bound). A non-decreasing table therefore
    gives a non-decreasing curve. Non-decreasing order is enforced here with a running maximum, so
    a hand-edited table cannot make a larger batch cheaper.

    The scalar call is plain Python (bisect and math) because it runs on every cache miss of a
    cost model: about ten times faster than numpy on one float.
    """

    __slots__ = ("sizes", "seconds", "_lx", "_ly", "_x0", "_y0", "_x1", "_y1")

    def __init__(self, sizes: Sequence[float], seconds: Sequence[float]) -> None:
        self.sizes = np.asarray(sizes, dtype=np.float64)
        self.seconds = np.maximum.accumulate(np.asarray(seconds, dtype=np.float64))
        self._lx = [math.log(x) for x in self.sizes.tolist()]
        self._ly = [math.log(y) for y in self.seconds.tolist()]
        self._x0, self._y0 = float(self.sizes[0]), float(self.seconds[0])
        self._x1, self._y1 = float(self.sizes[-1]), float(self.seconds[-1])

    def __call__(self, size: float) -> float:
        if size <= self._x0:
            return self._y0
        if size >= self._x1:
            return self._y1 * (size / self._x1)
        lx = math.log(size)
        i = bisect.bisect_right(self._lx, lx)  # 1 <= i <= len - 1 strictly inside the range
        xa, xb, ya, yb = self._lx[i - 1], self._lx[i], self._ly[i - 1], self._ly[i]
        return math.exp(ya + (yb - ya) * ((lx - xa) / (xb - xa)))

    def many(self, sizes: np.ndarray) -> np.ndarray:
        """The curve at many sizes (same conventions; equal to the scalar call to rounding)."""
        s = np.asarray(sizes, dtype=np.float64)
        inner = np.exp(np.interp(np.log(np.clip(s, self._x0, self._x1)), self._lx, self._ly))
        return np.where(s >= self._x1, self._y1 * (s / self._x1), inner)
