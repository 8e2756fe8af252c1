"""Sanity checks of a hardware profile against physics (docs/cost-model.md §4), and fit reports.

`sanity_checks(profile, models, tps)` predicts a few steps with the profile's cost model
(`tables.cost_model_for`: tables when present, analytic otherwise) and compares them with the
roofline floors at spec peaks. Checks that compare with GPU spec peaks are reported as skipped on a
`coarse-cpu` profile (CPU timings against GPU peaks mean nothing); checks of shape (monotonicity,
quadratic attention, tensor-parallel scaling) run on every profile. Times are seconds, rates are
TFLOP/s and GB/s as in the profile, efficiencies fractions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmsim.costmodel.base import BatchShape
from llmsim.costmodel.catalog import ModelArch, load_model
from llmsim.costmodel.profile import HardwareProfile
from llmsim.costmodel.tables import cost_model_for
from llmsim.errors import LlmsimError

DECODE_BANDWIDTH_EFFICIENCY = (0.60, 0.90)  # achieved fraction of HBM peak, batch-1 decode
PREFILL_MFU = (0.45, 0.75)  # model FLOPs utilisation, 2048-token prefill
GEMM_MAX_FRACTION_OF_PEAK = 0.90  # above this the timer missed asynchronous work
ATTENTION_DOUBLING_RATIO = (3.5, 4.1)  # prefill attention 16k / 8k tokens
ALLREDUCE_LATENCY_US = (5.0, 60.0)


@dataclass(frozen=True)
class CheckResult:
    """One check: `passed` is False for a failed and for a skipped check (see `skipped`)."""

    name: str
    passed: bool
    detail: str
    skipped: bool = False
    predicted_s: float | None = None
    measured_s: float | None = None
    bound_s: float | None = None

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else ("passed" if self.passed else "failed")


def _decode(batch: int, context: int) -> BatchShape:
    return BatchShape(decode_seqs=batch, decode_context_sum_tokens=batch * context, decode_context_max_tokens=context)


def _prefill(tokens: int) -> BatchShape:
    return BatchShape(prefill_chunk_tokens=(tokens,), prefill_prefix_tokens=(0,))


def _non_decreasing(values: Sequence[float]) -> bool:
    return bool(np.all(np.diff(np.asarray(values)) >= 0))


def _valid_tps(model: ModelArch, tps: Sequence[int]) -> list[int]:
    valid = []
    for tp in sorted(set(tps)):
        try:
            model.check_tensor_parallel(tp)
        except LlmsimError:
            continue
        valid.append(tp)
    return valid


def _floor_check(name: str, cm, shape: BatchShape, floor_key: str, band: tuple[float, float], what: str, floor_what: str, ratio_what: str) -> CheckResult:
    """A prediction's kernel time (the step less its engine overheads, which are CPU time the GPU's
    peaks say nothing about) must lie above its roofline floor, and floor / kernel time (the achieved
    share of the peak) inside `band`."""
    predicted, floor = cm.step_time_s(shape), cm.floors(shape)[floor_key]
    kernels = predicted - cm.breakdown(shape)["overheads"]
    lo, hi = band
    share = floor / kernels
    return CheckResult(
        name, kernels > floor and lo <= share <= hi,
        f"{what}: {kernels * 1e3:.3f} ms of kernels ({predicted * 1e3:.3f} ms step) vs {floor_what} {floor * 1e3:.3f} ms: "
        f"{share:.0%} {ratio_what} (expected {lo:.0%} to {hi:.0%})",
        predicted_s=predicted, bound_s=floor,
    )


def _model_checks(profile: HardwareProfile, model: ModelArch, tps: Sequence[int], on_gpu: bool) -> list[CheckResult]:
    """One model's checks, in order: roofline floors, monotonicity, quadratic prefill attention,
    decode attention bandwidth, tensor-parallel scaling."""
    name, hw = model.name, profile.hardware
    cm = cost_model_for(model, profile, 1)
    skip_reason = "coarse-cpu profile: CPU timings are not compared with GPU spec peaks"
    out = _floor_checks(cm, name, hw, on_gpu, skip_reason)
    out.append(_monotone_check(cm, name))
    out.append(_attention_quadratic_check(cm, name))
    out.append(_decode_bandwidth_check(cm, model, hw, on_gpu, skip_reason))
    out += _tensor_parallel_checks(profile, model, cm, tps)
    return out


def _floor_checks(cm, name: str, hw, on_gpu: bool, skip_reason: str) -> list[CheckResult]:
    """Batch-1 decode against the HBM floor and a 2048-token prefill against the FLOP floor (skipped
    off GPU)."""
    if not on_gpu:
        return [CheckResult(f"{kind} floor {name}", False, skip_reason, skipped=True) for kind in ("decode", "prefill")]
    return [
        _floor_check(
            f"decode floor {name}", cm, _decode(1, 512), "bandwidth_floor_s", DECODE_BANDWIDTH_EFFICIENCY,
            "batch-1 decode at 512 tokens", f"HBM floor ({hw.hbm_gb_per_s:g} GB/s)", "of peak bandwidth"),
        _floor_check(
            f"prefill floor {name}", cm, _prefill(2048), "flop_floor_s", PREFILL_MFU,
            "2048-token prefill", f"FLOP floor ({hw.peak_bf16_tflops:g} TFLOP/s)", "model FLOPs utilisation"),
    ]


def _monotone_check(cm, name: str) -> CheckResult:
    """Step time non-decreasing in prefill tokens, decode batch and context; GEMM time in tokens."""
    prefill_s = [cm.step_time_s(_prefill(t)) for t in range(1, 8193, 97)]
    batch_s = [cm.step_time_s(_decode(b, 1024)) for b in range(1, 513, 3)]
    context_s = [cm.step_time_s(_decode(16, c)) for c in range(1, 16384, 101)]
    gemm_s = [cm.breakdown(_prefill(t))["gemm"] for t in range(1, 8193, 97)]
    bad = [label for label, v in (("prefill tokens", prefill_s), ("decode batch", batch_s), ("decode context", context_s), ("GEMM time in tokens", gemm_s)) if not _non_decreasing(v)]
    return CheckResult(
        f"monotone {name}", not bad,
        "step time non-decreasing in prefill tokens, decode batch and context; GEMM time in tokens"
        if not bad else f"decreases somewhere in: {', '.join(bad)}",
    )


def _attention_quadratic_check(cm, name: str) -> CheckResult:
    """Prefill attention of 16384 tokens against 8192: about four times (quadratic in length)."""
    a8k, a16k = (cm.breakdown(_prefill(t))["attention"] for t in (8192, 16384))
    lo, hi = ATTENTION_DOUBLING_RATIO
    ratio = a16k / a8k
    return CheckResult(
        f"attention prefill quadratic {name}", lo <= ratio <= hi,
        f"prefill attention 16384 / 8192 tokens = {ratio:.2f} (expected {lo:g} to {hi:g})",
    )


def _decode_bandwidth_check(cm, model: ModelArch, hw, on_gpu: bool, skip_reason: str) -> CheckResult:
    """The KV-read bandwidth implied by decode attention's slope in summed context must stay below
    HBM peak (skipped off GPU)."""
    name = model.name
    if not on_gpu:
        return CheckResult(f"decode attention bandwidth {name}", False, skip_reason, skipped=True)
    ctx1, ctx2, batch = 4096, 8192, 64
    delta_s = cm.breakdown(_decode(batch, ctx2))["attention"] - cm.breakdown(_decode(batch, ctx1))["attention"]
    kv_bytes = batch * (ctx2 - ctx1) * model.kv_bytes_per_token_per_gpu(1)
    gb_per_s = kv_bytes / delta_s / 1e9 if delta_s > 0 else float("inf")
    return CheckResult(
        f"decode attention bandwidth {name}", gb_per_s < hw.hbm_gb_per_s,
        f"decode slope in summed context implies {gb_per_s:.0f} GB/s of KV reads (HBM peak {hw.hbm_gb_per_s:g})",
    )


def _tensor_parallel_checks(profile: HardwareProfile, model: ModelArch, cm, tps: Sequence[int]) -> list[CheckResult]:
    """At each valid TP degree above 1: GEMM time between 1/tp of TP 1's (`cm`) and TP 1's, and some
    all-reduce time added."""
    out: list[CheckResult] = []
    name = model.name
    for tp in _valid_tps(model, tps):
        if tp == 1:
            continue
        cmk = cost_model_for(model, profile, tp)
        problems = []
        for label, shape in (("decode 32 x 1024", _decode(32, 1024)), ("prefill 2048", _prefill(2048))):
            b1, bk = cm.breakdown(shape), cmk.breakdown(shape)
            if not b1["gemm"] / tp <= bk["gemm"] < b1["gemm"]:
                problems.append(f"{label}: GEMM {bk['gemm'] * 1e3:.3f} ms at TP {tp} vs {b1['gemm'] * 1e3:.3f} ms at TP 1")
            if not bk["communication"] > 0:
                problems.append(f"{label}: no communication at TP {tp}")
        out.append(CheckResult(
            f"tensor parallel {name} tp={tp}", not problems,
            "; ".join(problems) or f"GEMM time at TP {tp} between 1/{tp} of TP 1 and TP 1, all-reduce time added",
        ))
    return out


def _profile_checks(profile: HardwareProfile, on_gpu: bool) -> list[CheckResult]:
    out: list[CheckResult] = []
    hw, skip_reason = profile.hardware, "coarse-cpu profile: not compared with GPU spec peaks"
    limit_tflops = GEMM_MAX_FRACTION_OF_PEAK * hw.peak_bf16_tflops
    if not on_gpu:
        out.append(CheckResult("gemm below peak", False, skip_reason, skipped=True))
    elif profile.gemm is not None:
        rates = [(2.0 * t * g.n * g.k / s / 1e12, f"n={g.n} k={g.k} tokens={t}") for g in profile.gemm.shapes for t, s in zip(g.tokens, g.seconds, strict=True)]
        if profile.gemm.surface is not None:
            rates += [(v, f"surface tokens={t:g} nk={nk:g}") for t, row in zip(profile.gemm.surface.tokens, profile.gemm.surface.tflops, strict=True) for nk, v in zip(profile.gemm.surface.nk, row, strict=True)]
        best, where = max(rates)
        out.append(CheckResult(
            "gemm below peak", best <= limit_tflops,
            f"highest achieved GEMM rate {best:.0f} TFLOP/s at {where}; limit {limit_tflops:.0f} "
            f"({GEMM_MAX_FRACTION_OF_PEAK:.0%} of {hw.peak_bf16_tflops:g})",
        ))
    else:
        eff = profile.efficiency
        best = max(eff.gemm_compute, eff.attention_prefill_compute)
        out.append(CheckResult(
            "gemm below peak", best <= GEMM_MAX_FRACTION_OF_PEAK,
            f"analytic efficiency factors: GEMM {eff.gemm_compute:.0%}, attention {eff.attention_prefill_compute:.0%} "
            f"of peak (limit {GEMM_MAX_FRACTION_OF_PEAK:.0%})",
        ))

    if profile.gemm is not None:
        bad = [f"n={g.n} k={g.k}" for g in profile.gemm.shapes if not _non_decreasing(g.seconds)]
        out.append(CheckResult(
            "gemm tables non-decreasing", not bad,
            f"decreasing in tokens: {', '.join(bad)}" if bad else f"all {len(profile.gemm.shapes)} tables non-decreasing in tokens",
        ))
    if profile.attention is not None and on_gpu:
        fast = [
            f"{c.q_heads}/{c.kv_heads}/{c.head_dim}: " + (f"{1e-9 / c.decode.s_per_byte:.0f} GB/s" if c.decode.s_per_byte > 0 else "no KV-size term")
            for c in profile.attention.configs if c.decode is not None and c.decode.s_per_byte * hw.hbm_gb_per_s * 1e9 <= 1.0
        ]
        out.append(CheckResult(
            "attention decode fits below HBM peak", not fast,
            f"decode fits faster than {hw.hbm_gb_per_s:g} GB/s: {', '.join(fast)}" if fast else "every decode fit's KV bandwidth is below HBM peak",
        ))

    if not on_gpu:
        out.append(CheckResult("allreduce", False, skip_reason, skipped=True))
    else:
        comm, link = profile.comm, hw.interconnect_gb_per_s / 2.0  # per direction
        lo, hi = ALLREDUCE_LATENCY_US
        entries = [("defaults" if not comm.measured else "fit", comm.allreduce_latency_us, comm.allreduce_bus_gb_per_s)]
        entries += [(f"tp={t.tp}", t.latency_us, t.bus_gb_per_s) for t in comm.allreduce_tables or ()]
        problems = [f"{w}: latency {lat:.1f} us, bus {bus:.0f} GB/s" for w, lat, bus in entries if not (lo <= lat <= hi and bus <= link)]
        out.append(CheckResult(
            "allreduce", not problems,
            "; ".join(problems) + f" (expected latency {lo:g} to {hi:g} us, bus below {link:g} GB/s per direction)"
            if problems else f"latency within {lo:g} to {hi:g} us, bus bandwidth below {link:g} GB/s per direction",
        ))
    return out


def sanity_checks(profile: HardwareProfile, models: Sequence[ModelArch] = (), tps: Sequence[int] = (1, 2, 4, 8)) -> list[CheckResult]:
    """The checks of docs/cost-model.md §4 on `profile`, for `models` (Llama-2-7B when empty) at `tps`."""
    on_gpu = profile.calibration.fidelity != "coarse-cpu"
    models = list(models) or [load_model("llama-2-7b")]
    results = _profile_checks(profile, on_gpu)
    for model in models:
        results += _model_checks(profile, model, tps, on_gpu)
    return results


def checks_text(results: Sequence[CheckResult]) -> str:
    """One line per check: status, name, detail."""
    width = max((len(r.name) for r in results), default=0)
    return "\n".join(f"{r.status.upper():8} {r.name:<{width}}  {r.detail}" for r in results)


def fit_report_text(profile: HardwareProfile) -> str:
    """A readable table of the profile's fit report: points, median and worst relative error."""
    if not profile.fit_report:
        return f"{profile.hardware.name}: no fit report ({profile.calibration.fidelity} profile without measured tables)"
    width = max(len("table"), *(len(e.table) for e in profile.fit_report))
    lines = [f"{'table':<{width}}  {'points':>6}  {'median err':>10}  {'worst err':>9}"]
    for e in profile.fit_report:
        lines.append(f"{e.table:<{width}}  {e.points:>6}  {e.median_rel_error:>10.2%}  {e.worst_rel_error:>9.2%}")
    return "\n".join(lines)
