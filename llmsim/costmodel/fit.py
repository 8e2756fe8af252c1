"""Fitting: raw microbenchmark measurements -> the tables of a schema-2 hardware profile.

torch-free (numpy only), so fits are tested on synthetic `RawMeasurements`. `fit_profile` builds:

- `gemm`: per (n, k) shape, the median time at each token count made non-decreasing in tokens
  (isotonic regression), interpolated log-log at prediction time (`_numeric.TimeCurve`); plus a
  generic achieved-TFLOP/s surface over a log-spaced (tokens, N*K) grid for unmeasured shapes.
- `attention`: per head configuration, non-negative least squares of relative residuals on the
  physical features (FLOPs, bytes, sequences) documented on `PrefillAttentionFit` and
  `DecodeAttentionFit`.
- `elementwise`: achieved GB/s vs bytes moved and a kernel floor (the fastest kernel's time).
- `host_link`: latency + bytes / rate per direction (NNLS), in GB/s.
- `comm.allreduce_tables`: per TP degree, time vs bytes plus a ring fit (latency, bus GB/s).

Every table gets a fit report: points, median and worst relative error of what the cost model
will use against the table's own measured points. Times are seconds, sizes tokens or bytes.
The sanity checks of docs/cost-model.md §4 live in checks.py and are re-exported here.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from llmsim.costmodel import _attention as feat
from llmsim.costmodel._numeric import TimeCurve, error_summary, group_median, isotonic_non_decreasing, relative_nnls
from llmsim.costmodel.catalog import ModelArch
from llmsim.costmodel.checks import CheckResult, fit_report_text, sanity_checks
from llmsim.costmodel.fit_moe import fit_moe_efficiency
from llmsim.costmodel.measurements import RawMeasurements
from llmsim.costmodel.profile import (
    AllReduceTable,
    AttentionConfig,
    AttentionSection,
    Calibration,
    Comm,
    DecodeAttentionFit,
    DecodePoint,
    ElementwiseSection,
    FitQuality,
    FitReportEntry,
    GemmSection,
    GemmSurface,
    GemmTable,
    HardwareProfile,
    HostLinkSection,
    PrefillAttentionFit,
    PrefillPoint,
    ValidationCheck,
)
from llmsim.costmodel.tables import surface_curve
from llmsim.errors import LlmsimError

__all__ = ["CheckResult", "fit_profile", "fit_report_text", "sanity_checks"]

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_SURFACE_MAX_TOKENS = 24  # grid rows: enough for a log-spaced sweep from 1 to 8192 tokens
_SURFACE_MAX_NK = 12  # grid columns


def _quality(predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray) -> FitQuality:
    points, median, worst = error_summary(predicted, measured)
    return FitQuality(points=points, median_rel_error=median, worst_rel_error=worst)


# ----- GEMM -----


def fit_gemm_table(n: int, k: int, tokens: Sequence[int], seconds: Sequence[float]) -> GemmTable:
    """Median per token count, made non-decreasing; fit quality against every raw point."""
    ux, uy = group_median(tokens, seconds)
    smooth = isotonic_non_decreasing(uy)
    curve = TimeCurve(ux, smooth)
    quality = _quality([curve(t) for t in tokens], seconds)
    return GemmTable(n=n, k=k, tokens=tuple(int(t) for t in ux), seconds=tuple(float(s) for s in smooth), fit=quality)


def fit_gemm_surface(tables: Sequence[GemmTable], points: Sequence[tuple[int, int, int, float]]) -> GemmSurface:
    """Achieved TFLOP/s on a log-spaced (tokens, N*K) grid from the measured tables.

    Each measured shape is read at the grid's token counts through its own curve; shapes sharing
    an N*K are averaged in log time; columns between measured N*K values interpolate log TFLOP/s
    in log N*K. Every column is then a log-linear mix of non-decreasing curves with weights fixed
    per column, so the surface's time is non-decreasing in tokens too.
    """
    t_min = min(t.tokens[0] for t in tables)
    t_max = max(t.tokens[-1] for t in tables)
    n_tok = min(_SURFACE_MAX_TOKENS, len({x for t in tables for x in t.tokens}))
    grid_tokens = np.unique(np.geomspace(t_min, t_max, max(n_tok, 1)))
    by_nk: dict[float, list[np.ndarray]] = defaultdict(list)
    for table in tables:
        curve = TimeCurve(table.tokens, table.seconds)
        by_nk[float(table.n) * float(table.k)].append(np.log(curve.many(grid_tokens)))
    measured_nk = np.array(sorted(by_nk))
    # log TFLOP/s at each measured nk, [tokens, nk]
    log_tflops = np.stack(
        [np.log(2.0 * grid_tokens * nk / 1e12) - np.mean(by_nk[nk], axis=0) for nk in measured_nk], axis=1
    )
    grid_nk = np.unique(np.geomspace(measured_nk[0], measured_nk[-1], min(_SURFACE_MAX_NK, len(measured_nk))))
    grid = np.exp([np.interp(np.log(grid_nk), np.log(measured_nk), row) for row in log_tflops])
    surface = GemmSurface(
        tokens=tuple(float(t) for t in grid_tokens),
        nk=tuple(float(v) for v in grid_nk),
        tflops=tuple(tuple(float(v) for v in row) for row in grid),
    )
    curves: dict[tuple[int, int], TimeCurve] = {}
    predicted = []
    for n, k, t, _ in points:
        curve = curves.get((n, k)) or curves.setdefault((n, k), surface_curve(surface, n, k))
        predicted.append(curve(t))
    return surface.model_copy(update={"fit": _quality(predicted, [p[3] for p in points])})


def fit_gemm(raw: RawMeasurements) -> GemmSection | None:
    if not raw.gemm:
        return None
    groups: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
    for p in raw.gemm:
        groups[(p.n, p.k)].append((p.tokens, p.seconds))
    tables = []
    for (n, k), pts in sorted(groups.items()):
        tables.append(fit_gemm_table(n, k, [t for t, _ in pts], [s for _, s in pts]))
    points = [(p.n, p.k, p.tokens, p.seconds) for p in raw.gemm]
    return GemmSection(shapes=tuple(tables), surface=fit_gemm_surface(tables, points))


# ----- attention -----


def _prefill_features(cfg: tuple[int, int, int], dtype_bytes: int, pts) -> np.ndarray:
    q, kv, hd = cfg
    rows = []
    for p in pts:
        flops = p.batch * feat.prefill_pairs(p.chunk_tokens, p.prefix_tokens) * feat.prefill_flops_per_pair(q, hd)
        moved = p.batch * feat.prefill_bytes(p.chunk_tokens, p.prefix_tokens + p.chunk_tokens, q, kv, hd, dtype_bytes)
        rows.append((1.0, flops, moved))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _decode_features(cfg: tuple[int, int, int], dtype_bytes: int, pts) -> np.ndarray:
    _, kv, hd = cfg
    per_token = feat.kv_bytes_per_token(kv, hd, dtype_bytes)
    return np.array(
        [(1.0, float(p.batch), p.batch * p.context_tokens * per_token) for p in pts], dtype=np.float64
    ).reshape(-1, 3)


def _fit_features(x: np.ndarray, pts) -> tuple[list[float], FitQuality]:
    """Non-negative coefficients of t = x @ c on the points' times (relative residuals), with the
    fit's quality against those same points."""
    y = np.array([p.seconds for p in pts])
    c = relative_nnls(x, y)
    return [float(v) for v in c], _quality(x @ c, y)


def fit_attention(raw: RawMeasurements, dtype_bytes: int) -> AttentionSection | None:
    if not raw.prefill_attention and not raw.decode_attention:
        return None
    prefill: dict[tuple[int, int, int], list] = defaultdict(list)
    decode: dict[tuple[int, int, int], list] = defaultdict(list)
    for p in raw.prefill_attention:
        prefill[(p.q_heads, p.kv_heads, p.head_dim)].append(p)
    for p in raw.decode_attention:
        decode[(p.q_heads, p.kv_heads, p.head_dim)].append(p)
    configs = []
    for cfg in sorted(set(prefill) | set(decode)):
        prefill_fit = decode_fit = None
        if prefill.get(cfg):
            c, quality = _fit_features(_prefill_features(cfg, dtype_bytes, prefill[cfg]), prefill[cfg])
            prefill_fit = PrefillAttentionFit(launch_s=c[0], s_per_flop=c[1], s_per_byte=c[2], fit=quality)
        if decode.get(cfg):
            c, quality = _fit_features(_decode_features(cfg, dtype_bytes, decode[cfg]), decode[cfg])
            decode_fit = DecodeAttentionFit(launch_s=c[0], s_per_seq=c[1], s_per_byte=c[2], fit=quality)
        fresh = [p for p in prefill.get(cfg, []) if p.prefix_tokens == 0]
        chunked = [p for p in prefill.get(cfg, []) if p.prefix_tokens > 0]
        configs.append(
            AttentionConfig(
                q_heads=cfg[0], kv_heads=cfg[1], head_dim=cfg[2], prefill=prefill_fit, decode=decode_fit,
                prefill_points=tuple(PrefillPoint(chunk_tokens=p.chunk_tokens, prefix_tokens=0, batch=p.batch, seconds=p.seconds) for p in fresh),
                chunked_prefill_points=tuple(
                    PrefillPoint(chunk_tokens=p.chunk_tokens, prefix_tokens=p.prefix_tokens, batch=p.batch, seconds=p.seconds)
                    for p in chunked
                ),
                decode_points=tuple(
                    DecodePoint(batch=p.batch, context_tokens=p.context_tokens, seconds=p.seconds) for p in decode.get(cfg, [])
                ),
            )
        )
    return AttentionSection(dtype_bytes=dtype_bytes, backends=tuple(raw.attention_backends), configs=tuple(configs))


# ----- bandwidth tables -----


def fit_elementwise(raw: RawMeasurements) -> ElementwiseSection | None:
    """Bandwidth table from median time per size made non-decreasing; floor = fastest kernel."""
    if not raw.elementwise:
        return None
    sizes = [p.num_bytes for p in raw.elementwise]
    seconds = [p.seconds for p in raw.elementwise]
    ux, uy = group_median(sizes, seconds)
    smooth = isotonic_non_decreasing(uy)
    floor_s = float(smooth[0])
    curve = TimeCurve(ux, smooth)
    quality = _quality([max(floor_s, curve(b)) for b in sizes], seconds)
    return ElementwiseSection(
        num_bytes=tuple(float(b) for b in ux),
        gb_per_s=tuple(float(b / s / 1e9) for b, s in zip(ux, smooth, strict=True)),
        floor_us=floor_s * 1e6,
        fit=quality,
    )


def _latency_rate_fit(points) -> tuple[float, float, FitQuality]:
    """seconds = latency + bytes x s_per_byte by relative NNLS: (latency s, bytes/s, quality)."""
    x = np.array([(1.0, p.num_bytes) for p in points], dtype=np.float64)
    y = np.array([p.seconds for p in points])
    c = relative_nnls(x, y)
    if c[1] <= 0:
        raise LlmsimError("host link measurements do not grow with size; cannot fit a bandwidth")
    return float(c[0]), float(1.0 / c[1]), _quality(x @ c, y)


def fit_host_link(raw: RawMeasurements) -> HostLinkSection | None:
    """Per-direction rates; a direction not measured takes the other one's values."""
    h2d = _latency_rate_fit(raw.host_to_device) if raw.host_to_device else None
    d2h = _latency_rate_fit(raw.device_to_host) if raw.device_to_host else None
    if h2d is None and d2h is None:
        return None
    h2d = h2d or d2h
    d2h = d2h or h2d
    return HostLinkSection(
        h2d_gb_per_s=h2d[1] / 1e9, d2h_gb_per_s=d2h[1] / 1e9, latency_us=max(h2d[0], d2h[0]) * 1e6,
        h2d_fit=h2d[2] if raw.host_to_device else None, d2h_fit=d2h[2] if raw.device_to_host else None,
    )


def fit_allreduce(raw: RawMeasurements) -> tuple[AllReduceTable, ...] | None:
    """Per TP degree: median time per size (non-decreasing) and a ring fit of latency + bus rate."""
    groups: dict[int, list] = defaultdict(list)
    for p in raw.allreduce:
        groups[p.tp].append(p)
    tables = []
    for tp, pts in sorted(groups.items()):
        ring = 2.0 * (tp - 1) / tp
        x = np.array([(1.0, ring * p.num_bytes) for p in pts])
        y = np.array([p.seconds for p in pts])
        c = relative_nnls(x, y)
        ux, uy = group_median([p.num_bytes for p in pts], y)
        tables.append(
            AllReduceTable(
                tp=tp, num_bytes=tuple(float(b) for b in ux), seconds=tuple(float(s) for s in isotonic_non_decreasing(uy)),
                latency_us=float(c[0]) * 1e6, bus_gb_per_s=float(1.0 / c[1] / 1e9) if c[1] > 0 else 1e6,
                fit=_quality(x @ c, y),
            )
        )
    return tuple(tables) or None


# ----- the whole profile -----


def _report(profile: HardwareProfile) -> tuple[FitReportEntry, ...]:
    entries: list[tuple[str, FitQuality | None]] = []
    if profile.gemm is not None:
        entries += [(f"gemm n={t.n} k={t.k}", t.fit) for t in profile.gemm.shapes]
        if profile.gemm.surface is not None:
            entries.append(("gemm surface (all gemm points)", profile.gemm.surface.fit))
    if profile.attention is not None:
        for c in profile.attention.configs:
            heads = f"{c.q_heads}/{c.kv_heads}/{c.head_dim}"
            entries += [(f"attention prefill {heads}", c.prefill.fit if c.prefill else None)]
            entries += [(f"attention decode {heads}", c.decode.fit if c.decode else None)]
    if profile.elementwise is not None:
        entries.append(("elementwise", profile.elementwise.fit))
    if profile.host_link is not None:
        entries += [("host link h2d", profile.host_link.h2d_fit), ("host link d2h", profile.host_link.d2h_fit)]
    for t in profile.comm.allreduce_tables or ():
        entries.append((f"allreduce tp={t.tp}", t.fit))
    return tuple(
        FitReportEntry(table=name, points=q.points, median_rel_error=q.median_rel_error, worst_rel_error=q.worst_rel_error)
        for name, q in entries
        if q is not None
    )


def fit_profile(
    raw: RawMeasurements,
    base: HardwareProfile,
    models: Sequence[ModelArch],
    tps: Sequence[int],
    date: datetime.date,
    name: str,
) -> HardwareProfile:
    """A schema-2 profile from raw measurements.

    `base` supplies what is not measured (spec peaks, efficiency fallbacks, comm defaults,
    overheads); `models` and `tps` are what the calibration was run for: they are recorded in the
    provenance and used for the end-of-calibration sanity checks stored in `validation`.
    Fidelity is 'measured' for a cuda run and 'coarse-cpu' for a cpu run.
    """
    if raw.device not in ("cuda", "cpu"):
        raise LlmsimError(f"raw measurements from device '{raw.device}': expected 'cuda' or 'cpu'")
    dtype_bytes = _DTYPE_BYTES.get(raw.dtype)
    if dtype_bytes is None:
        raise LlmsimError(f"raw measurements in dtype '{raw.dtype}': expected one of {', '.join(_DTYPE_BYTES)}")
    fidelity = "measured" if raw.device == "cuda" else "coarse-cpu"
    comm = _fitted_comm(raw, base)
    calibration = _calibration(raw, base, models, tps, date, fidelity)
    data = base.model_dump() | {
        "schema_version": 2,
        "hardware": base.hardware.model_copy(update={"name": name, "device_name": raw.device_name}).model_dump(),
        "calibration": calibration.model_dump(),
        "comm": comm.model_dump(),
        "gemm": g.model_dump() if (g := fit_gemm(raw)) else None,
        "attention": a.model_dump() if (a := fit_attention(raw, dtype_bytes)) else None,
        "elementwise": e.model_dump() if (e := fit_elementwise(raw)) else None,
        "host_link": h.model_dump() if (h := fit_host_link(raw)) else None,
        "validation": None,
        "fit_report": None,
    }
    if (moe := fit_moe_efficiency(raw, GemmSection.model_validate(data["gemm"]) if data["gemm"] else None)) is not None:
        data["efficiency"] = data["efficiency"] | {"moe_gemm_efficiency": moe[0]}  # fit_moe.py
    profile = HardwareProfile.model_validate(data)
    profile = profile.model_copy(update={"fit_report": _report(profile)})
    return HardwareProfile.model_validate(profile.model_dump() | {"validation": _validation(profile, models, tps)})


def _fitted_comm(raw: RawMeasurements, base: HardwareProfile) -> Comm:
    """The base profile's comm section, with the all-reduce tables and the medians of their ring fits
    (latency us, bus GB/s) where all-reduce was measured."""
    allreduce = fit_allreduce(raw)
    comm = base.comm
    if allreduce:
        tables = list(allreduce)
        comm = comm.model_copy(
            update={
                "allreduce_tables": allreduce,
                "allreduce_latency_us": float(np.median([t.latency_us for t in tables])),
                "allreduce_bus_gb_per_s": float(np.median([t.bus_gb_per_s for t in tables])),
                "measured": True,
                "notes": f"measured all-reduce at TP {', '.join(str(t.tp) for t in tables)}; scalars are medians of the per-TP fits",
            }
        )
    return comm


def _calibration(raw: RawMeasurements, base: HardwareProfile, models: Sequence[ModelArch], tps: Sequence[int],
                 date: datetime.date, fidelity: str) -> Calibration:
    """The calibration provenance: the base profile's, updated with the run's fidelity, date, source,
    software versions and timer."""
    model_names = ", ".join(m.name for m in models) or "no model"
    return base.calibration.model_copy(
        update={
            "fidelity": fidelity,
            "date": date,
            "source": f"llmsim calibrate-hardware on {raw.device_name} ({raw.device}) for {model_names} at TP {', '.join(map(str, tps)) or '1'}",
            "notes": "tables fitted by llmsim.costmodel.fit; hardware spec peaks, efficiency and overheads from the base profile "
            f"'{base.hardware.name}'" + ("; CPU timings: schema and monotonicity only, not GPU values" if raw.device == "cpu" else ""),
            "torch_version": raw.torch_version,
            "cuda_version": raw.cuda_version,
            "driver_version": raw.driver_version,
            "attention_backends": tuple(raw.attention_backends) or None,
            "duration_s": raw.duration_s,
            "timer": raw.timer or None,
            "repetitions": raw.repetitions or None,
            "dtype": raw.dtype,
        }
    )


def _validation(profile: HardwareProfile, models: Sequence[ModelArch], tps: Sequence[int]) -> tuple[ValidationCheck, ...]:
    """The end-of-calibration sanity checks of `profile`, as stored in its `validation`."""
    checks = sanity_checks(profile, models, tps)
    return tuple(
        ValidationCheck(
            name=c.name, passed=c.passed, skipped=c.skipped, predicted_s=c.predicted_s, measured_s=c.measured_s,
            bound_s=c.bound_s, detail=c.detail,
        )
        for c in checks
    )
