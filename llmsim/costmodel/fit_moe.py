"""Fused-MoE efficiency from calibration's grouped-GEMM points (torch-free).

A MoE layer's expert work runs as grouped GEMMs over the rows routed to each expert. The cost
models price it as dense GEMMs of each expert's shape over its share of the rows, divided by
`efficiency.moe_gemm_efficiency` (tables.py, analytic.py). Calibration times the grouped GEMMs
(bench_engine.bench_moe_gemm); this module sets that efficiency to the median, over the points, of
(dense price of the same work from the fitted GEMM tables) / (measured grouped time), capped at 1.
Units: seconds; the efficiency is a fraction.
"""

from __future__ import annotations

import statistics

from llmsim.costmodel._numeric import TimeCurve
from llmsim.costmodel.measurements import RawMeasurements
from llmsim.costmodel.profile import GemmSection
from llmsim.costmodel.tables import surface_curve

_FLOOR = 0.05  # below this a measurement went wrong, not the kernel: keep the profile usable


def dense_price_s(gemm: GemmSection, experts_hit: int, rows: int, hidden: int, intermediate: int) -> float:
    """Seconds the GEMM tables give for `rows` routed rows spread over `experts_hit` experts:
    each expert's gate-up (2 x intermediate, hidden) and down (hidden, intermediate) GEMM over its
    share of the rows (fractional rows interpolate, as tables.py prices MoE)."""
    curves = {(t.n, t.k): TimeCurve(t.tokens, t.seconds) for t in gemm.shapes}

    def curve(n: int, k: int) -> TimeCurve:
        return curves[(n, k)] if (n, k) in curves else surface_curve(gemm.surface, n, k)  # type: ignore[arg-type]

    share = rows / experts_hit
    return experts_hit * (curve(2 * intermediate, hidden)(share) + curve(hidden, intermediate)(share))


def fit_moe_efficiency(raw: RawMeasurements, gemm: GemmSection | None) -> tuple[float, int] | None:
    """(efficiency, points) from the grouped-GEMM points, or None without points or GEMM tables."""
    points = [p for p in raw.moe_gemm if p.experts_hit > 0 and p.seconds > 0]
    if not points or gemm is None:
        return None
    ratios = [dense_price_s(gemm, p.experts_hit, p.tokens * p.top_k, p.hidden, p.intermediate) / p.seconds for p in points]
    return min(1.0, max(_FLOOR, statistics.median(ratios))), len(points)
